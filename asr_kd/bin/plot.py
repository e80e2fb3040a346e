"""The standard pictures of experiments: training curves, WER against training time, teacher-vs-student bars.

Usage::

    cd egs/synth/ASR
    # validation loss (and validation WER, when the run decoded it: training.valid_decode) against steps,
    # one line per experiment; the teacher's test WER as a dashed reference line
    python -m asr_kd.bin.plot curves --exp-dir exp/student --label "student" \\
        --exp-dir exp/student_kd --label "student + KD" --hline "teacher=27.05" --out exp/curves.png
    # against training minutes or hours of audio seen instead
    python -m asr_kd.bin.plot curves --exp-dir exp/zipformer_ctc_s --x minutes --out /tmp/zipformer_ctc_s.png
    # WER against training minutes from scripts/wer_curve.py's TSVs, plus reference points
    python -m asr_kd.bin.plot wer-curve --out docs/wer_vs_minutes.png \\
        --curve exp/zipformer_ctc_s/wer_curve-test-ctc-greedy.tsv:"Zipformer-CTC s" \\
        --points "Conformer-CTC s:14=89.16,30=73.13,47=64.42,60=59.78"
    # WER and CER bars of decoded models (asr_kd.bin.decode's results.jsonl; newest row of the split)
    python -m asr_kd.bin.plot bars --result "teacher=pretrained/zipformer_transducer_s/decode:modified-beam" \\
        --result "student=exp/student/decode" --result "student + KD=exp/student_kd/decode/results.jsonl" \\
        --split test --out exp/bars.png

``curves`` reads ``<exp-dir>/metrics.jsonl`` (:mod:`asr_kd.training.metrics`) or, for experiments older
than it, parses ``<exp-dir>/train.log`` (``--x minutes`` then counts the log's wall clock; ``--x
audio-hours`` needs ``metrics.jsonl``). Panels: training loss, validation loss, and validation WER when
any experiment has it (``--hline`` values are WERs, drawn there; without a WER panel they are left out,
with a note).
``--label`` i names ``--exp-dir`` i (default: the directory name). The data each picture shows come from
:func:`curve_series`, :func:`wer_curve_series` and :func:`bar_series`.

Bad input (a missing experiment directory, one without ``metrics.jsonl`` and ``train.log``, a missing
results file or a split / method it lacks, a malformed ``--hline``) is one line naming it, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from asr_kd.bin._common import latest_result, results_file
from asr_kd.training.metrics import MetricsError, load_metrics

__all__ = [
    "curve_series",
    "plot_curves",
    "wer_curve_series",
    "plot_wer_curve",
    "parse_result_spec",
    "bar_series",
    "plot_bars",
    "main",
]

Series = tuple[list[float], list[float]]

#: x axis name -> (metrics row -> x value, axis label)
X_AXES = {
    "steps": (lambda r: float(r["step"]), "training steps"),
    "minutes": (lambda r: float(r["train_seconds"]) / 60.0, "training minutes"),
    "audio-hours": (lambda r: float(r["audio_seconds"]) / 3600.0, "hours of audio seen"),
}

#: panel name -> (row kind, value key, y label)
PANELS = {
    "train loss": ("train", "loss", "training loss"),
    "valid loss": ("valid", "loss", "validation loss"),
    "valid WER": ("valid", "wer", "validation WER %"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    _pyplot().close(fig)
    print(f"wrote {out}")
    return out


# ------------------------------------------------------------------------------------------------ curves
def curve_series(exp_dir: str | Path, x: str = "steps", loss_key: str = "loss") -> dict[str, Series]:
    """``{panel: (xs, ys)}`` of an experiment for the panels of :data:`PANELS` it has data for.

    ``x``: a key of :data:`X_AXES`. ``loss_key``: the row value the two loss panels show (``"loss"``, the
    total, or a named part such as ``"ctc"``: a KD student's total includes its KD terms, so comparing it
    with a baseline takes the part both have). Rows come from :func:`asr_kd.training.metrics.load_metrics`, in
    step order; a row without the panel's value (e.g. a valid row without ``wer``) is left out."""
    if x not in X_AXES:
        raise MetricsError(f"--x must be one of {sorted(X_AXES)}, not {x!r}")
    rows, source = load_metrics(exp_dir)
    x_of = X_AXES[x][0]
    out: dict[str, Series] = {}
    for panel, (kind, key, _) in PANELS.items():
        if key == "loss":
            key = loss_key
        picked = [r for r in rows if r["kind"] == kind and r.get(key) is not None]
        if not picked:
            continue
        try:
            xs = [x_of(r) for r in picked]
        except (KeyError, TypeError):
            raise MetricsError(
                f"{source} has no {'audio_seconds' if x == 'audio-hours' else 'train_seconds'} "
                f"for --x {x} (an experiment older than metrics.jsonl): use --x steps or minutes"
            ) from None
        out[panel] = (xs, [float(r[key]) for r in picked])
    return out


