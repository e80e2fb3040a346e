"""A validating ARPA n-gram reader and scorer (backoff semantics, log10).

ARPA layout read by :func:`read_arpa`::

    \\data\\
    ngram 1=<count>
    ...
    ngram N=<count>

    \\1-grams:
    <log10 p>  w              [<log10 backoff>]
    ...
    \\N-grams:
    <log10 p>  w1 ... wN                          (no backoff at the highest order)

    \\end\\

Every malformed line raises :class:`ArpaFormatError` naming the file and the line (1-based): a
missing ``\\data\\`` header, an unknown line, a field that is not a number, a wrong number of
words, a duplicate n-gram, an n-gram whose history is not listed, a section whose entry count
differs from its ``ngram n=`` line, or a missing ``\\end\\``.

Scoring (:meth:`ArpaLM.logprob`) follows the ARPA backoff rule:
``p(w | h) = p(h w)`` when ``h w`` is listed, else ``bow(h) * p(w | h[1:])`` (``bow`` = 1 when
``h`` is not listed or has no backoff weight). ``<s>`` is only a history; words missing from the
unigrams are scored as the unknown word (``<unk>`` by default) when the model has one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ArpaFormatError", "ArpaLM", "read_arpa", "parse_arpa_text"]

BOS = "<s>"
EOS = "</s>"


class ArpaFormatError(ValueError):
    """A malformed ARPA file; the message names the file and the line."""


@dataclass
class ArpaLM:
    """An ARPA back-off n-gram model.

    Attributes:
        order: highest order N.
        probs: ``probs[n - 1][ngram] = log10 p`` for the n-grams of order n (tuples of words).
        backoffs: ``{ngram: log10 backoff}`` for the n-grams that list one (orders < N).
        unk: the unknown-word symbol used for out-of-vocabulary words (None: OOVs raise KeyError).
        path: where the model was read from (for messages).
    """

    order: int
    probs: list[dict[tuple[str, ...], float]]
    backoffs: dict[tuple[str, ...], float] = field(default_factory=dict)
    unk: str | None = "<unk>"
    path: str = "<text>"

    @property
    def vocab(self) -> list[str]:
        """The predicted words: every unigram except ``<s>`` (``</s>`` included)."""
        return [g[0] for g in self.probs[0] if g[0] != BOS]

    def counts(self) -> list[int]:
        return [len(p) for p in self.probs]

    def _word(self, w: str) -> str:
        if (w,) in self.probs[0]:
            return w
        if self.unk is not None and (self.unk,) in self.probs[0]:
            return self.unk
        raise KeyError(f"{self.path}: word {w!r} is not in the LM's vocabulary (and it has no {self.unk!r})")

    def logprob(self, word: str, history: Sequence[str] = ()) -> float:
        """log10 p(word | history) (the history is truncated to the last N - 1 words)."""
        word = self._word(word)
        hist = tuple(history)[-(self.order - 1) :] if self.order > 1 else ()
        hist = tuple(h if h == BOS else self._word(h) for h in hist)
        return self.backoff_logprob(hist, word)[0]

    def backoff_logprob(self, hist: tuple[str, ...], word: str) -> tuple[float, int]:
        """``(log10 p(word | hist), length of the n-gram matched)`` by the back-off rule: the longest listed
        ``hist[i:] + (word,)``, plus the backoffs of the longer histories; ``word`` and the (at most N - 1)
        ``hist`` words must be in the vocabulary."""
        bow = 0.0
        for start in range(len(hist) + 1):
            h = hist[start:]
            g = (*h, word)
            p = self.probs[len(g) - 1].get(g)
            if p is not None:
                return bow + p, len(g)
            bow += self.backoffs.get(h, 0.0)
        raise AssertionError(f"unreachable: every word is a unigram ({word!r} is not)")  # pragma: no cover

    def score(self, words: Sequence[str] | str, *, bos: bool = True, eos: bool = True) -> float:
        """log10 probability of a sentence (``kenlm.Model.score`` semantics)."""
        if isinstance(words, str):
            words = words.split()
        hist: list[str] = [BOS] if bos else []
        total = 0.0
        for w in [*words, EOS] if eos else list(words):
            total += self.logprob(w, hist)
            hist.append(w)
        return total

    def perplexity(self, sentences: Iterable[Sequence[str] | str]) -> float:
        """10 ** (-sum log10 p / number of predicted tokens), ``</s>`` counted per sentence."""
        total, n = 0.0, 0
        for s in sentences:
            words = s.split() if isinstance(s, str) else list(s)
            total += self.score(words)
            n += len(words) + 1
        return 10.0 ** (-total / max(n, 1))

    def histories(self) -> list[tuple[str, ...]]:
        """Every listed n-gram of order < N that can be a history (not ending in ``</s>``)."""
        return [g for p in self.probs[: self.order - 1] for g in p if g[-1] != EOS]


def _fail(path: str, lineno: int, msg: str, line: str | None = None) -> ArpaFormatError:
    where = f"{path}:{lineno}" if lineno else str(path)
    shown = f": {line.strip()!r}" if line is not None else ""
    return ArpaFormatError(f"{where}: {msg}{shown}")


def _float(tok: str, path: str, lineno: int, line: str, what: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise _fail(path, lineno, f"{what} {tok!r} is not a number", line) from None
    if math.isnan(v):
        raise _fail(path, lineno, f"{what} is NaN", line)
    return v


def parse_arpa_text(text: str, path: str = "<text>", *, unk: str | None = "<unk>") -> ArpaLM:
    """Parse and validate ARPA text (see the module docstring); ``path`` is named in errors."""
    lines = text.splitlines()
    i = 0
    n_lines = len(lines)

    def next_nonblank(i: int) -> int:
        while i < n_lines and not lines[i].strip():
            i += 1
        return i

    i = next_nonblank(i)
    if i >= n_lines or lines[i].strip() != "\\data\\":
        raise _fail(
            path, i + 1 if i < n_lines else 0, "expected the ARPA header '\\data\\'", lines[i] if i < n_lines else None
        )
    i += 1
    declared: dict[int, tuple[int, int]] = {}  # order -> (count, lineno)
    while True:
        i = next_nonblank(i)
        if i >= n_lines:
            raise _fail(path, 0, "no n-gram sections after '\\data\\'")
        line = lines[i].strip()
        if not line.startswith("ngram "):
            break
        spec = line[len("ngram ") :].replace(" ", "")
        try:
            n_str, c_str = spec.split("=")
            n, c = int(n_str), int(c_str)
        except ValueError:
            raise _fail(path, i + 1, "malformed 'ngram N=count' line", lines[i]) from None
        if n != len(declared) + 1 or c < 0:
            raise _fail(path, i + 1, f"expected 'ngram {len(declared) + 1}=<count>'", lines[i])
        declared[n] = (c, i + 1)
        i += 1
    if not declared:
        raise _fail(path, i + 1, "no 'ngram N=count' lines after '\\data\\'", lines[i])
    order = len(declared)
    probs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    backoffs: dict[tuple[str, ...], float] = {}
    cur = 0
    section_line = 0
    ended = False
    while i < n_lines:
        raw = lines[i]
        line = raw.strip()
        lineno = i + 1
        i += 1
        if not line:
            continue
        if line == "\\end\\":
            ended = True
            break
        if line.startswith("\\"):
            if not (line.endswith("-grams:") and line[1:-7].isdigit()):
                raise _fail(path, lineno, "unknown section header", raw)
            n = int(line[1:-7])
            if n != cur + 1 or n > order:
                raise _fail(
                    path, lineno, f"expected section '\\{cur + 1}-grams:'" if cur < order else "extra section", raw
                )
            if cur:
                _check_count(path, cur, probs, declared, section_line)
            cur, section_line = n, lineno
            continue
        if cur == 0:
            raise _fail(path, lineno, "n-gram line before any '\\N-grams:' section", raw)
        parts = line.split()
        if len(parts) not in (cur + 1, cur + 2) or (len(parts) == cur + 2 and cur == order):
            expect = f"log10 prob, {cur} word{'s' if cur > 1 else ''}" + (", optional backoff" if cur < order else "")
            raise _fail(path, lineno, f"a {cur}-gram line needs {expect}; got {len(parts)} fields", raw)
        logp = _float(parts[0], path, lineno, raw, "log10 probability")
        if logp > 0:
            raise _fail(path, lineno, f"log10 probability {logp} > 0", raw)
        words = tuple(parts[1 : 1 + cur])
        if words in probs[cur - 1]:
            raise _fail(path, lineno, f"duplicate {cur}-gram {' '.join(words)!r}", raw)
        if cur > 1 and words[:-1] not in probs[cur - 2]:
            raise _fail(
                path, lineno, f"history {' '.join(words[:-1])!r} of this {cur}-gram is not a listed {cur - 1}-gram", raw
            )
        probs[cur - 1][words] = logp
        if len(parts) == cur + 2:
            backoffs[words] = _float(parts[-1], path, lineno, raw, "log10 backoff")
    if not ended:
        raise _fail(path, n_lines, "missing '\\end\\'")
    if cur != order:
        raise _fail(
            path, declared[cur + 1][1], f"'ngram {cur + 1}=' is declared but there is no '\\{cur + 1}-grams:' section"
        )
    _check_count(path, cur, probs, declared, section_line)
    for j in range(i, n_lines):
        if lines[j].strip():
            raise _fail(path, j + 1, "text after '\\end\\'", lines[j])
    return ArpaLM(order=order, probs=probs, backoffs=backoffs, unk=unk, path=str(path))


def _check_count(path, n, probs, declared, section_line):
    want, decl_line = declared[n]
    got = len(probs[n - 1])
    if got != want:
        raise _fail(
            path,
            section_line,
            f"section '\\{n}-grams:' has {got} entries but line {decl_line} declares ngram {n}={want}",
        )


def read_arpa(path: str | Path, *, unk: str | None = "<unk>") -> ArpaLM:
    """Read and validate an ARPA file (errors name the file and line: :class:`ArpaFormatError`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ArpaFormatError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
    return parse_arpa_text(text, str(path), unk=unk)
