"""A masked language model (any ``AutoModelForMaskedLM`` in a local folder) as a KD teacher of token
distributions: for every WordPiece position of a transcript, that position is masked and the MLM's
softmax (at a temperature) over the vocabulary is the target (:func:`masked_log_probs`).

Two teachers (``kd.teacher``)::

    teacher: {type: hf_mlm, model_dir: exp/mlm_minilm, temperature: 1.0}   # online (runs the MLM per batch)
    teacher: {type: offline_mlm}                                             # targets stored with the cuts

Offline targets (:func:`dump_mlm_targets`, CLI :mod:`asr_kd.bin.dump_mlm`) are custom fields of every cut
with a transcript:

=========================  ==============================================================================
``kd_mlm_topk_values``     Array (L, K) float16: per WordPiece position the K largest log-probs (at the
                           dump's temperature), descending
``kd_mlm_topk_indices``    Array (L, K) int16 (int32 when V > 32768): their WordPiece ids
``kd_mlm_ids``             JSON list of the L WordPiece ids of the transcript (no [CLS] / [SEP])
``kd_mlm_vocab``           JSON ``{"size": V, "sha256": str, "temperature": tau, "model_dir": str}``: the
                           vocabulary fingerprint (:meth:`~asr_kd.kd.wordpiece.WordPieceVocab.fingerprint`)
                           the student checks at start-up (:func:`check_mlm_targets`)
=========================  ==============================================================================

Both teachers give, in ``TeacherOutput.extra``: ``"mlm_topk"`` = ``(values (N, L, K) float32, indices
(N, L, K) int64)``, ``"mlm_lens"`` (N,) = L_n and ``"mlm_ids"`` (N lists of L_n ids); rows past L_n are
padding. A folder whose weights have no MLM head (e.g. the sentence-transformers MiniLM, a plain
``BertModel``) raises :class:`MlmHeadMissingError`, saying how to train one (:mod:`asr_kd.bin.train_mlm`).
``transformers`` is imported when a teacher is built, never when this module is imported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from asr_kd.kd.teachers import Teacher, TeacherOutput, _freeze, register_teacher
from asr_kd.kd.wordpiece import UnkReport, WordPieceVocab
from asr_kd.utils.manifests import write_cuts

__all__ = [
    "MLM_VALUES",
    "MLM_INDICES",
    "MLM_IDS",
    "MLM_VOCAB",
    "MLM_FIELDS",
    "MlmHeadMissingError",
    "load_masked_lm",
    "masked_log_probs",
    "HfMlmTeacher",
    "OfflineMlmTeacher",
    "MlmDumpReport",
    "dump_mlm_targets",
    "cut_text",
    "check_mlm_targets",
]

log = logging.getLogger(__name__)

MLM_VALUES = "kd_mlm_topk_values"
MLM_INDICES = "kd_mlm_topk_indices"
MLM_IDS = "kd_mlm_ids"
MLM_VOCAB = "kd_mlm_vocab"
#: the custom fields the offline MLM teacher reads
MLM_FIELDS = (MLM_VALUES, MLM_INDICES, MLM_IDS)
_FP16_MIN = float(np.finfo(np.float16).min)
TRAIN_HINT = "python -m asr_kd.bin.train_mlm --base {dir} --out exp/mlm --train-text data/text/train.txt"


class MlmHeadMissingError(ValueError):
    """A teacher folder that is not a masked LM (its weights have no MLM head)."""


def load_masked_lm(model_dir: str | Path) -> nn.Module:
    """``AutoModelForMaskedLM`` from a local folder (no remote code), in eval mode.

    Raises:
        FileNotFoundError: no such folder / no ``config.json``.
        MlmHeadMissingError: the weights lack the MLM head (or the architecture has none): the message
            gives the :mod:`asr_kd.bin.train_mlm` command that trains one.
    """
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json (not a Hugging Face model folder)")
    kwargs = dict(local_files_only=True, trust_remote_code=False)
    config = AutoConfig.from_pretrained(str(path), **kwargs)
    hint = TRAIN_HINT.format(dir=path)
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "newly initialized" warning becomes our error below
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(str(path), config=config, output_loading_info=True, **kwargs)
    except ValueError as e:
        raise MlmHeadMissingError(
            f"{path}: a {config.model_type!r} model has no masked-LM architecture ({e}); train an MLM with: {hint}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    prefix = getattr(model, "base_model_prefix", "") + "."
    head_missing = [k for k in info.get("missing_keys", ()) if not k.startswith(prefix)]
    if head_missing:
        raise MlmHeadMissingError(
            f"{path} has no masked-LM head (its weights lack {sorted(head_missing)[:3]}"
            f"{' ...' if len(head_missing) > 3 else ''}): train one on the recipe's text with: {hint}"
        )
    return model.eval()


def _split_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(encoder, head) when the MLM is ``base_model`` + exactly one head module (BERT ``cls``,
    RoBERTa ``lm_head``), so the head can run on the masked positions only; else None."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    others = [m for _, m in model.named_children() if m is not base]
    return (base, others[0]) if len(others) == 1 else None


@torch.no_grad()
def masked_log_probs(
    model: nn.Module,
    ids: Sequence[Sequence[int]],
    *,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    pad_id: int = 0,
    temperature: float = 1.0,
    max_copies: int = 256,
) -> list[Tensor]:
    """Per sentence (L_n, V) log-softmax(logits / temperature) of the MLM at each of its L_n pieces with
    that piece masked (the other pieces visible).

    Batched: the sum_n L_n masked copies of the batch (``[CLS] ids [SEP]`` with one piece replaced by
    ``[MASK]``, padded to the longest) run through the model together, ``max_copies`` per forward; for
    BERT-like models the head runs on the masked positions only. Equal to masking and scoring one
    position of one unpadded sentence at a time (tested).

    Args:
        model: an ``AutoModelForMaskedLM`` (eval mode).
        ids: N piece sequences without special tokens.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(model.parameters()).device
    rows = [(n, j) for n, s in enumerate(ids) for j in range(len(s))]
    out_rows: list[Tensor] = []
    split = _split_head(model)
    for c0 in range(0, len(rows), max(1, int(max_copies))):
        chunk = rows[c0 : c0 + max(1, int(max_copies))]
        width = max(len(ids[n]) for n, _ in chunk) + 2
        x = torch.full((len(chunk), width), pad_id, dtype=torch.int64)
        att = torch.zeros(len(chunk), width, dtype=torch.int64)
        pos = torch.empty(len(chunk), dtype=torch.int64)
        for i, (n, j) in enumerate(chunk):
            s = list(ids[n])
            x[i, : len(s) + 2] = torch.tensor([cls_id, *s, sep_id])
            att[i, : len(s) + 2] = 1
            x[i, j + 1] = mask_id
            pos[i] = j + 1
        x, att, pos = x.to(device), att.to(device), pos.to(device)
        ar = torch.arange(len(chunk), device=device)
        if split is not None:
            base, head = split
            h = base(input_ids=x, attention_mask=att, return_dict=True).last_hidden_state  # (C, S, H)
            logits = head(h[ar, pos].unsqueeze(1)).squeeze(1)  # (C, V)
        else:
            logits = model(input_ids=x, attention_mask=att, return_dict=True).logits[ar, pos]
        out_rows.append((logits.float() / temperature).log_softmax(-1))
    flat = torch.cat(out_rows) if out_rows else torch.zeros(0, 0)
    return list(torch.split(flat, [len(s) for s in ids])) if rows else [flat.new_zeros(0, 0) for _ in ids]


