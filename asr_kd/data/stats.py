"""Counting what the data pipeline drops, so that nothing is dropped silently.

One :class:`FilterStats` is shared by everything that can remove a cut: the length/ratio filters of
:mod:`asr_kd.data.filters`, the bad-input pass of :mod:`asr_kd.data.validation` and the dataset's
in-batch skipping (:class:`asr_kd.data.dataset.AsrDataset`). It counts kept cuts, dropped cuts by
reason, remembers the first few cut ids per reason and logs a one-line summary.

Note on DataLoader workers: a ``FilterStats`` living in a worker process is a copy; the dataset
therefore also reports what it skipped inside each batch (``batch["skipped"]``) so the training loop
can aggregate with :meth:`FilterStats.drop`.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)


class FilterStats:
    """Counts of kept and dropped cuts, per drop reason, with example cut ids.

    Args:
        name: what is being counted (appears in log lines), e.g. ``"train filters"``.
        max_examples: how many cut ids to remember per reason.
        per_cut_level: logging level of the line written for each dropped cut (filters that may
            drop thousands of over-long cuts use INFO; bad inputs use WARNING).
    """

    def __init__(self, name: str = "cuts", max_examples: int = 20, per_cut_level: int = logging.WARNING):
        self.name = name
        self.max_examples = max_examples
        self.per_cut_level = per_cut_level
        self.kept = 0
        self.dropped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    # ---------------------------------------------------------------- counting
    def keep(self, n: int = 1) -> None:
        self.kept += n

    def drop(
        self, cut_id: str, reason: str, detail: str | None = None, log_it: bool = True, level: int | None = None
    ) -> None:
        """Count one dropped cut and log its id, reason and detail at ``level`` (default
        ``per_cut_level``)."""
        self.dropped[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < self.max_examples:
            ids.append(cut_id)
        if not log_it:
            return
        log.log(
            self.per_cut_level if level is None else level,
            "%s: dropping cut %s (%s)%s",
            self.name,
            cut_id,
            reason,
            f": {detail}" if detail else "",
        )

    def add_skipped(self, skipped: list[dict]) -> None:
        """Count a batch's ``batch["skipped"]`` entries (already logged by the worker that made it).

        Typical use in a training loop: ``train_stats.add_skipped(batch["skipped"])``.
        """
        for item in skipped:
            self.drop(item["cut_id"], item["reason"], log_it=False)

    def merge(self, other: FilterStats) -> FilterStats:
        """Add ``other``'s counts into this object (e.g. from several workers); returns self."""
        self.kept += other.kept
        self.dropped.update(other.dropped)
        for reason, ids in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ids[: max(0, self.max_examples - len(mine))])
        return self

    def reset(self) -> None:
        self.kept = 0
        self.dropped.clear()
        self.examples.clear()

    # ---------------------------------------------------------------- reading
    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def num_seen(self) -> int:
        return self.kept + self.num_dropped

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self) -> str:
        """E.g. ``"train: kept 98 of 100 cuts; dropped 2 (too_long=1, empty_text=1)"``."""
        s = f"{self.name}: kept {self.kept} of {self.num_seen} cuts"
        if self.dropped:
            reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.dropped.items()))
            s += f"; dropped {self.num_dropped} ({reasons})"
        return s

    def log(self, level: int = logging.INFO) -> None:
        """Log :meth:`summary` (at WARNING instead of ``level`` when anything was dropped)."""
        log.log(logging.WARNING if self.dropped else level, self.summary())

    def __repr__(self) -> str:
        return f"FilterStats({self.summary()!r})"
