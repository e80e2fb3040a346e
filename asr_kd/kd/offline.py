"""Offline teacher targets: run a frozen teacher once, store its outputs with the cuts, train from them.

Dumping (:func:`dump_teacher_targets`, CLI :mod:`asr_kd.bin.dump_teacher`) batches the cuts exactly as
decoding does (the project's dataset + bucketing sampler, on-the-fly or pre-computed fbank), runs the
teacher, and adds custom fields to every cut it could process:

=========================  ==============================================================================
``kd_ctc_topk_values``     TemporalArray (T', K) float16: the K largest CTC log-probs of each teacher
                           frame, descending (frame_shift 0.04 s = 4 x 10 ms, start = the cut's start)
``kd_ctc_topk_indices``    TemporalArray (T', K) int16 (int32 when V > 32768): their token ids
``kd_nbest``               JSON ``{"tokens": [[id, ...], ...], "scores": [float, ...]}``: the teacher's
                           n-best, best first (only with ``nbest > 0``)
``kd_vocab``               JSON ``{"size": V, "tokens_sha256": str | None}``: the teacher's vocabulary (the
                           sha256 of its pieces when its checkpoint stores them): the train CLI checks it
                           against the student's lang dir (:func:`check_offline_vocab`)
=========================  ==============================================================================

K = min(topk, V). Arrays go to ``<out_dir>/<storage_name>/`` through Lhotse's ``NumpyHdf5Writer``
(one ``.h5`` file) when h5py is importable, else ``NumpyFilesWriter`` (a ``.npy`` file per array); the
manifests point at that path as given (relative paths are relative to the working directory).

No cut is lost: a cut the teacher cannot process (bad audio, empty transcript, a teacher error) stays in
the output manifest without the fields, and is counted and logged in the :class:`DumpReport`; training
then raises on it, or skips and counts it with ``data.on_error: skip``.

Training from the targets (``kd.teacher: {type: offline, fields: [kd_ctc_topk]}``): the batches must
carry the fields, i.e. ``data.custom_fields`` must list :attr:`OfflineTeacher.required_custom_fields`
(``asr_kd.bin.train`` adds them), and the train/valid manifests are the dumped ones. The student must
subsample like the teacher (KD methods compare frame counts); speed perturbation changes T' and is
caught there.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.utils import fastcopy, is_module_available
from torch import Tensor, nn

from asr_kd.kd.teachers import AsrTeacher, Teacher, TeacherOutput, register_teacher
from asr_kd.utils.manifests import write_cuts

__all__ = [
    "TOPK_VALUES",
    "TOPK_INDICES",
    "NBEST",
    "VOCAB",
    "check_offline_vocab",
    "FRAME_SHIFT",
    "OFFLINE_FIELDS",
    "DumpReport",
    "ctc_topk",
    "dump_teacher_targets",
    "OfflineTeacher",
]

log = logging.getLogger(__name__)

TOPK_VALUES = "kd_ctc_topk_values"
TOPK_INDICES = "kd_ctc_topk_indices"
NBEST = "kd_nbest"
VOCAB = "kd_vocab"
#: seconds per teacher frame: 4 x 10 ms (the encoders' subsampling factor)
FRAME_SHIFT = 0.04
#: OfflineTeacher field name -> the cut custom fields that hold it
OFFLINE_FIELDS: dict[str, tuple[str, ...]] = {
    "kd_ctc_topk": (TOPK_VALUES, TOPK_INDICES),
    "kd_nbest": (NBEST,),
}
TEACHER_ERROR = "teacher_error"
NOT_SAMPLED = "not_sampled"
_FP16_MIN = float(np.finfo(np.float16).min)


@dataclass
class DumpReport:
    """What :func:`dump_teacher_targets` did.

    Attributes:
        num_cuts: cuts in the input (= cuts in the output manifest).
        num_done: cuts that got targets.
        failed: ``(cut_id, reason)`` of each cut without targets (reason: a
            :mod:`asr_kd.data.validation` code, ``teacher_error: ...`` or ``not_sampled``).
        audio_seconds: audio of the processed cuts.
        seconds: wall time of the whole dump.
    """

    num_cuts: int = 0
    num_done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def num_failed(self) -> int:
        return len(self.failed)


def ctc_topk(log_probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``min(k, V)`` largest entries of each frame: log_probs (..., V) -> values, indices (..., K).

    Values are descending; ties are broken as ``torch.topk`` does.
    """
    if k < 1:
        raise ValueError(f"topk must be >= 1, got {k}")
    return log_probs.topk(min(int(k), log_probs.size(-1)), dim=-1)


