#!/usr/bin/env python
"""Helpers of ``demo.sh`` (``make demo``): the teacher check and the results table.

Usage (from egs/synth/ASR, as demo.sh runs them)::

    python local/demo.py check-teacher pretrained/zipformer_transducer_s
    python local/demo.py table --out-dir exp/demo --split test \\
        --row "teacher=exp/demo/teacher:modified-beam:pretrained/zipformer_transducer_s" \\
        --row "student alone=exp/demo/student/decode:ctc-greedy:exp/demo/student" \\
        --row "student + KD=exp/demo/student_kd/decode:ctc-greedy:exp/demo/student_kd" --baseline "student alone"

``check-teacher`` loads the bundle as every tool does (``load_asr_model``: the checkpoint's checksum, the
bundled lang files against their recorded sha256) and, when that fails, prints what is wrong and how to
get the bundle back (``git checkout``, or the retrain commands of its model card); exit status 2.

``table`` reads, for each ``--row LABEL=RES_DIR:METHOD:MODEL``, the newest ``results.jsonl`` line of
``--split`` and ``METHOD`` in ``RES_DIR`` (written by ``asr_kd.bin.decode``), the parameters of the decoded
checkpoint, and the training steps and seconds of ``MODEL`` (a bundle: its exported training record; an
experiment dir: its newest ``checkpoint-<step>.pt``). It prints one markdown table and writes it to
``<out-dir>/demo_results.md`` with the same numbers in ``<out-dir>/demo_results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = ("model", "params", "steps", "training time", "decoding", "WER %", "CER %", "vs baseline", "RTF")


def check_teacher(bundle: Path) -> str | None:
    """``None`` when ``bundle`` loads as a model, else the message to print (what is wrong, how to fix it)."""
    from asr_kd.training.asr_task import BundleError, load_asr_model
    from asr_kd.training.checkpoint import CorruptCheckpointError

    what = None
    if not bundle.is_dir():
        what = f"the pretrained teacher {bundle} is missing"
    else:
        try:
            load_asr_model(bundle)
        except FileNotFoundError as e:
            what = f"the pretrained teacher {bundle} is incomplete: {e}"
        except (CorruptCheckpointError, BundleError) as e:
            what = f"the pretrained teacher {bundle} is corrupt: {e}"
    if what is None:
        return None
    rel = f"egs/synth/ASR/{bundle}" if not bundle.is_absolute() else str(bundle)
    return (
        f"{what}.\n"
        f"It is committed to the repository; restore it with:\n"
        f"    git checkout -- {rel}\n"
        f"or retrain it (about an hour on 2 cores) with the commands under 'Reproduce' in {rel}/README.md."
    )


def training_record(model: Path) -> tuple[int | None, float | None]:
    """``(steps, training seconds)`` of a bundle (its exported record) or an experiment dir (its newest
    ``checkpoint-<step>.pt``); ``None`` for what is not recorded."""
    from asr_kd.training.asr_task import BUNDLE_MODEL
    from asr_kd.training.checkpoint import find_latest, read_checkpoint

    if (model / BUNDLE_MODEL).is_file():
        train = (read_checkpoint(model / BUNDLE_MODEL).get("meta") or {}).get("train") or {}
        return train.get("step"), train.get("train_seconds")
    latest = find_latest(model) if model.is_dir() else None
    if latest is None:
        return None, None
    ck = read_checkpoint(latest)
    return ck.get("step"), (ck.get("meta") or {}).get("train_seconds")


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def build_rows(specs: list[str], split: str, baseline: str | None) -> list[dict]:
    from asr_kd.bin.kd_report import count_params, latest_result

    rows = []
    for spec in specs:
        label, sep, rest = spec.partition("=")
        parts = rest.split(":")
        if not sep or len(parts) != 3:
            raise SystemExit(f"demo.py table: --row must be LABEL=RES_DIR:METHOD:MODEL, got {spec!r}")
        res_dir, method, model = (Path(parts[0]), parts[1], Path(parts[2]))
        r = latest_result(res_dir, split, method)
        steps, seconds = training_record(model)
        rows.append(
            {
                "model": label,
                "params": count_params(r["checkpoint"]),
                "steps": steps,
                "train_seconds": None if seconds is None else round(float(seconds), 1),
                "method": r["method"],
                "split": split,
                "wer": r["wer"],
                "cer": r["cer"],
                "rtf": r["rtf"],
                "num_utts": r["num_utts"],
                "checkpoint": r["checkpoint"],
                "errs": str(res_dir / f"errs-{split}-{r['method']}.txt"),
                "recogs": str(res_dir / f"recogs-{split}-{r['method']}.txt"),
            }
        )
    base = next((r for r in rows if r["model"] == baseline), None)
    if baseline is not None and base is None:
        raise SystemExit(f"demo.py table: --baseline {baseline!r} is not one of the rows")
    for r in rows:
        r["rel_wer_vs_baseline"] = (
            None
            if base is None or r is base or not base["wer"]
            else round(100.0 * (r["wer"] - base["wer"]) / base["wer"], 1)
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        rel = "" if r["rel_wer_vs_baseline"] is None else f"{r['rel_wer_vs_baseline']:+.1f} %"
        cells = [
            r["model"],
            f"{r['params'] / 1e6:.2f}M",
            "" if r["steps"] is None else str(r["steps"]),
            _minutes(r["train_seconds"]),
            r["method"],
            f"{r['wer']:.2f}",
            f"{r['cer']:.2f}",
            rel,
            f"{r['rtf']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-teacher", help="exit 2 with a message when the teacher bundle does not load")
    c.add_argument("bundle", type=Path)
    t = sub.add_parser("table", help="the demo's results table (markdown + json)")
    t.add_argument("--row", action="append", required=True, help="LABEL=RES_DIR:METHOD:MODEL (repeatable)")
    t.add_argument("--baseline", default=None, help="label of the row the relative WER is against")
    t.add_argument("--split", default="test")
    t.add_argument("--out-dir", type=Path, required=True)
    t.add_argument("--note", default="", help="a line printed and saved under the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.cmd == "check-teacher":
        msg = check_teacher(args.bundle)
        if msg is not None:
            print(f"demo: error: {msg}", file=sys.stderr)
            return 2
        print(f"demo: teacher {args.bundle} loads (checksums verified)")
        return 0
    rows = build_rows(args.row, args.split, args.baseline)
    table = format_table(rows)
    text = table + (f"\n{args.note}\n" if args.note else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "demo_results.md").write_text(text)
    (args.out_dir / "demo_results.json").write_text(json.dumps({"split": args.split, "rows": rows}, indent=2) + "\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
