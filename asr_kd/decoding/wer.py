"""WER / CER scoring with kaldialign, icefall-style result files, and real-time factor timing.

A *result* is one utterance: ``(cut_id, ref, hyp)`` where ``ref`` and ``hyp`` are either a string
(split on whitespace into words) or a list of words.

Files (``res_dir/<kind>-<test_set>-<suffix>.txt``, see :func:`result_path`):

- ``recogs-*.txt`` (:func:`write_recogs`): for every utterance, sorted by cut id, two lines::

      <cut_id>:\\tref=['HELLO', 'WORLD']
      <cut_id>:\\thyp=['HELLO', 'WORD']

- ``errs-*.txt`` (:func:`write_errs`): the overall ``%WER = 12.34`` line, an ``Errors:`` line with
  the insertion / deletion / substitution counts (and ``%CER`` when computed), then the sections
  ``PER-UTT DETAILS:`` (one line per utterance: correct words as-is, errors as ``(ref->hyp)`` with
  ``*`` for the empty side), ``SUBSTITUTIONS:`` (``count ref -> hyp``), ``DELETIONS:``
  (``count ref``), ``INSERTIONS:`` (``count hyp``) and ``PER-WORD STATS:``
  (``word corr tot_errs count_in_ref count_in_hyp``), each sorted by decreasing count. When cuts were
  skipped (``skipped=``: decoding with ``--on-error skip``), a ``SKIPPED CUTS:`` section before
  ``PER-UTT DETAILS:`` lists them (``cut_id reason``): they are scored as deletions (an empty
  hypothesis), so every reference word of a skipped cut is a deleted word.

CER: characters of the words. By default spaces are *not* symbols (``cer_keep_spaces=False``: the
words are concatenated, so a wrong word boundary costs nothing); with ``cer_keep_spaces=True`` the
single space between words is a symbol too (a missing boundary is a deletion).

Empty references: an error rate is ``errors / reference length`` in percent; with no reference
symbols it is 0 when there are no errors and ``inf`` otherwise.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import kaldialign

__all__ = [
    "WerResult",
    "compute_wer",
    "write_recogs",
    "write_errs",
    "write_wer_summary",
    "result_path",
    "Timer",
    "measure_rtf",
]

EPS = "*"
Words = str | Sequence[str]
Result = tuple[str, Words, Words]


@dataclass
class WerResult:
    """Error counts of a test set. ``wer``/``cer`` are percentages.

    ``cer`` and the ``char_*`` counts are None when CER was not computed.
    """

    wer: float
    ins: int
    dels: int
    subs: int
    num_ref_words: int
    num_utts: int
    cer: float | None = None
    char_ins: int | None = None
    char_dels: int | None = None
    char_subs: int | None = None
    num_ref_chars: int | None = None

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def corr(self) -> int:
        return self.num_ref_words - self.dels - self.subs


def _words(x: Words) -> list[str]:
    return x.split() if isinstance(x, str) else [str(w) for w in x]


def _chars(words: list[str], keep_spaces: bool) -> list[str]:
    return list(" ".join(words) if keep_spaces else "".join(words))


def _rate(errors: int, ref_len: int) -> float:
    if ref_len == 0:
        return 0.0 if errors == 0 else math.inf
    return 100.0 * errors / ref_len


def _counts(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    d = kaldialign.edit_distance(ref, hyp)
    return int(d["ins"]), int(d["del"]), int(d["sub"])


def compute_wer(results: Iterable[Result], *, compute_cer: bool = True, cer_keep_spaces: bool = False) -> WerResult:
    """WER (and CER) over all utterances (errors summed, then divided by the reference length).

    Args:
        results: ``(cut_id, ref, hyp)`` items.
        compute_cer: also compute the character error rate.
        cer_keep_spaces: count the space between words as a character (see module docstring).
    """
    ins = dels = subs = ref_words = utts = 0
    c_ins = c_dels = c_subs = ref_chars = 0
    for _, ref, hyp in results:
        r, h = _words(ref), _words(hyp)
        i, d, s = _counts(r, h)
        ins, dels, subs, ref_words, utts = ins + i, dels + d, subs + s, ref_words + len(r), utts + 1
        if compute_cer:
            rc, hc = _chars(r, cer_keep_spaces), _chars(h, cer_keep_spaces)
            i, d, s = _counts(rc, hc)
            c_ins, c_dels, c_subs = c_ins + i, c_dels + d, c_subs + s
            ref_chars += len(rc)
    res = WerResult(
        wer=_rate(ins + dels + subs, ref_words),
        ins=ins,
        dels=dels,
        subs=subs,
        num_ref_words=ref_words,
        num_utts=utts,
    )
    if compute_cer:
        res.cer = _rate(c_ins + c_dels + c_subs, ref_chars)
        res.char_ins, res.char_dels, res.char_subs = c_ins, c_dels, c_subs
        res.num_ref_chars = ref_chars
    return res


def result_path(res_dir: str | Path, kind: str, test_set: str, suffix: str) -> Path:
    """``res_dir / f"{kind}-{test_set}-{suffix}.txt"`` (kind: ``recogs``, ``errs``, ``wer-summary``)."""
    return Path(res_dir) / f"{kind}-{test_set}-{suffix}.txt"


def write_recogs(path: str | Path, results: Iterable[Result]) -> None:
    """Write ``recogs-*.txt``: ``cut_id:\\tref=[...]`` / ``cut_id:\\thyp=[...]`` lines, by cut id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for cut_id, ref, hyp in sorted(results, key=lambda r: r[0]):
            f.write(f"{cut_id}:\tref={_words(ref)}\n")
            f.write(f"{cut_id}:\thyp={_words(hyp)}\n")