def _pad_topk(per_sentence: Sequence[Tensor], topk: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per sentence (L_n, V) log-probs -> values, indices (N, L_max, K) and lens (N,); ``topk`` None: all V
    (indices = 0..V-1)."""
    n = len(per_sentence)
    lens = torch.tensor([int(t.size(0)) for t in per_sentence], dtype=torch.int64)
    v = max((int(t.size(-1)) for t in per_sentence if t.numel()), default=1)
    k = v if topk is None else min(int(topk), v)
    lmax = int(lens.max()) if n else 0
    values = torch.zeros(n, lmax, k)
    indices = torch.zeros(n, lmax, k, dtype=torch.int64)
    for i, t in enumerate(per_sentence):
        if t.numel() == 0:
            continue
        if topk is None:
            values[i, : t.size(0)] = t.cpu()
            indices[i, : t.size(0)] = torch.arange(v)
        else:
            tv, ti = t.topk(k, dim=-1)
            values[i, : t.size(0)], indices[i, : t.size(0)] = tv.cpu(), ti.cpu()
    return values, indices, lens


@register_teacher("hf_mlm")
class HfMlmTeacher(Teacher):
    """Frozen masked LM, online: transcripts -> per-piece masked distributions (module docstring).

    Args:
        model_dir: a local ``AutoModelForMaskedLM`` folder (weights with an MLM head + tokenizer), e.g.
            the output of :mod:`asr_kd.bin.train_mlm`, or ``bert-base-uncased`` downloaded elsewhere.
        temperature: tau of the teacher softmax.
        topk: keep the K largest entries per position (None: the whole distribution).
        lowercase, max_length: as :class:`~asr_kd.kd.wordpiece.WordPieceVocab`.
        max_copies: masked copies per forward (:func:`masked_log_probs`).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        temperature: float = 1.0,
        topk: int | None = None,
        lowercase: bool = True,
        max_length: int = 128,
        max_copies: int = 256,
    ):
        super().__init__()
        self.model_dir = Path(model_dir)
        self.model = _freeze(load_masked_lm(self.model_dir).float())
        self.vocab = WordPieceVocab(self.model_dir, lowercase=lowercase, max_length=max_length)
        out_size = int(self.model.get_output_embeddings().weight.size(0))
        if out_size != self.vocab.size:
            raise ValueError(
                f"{self.model_dir}: the MLM outputs {out_size} classes, its tokenizer has {self.vocab.size}"
            )
        self.temperature = float(temperature)
        self.topk = None if topk is None else int(topk)
        self.max_copies = int(max_copies)
        self.unk = UnkReport()
        self.eval()

    def extra_repr(self) -> str:
        return f"model_dir={str(self.model_dir)!r}, temperature={self.temperature}, topk={self.topk}"

    def fingerprint(self) -> dict:
        """The vocabulary fingerprint + temperature + folder (the ``kd_mlm_vocab`` record)."""
        return {**self.vocab.fingerprint(), "temperature": self.temperature, "model_dir": str(self.model_dir)}

    @torch.no_grad()
    def distributions(self, texts: Sequence[str]) -> tuple[list[list[int]], list[Tensor]]:
        """Per text its piece ids and (L_n, V) masked log-probs (``[UNK]`` counted in :attr:`unk`)."""
        enc = self.vocab.encode(list(texts), self.unk)
        ids = [i for i, _ in enc]
        v = self.vocab
        lp = masked_log_probs(
            self.model,
            ids,
            cls_id=v.cls_id,
            sep_id=v.sep_id,
            mask_id=v.mask_id,
            pad_id=v.pad_id,
            temperature=self.temperature,
            max_copies=self.max_copies,
        )
        return ids, lp

    @torch.no_grad()
    def forward(self, batch: Mapping[str, Any], needs: set[str] | None = None) -> TeacherOutput:
        ids, lp = self.distributions(list(batch["supervisions"]["text"]))
        values, indices, lens = _pad_topk(lp, self.topk)
        device = batch["inputs"].device if "inputs" in batch else torch.device("cpu")
        return TeacherOutput(
            extra={
                "mlm_topk": (values.to(device), indices.to(device)),
                "mlm_lens": lens.to(device),
                "mlm_ids": ids,
                "mlm_vocab": self.fingerprint(),
            }
        )


