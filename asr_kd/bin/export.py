"""Export a trained model as a standalone inference checkpoint, optionally as a smaller sub-model.

Usage::

    # the averaged model without training-only parts (KD modules, optimiser state)
    python -m asr_kd.bin.export --checkpoint exp/selfkd/averaged.pt --out exp/selfkd/exported.pt
    # self-KD's sub-model: encoder layers 1..4 + the inter-CTC head of layer 4, a CTC model of its own
    python -m asr_kd.bin.export --checkpoint exp/selfkd/averaged.pt --sub-model-layer 4 \
        --out exp/selfkd/sub4.pt
    python -m asr_kd.bin.decode --checkpoint exp/selfkd/sub4.pt --method ctc-greedy ...

The output has the checkpoint format of :mod:`asr_kd.training.checkpoint` (``model`` state, ``config``
whose ``model`` section rebuilds exactly the exported architecture), so ``asr_kd.bin.decode`` and
``asr_kd.training.asr_task.load_asr_model`` load it like any other checkpoint. ``config["data"]`` (lang
dir, features) is kept from the source so decoding uses the same front end.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from asr_kd.training.asr_task import load_asr_model
from asr_kd.training.checkpoint import save_checkpoint

__all__ = ["export_model", "main"]


def export_model(checkpoint: str | Path, out: str | Path, *, sub_model_layer: int | None = None) -> Path:
    """Write ``out`` from ``checkpoint``: the whole model, or its ``sub_model_layer`` sub-model."""
    model, config = load_asr_model(checkpoint)
    config = copy.deepcopy(config)
    config.pop("kd", None)  # a standalone model: no teacher, no KD methods
    meta = {"exported_from": str(checkpoint)}
    if sub_model_layer is not None:
        model = model.submodel(sub_model_layer)
        meta["sub_model_layer"] = int(sub_model_layer)
    config["model"] = copy.deepcopy(model.config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("kd_aux.")}
    return save_checkpoint(out, model=state, step=0, epoch=0, config=config, rng=None, meta=meta)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint or averaged model")
    p.add_argument("--out", type=Path, required=True, help="output checkpoint")
    p.add_argument("--sub-model-layer", type=int, default=None,
                   help="export encoder layers 1..K plus the inter-CTC head of layer K")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        out = export_model(args.checkpoint, args.out, sub_model_layer=args.sub_model_layer)
    except KeyError as e:  # no inter-CTC head at that layer
        raise SystemExit(f"export: {e.args[0] if e.args else e}") from None
    model, _ = load_asr_model(out)
    n = sum(p.numel() for p in model.parameters())
    what = f"sub-model (layers 1..{args.sub_model_layer})" if args.sub_model_layer else "model"
    print(f"export: wrote {out}: {what}, {n / 1e6:.2f}M parameters, heads {model.enabled_heads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
