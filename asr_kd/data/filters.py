"""Length filters for training cuts, with every drop counted (:class:`~asr_kd.data.stats.FilterStats`).

A cut is dropped when

==================  ===========================================================================
``too_short``       ``duration < min_duration`` seconds
``too_long``        ``duration > max_duration`` seconds
``too_few_frames``  after the encoder's subsampling it has ``T' < max(S, 1)`` frames, where ``S``
                    is its number of tokens (CTC and transducers cannot align ``S`` labels to
                    fewer than ``S`` frames); without a tokenizer only ``T' < 1`` is checked
==================  ===========================================================================

With a tokenizer the transcript is checked too (:func:`~asr_kd.data.validation.check_text`): a cut with
no supervision, an empty transcript or characters the tokenizer cannot encode is bad input. With
``on_error="raise"`` (default) :class:`~asr_kd.data.validation.BadCutError` is raised naming the cut;
with ``on_error="skip"`` the cut is dropped, counted under its reason (``no_supervision``,
``empty_text``, ``untokenizable``) and named in a WARNING log line.

``T`` is the cut's number of fbank frames (from its features when attached, else from its duration
at a 10 ms shift) and ``T' = subsampled_frames(T)``; the default is the Conv2d x4 front-end of icefall
(:func:`conv2d_subsampling_4`), pass your encoder's ``subsampled_lengths`` formula if it differs.

Usage::

    cut_filter = CutFilter(min_duration=1.0, max_duration=20.0, tokenizer=tok)
    train_cuts = filter_cuts(train_cuts, cut_filter)   # eager: filtered now and logged
    ...
    cut_filter.stats.log()                             # lazy: counts accumulate while iterating
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from lhotse import CutSet
from lhotse.cut import Cut

from asr_kd.data.features import FRAME_SHIFT, num_frames
from asr_kd.data.stats import FilterStats
from asr_kd.data.validation import BadCutError, OnError, check_on_error, check_text

if TYPE_CHECKING:  # pragma: no cover
    from asr_kd.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

TOO_SHORT = "too_short"
TOO_LONG = "too_long"
TOO_FEW_FRAMES = "too_few_frames"


def conv2d_subsampling_4(num_frames: int) -> int:
    """``T' = ((T - 7) // 2 + 1) // 2``: icefall's Conv2dSubsampling (3x3 convs, strides 1, 2, 2).

    For another front-end pass its formula, e.g. from an encoder's ``subsampled_lengths``:
    ``lambda T: int(encoder.subsampled_lengths(torch.tensor([T]))[0])``.
    """
    return ((num_frames - 7) // 2 + 1) // 2


def cut_num_frames(cut: Cut, frame_shift: float = FRAME_SHIFT) -> int:
    """Fbank frames ``T`` of a cut: from attached features, else computed from its duration."""
    if cut.has_features and cut.num_frames is not None:
        return int(cut.num_frames)
    return num_frames(cut.duration, cut.sampling_rate, frame_shift)


class CutFilter:
    """A predicate ``cut -> bool`` (True = keep) that counts each drop in :attr:`stats`.

    Args:
        min_duration: shortest kept cut in seconds (None = no limit).
        max_duration: longest kept cut in seconds (None = no limit).
        tokenizer: when given, ``T' >= S`` is required and the transcript must be encodable (a bad
            transcript raises or is dropped per ``on_error``).
        subsampled_frames: ``T -> T'``, the encoder front-end's length formula.
        frame_shift: fbank frame shift in seconds.
        stats: where drops are counted; a new ``FilterStats(name)`` by default.
        name: label of the log lines.
        on_error: ``"raise"`` :class:`~asr_kd.data.validation.BadCutError` for a bad transcript, or
            ``"skip"``: drop the cut, count it under its reason and log it at WARNING.
    """

    def __init__(
        self,
        min_duration: float | None = 1.0,
        max_duration: float | None = 20.0,
        tokenizer: Tokenizer | None = None,
        subsampled_frames: Callable[[int], int] = conv2d_subsampling_4,
        frame_shift: float = FRAME_SHIFT,
        stats: FilterStats | None = None,
        name: str = "filters",
        on_error: OnError = "raise",
    ):
        if min_duration is not None and max_duration is not None and min_duration > max_duration:
            raise ValueError(f"min_duration {min_duration} > max_duration {max_duration}")
        self.min_duration = min_duration
        self.max_duration = max_duration
        self.tokenizer = tokenizer
        self.subsampled_frames = subsampled_frames
        self.frame_shift = frame_shift
        self.on_error = check_on_error(on_error)
        self.stats = stats if stats is not None else FilterStats(name, per_cut_level=logging.INFO)
        self._decided: dict[str, bool] = {}  # cut id -> kept (each cut counted once)

    def reason(self, cut: Cut) -> tuple[str, str] | None:
        """``(reason, detail)`` if the cut should be dropped, else None. Counts nothing.

        Raises:
            BadCutError: a bad transcript with ``on_error="raise"``.
        """
        if self.min_duration is not None and cut.duration < self.min_duration:
            return TOO_SHORT, f"duration {cut.duration:.3f}s < {self.min_duration}s"
        if self.max_duration is not None and cut.duration > self.max_duration:
            return TOO_LONG, f"duration {cut.duration:.3f}s > {self.max_duration}s"
        T = cut_num_frames(cut, self.frame_shift)
        T_sub = self.subsampled_frames(T)
        if self.tokenizer is not None:
            try:
                _, tokens = check_text(cut, self.tokenizer)
            except BadCutError as e:
                if self.on_error == "raise":
                    raise
                return e.reason, e.detail
            S = len(tokens)
            if T_sub < max(S, 1):
                return TOO_FEW_FRAMES, f"T={T} -> T'={T_sub} frames < S={S} tokens"
        elif T_sub < 1:
            return TOO_FEW_FRAMES, f"T={T} -> T'={T_sub} frames"
        return None

    def __call__(self, cut: Cut) -> bool:
        """Keep or drop ``cut``, counting each cut id once: samplers iterate a CutSet more than once
        (bucket estimation, then batches; every epoch), and the statistics describe the data set, not
        the number of passes."""
        decided = self._decided.get(cut.id)
        if decided is not None:
            return decided
        why = self.reason(cut)
        keep = why is None
        if keep:
            self.stats.keep()
        else:
            reason, detail = why
            bad_input = reason not in (TOO_SHORT, TOO_LONG, TOO_FEW_FRAMES)  # bad text: a WARNING
            self.stats.drop(cut.id, reason, detail, level=logging.WARNING if bad_input else None)
        self._decided[cut.id] = keep
        return keep


def filter_cuts(cuts: CutSet, cut_filter: CutFilter) -> CutSet:
    """Apply ``cut_filter``: an eager CutSet is filtered now and the counts logged; a lazy one is
    filtered while it is iterated (counts accumulate in ``cut_filter.stats``, log them yourself)."""
    if cuts.is_lazy:
        return cuts.filter(cut_filter)
    kept = cuts.filter(cut_filter).to_eager()
    cut_filter.stats.log()
    return kept
