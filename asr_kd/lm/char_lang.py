"""A character lang dir (tokens = characters) in icefall's layout, for character-level graphs.

:func:`write_char_lang_dir` writes, from training transcripts (one sentence per line):

- ``tokens.txt``: ``<blk> 0``, ``<sos/eos> 1``, ``<unk> 2``, then every character of the text
  (sorted) from id 3;
- ``words.txt``: ``<eps> 0``, ``<UNK> 1``, the words (sorted), ``#0``, ``<s>``, ``</s>``;
- ``lexicon.txt``: ``<UNK> <unk>``, then ``WORD c1 c2 ...`` for every word;
- ``transcript_words.txt``: the transcripts (for ``asr_kd.bin.train_lm``);
- and, through :func:`asr_kd.lm.lang.write_disambig_files`, ``lexicon_disambig.txt`` (``#1``, ``#2``...
  on spellings that are a prefix of another word's or shared), ``tokens_disambig.txt`` (``#0..#K``
  after the characters) and ``L_disambig.fst``.

HL / HLG graphs are built from it like from a BPE lang dir (:func:`asr_kd.decoding.hlg.get_hlg`).
There is no ``bpe.model``: a model trained on characters needs its own tokenizer.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from asr_kd.lm.lang import LangError, _write_lines, write_disambig_files

__all__ = ["CHAR_SPECIALS", "RESERVED_WORDS", "write_char_lang_dir"]

#: the first token ids of a char lang dir (icefall's ``<blk>``, ``<sos/eos>``, ``<unk>``)
CHAR_SPECIALS = ("<blk>", "<sos/eos>", "<unk>")
#: symbols of ``words.txt`` a transcript word may not be
RESERVED_WORDS = ("<eps>", "<UNK>", "#0", "<s>", "</s>")


def clean_transcripts(text_lines, *, where: str, empty: str) -> tuple[list[str], Counter]:
    """Whitespace-normalised non-empty lines of ``text_lines`` and their word counts.

    A reserved word of ``words.txt`` (``<eps>``, ``#0``, ...) is a :class:`LangError` at ``"<where>:<lineno>"``;
    no non-empty line is a :class:`LangError` with the message ``empty``.
    """
    lines, counts = [], Counter()
    for lineno, line in enumerate(text_lines, 1):
        ws = line.split()
        if not ws:
            continue
        for w in ws:
            if w in RESERVED_WORDS or w.startswith("#"):
                raise LangError(f"{where}{lineno}: word {w!r} is a reserved symbol of words.txt")
        counts.update(ws)
        lines.append(" ".join(ws))
    if not lines:
        raise LangError(empty)
    return lines, counts


def _read_text(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise LangError(f"{path}: not found")
    with open(path, encoding="utf-8") as f:
        lines, counts = clean_transcripts(f, where=f"{path}:", empty=f"{path}: no transcripts")
    return lines, sorted(counts)


def write_char_lang_dir(text: str | Path, lang_dir: str | Path) -> dict[str, int]:
    """Write the char lang dir of the transcripts ``text`` into ``lang_dir`` (see the module docstring).

    Raises:
        LangError: ``text`` missing or empty, or a word that is a reserved symbol (``<UNK>``, ``#0``,
            ``<s>``...; the message names the file and line).

    Returns:
        ``{"tokens": V, "words": ..., "max_disambig": K, "L_states": ..., "L_arcs": ...}``.
    """
    text, lang_dir = Path(text), Path(lang_dir)
    lines, words = _read_text(text)
    chars = sorted({c for w in words for c in w})
    lang_dir.mkdir(parents=True, exist_ok=True)
    tokens = [*CHAR_SPECIALS, *chars]
    _write_lines(lang_dir / "tokens.txt", [f"{t} {i}" for i, t in enumerate(tokens)])
    symbols = ["<eps>", "<UNK>", *words, "#0", "<s>", "</s>"]
    _write_lines(lang_dir / "words.txt", [f"{w} {i}" for i, w in enumerate(symbols)])
    _write_lines(lang_dir / "lexicon.txt", ["<UNK> <unk>", *(f"{w} {' '.join(w)}" for w in words)])
    if (lang_dir / "transcript_words.txt").resolve() != text.resolve():
        _write_lines(lang_dir / "transcript_words.txt", lines)
    info = write_disambig_files(lang_dir)
    return {"tokens": len(tokens), "words": len(words), **info}
