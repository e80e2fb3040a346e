"""Average the model weights of several checkpoints into one checkpoint file.

Usage::

    # epochs 26..30 (epoch-26.pt ... epoch-30.pt) -> exp/epoch-30-avg-5.pt
    python -m asr_kd.bin.average --exp-dir exp/conformer_ctc_s --epoch 30 --avg 5
    # the 5 periodic checkpoints up to step 20000 -> exp/iter-20000-avg-5.pt
    python -m asr_kd.bin.average --exp-dir exp/conformer_ctc_s --iter 20000 --avg 5
    # the 5 newest periodic checkpoints (whatever their steps) -> exp/averaged.pt
    python -m asr_kd.bin.average --exp-dir exp/conformer_ctc_s --avg 5 --out exp/conformer_ctc_s/averaged.pt
    # explicit files
    python -m asr_kd.bin.average --checkpoints a.pt b.pt c.pt --out avg.pt

The output has the checkpoint format of :mod:`asr_kd.training.checkpoint` with ``model`` (averaged:
float tensors averaged, integer buffers from the last file), ``config``/``step``/``epoch`` of the last
file, no optimiser state, and ``meta["averaged_from"]`` (file names). Load it with
``asr_kd.training.load_checkpoint(path, model=model)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from asr_kd.training.checkpoint import average_checkpoints, list_checkpoints, save_checkpoint

log = logging.getLogger("asr_kd.bin.average")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, help="experiment directory with epoch-*.pt / checkpoint-*.pt")
    p.add_argument("--epoch", type=int, help="average epoch-(E-avg+1).pt .. epoch-E.pt")
    p.add_argument("--iter", type=int, help="average the --avg newest checkpoint-<step>.pt with step <= ITER")
    p.add_argument("--avg", type=int, default=1, help="number of checkpoints to average (default 1)")
    p.add_argument("--checkpoints", type=Path, nargs="+", help="explicit checkpoint files (instead of the above)")
    p.add_argument("--out", type=Path, help="output file (default: <exp-dir>/epoch-E-avg-N.pt, "
                   "<exp-dir>/iter-I-avg-N.pt or <exp-dir>/averaged.pt)")
    return p


def select_checkpoints(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[list[Path], Path]:
    if args.checkpoints:
        if args.out is None:
            parser.error("--out is required with --checkpoints")
        return list(args.checkpoints), args.out
    if args.exp_dir is None:
        parser.error("give --exp-dir (with --epoch / --iter / --avg) or --checkpoints")
    if args.avg < 1:
        parser.error("--avg must be >= 1")
    if args.epoch is not None:
        first = args.epoch - args.avg + 1
        if first < 1:
            parser.error(f"--epoch {args.epoch} --avg {args.avg}: would need epoch {first}")
        paths = [args.exp_dir / f"epoch-{e}.pt" for e in range(first, args.epoch + 1)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            parser.error(f"missing checkpoints: {', '.join(missing)}")
        return paths, args.out or args.exp_dir / f"epoch-{args.epoch}-avg-{args.avg}.pt"
    periodic = list_checkpoints(args.exp_dir, "periodic")
    if args.iter is not None:
        periodic = [p for p in periodic if int(p.stem.split("-")[1]) <= args.iter]
        default_out = args.exp_dir / f"iter-{args.iter}-avg-{args.avg}.pt"
    else:
        default_out = args.exp_dir / "averaged.pt"
    if len(periodic) < args.avg:
        parser.error(f"need {args.avg} checkpoint-*.pt in {args.exp_dir}, found {len(periodic)}")
    return periodic[-args.avg :], args.out or default_out


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths, out = select_checkpoints(args, parser)
    log.info("averaging %d checkpoints: %s", len(paths), " ".join(p.name for p in paths))
    model_sd = average_checkpoints(paths)
    last = torch.load(paths[-1], map_location="cpu", weights_only=True, mmap=True)
    save_checkpoint(
        out, model=model_sd, step=int(last.get("step", 0)), epoch=int(last.get("epoch", 0)),
        config=last.get("config") or {}, rng=None,
        meta={"averaged_from": [p.name for p in paths], "averaged_paths": [str(p) for p in paths]},
    )
    print(f"average: wrote {out} (average of {len(paths)} checkpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
