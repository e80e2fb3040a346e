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
import json
import logging
import sys
from itertools import islice
from pathlib import Path

import torch

log = logging.getLogger("asr_kd.bin.dump_mlm")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="an AutoModelForMaskedLM folder (with tokenizer)")
    p.add_argument("--splits", nargs="+", default=["train", "dev"], help="splits to dump [train dev]")
    p.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    p.add_argument("--prefix", default="synth")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--topk", type=int, default=16, help="K of the stored top-k per position [16]")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the teacher [1.0]")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch [32]")
    p.add_argument("--max-copies", type=int, default=256, help="masked copies per forward pass [256]")
    p.add_argument("--max-length", type=int, default=128, help="WordPiece units per sentence incl. [CLS]/[SEP]")
    p.add_argument("--max-cuts", type=int, default=0, help="only the first N cuts of each split (timing) [all]")
    p.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    from lhotse import CutSet

    from asr_kd.kd.mlm import HfMlmTeacher, MlmDumpReport, dump_mlm_targets

    paths = {}
    for split in args.splits:
        path = args.manifest_dir / f"{args.prefix}_cuts_{split}.jsonl.gz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (run prepare.sh, or pass --manifest-dir/--prefix)")
        paths[split] = path
    teacher = HfMlmTeacher(
        args.model_dir, temperature=args.temperature, max_length=args.max_length, max_copies=args.max_copies
    ).to(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, path in paths.items():
        cuts = CutSet.from_jsonl_lazy(path)
        if args.max_cuts > 0:
            cuts = CutSet.from_cuts(islice(cuts, args.max_cuts))
        report = MlmDumpReport()
        dump_mlm_targets(
            teacher,
            cuts,
            args.out_dir,
            topk=args.topk,
            batch_size=args.batch_size,
            storage_name=f"{args.prefix}_mlm_{split}",
            output_manifest=args.out_dir / f"{args.prefix}_cuts_{split}.jsonl.gz",
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
        (args.out_dir / f"{args.prefix}_mlm_{split}.json").write_text(json.dumps(summary, indent=2) + "\n")
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
