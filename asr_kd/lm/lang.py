"""Lang-dir files for WFST graphs (icefall's layout) and their checks.

A lang dir written by :func:`asr_kd.data.tokenizer.train_bpe` holds ``bpe.model``, ``tokens.txt``
(the model's V pieces, blank = 0), ``words.txt`` (``<eps>`` 0, ``<UNK>``, the words, ``#0``,
``<s>``, ``</s>``), ``lexicon.txt`` (BPE spellings) and ``lexicon_char.txt``.
:func:`write_disambig_files` adds what graph compilation needs:

- ``lexicon_disambig.txt`` / ``lexicon_char_disambig.txt``: the lexicons with ``#1``, ``#2``...
  appended to spellings that are a prefix of another spelling or shared by several words
  (Kaldi's ``add_lex_disambig.pl``, icefall's ``add_disambig_symbols``); ``#0`` is kept for the
  backoff arcs of G.
- ``tokens_disambig.txt``: ``tokens.txt`` plus ``#0 .. #K`` with ids ``V .. V + K`` (icefall
  appends them to ``tokens.txt`` itself; here ``tokens.txt`` stays the model's vocabulary, which
  bundles and the vocabulary checks read).
- ``L_disambig.fst``: the lexicon FST with the disambiguation symbols and the ``#0:#0`` self-loop
  on its loop state (kaldifst binary; input token ids, output word ids).

Bad input raises :class:`LangError` naming the file and the line: a malformed ``symbol id``
line, a duplicate symbol or id, a lexicon line without a spelling, a lexicon word missing from
``words.txt``, a token missing from ``tokens.txt``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = [
    "LangError",
    "LexiconEntry",
    "read_symbols",
    "read_lexicon_entries",
    "check_lexicon",
    "add_disambig_symbols",
    "disambig_token_table",
    "build_lexicon_disambig_fst",
    "write_disambig_files",
    "load_lexicon_ids",
    "is_disambig",
    "with_backoff_symbol",
    "num_arcs",
]

DISAMBIG_FILES = ("lexicon_disambig.txt", "tokens_disambig.txt", "L_disambig.fst")


class LangError(ValueError):
    """A malformed or inconsistent lang-dir file; the message names the file and the line."""


@dataclass(frozen=True)
class LexiconEntry:
    word: str
    units: tuple[str, ...]
    line: int  # 1-based line in its file


def is_disambig(sym: str) -> bool:
    """``#0``, ``#1``, ...: a disambiguation symbol."""
    return len(sym) > 1 and sym[0] == "#" and sym[1:].isdigit()


