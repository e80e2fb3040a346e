"""Append KD experiment results to a markdown log (``docs/RESULTS.md``), one row per decoded model.

Usage (what ``egs/synth/ASR/run_kd.sh`` runs after decoding)::

    python -m asr_kd.bin.kd_report --out docs/RESULTS.md --experiment self_kd --steps 600 \
        --entry "k-layer alone=exp/kd/ctc_l4/decode" \
        --entry "self-KD, full model=exp/kd/self_kd_l7/decode" \
        --entry "self-KD, sub-model (layers 1-4)=exp/kd/self_kd_l7/decode_sub" --baseline "k-layer alone"

Each entry's ``<dir>/results.jsonl`` (written by ``asr_kd.bin.decode``) gives the newest result for
``--split`` and ``--method`` (a method name or a full suffix; ``asr_kd.bin._common.latest_result``);
parameters are counted from the decoded checkpoint. Rows go under the heading ``## KD experiment log``
(created when missing), with the relative WER change against ``--baseline``. ``--plot PNG`` also draws the
entries' WER / CER as bars (``asr_kd.bin.plot bars``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
from pathlib import Path

from asr_kd.bin._common import latest_result, results_file

HEADING = "## KD experiment log (appended by egs/synth/ASR/run_kd.sh)"
COLUMNS = (
    "date",
    "experiment",
    "model",
    "params",
    "steps",
    "split",
    "method",
    "WER %",
    "CER %",
    "ins+del %",
    "rel. WER vs baseline",
    "RTF",
    "checkpoint",
)


def count_params(checkpoint: str) -> int:
    from asr_kd.training.asr_task import load_asr_model

    model, _ = load_asr_model(checkpoint)
    return sum(p.numel() for p in model.parameters())


def format_rows(
    experiment: str, steps: int, entries: list[tuple[str, dict, int]], baseline: str | None, date: str
) -> list[str]:
    base = {label: r for label, r, _ in entries}.get(baseline) if baseline else None
    lines = []
    for label, r, n in entries:
        rel = (
            ""
            if base is None or label == baseline or base["wer"] == 0
            else f"{100.0 * (r['wer'] - base['wer']) / base['wer']:+.1f}%"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    date,
                    experiment,
                    label,
                    f"{n / 1e6:.2f}M",
                    str(steps),
                    r["split"],
                    r["method"],
                    f"{r['wer']:.2f}",
                    f"{r['cer']:.2f}",
                    f"{r['ins_del']:.2f}",
                    rel,
                    f"{r['rtf']:.4f}",
                    f"`{r['checkpoint']}`",
                ]
            )
            + " |"
        )
    return lines


def append_rows(out: Path, lines: list[str]) -> None:
    """Add ``lines`` (table rows) to the log table under :data:`HEADING`, right after its last row, so that
    whatever a runner wrote after the log (a cost table, a later section) stays after it; the heading and
    table header are created at the end of the file when missing. Written atomically."""
    text = out.read_text() if out.is_file() else ""
    if HEADING not in text.splitlines():
        header = [
            "",
            HEADING,
            "",
            f"Machine: {platform.machine()} CPU, training and decoding as configured by run_kd.sh. Same data, "
            "seed, steps and encoder width within one experiment; WER from CTC greedy unless stated.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        text = text.rstrip("\n") + "\n" + "\n".join(header) + "\n"
    doc = text.rstrip("\n").split("\n")
    i = doc.index(HEADING) + 1
    while i < len(doc) and not doc[i].startswith("|"):  # the paragraph between heading and table
        i += 1
    while i < len(doc) and doc[i].startswith("|"):  # the table: header, rule, rows
        i += 1
    doc[i:i] = lines
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("\n".join(doc) + "\n")
    tmp.replace(out)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="markdown file to append to")
    p.add_argument("--experiment", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--entry", action="append", required=True, help="LABEL=RES_DIR (repeatable)")
    p.add_argument("--baseline", default=None, help="label of the baseline entry")
    p.add_argument("--split", default="test")
    p.add_argument("--method", default="ctc-greedy")
    p.add_argument("--plot", type=Path, default=None, help="also draw the entries' WER/CER bars into this PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    entries = []
    for e in args.entry:
        if "=" not in e:
            raise SystemExit(f"kd_report: --entry must be LABEL=RES_DIR, got {e!r}")
        label, res = e.rsplit("=", 1)
        r = latest_result(Path(res), args.split, args.method)
        entries.append((label, r, count_params(r["checkpoint"])))
    if args.baseline and args.baseline not in {label for label, _, _ in entries}:
        raise SystemExit(f"kd_report: baseline {args.baseline!r} is not one of the entries")
    lines = format_rows(args.experiment, args.steps, entries, args.baseline, _dt.date.today().isoformat())
    append_rows(args.out, lines)
    print("\n".join(lines))
    if args.plot is not None:
        from asr_kd.bin import plot

        specs = [
            (label, results_file(e.rsplit("=", 1)[1]), args.method) for e, (label, _, _) in zip(args.entry, entries)
        ]
        plot.plot_bars(specs, args.plot, split=args.split, title=args.experiment)
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "kd_report"))