def _make_writer(path: Path):
    from lhotse import NumpyFilesWriter

    if is_module_available("h5py"):
        from lhotse import NumpyHdf5Writer

        return NumpyHdf5Writer(path.with_suffix(".h5"))
    return NumpyFilesWriter(path)


def _teacher_for_dump(teacher: Teacher | nn.Module, nbest: int, nbest_method: str) -> Teacher:
    """``teacher`` with the dump's n-best settings (a shallow copy sharing the model), as given if not
    an AsrTeacher, or a bare AsrModel wrapped in an AsrTeacher."""
    if isinstance(teacher, AsrTeacher):
        teacher = copy.copy(teacher)
        teacher.nbest_method, teacher.nbest_size = nbest_method, max(nbest, 1)
        return teacher
    if isinstance(teacher, Teacher):
        return teacher
    return AsrTeacher(teacher, nbest_method=nbest_method, nbest_size=max(nbest, 1))  # a bare AsrModel


def _run_teacher(teacher: Teacher, batch: Mapping[str, Any], topk: int, nbest: int) -> list[dict[str, Any]]:
    """Per row of ``batch``: ``{"values": (T'_n, K) f16, "indices": (T'_n, K), "nbest": {...}}``."""
    needs = {"ctc_logits", "lens"} | ({"nbest"} if nbest > 0 else set())
    out: TeacherOutput = teacher(batch, needs)
    if out.ctc_logits is None or out.lens is None:
        raise ValueError(f"{type(teacher).__name__} gives no CTC posteriors: it cannot make offline top-k targets")
    values, indices = ctc_topk(out.ctc_logits.float().log_softmax(-1), topk)
    values = values.clamp(min=_FP16_MIN).to(torch.float16).cpu().numpy()
    index_dtype = np.int16 if out.ctc_logits.size(-1) <= np.iinfo(np.int16).max + 1 else np.int32
    indices = indices.cpu().numpy().astype(index_dtype)
    rows = []
    for i, n in enumerate(out.lens.tolist()):
        row = {
            "values": np.ascontiguousarray(values[i, :n]),
            "indices": np.ascontiguousarray(indices[i, :n]),
            "vocab_size": int(out.ctc_logits.size(-1)),
        }
        if nbest > 0:
            row["nbest"] = {
                "tokens": [[int(t) for t in hyp] for hyp in out.nbest[i][:nbest]],
                "scores": [float(s) for s in out.nbest_scores[i][:nbest]],
            }
        rows.append(row)
    return rows


