"""Training time and teacher storage of the lm_repr_transfer rows (run_repr_kd.sh stage 7), as a markdown table.

Usage (from egs/synth/ASR)::

    python local/repr_costs.py --kd-data data/kd_repr --row "transducer alone=exp/repr/transducer_s600=" \\
        --row "Uniform + context=exp/repr/uniform3_ctx_s600=minilm_ctx" --out ../../../docs/RESULTS.md

Each ``--row LABEL=EXP_DIR=FIELDS`` (FIELDS: the stored teacher names it reads, comma-separated, may be empty)
gives one line: the training seconds and steps of the last ``metrics.jsonl`` row of EXP_DIR, seconds per step,
and the bytes per train cut and dump seconds of each field (``<kd-data>/<prefix>_repr_<name>_train.json``,
written by ``asr_kd.bin.dump_repr``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def last_metrics(exp_dir: Path) -> dict:
    path = exp_dir / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    rows = [r for r in rows if "train_seconds" in r]
    return rows[-1] if rows else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kd-data", type=Path, required=True)
    p.add_argument("--prefix", default="synth")
    p.add_argument("--row", action="append", required=True, help="LABEL=EXP_DIR=FIELDS")
    p.add_argument("--out", type=Path, default=None, help="markdown file to append to (else stdout only)")
    args = p.parse_args(argv)
    lines = [
        "",
        "### lm_repr_transfer: cost per row (run_repr_kd.sh)",
        "",
        "| row | steps | train s | s / step | teacher fields | stored kB / train cut | dump s |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in args.row:
        label, exp, fields = spec.split("=", 2)
        m = last_metrics(Path(exp))
        steps, secs = m.get("step"), m.get("train_seconds")
        per = f"{secs / steps:.2f}" if steps and secs else "?"
        kb, dump_s = [], []
        for name in [f for f in fields.split(",") if f]:
            rep = args.kd_data / f"{args.prefix}_repr_{name}_train.json"
            r = json.loads(rep.read_text()) if rep.is_file() else {}
            kb.append(f"{name}: {r.get('bytes_per_cut', 0) / 1e3:.1f}")
            dump_s.append(f"{name}: {r.get('seconds', '?')}")
        names = ", ".join(f for f in fields.split(",") if f) or "-"
        secs_s = secs if secs is not None else "?"
        kb_s, dump_ss = "; ".join(kb) or "-", "; ".join(dump_s) or "-"
        lines.append(f"| {label} | {steps or '?'} | {secs_s} | {per} | {names} | {kb_s} | {dump_ss} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