def read_symbols(path: str | Path) -> dict[str, int]:
    """Read a ``symbol id`` table (``tokens.txt``, ``words.txt``), checking every line."""
    path = Path(path)
    if not path.is_file():
        raise LangError(f"{path}: not found")
    out: dict[str, int] = {}
    seen_ids: dict[int, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise LangError(f"{path}:{lineno}: expected '<symbol> <id>', got {line.rstrip()!r}")
            sym, idx = parts[0], int(parts[1])
            if idx < 0:
                raise LangError(f"{path}:{lineno}: negative id {idx}")
            if sym in out:
                raise LangError(f"{path}:{lineno}: duplicate symbol {sym!r} (first with id {out[sym]})")
            if idx in seen_ids:
                raise LangError(f"{path}:{lineno}: id {idx} is already used on line {seen_ids[idx]}")
            out[sym] = idx
            seen_ids[idx] = lineno
    if not out:
        raise LangError(f"{path}: empty symbol table")
    return out


def read_lexicon_entries(path: str | Path) -> list[LexiconEntry]:
    """Read a ``word unit unit ...`` lexicon, keeping line numbers (homophones kept in order)."""
    path = Path(path)
    if not path.is_file():
        raise LangError(f"{path}: not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise LangError(f"{path}:{lineno}: word {parts[0]!r} has no spelling")
            out.append(LexiconEntry(parts[0], tuple(parts[1:]), lineno))
    if not out:
        raise LangError(f"{path}: empty lexicon")
    return out


def check_lexicon(
    entries: Sequence[LexiconEntry],
    words: Mapping[str, int],
    tokens: Mapping[str, int],
    *,
    lexicon_path: str | Path = "lexicon.txt",
    words_path: str | Path = "words.txt",
    tokens_path: str | Path = "tokens.txt",
) -> None:
    """Every lexicon word is in ``words.txt`` and every unit in ``tokens.txt``; no epsilon/blank units."""
    blank = {s for s, i in tokens.items() if i == 0}
    for e in entries:
        if e.word not in words:
            raise LangError(f"{lexicon_path}:{e.line}: word {e.word!r} is not in {words_path}")
        if words[e.word] == 0:
            raise LangError(f"{lexicon_path}:{e.line}: word {e.word!r} has id 0 (epsilon) in {words_path}")
        for u in e.units:
            if is_disambig(u):
                raise LangError(f"{lexicon_path}:{e.line}: {e.word!r} is spelt with the disambiguation symbol {u!r}")
            if u not in tokens:
                raise LangError(f"{lexicon_path}:{e.line}: token {u!r} (of {e.word!r}) is not in {tokens_path}")
            if u in blank:
                raise LangError(f"{lexicon_path}:{e.line}: token {u!r} (of {e.word!r}) has id 0 (blank/epsilon)")


def add_disambig_symbols(entries: Sequence[LexiconEntry]) -> tuple[list[LexiconEntry], int]:
    """Append ``#1``, ``#2``, ... so that no spelling is a prefix of another or shared.

    A spelling shared by k words gets ``#1 .. #k`` (one each); a spelling that is a proper prefix
    of another gets a ``#i`` too. Returns the new entries and the largest ``i`` used (0: none).
    """
    count = Counter(e.units for e in entries)
    prefixes = set()
    for units in count:
        for i in range(1, len(units)):
            prefixes.add(units[:i])
    last: dict[tuple[str, ...], int] = {}
    max_disambig = 0
    out = []
    for e in entries:
        units = e.units
        if units in prefixes or count[units] > 1:
            last[units] = last.get(units, 0) + 1
            max_disambig = max(max_disambig, last[units])
            units = (*units, f"#{last[units]}")
        out.append(LexiconEntry(e.word, units, e.line))
    return out, max_disambig


def disambig_token_table(tokens: Mapping[str, int], max_disambig: int) -> dict[str, int]:
    """``tokens`` plus ``#0 .. #max_disambig`` numbered from ``max(id) + 1``."""
    out = {s: i for s, i in tokens.items() if not is_disambig(s)}
    nxt = max(out.values()) + 1
    for k in range(max_disambig + 1):
        out[f"#{k}"] = nxt + k
    return out


def build_lexicon_disambig_fst(entries: Sequence[LexiconEntry], tokens: Mapping[str, int], words: Mapping[str, int]):
    """L with disambiguation symbols (icefall's ``lexicon_to_fst_no_sil`` with ``#0`` self-loop).

    State 0 is the start, the loop state and the only final state. A spelling ``u1 .. un`` is a
    chain from 0 back to 0; its first arc outputs the word, the others epsilon. ``#0:#0`` loops on
    state 0 (it passes G's backoff symbol through ``L o G``). Entries must be checked already
    (:func:`check_lexicon` on ``tokens`` with the ``#k``).
    """
    import kaldifst as kf  # noqa: PLC0415

    L = kf.StdVectorFst()
    L.add_state()
    L.start = 0
    L.set_final(0, 0.0)
    for e in entries:
        src = 0
        for i, u in enumerate(e.units):
            dst = 0 if i == len(e.units) - 1 else L.add_state()
            L.add_arc(src, kf.StdArc(tokens[u], words[e.word] if i == 0 else 0, 0.0, dst))
            src = dst
    if "#0" not in tokens or "#0" not in words:
        raise LangError("L_disambig: '#0' must be in both the token table and words.txt")
    L.add_arc(0, kf.StdArc(tokens["#0"], words["#0"], 0.0, 0))
    return L


def load_lexicon_ids(lang_dir: str | Path, lexicon: str = "lexicon.txt"):
    """Read and check a lang dir's tables and lexicon; add the disambiguation symbols.

    Returns ``(tokens, words, entries_disambig, tokens_disambig, max_disambig)`` where ``tokens``
    is ``tokens.txt`` (the model's pieces; any ``#k`` lines dropped), ``tokens_disambig`` adds
    ``#0 .. #K``. A ``words.txt`` without ``#0`` (G's backoff symbol; fine for HL) is not an error
    here: :func:`with_backoff_symbol` adds one for L.
    """
    lang_dir = Path(lang_dir)
    tokens_path, words_path, lex_path = lang_dir / "tokens.txt", lang_dir / "words.txt", lang_dir / lexicon
    tokens = {s: i for s, i in read_symbols(tokens_path).items() if not is_disambig(s)}
    words = read_symbols(words_path)
    entries = read_lexicon_entries(lex_path)
    check_lexicon(entries, words, tokens, lexicon_path=lex_path, words_path=words_path, tokens_path=tokens_path)
    dis, max_disambig = add_disambig_symbols(entries)
    return tokens, words, dis, disambig_token_table(tokens, max_disambig), max_disambig


def with_backoff_symbol(words: Mapping[str, int]) -> dict[str, int]:
    """``words`` with ``#0`` (numbered after the largest id) when it has none."""
    out = dict(words)
    if "#0" not in out:
        out["#0"] = max(out.values()) + 1
    return out


def _write_lines(path: Path, rows: Sequence[str]) -> None:
    """Write ``rows``, one a line, to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _write_lexicon(path: Path, entries: Sequence[LexiconEntry]) -> None:
    _write_lines(path, [f"{e.word} {' '.join(e.units)}" for e in entries])


def write_disambig_files(lang_dir: str | Path) -> dict[str, int]:
    """Write ``lexicon_disambig.txt``, ``tokens_disambig.txt``, ``L_disambig.fst`` (and
    ``lexicon_char_disambig.txt`` when ``lexicon_char.txt`` exists) into ``lang_dir``.

    Returns ``{"max_disambig": K, "L_states": ..., "L_arcs": ...}``.
    """
    import kaldifst as kf  # noqa: PLC0415

    lang_dir = Path(lang_dir)
    tokens, words, dis, tok_dis, max_disambig = load_lexicon_ids(lang_dir)
    _write_lexicon(lang_dir / "lexicon_disambig.txt", dis)
    with open(lang_dir / "tokens_disambig.txt", "w", encoding="utf-8") as f:
        for s, i in sorted(tok_dis.items(), key=lambda kv: kv[1]):
            f.write(f"{s} {i}\n")
    if "#0" not in words:
        raise LangError(f"{lang_dir / 'words.txt'}: no '#0' (G's backoff symbol); rewrite it with prepare_lang")
    L = build_lexicon_disambig_fst(dis, tok_dis, words)
    kf.arcsort(L, sort_type="olabel")
    L.write(str(lang_dir / "L_disambig.fst"))
    char = lang_dir / "lexicon_char.txt"
    if char.is_file():
        entries = read_lexicon_entries(char)
        for e in entries:
            if e.word not in words:
                raise LangError(f"{char}:{e.line}: word {e.word!r} is not in {lang_dir / 'words.txt'}")
        char_dis, _ = add_disambig_symbols(entries)
        _write_lexicon(lang_dir / "lexicon_char_disambig.txt", char_dis)
    info = {"max_disambig": max_disambig, "L_states": L.num_states, "L_arcs": num_arcs(L)}
    log.info("%s: lexicon_disambig.txt (#1..#%d), tokens_disambig.txt, L_disambig.fst %s", lang_dir, max_disambig, info)
    return info


def num_arcs(fst) -> int:
    """The number of arcs of a kaldifst FST."""
    return sum(fst.num_arcs(s) for s in range(fst.num_states))
