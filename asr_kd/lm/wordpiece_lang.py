"""A WordPiece lang dir (tokens = a BERT tokenizer's WordPiece units) in icefall's layout, for a student whose
CTC predicts the same units as an MLM teacher (:class:`asr_kd.data.wordpiece_tokenizer.WordPieceTokenizer`).

:func:`write_wordpiece_lang_dir` writes, from a local Hugging Face fast WordPiece tokenizer and the training
transcripts (one sentence per line):

- ``tokens.txt``: ``<blk> 0``, ``<sos/eos> 1``, ``<unk> 2``, then the kept units in the order of their ids in
  the source tokenizer. Kept: every piece of the segmentation of a train word, plus every single character
  of the (normalised) text and its ``##`` form when the source vocabulary has them, so that any word spelt
  with those characters can still be encoded;
- ``wordpiece.json``: the settings the tokenizer reads (``lowercase``, ``strip_accents``, ``restore_case``,
  ``prefix``, ``max_chars_per_word``) and ``source`` (``dir``, vocabulary ``size``, ``sha256`` as
  :meth:`asr_kd.kd.wordpiece.WordPieceVocab.fingerprint`, ``unk_id``, and ``ids``: the source id of each
  unit from id 3 on);
- ``words.txt``: ``<eps> 0``, ``<UNK> 1``, the encodable words (sorted), ``#0``, ``<s>``, ``</s>``;
- ``lexicon.txt``: ``<UNK> <unk>``, then ``WORD piece piece ...`` for every encodable word;
- ``transcript_words.txt``: the transcripts (for ``asr_kd.bin.train_lm``);
- and, through :func:`asr_kd.lm.lang.write_disambig_files`, ``lexicon_disambig.txt``,
  ``tokens_disambig.txt`` and ``L_disambig.fst``, so HL / HLG graphs are built as for a BPE lang dir.

A train word is *unknown* when the full source vocabulary cannot segment it (it would be ``[UNK]``) or when the
normalisation changes it beyond the restored case (accents, ``ß``): it is left out of ``words.txt`` and the
lexicon, and is counted in the report (logged, and returned as ``unknown``), as utterances holding one are
refused by the tokenizer (dataset validation drops them).

Usage::

    info = write_wordpiece_lang_dir("exp/mlm_minilm", Path("data/text/train.txt"), "data/lang_wp")
    info["tokens"], info["unknown"]       # V, {"WORD": occurrences, ...}
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asr_kd.data.tokenizer import tokens_digest
from asr_kd.data.wordpiece_tokenizer import (
    RESTORE_CASE,
    WORDPIECE_JSON,
    WP_SPECIALS,
    WordPieceSegmenter,
    normalize_word,
)
from asr_kd.lm.char_lang import clean_transcripts
from asr_kd.lm.lang import LangError, _write_lines, is_disambig, write_disambig_files

__all__ = ["WordPieceSource", "load_wordpiece_source", "write_wordpiece_lang_dir"]

log = logging.getLogger(__name__)

#: what ``restore_case`` may be (``auto``: ``upper`` when the tokenizer lowercases and the text is upper-case)
RESTORE_CASE_OPTIONS = ("auto", *RESTORE_CASE)


class WordPieceSource:
    """The parts of a Hugging Face WordPiece tokenizer a lang dir needs.

    Attributes: ``dir``, ``pieces`` (the V pieces in id order), ``specials`` (its special tokens), ``unk_id``,
    ``prefix`` (``##``), ``max_chars`` (``max_input_chars_per_word``), ``lowercase``, ``strip_accents``.
    """

    def __init__(self, tokenizer: Any, folder: Path):
        self.dir = folder
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        model = spec.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ValueError(f"{folder}: not a WordPiece tokenizer (its model is {model.get('type')!r})")
        self.prefix = str(model.get("continuing_subword_prefix") or "##")
        self.max_chars = int(model.get("max_input_chars_per_word") or 100)
        self.lowercase, self.strip_accents = _normalizer_flags(spec.get("normalizer"), folder)
        self.pieces: list[str] = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.specials = set(tokenizer.all_special_tokens)
        unk = model.get("unk_token") or tokenizer.unk_token
        if unk is None or tokenizer.convert_tokens_to_ids(unk) is None:
            raise ValueError(f"{folder}: the tokenizer has no unknown token")
        self.unk_id = int(tokenizer.convert_tokens_to_ids(unk))

    def fingerprint(self) -> dict:
        """``{"size": V, "sha256": ...}`` (the same as :meth:`asr_kd.kd.wordpiece.WordPieceVocab.fingerprint`)."""
        return {"size": len(self.pieces), "sha256": tokens_digest(self.pieces)}


def _normalizer_flags(norm: dict | None, folder: Path) -> tuple[bool, bool]:
    """(lowercase, strip_accents) of a tokenizer.json normalizer; other normalisers are refused."""
    lowercase = strip = False
    stack = [norm] if norm else []
    while stack:
        n = stack.pop(0)
        kind = n.get("type")
        if kind == "Sequence":
            stack = list(n.get("normalizers") or []) + stack
        elif kind == "BertNormalizer":
            lowercase = lowercase or bool(n.get("lowercase", True))
            sa = n.get("strip_accents")
            strip = strip or (bool(n.get("lowercase", True)) if sa is None else bool(sa))
        elif kind == "Lowercase":
            lowercase = True
        elif kind == "StripAccents":
            strip = True
        elif kind in ("NFD", "NFKD", "NFC", "NFKC"):
            pass  # transcripts are NFC text; the segmentation decomposes only to strip accents
        else:
            raise ValueError(f"{folder}: normalizer {kind!r} is not supported by a WordPiece lang dir")
    return lowercase, strip


def load_wordpiece_source(tokenizer_dir: str | Path) -> WordPieceSource:
    """Load a local fast WordPiece tokenizer folder (``local_files_only``).

    Raises:
        FileNotFoundError: ``tokenizer_dir`` is not a folder.
        ValueError: it holds no fast tokenizer, or one that is not WordPiece / has an unsupported normaliser.
    """
    folder = Path(tokenizer_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such tokenizer folder")
    from transformers import AutoTokenizer  # noqa: PLC0415

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{folder}: no Hugging Face tokenizer could be loaded ({e})") from e
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{folder}: a fast tokenizer (tokenizer.json or vocab.txt) is needed")
    return WordPieceSource(tok, folder)


def _lines(text_lines: Iterable[str] | Path) -> Iterable[str]:
    if isinstance(text_lines, str):
        raise TypeError("text_lines must be an iterable of lines or a Path, not one str")
    if isinstance(text_lines, Path):
        if not text_lines.is_file():
            raise LangError(f"{text_lines}: not found")
        with open(text_lines, encoding="utf-8") as f:
            yield from f
    else:
        yield from text_lines


def write_wordpiece_lang_dir(
    tokenizer_dir: str | Path,
    text_lines: Iterable[str] | Path,
    out_dir: str | Path,
    *,
    restore_case: str = "auto",
    max_report: int = 20,
) -> dict[str, Any]:
    """Write the WordPiece lang dir of the transcripts ``text_lines`` into ``out_dir`` (module docstring).

    Args:
        tokenizer_dir: a local Hugging Face fast WordPiece tokenizer folder (e.g. the MLM teacher's).
        text_lines: the training transcripts, one sentence a line (an iterable of lines, or a file's Path).
        out_dir: the lang dir (created).
        restore_case: ``upper`` (an upper-case corpus read by an uncased tokenizer), ``none``, or ``auto``
            (``upper`` when the tokenizer lowercases and every word of the text is upper-case, else ``none``).
        max_report: how many of the most frequent unknown words are logged.

    Raises:
        FileNotFoundError / ValueError: see :func:`load_wordpiece_source`; ValueError for a bad ``restore_case``.
        LangError: no transcripts, or a word that is a reserved symbol of ``words.txt`` (``<UNK>``, ``#0``...).

    Returns:
        ``{"tokens": V, "units": V - 3, "words": encodable words, "source_size": ..., "restore_case": ...,
        "unknown": {word: occurrences} (most frequent first), "unknown_words": ..., "unknown_occurrences": ...,
        "word_occurrences": ..., "max_disambig": K, "L_states": ..., "L_arcs": ...}``.
    """
    if restore_case not in RESTORE_CASE_OPTIONS:
        raise ValueError(f"restore_case must be one of {RESTORE_CASE_OPTIONS}, got {restore_case!r}")
    src = load_wordpiece_source(tokenizer_dir)
    out_dir = Path(out_dir)

    lines, counts = clean_transcripts(
        _lines(text_lines), where="text line ", empty="no transcripts (every text line is empty)"
    )

    if restore_case == "auto":
        restore_case = "upper" if src.lowercase and all(w == w.upper() for w in counts) else "none"

    def restore(s: str) -> str:
        return s.upper() if restore_case == "upper" else s

    vocab = {p: i for i, p in enumerate(src.pieces)}
    banned = src.specials | set(WP_SPECIALS)
    segment = WordPieceSegmenter(
        [p for p in src.pieces if p not in banned and not is_disambig(p)], src.prefix, src.max_chars
    )
    kept: set[int] = set()
    spellings: dict[str, list[str]] = {}
    unknown: Counter = Counter()
    for word, n in counts.items():
        norm = normalize_word(word, lowercase=src.lowercase, strip_accents=src.strip_accents)
        for c in norm:  # every character of the text, as a word start and as a continuation
            for p in (c, src.prefix + c):
                if p in vocab and p not in banned and not is_disambig(p):
                    kept.add(vocab[p])
        pieces = segment(norm) if restore(norm) == word else None
        if pieces is None:
            unknown[word] = n
            continue
        spellings[word] = pieces
        kept.update(vocab[p] for p in pieces)

    ids = sorted(kept)
    units = [src.pieces[i] for i in ids]
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = [*WP_SPECIALS, *units]
    _write_lines(out_dir / "tokens.txt", [f"{t} {i}" for i, t in enumerate(tokens)])
    config = {
        "lowercase": src.lowercase,
        "strip_accents": src.strip_accents,
        "restore_case": restore_case,
        "prefix": src.prefix,
        "max_chars_per_word": src.max_chars,
        "source": {"dir": str(src.dir), **src.fingerprint(), "unk_id": src.unk_id, "ids": ids},
    }
    (out_dir / WORDPIECE_JSON).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    words = sorted(spellings)
    symbols = ["<eps>", "<UNK>", *words, "#0", "<s>", "</s>"]
    _write_lines(out_dir / "words.txt", [f"{w} {i}" for i, w in enumerate(symbols)])
    _write_lines(out_dir / "lexicon.txt", ["<UNK> <unk>", *(f"{w} {' '.join(spellings[w])}" for w in words)])
    _write_lines(out_dir / "transcript_words.txt", lines)
    info = write_disambig_files(out_dir)

    total = sum(counts.values())
    unk_occ = sum(unknown.values())
    report = dict(unknown.most_common())
    if unknown:
        top = ", ".join(f"{w!r} x{c}" for w, c in unknown.most_common(max_report))
        log.warning(
            "%s: %d of %d words (%d of %d occurrences) have no WordPiece spelling in %s (restore_case=%s): %s",
            out_dir,
            len(unknown),
            len(counts),
            unk_occ,
            total,
            src.dir,
            restore_case,
            top,
        )
    log.info("%s: %d of %d WordPiece units of %s, %d words", out_dir, len(units), len(src.pieces), src.dir, len(words))
    return {
        "tokens": len(tokens),
        "units": len(units),
        "words": len(words),
        "source_size": len(src.pieces),
        "restore_case": restore_case,
        "unknown": report,
        "unknown_words": len(unknown),
        "unknown_occurrences": unk_occ,
        "word_occurrences": total,
        **info,
    }
