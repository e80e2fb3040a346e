"""Dump a masked LM's per-token distributions (offline interAED-KD targets) into new cut manifests.

Usage::

    cd egs/synth/ASR
    python -m asr_kd.bin.dump_mlm --model-dir exp/mlm_minilm --splits train dev \\
        --manifest-dir data/fbank --prefix synth --out-dir data/kd_mlm_minilm --topk 16 --temperature 1.0
    # the cost on a small sample (sentences / second), 1 thread
    nice -n 19 python -m asr_kd.bin.dump_mlm --model-dir exp/mlm_minilm --splits dev --max-cuts 200 \\
        --out-dir /tmp/mlm_cost --num-threads 1

For each split it reads ``<manifest-dir>/<prefix>_cuts_<split>.jsonl.gz``, masks every WordPiece position
of every transcript in turn (batched, :func:`asr_kd.kd.mlm.masked_log_probs`) and writes
``<out-dir>/<prefix>_cuts_<split>.jsonl.gz`` (the cuts plus the fields of :mod:`asr_kd.kd.mlm`) with the
arrays under ``<out-dir>/<prefix>_mlm_<split>``, and ``<out-dir>/<prefix>_mlm_<split>.json`` (counts,
[UNK] report, seconds, sentences/second). Train the student from them with ``data.manifest_dir: <out-dir>``
and ``kd.teacher: {type: offline_mlm}``. A folder without an MLM head is refused with the command that
trains one (:mod:`asr_kd.bin.train_mlm`).
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

log = logging.getLogger("asr_kd.bin.dump_mlm")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="an AutoModelForMaskedLM folder (with tokenizer)")
    add_manifest_args(p)
    p.add_argument("--topk", type=int, default=16, help="K of the stored top-k per position [16]")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the teacher [1.0]")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch [32]")
    p.add_argument("--max-copies", type=int, default=256, help="masked copies per forward pass [256]")
    p.add_argument("--max-length", type=int, default=128, help="WordPiece units per sentence incl. [CLS]/[SEP]")
    add_run_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    start(args)
    from asr_kd.kd.mlm import HfMlmTeacher, MlmDumpReport, dump_mlm_targets

    paths = input_manifests(args)
    teacher = HfMlmTeacher(
        args.model_dir, temperature=args.temperature, max_length=args.max_length, max_copies=args.max_copies
    ).to(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, path in paths.items():
        cuts = read_cuts(path, args.max_cuts)
        report = MlmDumpReport()
        dump_mlm_targets(
            teacher,
            cuts,
            args.out_dir,
            topk=args.topk,
            batch_size=args.batch_size,
            storage_name=f"{args.prefix}_mlm_{split}",
            output_manifest=output_manifest(args, split),
            report=report,
        )
        summary = {
            "split": split,
            "model_dir": str(args.model_dir),
            "num_cuts": report.num_cuts,
            "num_done": report.num_done,
            "num_pieces": report.num_pieces,
            "skipped": report.skipped,
            "seconds": round(report.seconds, 3),
            "sentences_per_second": round(report.sentences_per_second, 3),
            "threads": torch.get_num_threads(),
            "topk": args.topk,
            "temperature": args.temperature,
            "unk": report.unk.as_dict(),
        }
        write_summary(args.out_dir / f"{args.prefix}_mlm_{split}.json", summary)
        print(
            f"{split}: MLM targets for {report.num_done} of {report.num_cuts} cuts ({len(report.skipped)} skipped), "
            f"{report.num_pieces} pieces in {report.seconds:.1f} s ({report.sentences_per_second:.2f} sentences/s, "
            f"{torch.get_num_threads()} threads); {report.unk.summary()}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "dump_mlm"))
