"""Bad inputs: detect them, name the cut and the problem, then raise or skip-and-count.

Problems detected (the ``reason`` codes of :class:`BadCutError`):

==================  ===========================================================================
``missing_audio``   an audio file of the cut's recording does not exist
``corrupt_audio``   the audio cannot be decoded (garbage bytes, unknown format) or is shorter
                    than the manifest declares (truncated file)
``bad_features``    pre-computed features are absent or cannot be read
``input_error``     the input strategy failed on this cut for another reason (detail says why)
``no_supervision``  the cut has no supervision segment, so no transcript
``empty_text``      the transcript is empty or whitespace only
``untokenizable``   the transcript has characters the tokenizer cannot encode
==================  ===========================================================================

Two places use these checks:

- :func:`validate_cuts`, an up-front pass over a manifest (e.g. once after data preparation);
- :class:`asr_kd.data.dataset.AsrDataset`, which checks the cuts of each batch as it loads them.

Both take ``on_error``: ``"raise"`` (default) raises :class:`BadCutError` at the first bad cut;
``"skip"`` drops bad cuts, counts them per reason in a :class:`~asr_kd.data.stats.FilterStats` and
logs each one with its cut id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lhotse import CutSet
from lhotse.cut import Cut, MixedCut

from asr_kd.data.stats import FilterStats

if TYPE_CHECKING:  # pragma: no cover
    from asr_kd.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
AudioCheck = Literal["decode", "exists", "none"]

MISSING_AUDIO = "missing_audio"
CORRUPT_AUDIO = "corrupt_audio"
BAD_FEATURES = "bad_features"
INPUT_ERROR = "input_error"
NO_SUPERVISION = "no_supervision"
EMPTY_TEXT = "empty_text"
UNTOKENIZABLE = "untokenizable"


class BadCutError(ValueError):
    """A cut that cannot be used; ``cut_id``, ``reason`` (a code above) and ``detail`` are attributes.

    The message always starts ``bad cut '<cut_id>': <reason>``. Built with a single argument (as
    PyTorch's DataLoader does when it re-raises a worker's exception in the main process), the
    argument is taken as the whole message and ``cut_id`` / ``reason`` are read back from it.
    """

    def __init__(self, cut_id: str, reason: str = "", detail: str = ""):
        if reason:
            message = f"bad cut {cut_id!r}: {reason}" + (f": {detail}" if detail else "")
        else:  # re-raised from a DataLoader worker: cut_id is the full message
            message = cut_id
            m = re.search(r"bad cut '([^']*)': (\w+)", message)
            cut_id, reason = (m.group(1), m.group(2)) if m else ("", "")
        self.cut_id = cut_id
        self.reason = reason
        self.detail = detail
        super().__init__(message)

    def __reduce__(self):  # picklable with message and attributes
        return (_rebuild_bad_cut_error, (type(self), str(self), self.cut_id, self.reason, self.detail))


def _rebuild_bad_cut_error(cls, message: str, cut_id: str, reason: str, detail: str) -> BadCutError:
    err = cls(message)
    err.cut_id, err.reason, err.detail = cut_id, reason, detail
    return err


def check_on_error(on_error: str) -> OnError:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error  # type: ignore[return-value]


def _short(exc: BaseException, max_chars: int = 400) -> str:
    """A one-line description of ``exc`` (Lhotse's audio errors span many lines)."""
    m = re.search(r"diff=(-?\d+), audio.shape=\(\d+, (\d+)\)", str(exc))
    if m:  # Lhotse's "number of declared samples ... diverged" message
        got, diff = int(m.group(2)), int(m.group(1))
        return (
            f"the file has {got} samples but the manifest declares {got + diff} "
            "(truncated or modified after the manifest was made)"
        )
    m = re.search(r"Exception #0 \([^)]*\): <class '([^']+)'>: (.+)", str(exc))
    if m:  # Lhotse's "Reading audio from ... failed" message: keep the first backend's reason
        text = f"cannot decode the audio ({m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()})"
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " | ".join(lines[:2]) if lines else type(exc).__name__
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


# ---------------------------------------------------------------------- text
def cut_text(cut: Cut) -> str:
    """The cut's transcript: its supervisions' texts in time order, whitespace-normalised.

    Raises:
        BadCutError: ``no_supervision`` when the cut has no supervision segment.
    """
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    if not sups:
        raise BadCutError(cut.id, NO_SUPERVISION, "the cut has no supervision segment")
    return " ".join(" ".join((s.text or "").split()) for s in sups).strip()


def check_text(cut: Cut, tokenizer: Tokenizer | None = None) -> tuple[str, list[int] | None]:
    """Return ``(text, token_ids)``; ``token_ids`` is None without a tokenizer.

    Raises:
        BadCutError: ``no_supervision``, ``empty_text`` or ``untokenizable``.
    """
    text = cut_text(cut)
    if not text:
        raise BadCutError(cut.id, EMPTY_TEXT, "the transcript is empty")
    if tokenizer is None:
        return text, None
    from asr_kd.data.tokenizer import UntokenizableError

    try:
        return text, tokenizer.encode(text)
    except UntokenizableError as e:
        raise BadCutError(cut.id, UNTOKENIZABLE, str(e)) from e


# ---------------------------------------------------------------------- audio / features
def _leaf_cuts(cut: Cut) -> Iterator[Cut]:
    if isinstance(cut, MixedCut):
        for track in cut.tracks:
            yield from _leaf_cuts(track.cut)
    else:
        yield cut


def audio_files(cut: Cut) -> list[str]:
    """Paths of the file-type audio sources the cut reads (recursing into mixed cuts)."""
    paths = []
    for leaf in _leaf_cuts(cut):
        rec = getattr(leaf, "recording", None)
        if rec is None:
            continue
        paths.extend(str(s.source) for s in rec.sources if s.type == "file")
    return paths


def check_audio(cut: Cut, mode: AudioCheck = "decode") -> None:
    """Check the cut's audio: ``"exists"`` only looks for the files, ``"decode"`` also reads them.

    Raises:
        BadCutError: ``missing_audio`` or ``corrupt_audio``.
    """
    if mode == "none":
        return
    if not cut.has_recording:
        raise BadCutError(cut.id, MISSING_AUDIO, "the cut has no recording")
    for path in audio_files(cut):
        if not Path(path).is_file():
            raise BadCutError(cut.id, MISSING_AUDIO, f"no such file: {path}")
    if mode == "decode":
        try:
            cut.load_audio()
        except Exception as e:
            raise BadCutError(cut.id, CORRUPT_AUDIO, _short(e)) from e


def check_features(cut: Cut) -> None:
    """Check that the cut's pre-computed features can be read.

    Raises:
        BadCutError: ``bad_features``.
    """
    if not cut.has_features:
        raise BadCutError(cut.id, BAD_FEATURES, "the cut has no pre-computed features")
    try:
        cut.load_features()
    except Exception as e:
        raise BadCutError(cut.id, BAD_FEATURES, _short(e)) from e


def check_cut(
    cut: Cut,
    tokenizer: Tokenizer | None = None,
    audio: AudioCheck = "decode",
    features: bool = False,
) -> None:
    """All checks on one cut (text first: it is the cheapest).

    Raises:
        BadCutError: for the first problem found.
    """
    check_text(cut, tokenizer)
    check_audio(cut, audio)
    if features:
        check_features(cut)


def validate_cuts(
    cuts: CutSet,
    tokenizer: Tokenizer | None = None,
    on_error: OnError = "raise",
    audio: AudioCheck = "decode",
    features: bool = False,
    stats: FilterStats | None = None,
) -> CutSet:
    """Up-front validation pass over a manifest; returns the good cuts (eager CutSet).

    Args:
        cuts: the manifest to check (read once).
        tokenizer: when given, transcripts must be encodable.
        on_error: ``"raise"`` -> :class:`BadCutError` at the first bad cut; ``"skip"`` -> drop it,
            count it in ``stats`` and log its id and problem.
        audio: ``"decode"`` reads every file (slow, catches truncation), ``"exists"`` only checks
            that files exist, ``"none"`` skips audio checks.
        features: also read pre-computed features.
        stats: where to count (a new ``FilterStats("validation")`` if None); its summary is logged.
    """
    check_on_error(on_error)
    stats = stats if stats is not None else FilterStats("validation")
    good = []
    for cut in cuts:
        try:
            check_cut(cut, tokenizer, audio=audio, features=features)
        except BadCutError as e:
            if on_error == "raise":
                raise
            stats.drop(e.cut_id, e.reason, e.detail)
            continue
        stats.keep()
        good.append(cut)
    stats.log()
    return CutSet.from_cuts(good)