def write_errs(
    path: str | Path,
    results: Iterable[Result],
    *,
    compute_cer: bool = True,
    cer_keep_spaces: bool = False,
    skipped: Sequence[tuple[str, str]] = (),
) -> WerResult:
    """Write ``errs-*.txt`` (format in the module docstring) and return the :class:`WerResult`.

    ``skipped``: ``(cut_id, reason)`` of cuts that could not be decoded; ``results`` must hold them
    with an empty hypothesis (scored as deletions), and they are listed in a ``SKIPPED CUTS:`` section.
    """
    results = sorted(results, key=lambda r: r[0])
    wer = compute_wer(results, compute_cer=compute_cer, cer_keep_spaces=cer_keep_spaces)
    subs: Counter = Counter()
    dels: Counter = Counter()
    ins: Counter = Counter()
    # word -> [corr, ref_errs, hyp_errs, count_in_ref, count_in_hyp]
    words: dict[str, list[int]] = {}

    def stat(w: str) -> list[int]:
        return words.setdefault(w, [0, 0, 0, 0, 0])

    lines = []
    for cut_id, ref, hyp in results:
        r, h = _words(ref), _words(hyp)
        ali = kaldialign.align(r, h, EPS) if (r or h) else []
        shown = []
        for a, b in ali:
            if a == EPS:
                ins[b] += 1
                stat(b)[2] += 1
                shown.append(f"({EPS}->{b})")
            elif b == EPS:
                dels[a] += 1
                stat(a)[1] += 1
                shown.append(f"({a}->{EPS})")
            elif a != b:
                subs[(a, b)] += 1
                stat(a)[1] += 1
                stat(b)[2] += 1
                shown.append(f"({a}->{b})")
            else:
                stat(a)[0] += 1
                shown.append(a)
        for w in r:
            stat(w)[3] += 1
        for w in h:
            stat(w)[4] += 1
        lines.append(f"{cut_id}:\t" + " ".join(shown))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write(f"%WER = {wer.wer:.2f}\n")
        f.write(
            f"Errors: {wer.ins} insertions, {wer.dels} deletions, {wer.subs} substitutions, "
            f"over {wer.num_ref_words} reference words ({wer.corr} correct)\n"
        )
        if wer.cer is not None:
            f.write(
                f"%CER = {wer.cer:.2f} ({wer.char_ins} insertions, {wer.char_dels} deletions, "
                f"{wer.char_subs} substitutions, over {wer.num_ref_chars} reference characters, "
                f"spaces {'counted' if cer_keep_spaces else 'ignored'})\n"
            )
        f.write(
            "Search below for sections starting with "
            + ("SKIPPED CUTS:, " if skipped else "")
            + "PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, PER-WORD STATS:\n\n"
        )
        if skipped:
            f.write(f"SKIPPED CUTS: {len(skipped)} cuts could not be decoded, scored as deletions: cut_id reason\n")
            for cut_id, reason in sorted(skipped):
                f.write(f"{cut_id}   {reason}\n")
            f.write("\n")
        f.write("PER-UTT DETAILS: corr or (ref->hyp)\n")
        for line in lines:
            f.write(line + "\n")
        f.write("\nSUBSTITUTIONS: count ref -> hyp\n")
        for (a, b), c in sorted(subs.items(), key=lambda kv: (-kv[1], kv[0])):
            f.write(f"{c}   {a} -> {b}\n")
        f.write("\nDELETIONS: count ref\n")
        for a, c in sorted(dels.items(), key=lambda kv: (-kv[1], kv[0])):
            f.write(f"{c}   {a}\n")
        f.write("\nINSERTIONS: count hyp\n")
        for b, c in sorted(ins.items(), key=lambda kv: (-kv[1], kv[0])):
            f.write(f"{c}   {b}\n")
        f.write("\nPER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp\n")
        for w, (corr, re, he, cr, ch) in sorted(words.items(), key=lambda kv: (-(kv[1][1] + kv[1][2]), kv[0])):
            f.write(f"{w}   {corr} {re + he} {cr} {ch}\n")
    return wer


def write_wer_summary(path: str | Path, wers: dict[str, float]) -> None:
    """Write ``wer-summary-*.txt``: a ``settings\\tWER`` header, then one line per setting, best first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write("settings\tWER\n")
        for name, w in sorted(wers.items(), key=lambda kv: (kv[1], kv[0])):
            f.write(f"{name}\t{w:.2f}\n")


def measure_rtf(decode_seconds: float, audio_seconds: float) -> float:
    """Real-time factor ``decode_seconds / audio_seconds`` (< 1 is faster than real time)."""
    if audio_seconds <= 0:
        raise ValueError(f"audio_seconds must be > 0, got {audio_seconds}")
    return decode_seconds / audio_seconds


class Timer:
    """Wall-clock stopwatch that accumulates over ``with`` blocks.

    Usage::

        timer = Timer()
        for batch in loader:
            with timer:
                hyps = ctc_greedy_search(...)
        print(timer.elapsed, timer.rtf(total_audio_seconds))
    """

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._start: float | None = None

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        assert self._start is not None
        self.elapsed += time.perf_counter() - self._start
        self._start = None

    def rtf(self, audio_seconds: float) -> float:
        """:func:`measure_rtf` of the accumulated time."""
        return measure_rtf(self.elapsed, audio_seconds)
