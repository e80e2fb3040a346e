"""A tokenizer over a WordPiece lang dir (:func:`asr_kd.lm.wordpiece_lang.write_wordpiece_lang_dir`): a student
whose CTC (and attention heads) predict a BERT tokenizer's WordPiece units instead of BPE pieces.

Id layout of ``tokens.txt``:

====  ==============  ==========================================================
 id   piece           role
====  ==============  ==========================================================
 0    ``<blk>``       blank of CTC / transducer
 1    ``<sos/eos>``   start/end of sentence for attention decoders
 2    ``<unk>``       the source tokenizer's ``[UNK]``; :meth:`encode` never returns it
 3..  pieces          the WordPiece units (word starts, and ``##`` continuations), in the
                      order of their ids in the source tokenizer
====  ==============  ==========================================================

Segmentation: every whitespace-separated word is normalised as the source tokenizer does (lowercased,
accents stripped when it does so), then split by WordPiece's greedy longest match over the lang dir's
pieces: the first piece of a word has no ``##`` mark, every later piece has one. Unlike BERT's own
pre-tokenizer, punctuation inside a word is not split off (``AREN'T`` -> ``aren ##' ##t``, not
``aren ' t``), so decoding is exact: a piece without ``##`` starts a word, a ``##`` piece is appended to
the word before it, and the transcripts' case is restored (``restore_case: upper`` for an upper-case
corpus read by an uncased tokenizer). A word with no segmentation into the lang dir's pieces (it would be
``<unk>``), or one that the normalisation changes beyond the restored case (``ß``, accents), cannot be
encoded: :meth:`WordPieceTokenizer.encode` raises :class:`~asr_kd.data.tokenizer.UntokenizableError`, so
dataset validation counts and reports the cut instead of training on a wrong target.

``wordpiece.json`` holds the settings: ``lowercase``, ``strip_accents``, ``restore_case``
(``"upper"`` or ``"none"``), ``prefix`` (``"##"``), ``max_chars_per_word``, and ``source`` (the tokenizer
folder, its vocabulary ``size`` and ``sha256`` fingerprint, and ``ids``: each unit's id in it).

Usage::

    tok = Tokenizer.from_dir("data/lang_wp")   # a WordPieceTokenizer when the dir has wordpiece.json
    ids = tok.encode("THEY AREN'T HERE")      # [.., id("aren"), id("##'"), id("##t"), ..]
    tok.decode(ids)                           # "THEY AREN'T HERE"
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from asr_kd.data.tokenizer import BLANK, SOS_EOS, TOKENS_TXT, UNK, UntokenizableError, read_symbol_table

__all__ = ["WORDPIECE_JSON", "WP_SPECIALS", "WordPieceSegmenter", "WordPieceTokenizer", "normalize_word"]

WORDPIECE_JSON = "wordpiece.json"
#: ids 0, 1, 2 of a WordPiece lang dir
WP_SPECIALS = (BLANK, SOS_EOS, UNK)
RESTORE_CASE = ("upper", "none")


def normalize_word(word: str, *, lowercase: bool, strip_accents: bool) -> str:
    """A word as an uncased BERT tokenizer sees it: lowercased, then combining marks (accents) dropped."""
    if lowercase:
        word = word.lower()
    if strip_accents:
        word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
    return word


class WordPieceSegmenter:
    """WordPiece's greedy longest match over a set of pieces (``prefix``-marked ones continue a word).

    Args:
        pieces: the allowed pieces; a piece starting with ``prefix`` is a continuation, any other a word start.
        prefix: the continuation mark (``"##"``).
        max_chars: a longer word has no segmentation (as WordPiece's ``max_input_chars_per_word``).
    """

    def __init__(self, pieces: Iterable[str], prefix: str = "##", max_chars: int = 100):
        self.prefix = prefix
        self.max_chars = int(max_chars)
        self.starts = {p for p in pieces if not p.startswith(prefix)}
        self.conts = {p[len(prefix) :] for p in pieces if p.startswith(prefix) and len(p) > len(prefix)}
        self._longest = max((len(p) for p in (*self.starts, *self.conts)), default=0)

    def __call__(self, word: str) -> list[str] | None:
        """The pieces of the (normalised) ``word``, or None when it has no segmentation."""
        if not word or len(word) > self.max_chars:
            return None
        out, start = [], 0
        while start < len(word):
            table = self.starts if start == 0 else self.conts
            end = min(len(word), start + self._longest)
            while end > start and word[start:end] not in table:
                end -= 1
            if end == start:
                return None
            out.append(word[start:end] if start == 0 else self.prefix + word[start:end])
            start = end
        return out


class WordPieceTokenizer:
    """The tokenizer of a WordPiece lang dir (module docstring); the interface of
    :class:`asr_kd.data.tokenizer.Tokenizer` (ids, :meth:`encode` / :meth:`decode`, :meth:`tokens`).

    Raises (at load): FileNotFoundError for a missing ``tokens.txt`` / ``wordpiece.json``; ValueError when
    ids 0-2 are not ``<blk>``, ``<sos/eos>``, ``<unk>`` or the ids are not 0..V-1.
    """

    def __init__(self, lang_dir: str | Path):
        self.lang_dir = Path(lang_dir)
        self.model_file = self.lang_dir / WORDPIECE_JSON
        for f in (self.lang_dir / TOKENS_TXT, self.model_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: not found (make the lang dir with prepare_lang --token-type wordpiece)")
        table = read_symbol_table(self.lang_dir / TOKENS_TXT)
        by_id = sorted(table.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ValueError(f"{self.lang_dir / TOKENS_TXT}: ids are not 0..{len(by_id) - 1}")
        self._pieces = [p for p, _ in by_id]
        if tuple(self._pieces[:3]) != WP_SPECIALS:
            raise ValueError(f"{self.lang_dir / TOKENS_TXT}: ids 0-2 are {self._pieces[:3]}, expected {WP_SPECIALS}")
        self._ids = dict(table)
        self.config = json.loads(self.model_file.read_text(encoding="utf-8"))
        self.lowercase = bool(self.config["lowercase"])
        self.strip_accents = bool(self.config["strip_accents"])
        self.restore_case = str(self.config.get("restore_case", "none"))
        if self.restore_case not in RESTORE_CASE:
            raise ValueError(f"{self.model_file}: restore_case must be one of {RESTORE_CASE}")
        self.prefix = str(self.config.get("prefix", "##"))
        self.segmenter = WordPieceSegmenter(
            self._pieces[3:], self.prefix, int(self.config.get("max_chars_per_word", 100))
        )
        self._cache: dict[str, list[int] | None] = {}

    @classmethod
    def from_dir(cls, lang_dir: str | Path) -> WordPieceTokenizer:
        return cls(lang_dir)

    # ------------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        """V, specials included (the output dimension of a model)."""
        return len(self._pieces)

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def sos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 1

    @property
    def unk_id(self) -> int:
        return 2

    @property
    def alphabet(self) -> frozenset[str]:
        """Characters of the pieces (in the transcripts' case)."""
        chars = {c for p in self._pieces[3:] for c in (p[len(self.prefix) :] if p.startswith(self.prefix) else p)}
        return frozenset(self._restore(c) for c in chars)

    def tokens(self) -> list[str]:
        """The pieces in id order (what ``tokens.txt`` lists)."""
        return list(self._pieces)

    def id_to_piece(self, idx: int) -> str:
        if not 0 <= idx < self.vocab_size:
            raise IndexError(f"token id {idx} out of range [0, {self.vocab_size})")
        return self._pieces[int(idx)]

    def piece_to_id(self, piece: str) -> int:
        """Id of ``piece``; the ``<unk>`` id for a piece that is not in the lang dir."""
        return self._ids.get(piece, self.unk_id)

    # ------------------------------------------------------------------ encode / decode
    def _restore(self, s: str) -> str:
        return s.upper() if self.restore_case == "upper" else s

    def normalize(self, word: str) -> str:
        return normalize_word(word, lowercase=self.lowercase, strip_accents=self.strip_accents)

    def encode_word(self, word: str) -> list[int] | None:
        """Ids of one word, or None when it cannot be encoded exactly (no segmentation, or its
        normalised form does not give the word back)."""
        if word not in self._cache:
            norm = self.normalize(word)
            pieces = self.segmenter(norm) if self._restore(norm) == word else None
            self._cache[word] = None if pieces is None else [self._ids[p] for p in pieces]
        return self._cache[word]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; never contains blank, ``<sos/eos>`` or ``<unk>``.

        Raises:
            UntokenizableError: ``text`` is empty, or has words the lang dir's pieces cannot spell or whose
                normalisation is lossy (the message lists them).
        """
        words = text.split()
        if not words:
            raise UntokenizableError(f"cannot tokenize empty text {text!r}")
        out, bad = [], []
        for w in words:
            ids = self.encode_word(w)
            if ids is None:
                bad.append(w)
            else:
                out.extend(ids)
        if bad:
            raise UntokenizableError(
                f"words {sorted(set(bad))} have no exact spelling in the {self.vocab_size - 3} WordPiece units of "
                f"{self.lang_dir} (they would be {UNK}; text: {text!r})"
            )
        return out

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``: blank and ``<sos/eos>`` dropped, ``##`` pieces joined to the word before them,
        the case restored; ``<unk>`` stays a word of its own."""
        words: list[str] = []
        glue = False  # may the next continuation piece join words[-1]?
        for i in ids:
            i = int(i)
            if i in (self.blank_id, self.sos_id):
                continue
            p = self.id_to_piece(i)
            if i == self.unk_id:
                words.append(UNK)
                glue = False
            elif p.startswith(self.prefix) and len(p) > len(self.prefix):
                body = self._restore(p[len(self.prefix) :])
                if glue:
                    words[-1] += body
                else:
                    words.append(body)
                    glue = True
            else:
                words.append(self._restore(p))
                glue = True
        return " ".join(words)

    def decode_batch(self, batch: Iterable[Sequence[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def encode_as_pieces(self, text: str) -> list[str]:
        return [self.id_to_piece(i) for i in self.encode(text)]

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({str(self.lang_dir)!r}, vocab_size={self.vocab_size})"
