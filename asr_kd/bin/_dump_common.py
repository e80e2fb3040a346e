"""What the per-split manifest dump tools (:mod:`asr_kd.bin.dump_repr`, :mod:`asr_kd.bin.dump_mlm`) share.

Each reads ``<manifest-dir>/<prefix>_cuts_<split>.jsonl.gz`` for every ``--splits`` entry (all are checked
before the model loads: :func:`input_manifests`), optionally only the first ``--max-cuts`` cuts of each
(:func:`read_cuts`), and writes ``<out-dir>/<prefix>_cuts_<split>.jsonl.gz`` (:func:`output_manifest`) plus a
JSON summary per split (:func:`write_summary`). The options are added in two groups, :func:`add_manifest_args`
and :func:`add_run_args`, so that each tool keeps its own options between them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from itertools import islice
from pathlib import Path

import torch

from asr_kd.bin._common import cut_manifests

__all__ = [
    "add_manifest_args",
    "add_run_args",
    "input_manifests",
    "output_manifest",
    "read_cuts",
    "start",
    "write_summary",
]


def add_manifest_args(p: argparse.ArgumentParser) -> None:
    """``--splits``, ``--manifest-dir``, ``--prefix``, ``--out-dir`` (required)."""
    p.add_argument("--splits", nargs="+", default=["train", "dev"], help="splits to dump [train dev]")
    p.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    p.add_argument("--prefix", default="synth")
    p.add_argument("--out-dir", type=Path, required=True)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """``--max-cuts`` (0: all), ``--num-threads`` (torch intra-op; default: torch's), ``--device``."""
    p.add_argument("--max-cuts", type=int, default=0, help="only the first N cuts of each split (timing) [all]")
    p.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")


def start(args: argparse.Namespace) -> None:
    """INFO logging to stderr; ``torch.set_num_threads(args.num_threads)`` when it is given."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)


def input_manifests(args: argparse.Namespace) -> dict[str, Path]:
    """``{split: <manifest-dir>/<prefix>_cuts_<split>.jsonl.gz}`` in ``args.splits`` order.

    Raises ``FileNotFoundError`` naming the first missing manifest (before any model is loaded):
    :func:`asr_kd.bin._common.cut_manifests`."""
    return cut_manifests(args.manifest_dir, args.prefix, args.splits)


def read_cuts(path: Path, max_cuts: int = 0):
    """The cuts of ``path``: a lazy ``CutSet``, or an eager one of its first ``max_cuts`` cuts when > 0."""
    from lhotse import CutSet

    cuts = CutSet.from_jsonl_lazy(path)
    if max_cuts > 0:
        cuts = CutSet.from_cuts(islice(cuts, max_cuts))
    return cuts


def output_manifest(args: argparse.Namespace, split: str) -> Path:
    """``<out-dir>/<prefix>_cuts_<split>.jsonl.gz``: the input cuts plus the tool's fields."""
    return args.out_dir / f"{args.prefix}_cuts_{split}.jsonl.gz"


def write_summary(path: Path, summary: dict) -> None:
    """``summary`` as indented JSON (one trailing newline) at ``path``."""
    path.write_text(json.dumps(summary, indent=2) + "\n")
