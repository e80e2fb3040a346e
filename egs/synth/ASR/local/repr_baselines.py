"""Reference regression losses for the lm_repr_transfer rows: what two trivial predictors of the stored
teacher states score, in the units the trainer logs (``repr_<m>_l<l>`` with ``loss.normalize: frames``).

Usage (from egs/synth/ASR, after run_repr_kd.sh stage 3)::

    python local/repr_baselines.py --kd-data data/kd_repr --field minilm --layers 2 4 6

- **constant**: the per-dimension median of the train targets (the best constant under L1);
- **lookup**: the per-WordPiece-id median of the train targets (unseen ids: the constant), i.e. a
  context-free table of the token identity.

Statistics come from ``--train-cuts`` shuffled train cuts (seeded), scores from every dev cut (variant 0).
Each is printed per token (mean over positions of mean_d |pred - target|) and per encoder frame (times
tokens / frames, frames ``((duration * 100 - 7) // 4)`` at the 25 Hz output rate), the latter comparable with
the logged dev ``repr_*`` values.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

import numpy as np


def load(kd_data: Path, prefix: str, split: str, field: str, n: int | None, seed: int):
    """Stored states (P, n_layers, D) of variant 0, their WordPiece ids (P,), the stored layers, frames."""
    path = kd_data / f"{prefix}_cuts_{split}.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    random.Random(seed).shuffle(rows)
    rows = rows[:n] if n else rows
    key = f"kd_repr_{field}"
    states, ids, frames, layers = [], [], 0, None
    for r in rows:
        c = r.get("custom", {}).get(key)
        if c is None:
            raise SystemExit(f"repr_baselines: {path}: cut {r.get('id')} has no {key} (run_repr_kd.sh stage 3)")
        a = np.load(Path(c["storage_path"]) / c["storage_key"]).astype(np.float32)  # (L, K, n_l, D)
        states.append(a[:, 0])
        ids.extend(r["custom"][f"{key}_ids"])
        frames += int((r["duration"] * 100 - 7) // 4)
        layers = r["custom"][f"{key}_info"]["layers"]
    return np.concatenate(states), np.asarray(ids), [int(x) for x in layers], frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kd-data", type=Path, default=Path("data/kd_repr"))
    p.add_argument("--prefix", default="synth")
    p.add_argument("--field", default="minilm")
    p.add_argument("--layers", type=int, nargs="+", required=True)
    p.add_argument("--train-cuts", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    h_tr, id_tr, layers, _ = load(args.kd_data, args.prefix, "train", args.field, args.train_cuts, args.seed)
    h_dv, id_dv, _, frames = load(args.kd_data, args.prefix, "dev", args.field, None, args.seed)
    rate = len(id_dv) / frames
    print(f"dev: {len(id_dv)} WordPiece positions, about {frames} encoder frames ({rate:.4f} tokens / frame)")
    print("| layer | constant, per token | lookup, per token | constant, per frame | lookup, per frame |")
    print("|---|---:|---:|---:|---:|")
    for layer in args.layers:
        if layer not in layers:
            raise SystemExit(f"repr_baselines: layer {layer} not stored in {args.field} (stored: {layers})")
        k = layers.index(layer)
        med = np.median(h_tr[:, k], axis=0)
        table = {int(t): np.median(h_tr[id_tr == t, k], axis=0) for t in np.unique(id_tr)}
        look = np.stack([table.get(int(t), med) for t in id_dv])
        c = float(np.abs(h_dv[:, k] - med).mean())
        lk = float(np.abs(h_dv[:, k] - look).mean())
        print(f"| {layer} | {c:.4f} | {lk:.4f} | {c * rate:.4f} | {lk * rate:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