@torch.no_grad()
def dump_teacher_targets(
    teacher: Teacher | nn.Module,
    cuts: CutSet,
    out_dir: str | Path,
    *,
    topk: int = 8,
    nbest: int = 0,
    nbest_method: str = "ctc-prefix-beam",
    max_duration: float = 100.0,
    device: str | torch.device = "cpu",
    data_config: Any = None,
    storage_name: str = "kd_targets",
    output_manifest: str | Path | None = None,
    report: DumpReport | None = None,
) -> CutSet:
    """Run ``teacher`` over ``cuts`` and return them with the offline targets attached (module docstring).

    Args:
        teacher: an :class:`~asr_kd.kd.teachers.AsrTeacher` (or a bare ``AsrModel``; or any teacher
            whose output has ``ctc_logits`` (N, T', V) and ``lens`` (N,)), already on ``device``.
        cuts: the cuts (lazy is fine: they are read twice, in sampler order then in manifest order).
        out_dir: where the arrays go (``<out_dir>/<storage_name>``).
        topk: K of the stored top-k (K >= V keeps all V entries, sorted).
        nbest: store this many n-best hypotheses per cut (0: none).
        nbest_method: an n-best method of :mod:`asr_kd.decoding.search` (beam = ``nbest``).
        max_duration: seconds of audio per batch.
        data_config: an :class:`~asr_kd.data.AsrDataConfig` for the features (``on_the_fly_feats``,
            ``num_mel_bins``, ``fbank_backend``, ``num_workers``): use the teacher's training settings.
        storage_name: name of the array storage under ``out_dir``.
        output_manifest: also write the returned cuts to this path (e.g.
            ``<out_dir>/<prefix>_cuts_<split>.jsonl.gz``).
        report: filled with counts, failures and timings (see :class:`DumpReport`).

    Returns:
        An eager CutSet: every input cut in input order; those processed carry the custom fields.
    """
    from asr_kd.data import AsrDataConfig, AsrDataModule, AsrDataset

    t_start = time.perf_counter()
    report = report if report is not None else DumpReport()
    device = torch.device(device)
    teacher = _teacher_for_dump(teacher, nbest, nbest_method).eval()
    if isinstance(teacher, AsrTeacher):  # configuration errors fail at once, not once per cut
        if teacher.model.ctc is None:
            raise ValueError("the teacher has no CTC head: it cannot make offline CTC top-k targets")
        if nbest > 0:
            from asr_kd.decoding.search import NBEST_METHODS, SearchOptions, check_method

            if nbest_method not in NBEST_METHODS:
                raise ValueError(f"nbest_method {nbest_method!r} gives no n-best list; choose from {NBEST_METHODS}")
            check_method(teacher.model, nbest_method, SearchOptions(beam=nbest))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    cfg = replace(
        data_config or AsrDataConfig(num_workers=0),
        max_duration=max_duration,
        shuffle=False,
        drop_last=False,
        spec_augment=False,
        speed_perturb=False,
        noise_cuts=None,
        custom_fields=(),
    )
    dm = AsrDataModule(cfg, tokenizer=None, world_size=1, rank=0)
    dataset = AsrDataset(dm.input_strategy(), on_error="skip", return_cuts=True, name="dump")
    with warnings.catch_warnings():  # an eager CutSet is fine here
        warnings.filterwarnings("ignore", message="You are using Dynamic.*Sampler with an eagerly")
        sampler = dm.make_sampler(cuts, shuffle=False, drop_last=False)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=cfg.num_workers)

    targets: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    from asr_kd.data.tokenizer import tokens_digest

    trained_tokens = getattr(getattr(teacher, "model", None), "trained_tokens", None)
    digest = tokens_digest(trained_tokens) if trained_tokens else None

    def fail(cut_id: str, reason: str) -> None:
        failed[cut_id] = reason
        log.warning("no teacher targets for cut %r: %s", cut_id, reason)

    with _make_writer(out_dir / storage_name) as writer:

        def store(cut, row: dict[str, Any]) -> None:
            key = cut.id.replace("/", "_")
            custom = {
                TOPK_VALUES: writer.store_array(
                    f"{key}-topk_values", row["values"], frame_shift=FRAME_SHIFT, temporal_dim=0, start=cut.start
                ),
                TOPK_INDICES: writer.store_array(
                    f"{key}-topk_indices", row["indices"], frame_shift=FRAME_SHIFT, temporal_dim=0, start=cut.start
                ),
            }
            if "nbest" in row:
                custom[NBEST] = row["nbest"]
            custom[VOCAB] = {"size": row["vocab_size"], "tokens_sha256": digest}
            targets[cut.id] = custom
            report.audio_seconds += cut.duration

        for batch in loader:
            for s in batch["skipped"]:
                fail(s["cut_id"], s["reason"])
            batch_cuts = list(batch["cuts"])
            if not batch_cuts:
                continue
            batch = dict(batch, inputs=batch["inputs"].to(device), feature_lens=batch["feature_lens"].to(device))
            try:
                rows = _run_teacher(teacher, batch, topk, nbest)
            except Exception as e:  # find the culprit(s), one cut at a time
                log.warning("the teacher failed on a batch of %d cuts (%s); retrying cut by cut", len(batch_cuts), e)
                rows = []
                for i, cut in enumerate(batch_cuts):
                    n = int(batch["feature_lens"][i])
                    one = {
                        "inputs": batch["inputs"][i : i + 1, :n],
                        "feature_lens": batch["feature_lens"][i : i + 1],
                        "supervisions": {k: v[i : i + 1] for k, v in batch["supervisions"].items()},
                    }
                    try:
                        rows.append(_run_teacher(teacher, one, topk, nbest)[0])
                    except Exception as e1:
                        fail(cut.id, f"{TEACHER_ERROR}: {type(e1).__name__}: {e1}")
                        rows.append(None)
            for cut, row in zip(batch_cuts, rows):
                if row is not None:
                    store(cut, row)

    out = []
    for cut in cuts:
        if cut.id in targets:
            custom = dict(cut.custom or {})
            custom.update(targets[cut.id])
            cut = fastcopy(cut, custom=custom)
        elif cut.id not in failed:  # e.g. a sampler that dropped it: still never silent
            fail(cut.id, NOT_SAMPLED)
        out.append(cut)
    result = CutSet.from_cuts(out)
    if output_manifest is not None:
        write_cuts(result, output_manifest)  # atomic: a training may be reading the manifest being replaced

    report.num_cuts = len(out)
    report.num_done = len(targets)
    report.failed = list(failed.items())
    report.seconds = time.perf_counter() - t_start
    log.info(
        "teacher targets for %d of %d cuts (%d failed) in %.1f s",
        report.num_done,
        report.num_cuts,
        report.num_failed,
        report.seconds,
    )
    return result