@register_teacher("offline_mlm")
class OfflineMlmTeacher(Teacher):
    """MLM targets read from the batch (``batch["custom"]``, dumped by :func:`dump_mlm_targets`).

    The train CLI adds :attr:`required_custom_fields` to ``data.custom_fields`` and checks the stored
    vocabulary against the student's WordPiece vocabulary before training (:func:`check_mlm_targets`).
    """

    online = False
    required_custom_fields = list(MLM_FIELDS)

    def __init__(self):  # no options (a config key other than ``type`` is refused)
        super().__init__()
        self.eval()

    def forward(self, batch: Mapping[str, Any], needs: set[str] | None = None) -> TeacherOutput:
        custom = batch.get("custom")
        missing = [n for n in MLM_FIELDS if custom is None or n not in custom]
        if missing:
            raise KeyError(
                f"the batch lacks the offline MLM targets {missing}: list them in data.custom_fields and train on "
                "the manifests written by asr_kd.bin.dump_mlm"
            )
        device = batch["inputs"].device if "inputs" in batch else torch.device("cpu")
        values, indices = custom[MLM_VALUES], custom[MLM_INDICES]
        lens = custom[MLM_VALUES + "_lens"]
        if values.shape != indices.shape or not torch.equal(lens, custom[MLM_INDICES + "_lens"]):
            raise ValueError("offline MLM top-k values and indices disagree in shape")
        ids = [list(map(int, r)) for r in custom[MLM_IDS]]
        if [len(r) for r in ids] != lens.tolist():
            raise ValueError(f"offline MLM targets: {[len(r) for r in ids]} pieces but {lens.tolist()} target rows")
        return TeacherOutput(
            extra={
                "mlm_topk": (values.to(device, torch.float32), indices.to(device, torch.int64)),
                "mlm_lens": lens.to(device),
                "mlm_ids": ids,
            }
        )


