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

    # icefall's --use-averaged-model (needs training.average_period > 0): the average of every
    # average_period-th model of epochs 26..30, from the running averages in epoch-25.pt and epoch-30.pt
    # -> exp/epoch-30-avg-5-use-averaged-model.pt
    python -m asr_kd.bin.average --exp-dir exp/zipformer --epoch 30 --avg 5 --use-averaged-model
    # the same between checkpoint-<s>.pt files: the newest one <= 20000 and the one --avg files before it
    python -m asr_kd.bin.average --exp-dir exp/zipformer --iter 20000 --avg 5 --use-averaged-model
    # newest periodic checkpoint and the one --avg files before it -> exp/averaged.pt (decode's default)
    python -m asr_kd.bin.average --exp-dir exp/zipformer --avg 5 --use-averaged-model

With ``--use-averaged-model`` the weights come from the checkpoints' ``model_avg`` (the trainer's running
average, see ``asr_kd.training.trainer``): with ``avg_s`` the running average stored at step ``s``, the
result is ``(avg_end · s_end - avg_start · s_start) / (s_end - s_start)``, the mean over every
``average_period``-th model after the start file and up to the end file; this uses ``--avg`` + 1 files
(for ``--epoch E``: epoch-(E-avg).pt and epoch-E.pt; E = avg averages from the start of training).
``--checkpoints START END`` (or just END: from the start of training) does the same for explicit files.

The output has the checkpoint format of :mod:`asr_kd.training.checkpoint` with ``model`` (averaged:
float tensors averaged, integer buffers from the last file), ``config``/``step``/``epoch`` of the last
file, no optimiser state, and ``meta["averaged_from"]`` (file names; with ``--use-averaged-model`` the start
and end files, and ``meta["use_averaged_model"] = True``). Load it with
``asr_kd.training.load_checkpoint(path, model=model)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from asr_kd.training.checkpoint import (
    average_checkpoints,
    average_checkpoints_with_averaged_model,
    list_checkpoints,
    save_checkpoint,
)

log = logging.getLogger("asr_kd.bin.average")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, help="experiment directory with epoch-*.pt / checkpoint-*.pt")
    p.add_argument("--epoch", type=int, help="average epoch-(E-avg+1).pt .. epoch-E.pt")
    p.add_argument("--iter", type=int, help="average the --avg newest checkpoint-<step>.pt with step <= ITER")
    p.add_argument("--avg", type=int, default=1, help="number of checkpoints to average (default 1)")
    p.add_argument("--checkpoints", type=Path, nargs="+", help="explicit checkpoint files (instead of the above)")
    p.add_argument(
        "--out",
        type=Path,
        help="output file (default: <exp-dir>/epoch-E-avg-N.pt, "
        "<exp-dir>/iter-I-avg-N.pt or <exp-dir>/averaged.pt; with --use-averaged-model "
        "epoch-E-avg-N-use-averaged-model.pt, iter-I-avg-N-use-averaged-model.pt or averaged.pt)",
    )
    p.add_argument(
        "--use-averaged-model",
        action="store_true",
        help="icefall's averaged model: use the running model_avg of the first and last of --avg+1 "
        "checkpoints (training.average_period > 0) instead of averaging --avg files' weights",
    )
    return p


def select_checkpoints(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[list[Path], Path]:
    """The files to average and the output path. With ``--use-averaged-model``: ``[start, end]``, or
    ``[end]`` when the average runs from the start of training."""
    use_avg = bool(getattr(args, "use_averaged_model", False))
    suffix = "-use-averaged-model" if use_avg else ""
    if args.checkpoints:
        if args.out is None:
            parser.error("--out is required with --checkpoints")
        if use_avg and len(args.checkpoints) > 2:
            parser.error("--use-averaged-model takes --checkpoints START END (or just END)")
        return list(args.checkpoints), args.out
    if args.exp_dir is None:
        parser.error("give --exp-dir (with --epoch / --iter / --avg) or --checkpoints")
    if args.avg < 1:
        parser.error("--avg must be >= 1")
    if args.epoch is not None:
        first = args.epoch - args.avg + 1
        if first < 1:
            parser.error(f"--epoch {args.epoch} --avg {args.avg}: would need epoch {first}")
        epochs = ([first - 1] if first > 1 else []) + [args.epoch] if use_avg else range(first, args.epoch + 1)
        paths = [args.exp_dir / f"epoch-{e}.pt" for e in epochs]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            parser.error(f"missing checkpoints: {', '.join(missing)}")
        return paths, args.out or args.exp_dir / f"epoch-{args.epoch}-avg-{args.avg}{suffix}.pt"
    periodic = list_checkpoints(args.exp_dir, "periodic")
    if args.iter is not None:
        periodic = [p for p in periodic if int(p.stem.split("-")[1]) <= args.iter]
        default_out = args.exp_dir / f"iter-{args.iter}-avg-{args.avg}{suffix}.pt"
    else:
        default_out = args.exp_dir / "averaged.pt"
    need = args.avg + 1 if use_avg else args.avg
    if len(periodic) < need:
        parser.error(f"need {need} checkpoint-*.pt in {args.exp_dir}, found {len(periodic)}")
    chosen = periodic[-need:]
    return ([chosen[0], chosen[-1]] if use_avg else chosen), args.out or default_out


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths, out = select_checkpoints(args, parser)
    meta = {"averaged_from": [p.name for p in paths], "averaged_paths": [str(p) for p in paths]}
    if args.use_averaged_model:
        start, end = (paths[0], paths[-1]) if len(paths) == 2 else (None, paths[-1])
        log.info("averaged model between %s and %s", start.name if start else "the start of training", end.name)
        try:
            model_sd = average_checkpoints_with_averaged_model(start, end)
        except ValueError as e:
            parser.error(str(e))
        meta["use_averaged_model"] = True
        what = f"running averages of {' and '.join(p.name for p in paths)}"
    else:
        log.info("averaging %d checkpoints: %s", len(paths), " ".join(p.name for p in paths))
        model_sd = average_checkpoints(paths)
        what = f"average of {len(paths)} checkpoints"
    aux = [k for k in model_sd if k.startswith("kd_aux.")]
    if aux:  # training-only KD modules (e.g. auxiliary decoders): not part of the averaged model
        model_sd = {k: v for k, v in model_sd.items() if not k.startswith("kd_aux.")}
        log.info("dropped %d training-only kd_aux tensors", len(aux))
    last = torch.load(paths[-1], map_location="cpu", weights_only=True, mmap=True)
    if (last.get("meta") or {}).get("tokens"):
        meta["tokens"] = list(last["meta"]["tokens"])  # the lang dir's pieces, checked at decode time
    save_checkpoint(
        out,
        model=model_sd,
        step=int(last.get("step", 0)),
        epoch=int(last.get("epoch", 0)),
        config=last.get("config") or {},
        rng=None,
        meta=meta,
    )
    print(f"average: wrote {out} ({what})")
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "average"))