def check_offline_vocab(cuts: CutSet, tokenizer: Any, *, manifest: Any = None, lang_dir: Any = None) -> bool:
    """Check that dumped targets were made by a teacher of ``tokenizer``'s vocabulary.

    Reads the ``kd_vocab`` field of the first cut (of the first 100) that has it: ``V`` must equal
    ``tokenizer.vocab_size`` and, when recorded, the teacher's pieces' sha256 the tokenizer's. Returns
    False when no cut records it (targets dumped before the field existed: nothing to compare).

    Raises:
        asr_kd.data.tokenizer.VocabMismatchError: naming both sizes, the manifest and the lang dir.
    """
    from itertools import islice

    from asr_kd.data.tokenizer import VocabMismatchError, tokens_digest

    for cut in islice(cuts, 100):
        info = (cut.custom or {}).get(VOCAB)
        if not isinstance(info, Mapping):
            continue
        size, digest = int(info.get("size", -1)), info.get("tokens_sha256")
        where = f"the offline KD targets of {manifest or 'the manifest'} (cut {cut.id})"
        if size != int(tokenizer.vocab_size):
            raise VocabMismatchError(
                f"vocabulary mismatch: {where} come from a teacher with {size} tokens, but the student's lang "
                f"dir {lang_dir} has {tokenizer.vocab_size} BPE pieces: dump the targets with a teacher of the "
                "student's vocabulary"
            )
        if digest and digest != tokens_digest(tokenizer.tokens()):
            raise VocabMismatchError(
                f"vocabulary mismatch: {where} come from a teacher with {size} tokens, the same number as the "
                f"student's lang dir {lang_dir}, but other pieces (sha256 differs)"
            )
        return True
    log.info("%s: no %s field: the teacher's vocabulary cannot be checked", manifest or "manifest", VOCAB)
    return False


@register_teacher("offline")
class OfflineTeacher(Teacher):
    """Teacher targets read from the batch (``batch["custom"]``, see :mod:`asr_kd.data.dataset`).

    Args:
        fields: what to provide, from :data:`OFFLINE_FIELDS`: ``"kd_ctc_topk"`` ->
            :attr:`TeacherOutput.ctc_topk` ``(values (N, T', K) float32, indices (N, T', K) int64)``
            and :attr:`TeacherOutput.lens` (N,); ``"kd_nbest"`` -> ``nbest`` / ``nbest_scores``.

    The data config must list :attr:`required_custom_fields` in ``data.custom_fields`` so the dataset
    loads them. Everything in ``fields`` is returned whatever ``needs`` asks (it is read, not computed);
    a KD method asking for ``ctc_logits`` uses ``ctc_topk`` instead. Outputs are on the device of
    ``batch["inputs"]``.
    """

    online = False

    def __init__(self, fields: Sequence[str] = ("kd_ctc_topk",)):
        super().__init__()
        if isinstance(fields, str):
            fields = (fields,)
        unknown = [f for f in fields if f not in OFFLINE_FIELDS]
        if unknown or not fields:
            raise ValueError(
                f"offline teacher fields must be a non-empty subset of {sorted(OFFLINE_FIELDS)}, got {list(fields)}"
            )
        self.fields = tuple(fields)
        self.eval()

    @property
    def required_custom_fields(self) -> list[str]:
        """The cut custom fields the dataset must load (``data.custom_fields``)."""
        return [name for f in self.fields for name in OFFLINE_FIELDS[f]]

    def extra_repr(self) -> str:
        return f"fields={list(self.fields)}"

    def forward(self, batch: Mapping[str, Any], needs: set[str] = frozenset()) -> TeacherOutput:
        custom = batch.get("custom")
        missing = [n for n in self.required_custom_fields if custom is None or n not in custom]
        if missing:
            raise KeyError(
                f"the batch lacks the offline teacher targets {missing}: list them in "
                "data.custom_fields (and train on the manifests written by asr_kd.bin.dump_teacher)"
            )
        device = batch["inputs"].device if "inputs" in batch else torch.device("cpu")
        out = TeacherOutput()
        if "kd_ctc_topk" in self.fields:
            values, indices = custom[TOPK_VALUES], custom[TOPK_INDICES]
            lens = custom[TOPK_VALUES + "_lens"]
            if not torch.equal(lens, custom[TOPK_INDICES + "_lens"]) or values.shape != indices.shape:
                raise ValueError("offline top-k values and indices disagree in shape")
            out.ctc_topk = (values.to(device, torch.float32), indices.to(device, torch.int64))
            out.lens = lens.to(device)
        if "kd_nbest" in self.fields:
            rows = custom[NBEST]
            out.nbest = [[list(map(int, hyp)) for hyp in r["tokens"]] for r in rows]
            out.nbest_scores = [[float(s) for s in r["scores"]] for r in rows]
        return out