def check_mlm_targets(
    cuts: Any,
    fingerprint: Mapping[str, Any],
    *,
    manifest: Any = None,
    who: str = "",
    temperature: float | None = None,
) -> bool:
    """Refuse offline MLM targets of another vocabulary: the ``kd_mlm_vocab`` record of the first cut
    (of the first 100) that has one must have ``fingerprint``'s size and sha256. Returns False when no
    cut has a record (nothing to compare). A ``temperature`` other than the dump's is logged as a warning
    (the targets were softened at the dump's).

    Raises:
        asr_kd.data.tokenizer.VocabMismatchError: naming the manifest, the cut and both vocabularies.
    """
    from itertools import islice

    from asr_kd.data.tokenizer import VocabMismatchError

    for cut in islice(cuts, 100):
        info = (cut.custom or {}).get(MLM_VOCAB)
        if not isinstance(info, Mapping):
            continue
        if int(info.get("size", -1)) != int(fingerprint["size"]) or info.get("sha256") != fingerprint["sha256"]:
            raise VocabMismatchError(
                f"vocabulary mismatch: the MLM targets of {manifest or 'the manifest'} (cut {cut.id}) come from a "
                f"teacher with {info.get('size')} WordPiece units ({info.get('model_dir')}, sha256 "
                f"{str(info.get('sha256'))[:12]}), but {who or 'the student'} uses {fingerprint['size']} "
                f"(sha256 {str(fingerprint['sha256'])[:12]}): dump the targets with the student's tokenizer, or point "
                "tokenizer_dir at the teacher's folder"
            )
        dumped = info.get("temperature")
        if temperature is not None and dumped is not None and float(dumped) != float(temperature):
            log.warning(
                "%s: the MLM targets were dumped at temperature %s, %s uses %s",
                manifest or "manifest",
                dumped,
                who or "the student",
                temperature,
            )
        return True
    log.info("%s: no %s field: the MLM teacher's vocabulary cannot be checked", manifest or "manifest", MLM_VOCAB)
    return False


