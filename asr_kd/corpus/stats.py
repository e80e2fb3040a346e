"""Corpus statistics from Lhotse supervision manifests, printed as a markdown table.

Usage::

    python -m asr_kd.corpus.stats egs/synth/ASR/data/manifests [--prefix synth]

Per split: utterances, hours, mean/min/max duration, speakers (voices), accents, distinct sentences,
running words, word vocabulary, and for the non-train splits the OOV rate of their running words
and the share of their sentences and voices that also occur in train (0 % for a proper held-out set).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_ORDER = ("train", "dev", "test")


@dataclass
class SplitStats:
    name: str
    durations: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    speakers: set[str] = field(default_factory=set)
    accents: set[str] = field(default_factory=set)

    @property
    def num_utts(self) -> int:
        return len(self.durations)

    @property
    def hours(self) -> float:
        return sum(self.durations) / 3600

    @property
    def words(self) -> list[str]:
        return [w for t in self.texts for w in t.split()]

    @property
    def vocab(self) -> set[str]:
        return set(self.words)


def split_stats(name: str, supervisions: Iterable) -> SplitStats:
    """Collect :class:`SplitStats` from Lhotse ``SupervisionSegment`` objects."""
    s = SplitStats(name)
    for sup in supervisions:
        s.durations.append(sup.duration)
        s.texts.append(sup.text)
        if sup.speaker:
            s.speakers.add(sup.speaker)
        accent = (sup.custom or {}).get("accent")
        s.accents.add(accent or (sup.speaker or "").partition("+")[0])
    return s


def oov_rate(words: list[str], vocab: set[str]) -> float:
    """Fraction of running ``words`` not in ``vocab``."""
    return sum(w not in vocab for w in words) / max(1, len(words))


def load(manifest_dir: str | Path, prefix: str) -> list[SplitStats]:
    """Stats of every ``<prefix>_supervisions_<split>.jsonl.gz`` (train, dev, test first)."""
    from lhotse import SupervisionSet

    files = sorted(Path(manifest_dir).glob(f"{prefix}_supervisions_*.jsonl.gz"))
    if not files:
        raise FileNotFoundError(f"no {prefix}_supervisions_*.jsonl.gz in {manifest_dir}")
    name = lambda p: p.name[len(f"{prefix}_supervisions_") : -len(".jsonl.gz")]  # noqa: E731
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    files.sort(key=lambda p: (order.get(name(p), len(order)), name(p)))
    return [split_stats(name(p), SupervisionSet.from_file(p)) for p in files]


def markdown_table(stats: list[SplitStats], train_name: str = "train") -> str:
    """The statistics as a GitHub markdown table (one column per split)."""
    train = next((s for s in stats if s.name == train_name), None)
    rows: list[tuple[str, list[str]]] = [
        ("utterances", [f"{s.num_utts:,}" for s in stats]),
        ("hours", [f"{s.hours:.2f}" for s in stats]),
        ("mean duration (s)", [f"{s.hours * 3600 / max(1, s.num_utts):.2f}" for s in stats]),
        ("min / max duration (s)", [f"{min(s.durations):.2f} / {max(s.durations):.2f}" for s in stats]),
        ("voices (speakers)", [f"{len(s.speakers)}" for s in stats]),
        ("accents", [f"{len(s.accents)}" for s in stats]),
        ("distinct sentences", [f"{len(set(s.texts)):,}" for s in stats]),
        ("running words", [f"{len(s.words):,}" for s in stats]),
        ("word vocabulary", [f"{len(s.vocab):,}" for s in stats]),
    ]
    if train is not None:
        tv, ts, tsp = train.vocab, set(train.texts), train.speakers
        other = lambda f: ["-" if s is train else f(s) for s in stats]  # noqa: E731
        rows += [
            (
                f"OOV rate w.r.t. {train_name} (running words)",
                other(lambda s: f"{100 * oov_rate(s.words, tv):.2f} %"),
            ),
            (f"OOV word types w.r.t. {train_name}", other(lambda s: f"{len(s.vocab - tv):,}")),
            (f"sentences also in {train_name}", other(lambda s: f"{len(set(s.texts) & ts)}")),
            (f"voices also in {train_name}", other(lambda s: f"{len(s.speakers & tsp)}")),
        ]
    lines = ["| | " + " | ".join(s.name for s in stats) + " |", "|---" * (len(stats) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest_dir", type=Path)
    p.add_argument("--prefix", default="synth")
    args = p.parse_args(argv)
    print(markdown_table(load(args.manifest_dir, args.prefix)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
