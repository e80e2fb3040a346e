#!/usr/bin/env python
"""WER against training time: decode every checkpoint of an experiment, then plot one or more curves.

Usage (from egs/synth/ASR)::

    # decode each checkpoint-<step>.pt (CTC greedy on test); one TSV row per checkpoint:
    # step, training minutes (the checkpoint's meta.train_seconds), audio hours seen, WER, CER
    python ../../../scripts/wer_curve.py decode --exp-dir exp/zipformer_ctc_s --method ctc-greedy --split test
    # plot curves (TSV:label) and reference points (label:min=wer,min=wer,...) into a PNG
    python ../../../scripts/wer_curve.py plot --out ../../../docs/wer_vs_minutes.png \
        --curve exp/zipformer_ctc_s/wer_curve-test-ctc-greedy.tsv:"Zipformer-CTC s" \
        --points "Conformer-CTC s (issue 3, 1 thread):14=89.16,30=73.13,47=64.42,60=59.78"

``plot`` runs ``python -m asr_kd.bin.plot wer-curve`` with the same options. Checkpoints already in the
TSV are not decoded again, so ``decode`` can run while training continues.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch


def _checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in exp_dir.glob("checkpoint-*.pt"):
        m = re.fullmatch(r"checkpoint-(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def cmd_decode(args: argparse.Namespace) -> int:
    from asr_kd.bin import decode

    exp_dir = Path(args.exp_dir)
    tsv = exp_dir / f"wer_curve-{args.split}-{args.method}.tsv"
    done: dict[int, str] = {}
    if tsv.exists():
        for line in tsv.read_text().splitlines()[1:]:
            done[int(line.split("\t")[0])] = line
    ckpts = _checkpoints(exp_dir)
    for i, (step, ckpt) in enumerate(ckpts):
        if step in done or (args.every > 1 and step % args.every and i != len(ckpts) - 1):
            continue
        meta = torch.load(ckpt, map_location="cpu", weights_only=True).get("meta", {})
        res_dir = f"curve/step-{step}"
        rc = decode.main(
            [
                "--exp-dir",
                str(exp_dir),
                "--checkpoint",
                str(ckpt),
                "--method",
                args.method,
                "--split",
                args.split,
                "--num-threads",
                str(args.num_threads),
                "--res-dir",
                res_dir,
                *args.decode_args,
            ]
        )
        if rc:
            print(f"decoding {ckpt} failed (exit {rc})", file=sys.stderr)
            return rc
        rows = [json.loads(x) for x in (exp_dir / res_dir / "results.jsonl").read_text().splitlines() if x]
        r = rows[-1]
        done[step] = "\t".join(
            [
                str(step),
                f"{meta.get('train_seconds', float('nan')) / 60:.2f}",
                f"{meta.get('audio_seconds', float('nan')) / 3600:.2f}",
                f"{r['wer']:.2f}",
                f"{r['cer']:.2f}",
            ]
        )
        lines = ["step\tminutes\taudio_hours\twer\tcer"] + [done[s] for s in sorted(done)]
        tsv.write_text("\n".join(lines) + "\n")
    print(tsv.read_text() if tsv.exists() else "no checkpoints", end="")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """The figure is drawn by ``asr_kd.bin.plot wer-curve`` (same options)."""
    from asr_kd.bin import plot

    argv = ["wer-curve", "--out", args.out, "--ylabel", args.ylabel, "--title", args.title]
    argv += [x for c in args.curve for x in ("--curve", c)] + [x for p in args.points for x in ("--points", p)]
    return plot.main(argv + (["--audio-hours"] if args.audio_hours else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("decode", help="decode every checkpoint of an experiment")
    d.add_argument("--exp-dir", required=True)
    d.add_argument("--method", default="ctc-greedy")
    d.add_argument("--split", default="test")
    d.add_argument("--num-threads", type=int, default=1)
    d.add_argument("--every", type=int, default=1, help="only steps divisible by this (and the last checkpoint)")
    d.add_argument("decode_args", nargs="*", help="more asr_kd.bin.decode options (after --)")
    q = sub.add_parser("plot", help="plot curves from decode's TSVs")
    q.add_argument("--out", required=True)
    q.add_argument("--curve", action="append", default=[], help="TSV[:label]")
    q.add_argument("--points", action="append", default=[], help="label:min=wer,min=wer,...")
    q.add_argument("--ylabel", default="test WER % (greedy)")
    q.add_argument("--audio-hours", action="store_true", help="a second panel: WER against audio hours seen")
    q.add_argument("--title", default="WER against training time, default synthetic corpus")
    args = p.parse_args(argv)
    return cmd_decode(args) if args.cmd == "decode" else cmd_plot(args)


if __name__ == "__main__":
    sys.exit(main())
