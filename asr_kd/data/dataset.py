"""The ASR dataset: a CutSet (one mini-batch from a sampler) -> a dict of padded tensors.

Batch schema (the one place it is written down)::

    {
        "inputs":       FloatTensor (N, T, F)   log-mel fbank, padded at the end with log(1e-10)
        "feature_lens": LongTensor  (N,)        valid frames of each row, descending
        "supervisions": {
            "cut_id":     list[str]  (N)
            "text":       list[str]  (N)        the cut's transcript (supervisions joined in time order)
            "tokens":     list[list[int]] (N)   token ids, only when the dataset has a tokenizer
            "token_lens": LongTensor (N,)       len(tokens[i]), only with a tokenizer
        },
        "skipped":      list[dict]              {"cut_id": str, "reason": str} for each of the sampler's
                                                cuts dropped from this batch (on_error="skip"), else []
        "cuts":         CutSet (N)              only when return_cuts=True
        "custom": {                             only when the dataset has custom_fields; per name:
            <name>:        Tensor (N, T'max, ...)  an Array / TemporalArray field (``cut.load_custom``),
                                                   zero-padded along its first (temporal) axis, stored dtype
            <name>_lens:   LongTensor (N,)         valid rows of <name> per cut
            <name>:        list (N)                any other (JSON) custom value, as stored
        }
    }

N: cuts in the batch (rows are sorted by duration, longest first); T: frames of the longest cut;
F: mel bins. N can be 0 when every cut of a batch was skipped (then T = 0, and F = 0 with pre-computed
features); the training loop must skip such a batch (``batch["inputs"].size(0) == 0``).

Inputs come from a Lhotse input strategy: ``OnTheFlyFeatures(make_fbank())`` (default) computes fbank
from audio; ``PrecomputedFeatures()`` reads stored features. Bad inputs (see
:mod:`asr_kd.data.validation`) raise :class:`~asr_kd.data.validation.BadCutError` naming the cut, or
with ``on_error="skip"`` are dropped, counted in :attr:`AsrDataset.stats`, logged and listed in
``batch["skipped"]`` (the way to count them across DataLoader worker processes).

Multi-channel audio (e.g. a stereo wav whose manifest made a ``MultiCut``): with on-the-fly features
the cut is **down-mixed** to mono: the mean of its channels
with a WARNING naming the cut and its channel count, once per cut and process (the fbank extractors
take one channel: kaldifeat used to fail with a bare ``AssertionError``). The mean keeps the level of
the channels (Lhotse's own down-mix sums them). A ``MonoCut`` of one
channel of a multi-channel recording is used as it is.

Custom fields (``custom_fields=("kd_ctc_topk_values", ...)``) carry per-cut data stored in the cuts'
``custom`` dict, e.g. offline teacher targets (:mod:`asr_kd.kd.offline`). A TemporalArray is moved to
temporal-axis-first before padding. A cut lacking a requested field is bad input
(``missing_custom``), one whose array cannot be read is ``bad_custom``: both raise or skip per
``on_error``. With N = 0, ``<name>`` is an empty list and ``<name>_lens`` an empty tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset.input_strategies import BatchIO, OnTheFlyFeatures, PrecomputedFeatures
from lhotse.utils import fastcopy

from asr_kd.data.augment import SpecAugment
from asr_kd.data.features import make_fbank
from asr_kd.data.stats import FilterStats
from asr_kd.data.validation import (
    CORRUPT_AUDIO,
    INPUT_ERROR,
    BadCutError,
    OnError,
    _short,
    check_audio,
    check_features,
    check_on_error,
    check_text,
)

if TYPE_CHECKING:  # pragma: no cover
    from asr_kd.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MISSING_CUSTOM = "missing_custom"
BAD_CUSTOM = "bad_custom"

CutTransform = Callable[[CutSet], CutSet]


class AsrDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by CutSets (use it with a Lhotse sampler); see the module docstring.

    Args:
        input_strategy: how cuts become features; default ``OnTheFlyFeatures(make_fbank())``.
        tokenizer: when given, the batch carries ``tokens`` / ``token_lens``.
        cut_transforms: CutSet -> CutSet transforms applied before loading (e.g. noise mixing);
            they must keep cut ids and durations.
        spec_augment: applied to the padded features; pass it for training only.
        on_error: ``"raise"`` or ``"skip"`` bad cuts (see the module docstring).
        return_cuts: add the batch's cuts under ``"cuts"`` (for decoding scripts).
        name: label of this dataset's log lines and stats.
        custom_fields: names of cut custom fields to load into ``batch["custom"]``.
    """

    def __init__(
        self,
        input_strategy: BatchIO | None = None,
        tokenizer: Tokenizer | None = None,
        cut_transforms: Sequence[CutTransform] = (),
        spec_augment: SpecAugment | None = None,
        on_error: OnError = "raise",
        return_cuts: bool = False,
        name: str = "dataset",
        custom_fields: Sequence[str] = (),
    ):
        self.input_strategy = input_strategy or OnTheFlyFeatures(make_fbank())
        self.tokenizer = tokenizer
        self.cut_transforms = list(cut_transforms)
        self.spec_augment = spec_augment
        self.on_error = check_on_error(on_error)
        self.return_cuts = return_cuts
        self.stats = FilterStats(name)
        self.custom_fields = tuple(custom_fields)
        self._downmixed: set[str] = set()  # ids of multi-channel cuts already warned about
        #: ``(seed, rank, epoch, first batch index)`` set by :class:`~asr_kd.data.datamodule.SeededDataLoader`
        #: before it starts its workers: then each worker re-seeds before every batch (see :meth:`_seed_batch`)
        self.worker_seeding: tuple[int, int, int, int] | None = None
        self._worker_batches = 0  # batches this worker process has made since its iterator started

    # ------------------------------------------------------------------ error handling
    def _bad(self, err: BadCutError, skipped: list[dict]) -> None:
        if self.on_error == "raise":
            raise err
        self.stats.drop(err.cut_id, err.reason, err.detail)
        skipped.append({"cut_id": err.cut_id, "reason": err.reason})

    def _diagnose(self, cut: Cut) -> BadCutError | None:
        """Why the input strategy fails on ``cut`` alone (None if it does not fail)."""
        try:
            if isinstance(self.input_strategy, PrecomputedFeatures):
                check_features(cut)
            else:
                check_audio(cut, "decode")
            self._run_strategy(CutSet.from_cuts([cut]))
        except BadCutError as e:
            return e
        except Exception as e:
            return BadCutError(cut.id, INPUT_ERROR, _short(e))
        return None

    def _run_strategy(self, cuts: CutSet) -> tuple[torch.Tensor, torch.Tensor, CutSet]:
        out = self.input_strategy(cuts)
        inputs, input_lens = out[0], out[1]
        # A fault-tolerant Lhotse strategy returns the cuts it could load as its last item.
        loaded = out[-1] if isinstance(out[-1], CutSet) else cuts
        return inputs, input_lens, loaded

    def _load_inputs(self, cuts: CutSet, skipped: list[dict]) -> tuple[torch.Tensor, torch.Tensor, CutSet]:
        try:
            inputs, input_lens, loaded = self._run_strategy(cuts)
        except Exception as e:  # find the culprit(s), cut by cut
            log.debug("input strategy failed on a batch (%s); checking cut by cut", _short(e))
            bad = {}
            for cut in cuts:
                err = self._diagnose(cut)
                if err is not None:
                    self._bad(err, skipped)
                    bad[cut.id] = err
            if not bad:
                raise
            good = cuts.filter(lambda c: c.id not in bad).to_eager()
            if len(good) == 0:
                return self._empty_inputs(), torch.zeros(0, dtype=torch.int64), good
            inputs, input_lens, loaded = self._run_strategy(good)
            cuts = good
        if len(loaded) != len(cuts):  # a fault-tolerant strategy dropped some: name them
            kept = set(loaded.ids)
            for cut in cuts:
                if cut.id not in kept:
                    err = self._diagnose(cut) or BadCutError(cut.id, INPUT_ERROR, "dropped by the input strategy")
                    self._bad(err, skipped)
        return inputs, input_lens, loaded

    def _empty_inputs(self) -> torch.Tensor:
        """``(0, 0, F)``; F is 0 when it cannot be known without a cut (pre-computed features)."""
        extractor = getattr(self.input_strategy, "extractor", None)
        num_features = extractor.feature_dim(16000) if extractor is not None else 0
        return torch.zeros(0, 0, num_features)

    def _to_mono(self, cut: Cut) -> Cut:
        """``cut`` down-mixed to one channel when it has several (see the module docstring).

        The mix ``samples.mean(axis=0)`` (float32, ``(num_samples,)``) becomes an in-memory float wav
        recording of a new ``MonoCut`` with the same id, duration, supervisions and custom fields.

        Raises:
            BadCutError: ``corrupt_audio`` when the channels cannot be read.
        """
        channels = getattr(cut, "num_channels", None) or 1
        if channels <= 1 or not cut.has_recording or isinstance(self.input_strategy, PrecomputedFeatures):
            return cut
        import io

        import soundfile as sf
        from lhotse import MonoCut, Recording

        try:
            samples = np.asarray(cut.load_audio(), dtype=np.float32)  # (C, num_samples)
        except Exception as e:
            raise BadCutError(cut.id, CORRUPT_AUDIO, _short(e)) from e
        if cut.id not in self._downmixed:
            self._downmixed.add(cut.id)
            log.warning(
                "%s: cut %s has %d audio channels: down-mixing to mono (the mean of the channels)",
                self.stats.name,
                cut.id,
                channels,
            )
        stream = io.BytesIO()
        sf.write(stream, samples.mean(axis=0), cut.sampling_rate, format="WAV", subtype="FLOAT")
        recording = Recording.from_bytes(stream.getvalue(), recording_id=cut.recording.id)
        # one copy of each supervision (a MultiCut's may list several channels), on channel 0
        sups = [fastcopy(sup, channel=0) for sup in {sup.id: sup for sup in cut.supervisions}.values()]
        return MonoCut(
            id=cut.id,
            start=0.0,
            duration=recording.duration,
            channel=0,
            recording=recording,
            supervisions=sups,
            custom=cut.custom,
        )

    # ------------------------------------------------------------------ custom fields
    def _load_custom(self, cut: Cut) -> dict[str, Any]:
        """``{name: np.ndarray (temporal axis first) | JSON value}`` for :attr:`custom_fields`."""
        from lhotse.array import Array, TemporalArray

        out = {}
        for name in self.custom_fields:
            value = _custom_manifest(cut, name)
            if value is None:
                raise BadCutError(cut.id, MISSING_CUSTOM, f"the cut has no custom field {name!r}")
            if isinstance(value, (Array, TemporalArray)):
                try:
                    arr = np.asarray(cut.load_custom(name))
                except Exception as e:
                    raise BadCutError(cut.id, BAD_CUSTOM, f"{name}: {_short(e)}") from e
                if isinstance(value, TemporalArray) and value.temporal_dim != 0:
                    arr = np.moveaxis(arr, value.temporal_dim, 0)
                if arr.ndim == 0:
                    arr = arr.reshape(1)
                out[name] = arr
            else:
                out[name] = value
        return out

    def _collate_custom(self, ids: list[str], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.custom_fields:
            rows = [values[i][name] for i in ids]
            is_array = [isinstance(r, np.ndarray) for r in rows]
            if not rows:
                out[name], out[name + "_lens"] = [], torch.zeros(0, dtype=torch.int64)
            elif all(is_array):
                out[name], out[name + "_lens"] = _pad_arrays(name, ids, rows)
            elif any(is_array):
                raise ValueError(
                    f"custom field {name!r} is an array in some cuts of the batch and a JSON value in others"
                )
            else:
                out[name] = rows
        return out

    # ------------------------------------------------------------------ main
    def _seed_batch(self) -> None:
        """In a DataLoader worker with :attr:`worker_seeding` set: seed Python's ``random``, NumPy's
        and torch's global generators with :func:`batch_seed` of this batch's index in the epoch.

        The DataLoader hands batches to its W workers in turn (batch ``k`` of an iterator to worker
        ``k % W``), so the ``n``-th batch of worker ``w`` is batch ``first + n * W + w`` of the epoch,
        ``first`` being the batches the sampler had already produced when the iterator started (a
        resumed epoch). Augmentation in workers (SpecAugment, noise mixing) then depends only on
        (seed, rank, epoch, batch index): not on W, nor on where a run was interrupted.
        """
        info = torch.utils.data.get_worker_info()
        if self.worker_seeding is None or info is None:
            return
        seed, rank, epoch, first = self.worker_seeding
        index = first + self._worker_batches * info.num_workers + info.id
        self._worker_batches += 1
        s = batch_seed(seed, rank, epoch, index)
        import random

        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    def __getitem__(self, cuts: CutSet) -> dict:
        self._seed_batch()
        cuts = cuts.sort_by_duration(ascending=False)
        skipped: list[dict] = []

        # 1. transcripts (cheap, so first), custom fields (before transforms turn cuts into MixedCuts)
        texts, tokens, custom, good = {}, {}, {}, []
        for cut in cuts:
            try:
                cut = self._to_mono(cut)
                texts[cut.id], tokens[cut.id] = check_text(cut, self.tokenizer)
                if self.custom_fields:
                    custom[cut.id] = self._load_custom(cut)
            except BadCutError as e:
                self._bad(e, skipped)
                continue
            good.append(cut)
        cuts = CutSet.from_cuts(good)

        # 2. cut transforms (noise mixing), then features
        for transform in self.cut_transforms:
            cuts = transform(cuts)
        if len(cuts) == 0:
            inputs, feature_lens = self._empty_inputs(), torch.zeros(0, dtype=torch.int64)
        else:
            inputs, feature_lens, cuts = self._load_inputs(cuts, skipped)
        feature_lens = feature_lens.to(torch.int64)
        self.stats.keep(len(cuts))

        # 3. SpecAugment on the padded batch (training only: the caller decides)
        if self.spec_augment is not None and inputs.size(0) > 0:
            inputs = self.spec_augment(inputs, feature_lens)

        ids = list(cuts.ids)
        supervisions = {"cut_id": ids, "text": [texts[i] for i in ids]}
        if self.tokenizer is not None:
            supervisions["tokens"] = [tokens[i] for i in ids]
            supervisions["token_lens"] = torch.tensor([len(tokens[i]) for i in ids], dtype=torch.int64)
        batch = {
            "inputs": inputs,
            "feature_lens": feature_lens,
            "supervisions": supervisions,
            "skipped": skipped,
        }
        if self.return_cuts:
            batch["cuts"] = cuts
        if self.custom_fields:
            batch["custom"] = self._collate_custom(ids, custom)
        return batch


def batch_seed(seed: int, rank: int, epoch: int, index: int) -> int:
    """The 32-bit seed of batch ``index`` of ``epoch`` on DDP rank ``rank`` (NumPy ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(rank), int(epoch), int(index)]).generate_state(1)[0])


def _custom_manifest(cut: Cut, name: str) -> Any:
    """The value of custom field ``name`` (a MixedCut's: its first track that has it), else None."""
    custom = getattr(cut, "custom", None)
    if custom is not None and name in custom:
        return custom[name]
    for track in getattr(cut, "tracks", ()):  # MixedCut: the noise tracks lack the field
        value = _custom_manifest(track.cut, name)
        if value is not None:
            return value
    return None


def _pad_arrays(name: str, ids: list[str], rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (T'_n, ...) arrays along the first axis -> ((N, T'max, ...), lens (N,))."""
    trailing = {r.shape[1:] for r in rows}
    if len(trailing) > 1:
        raise ValueError(
            f"custom field {name!r}: the cuts {ids} have arrays of incompatible shapes {[r.shape for r in rows]}"
        )
    lens = torch.tensor([r.shape[0] for r in rows], dtype=torch.int64)
    padded = np.zeros((len(rows), int(lens.max()), *rows[0].shape[1:]), dtype=np.result_type(*rows))
    for i, r in enumerate(rows):
        padded[i, : r.shape[0]] = r
    return torch.from_numpy(padded), lens