def parse_hline(spec: str) -> tuple[str, float]:
    """``"teacher=27.05"`` -> ``("teacher", 27.05)``."""
    label, sep, value = spec.rpartition("=")
    try:
        if not sep:
            raise ValueError
        return label, float(value)
    except ValueError:
        raise MetricsError(f"--hline {spec!r} is not LABEL=VALUE (e.g. teacher=27.05)") from None


def plot_curves(
    experiments: Sequence[tuple[str, str | Path]],
    out: str | Path,
    *,
    x: str = "steps",
    hlines: Sequence[tuple[str, float]] = (),
    title: str | None = None,
    loss_key: str = "loss",
) -> dict[str, dict[str, Series]]:
    """Draw the curves of ``experiments`` (``(label, exp_dir)``) into ``out``; returns
    ``{label: curve_series(exp_dir, x, loss_key)}`` (the data drawn)."""
    data = {label: curve_series(exp_dir, x, loss_key) for label, exp_dir in experiments}
    panels = [p for p in PANELS if any(p in d for d in data.values())]
    if not panels:
        raise MetricsError(f"no train or valid rows in {', '.join(str(e) for _, e in experiments)}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    if hlines and "valid WER" not in panels:
        print(f"plot: no validation WER in these experiments: {len(hlines)} --hline not drawn", file=sys.stderr)
    for ax, panel in zip(axes[0], panels):
        for label, series in data.items():
            if panel in series:
                xs, ys = series[panel]
                ax.plot(xs, ys, marker="o" if panel != "train loss" else None, ms=3, label=label)
        if panel == "valid WER":
            for i, (label, value) in enumerate(hlines):
                ax.axhline(value, ls="--", color=f"C{len(data) + i}", label=f"{label} ({value:g})")
        ax.set_xlabel(X_AXES[x][1])
        ylabel = PANELS[panel][2]
        ax.set_ylabel(ylabel if loss_key == "loss" or "loss" not in ylabel else f"{ylabel} ({loss_key} part)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)
    return data


# ------------------------------------------------------------------------------------------------ wer-curve
def wer_curve_series(tsv: str | Path) -> dict[str, list[float]]:
    """Columns of a ``scripts/wer_curve.py decode`` TSV (``step minutes audio_hours wer cer``) as floats."""
    path = Path(tsv)
    if not path.is_file():
        raise MetricsError(f"WER-curve table {path} not found (scripts/wer_curve.py decode writes it)")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise MetricsError(f"{path} is empty")
    header = lines[0].split("\t")
    cols: dict[str, list[float]] = {h: [] for h in header}
    for i, line in enumerate(lines[1:], 2):
        vals = line.split("\t")
        try:
            if len(vals) != len(header):
                raise ValueError(f"{len(vals)} fields, the header has {len(header)}")
            for h, v in zip(header, vals):
                cols[h].append(float(v))
        except ValueError as e:
            raise MetricsError(f"{path}:{i}: {e}") from None
    return cols


def parse_points(spec: str) -> tuple[str, list[tuple[float, float]]]:
    """``"label:14=89.16,30=73.13"`` -> ``("label", [(14, 89.16), (30, 73.13)])``."""
    label, _, pts = spec.rpartition(":")
    try:
        return label, [(float(a), float(b)) for a, b in (p.split("=") for p in pts.split(","))]
    except ValueError:
        raise MetricsError(f"--points {spec!r} is not LABEL:X=WER,X=WER,...") from None


def plot_wer_curve(
    curves: Sequence[tuple[str, str | Path]],
    out: str | Path,
    *,
    points: Sequence[str] = (),
    ylabel: str = "test WER % (greedy)",
    audio_hours: bool = False,
    title: str = "WER against training time, default synthetic corpus",
) -> dict[str, dict[str, list[float]]]:
    """WER against training minutes (and, with ``audio_hours``, against hours of audio seen) of the TSVs
    ``curves`` (``(label, tsv)``), with reference ``points`` in minutes; returns ``{label: columns}``."""
    data = {label: wer_curve_series(path) for label, path in curves}
    refs = [parse_points(p) for p in points]
    panels = [("minutes", "training minutes (2-core CPU)")]
    if audio_hours:
        panels.append(("audio_hours", "hours of audio seen"))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (col, xlabel) in zip(axes[0], panels):
        for label, cols in data.items():
            ax.plot(cols[col], cols["wer"], marker="o", ms=3, label=label)
        if col == "minutes":  # reference points are given in minutes
            for label, xy in refs:
                ax.plot([a for a, _ in xy], [b for _, b in xy], marker="s", ls="--", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)
    return data


# ------------------------------------------------------------------------------------------------ bars
def parse_result_spec(spec: str) -> tuple[str, Path, str | None]:
    """``"LABEL=<res_dir or results.jsonl>[:method]"`` -> ``(label, results.jsonl path, method or None)``."""
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise MetricsError(f"--result {spec!r} is not LABEL=<res_dir or results.jsonl>[:method]")
    path, method = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and "/" not in tail and tail:
        path, method = head, tail
    return label, results_file(path), method


def bar_series(results: Sequence[str | tuple[str, Path, str | None]], split: str = "test") -> list[dict]:
    """For each ``--result`` spec (or ``(label, results.jsonl path, method or None)``), the newest row of its
    results.jsonl for ``split`` (and the method, when given: the full suffix or its name before ``_``):
    ``{"label", "method", "wer", "cer", "path"}``."""
    out = []
    for spec in results:
        label, path, method = parse_result_spec(spec) if isinstance(spec, str) else spec
        row = latest_result(path, split, method)
        out.append(
            {"label": label, "method": row.get("method"), "wer": row["wer"], "cer": row["cer"], "path": str(path)}
        )
    return out


def plot_bars(
    results: Sequence[str | tuple[str, Path, str | None]],
    out: str | Path,
    *,
    split: str = "test",
    title: str | None = None,
) -> list[dict]:
    """Grouped WER / CER bars of :func:`bar_series` into ``out``; returns the rows drawn."""
    rows = bar_series(results, split)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(rows) + 2), 4.2))
    width = 0.38
    xs = list(range(len(rows)))
    for j, (key, name) in enumerate((("wer", "WER %"), ("cer", "CER %"))):
        pos = [x + (j - 0.5) * width for x in xs]
        bars = ax.bar(pos, [r[key] for r in rows], width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    # a method's option suffix (``streaming-greedy_chunk-4_left-4``) on lines of its own, so long names do not overlap
    ax.set_xticks(xs, [f"{r['label']}\n({r['method'].replace('_', chr(10))})" for r in rows], fontsize=8)
    ax.set_ylabel(f"{split} error rate %")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, out)
    return rows