@dataclass
class MlmDumpReport:
    """What :func:`dump_mlm_targets` did: cuts, sentences scored, pieces, seconds, [UNK] counts."""

    num_cuts: int = 0
    num_done: int = 0
    num_pieces: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unk: UnkReport = field(default_factory=UnkReport)

    @property
    def sentences_per_second(self) -> float:
        return self.num_done / max(self.seconds, 1e-9)


def cut_text(cut: Any) -> str:
    """A cut's supervision texts in time order, joined by spaces (stripped)."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    return " ".join((s.text or "").strip() for s in sups).strip()


@torch.no_grad()
def dump_mlm_targets(
    teacher: HfMlmTeacher,
    cuts: Any,
    out_dir: str | Path,
    *,
    topk: int = 16,
    batch_size: int = 32,
    storage_name: str = "kd_mlm",
    output_manifest: str | Path | None = None,
    report: MlmDumpReport | None = None,
) -> Any:
    """Score every cut's transcript with ``teacher`` and return the cuts with the MLM fields (module
    docstring) attached. Arrays go to ``<out_dir>/<storage_name>`` (:func:`asr_kd.kd.offline._make_writer`).
    A cut without text stays in the output without the fields (listed in ``report.skipped``).

    Args:
        topk: K of the stored top-k (>= V keeps all V, sorted).
        batch_size: sentences per :func:`masked_log_probs` call.
    """
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    from asr_kd.kd.offline import _make_writer

    t0 = time.perf_counter()
    report = report if report is not None else MlmDumpReport()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = teacher.fingerprint()
    index_dtype = np.int16 if teacher.vocab.size <= np.iinfo(np.int16).max + 1 else np.int32
    cuts = list(cuts)
    targets: dict[str, dict[str, Any]] = {}
    teacher.unk = report.unk
    with _make_writer(out_dir / storage_name) as writer:
        todo = []
        for cut in cuts:
            text = cut_text(cut)
            if text:
                todo.append((cut, text))
            else:
                report.skipped.append((cut.id, "empty transcript"))
        todo.sort(key=lambda ct: len(ct[1]))  # similar lengths together: less padding in the masked copies
        for b in range(0, len(todo), batch_size):
            chunk = todo[b : b + batch_size]
            ids, lp = teacher.distributions([t for _, t in chunk])
            for (cut, _), s_ids, s_lp in zip(chunk, ids, lp):
                if not s_ids:
                    report.skipped.append((cut.id, "no WordPiece units"))
                    continue
                v, i = s_lp.topk(min(int(topk), s_lp.size(-1)), dim=-1)
                key = cut.id.replace("/", "_")
                targets[cut.id] = {
                    MLM_VALUES: writer.store_array(
                        f"{key}-mlm_values", v.clamp(min=_FP16_MIN).to(torch.float16).numpy()
                    ),
                    MLM_INDICES: writer.store_array(f"{key}-mlm_indices", i.numpy().astype(index_dtype)),
                    MLM_IDS: [int(t) for t in s_ids],
                    MLM_VOCAB: record,
                }
                report.num_pieces += len(s_ids)
    out = []
    for cut in cuts:
        if cut.id in targets:
            cut = fastcopy(cut, custom={**(cut.custom or {}), **targets[cut.id]})
        out.append(cut)
    result = CutSet.from_cuts(out)
    if output_manifest is not None:
        write_cuts(result, output_manifest)  # atomic: a training may be reading the manifest being replaced
    report.num_cuts, report.num_done = len(out), len(targets)
    report.seconds = time.perf_counter() - t0
    return result