# ------------------------------------------------------------------------------------------------ CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curves", help="loss / WER curves of experiment directories")
    c.add_argument("--exp-dir", action="append", required=True, type=Path, help="repeatable")
    c.add_argument("--label", action="append", default=[], help="the i-th names the i-th --exp-dir")
    c.add_argument("--hline", action="append", default=[], help="LABEL=VALUE reference line, repeatable")
    c.add_argument("--x", choices=sorted(X_AXES), default="steps")
    c.add_argument("--loss-key", default="loss", help="loss panels: the total (loss) or a named part, e.g. ctc")
    c.add_argument("--title")
    c.add_argument("--out", required=True, type=Path)
    w = sub.add_parser("wer-curve", help="WER against training minutes from scripts/wer_curve.py's TSVs")
    w.add_argument("--out", required=True, type=Path)
    w.add_argument("--curve", action="append", default=[], help="TSV[:label], repeatable")
    w.add_argument("--points", action="append", default=[], help="label:min=wer,min=wer,...")
    w.add_argument("--ylabel", default="test WER % (greedy)")
    w.add_argument("--audio-hours", action="store_true", help="a second panel: WER against audio hours seen")
    w.add_argument("--title", default="WER against training time, default synthetic corpus")
    b = sub.add_parser("bars", help="WER / CER bars of decode results")
    b.add_argument("--result", action="append", required=True, help="LABEL=<res_dir or results.jsonl>[:method]")
    b.add_argument("--split", default="test")
    b.add_argument("--title")
    b.add_argument("--out", required=True, type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.cmd == "curves":
        if len(args.label) > len(args.exp_dir):
            raise MetricsError(f"{len(args.label)} --label for {len(args.exp_dir)} --exp-dir")
        labels = args.label + [e.name for e in args.exp_dir[len(args.label) :]]
        hlines = [parse_hline(h) for h in args.hline]
        plot_curves(
            list(zip(labels, args.exp_dir)), args.out, x=args.x, hlines=hlines, title=args.title, loss_key=args.loss_key
        )
    elif args.cmd == "wer-curve":
        curves = []
        for spec in args.curve:
            path, _, label = spec.partition(":")
            curves.append((label or path, path))
        plot_wer_curve(
            curves, args.out, points=args.points, ylabel=args.ylabel, audio_hours=args.audio_hours, title=args.title
        )
    else:
        plot_bars(args.result, args.out, split=args.split, title=args.title)
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "plot"))
