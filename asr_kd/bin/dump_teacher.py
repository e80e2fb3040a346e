"""Dump a trained teacher's offline KD targets (CTC top-k, optional n-best) into new cut manifests.

Usage::

    cd egs/synth/ASR
    python -m asr_kd.bin.dump_teacher --checkpoint exp/conformer_ctc_s/averaged.pt \\
        --splits train dev --out-dir data/kd_conformer_ctc_s --topk 8
    # with the teacher's 10-best lists (sequence-level KD)
    python -m asr_kd.bin.dump_teacher --exp-dir exp/conformer_ctc_s --splits train dev \\
        --out-dir data/kd_conformer_ctc_s --topk 8 --nbest 10 --nbest-method ctc-prefix-beam

For each split it reads ``<manifest-dir>/<prefix>_cuts_<split>.jsonl.gz``, runs the frozen teacher
(features as the teacher was trained: fbank settings from the checkpoint's config) and writes
``<out-dir>/<prefix>_cuts_<split>.jsonl.gz`` (the same cuts plus the custom fields of
:mod:`asr_kd.kd.offline`) and the arrays under ``<out-dir>/<prefix>_kd_<split>``. Cuts the teacher could
not process stay in the manifest without targets; their ids and reasons go to
``<out-dir>/<prefix>_kd_<split>_failed.txt``. Train the student from them with
``data.manifest_dir: <out-dir>`` and ``kd.teacher: {type: offline, fields: [kd_ctc_topk]}``; dump the
validation split too (its batches carry the targets as well).

Manifest dir, prefix and fbank settings come from the checkpoint's config unless given here.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from asr_kd.bin._common import cut_manifests
from asr_kd.bin.decode import resolve_checkpoint
from asr_kd.decoding.search import NBEST_METHODS
from asr_kd.training.asr_task import load_asr_model

log = logging.getLogger("asr_kd.bin.dump_teacher")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="the teacher (default: <exp-dir>/averaged.pt, else the latest)")
    p.add_argument("--exp-dir", type=Path, help="the teacher's experiment dir (when --checkpoint is not given)")
    p.add_argument("--splits", nargs="+", action="extend", help="splits to dump (repeatable) [train]")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--topk", type=int, default=8, help="K of the stored CTC top-k (>= V keeps all) [8]")
    p.add_argument("--nbest", type=int, default=0, help="also store the teacher's n-best lists of this size [0]")
    p.add_argument("--nbest-method", default="ctc-prefix-beam", choices=NBEST_METHODS)
    p.add_argument("--max-duration", type=float, default=100.0, help="seconds of audio per batch")
    p.add_argument("--manifest-dir", type=Path, help="override the checkpoint config's data.manifest_dir")
    p.add_argument("--prefix", help="override data.prefix")
    p.add_argument(
        "--lang-dir",
        type=Path,
        help="the lang dir the targets are for (default: the checkpoint config's data.lang_dir); it must "
        "be the teacher's vocabulary",
    )
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (feature extraction)")
    p.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")
    return p


def check_teacher_lang_dir(model, ckpt: Path, lang_dir: Path | None, trained_lang_dir: str | None) -> None:
    """The stored targets are token ids of the teacher's vocabulary: refuse a lang dir of another one.

    ``lang_dir`` (given) must exist and match; without it the teacher's own ``data.lang_dir`` is
    checked when it still exists (a warning otherwise: only the checkpoint's stored pieces are known).

    Raises:
        FileNotFoundError: a given ``lang_dir`` without ``bpe.model``.
        asr_kd.data.tokenizer.VocabMismatchError: sizes or pieces differ (both named).
    """
    from asr_kd.data.tokenizer import BPE_MODEL, Tokenizer, check_vocab

    path = lang_dir if lang_dir is not None else (Path(trained_lang_dir) if trained_lang_dir else None)
    if path is None or not (path / BPE_MODEL).is_file():
        if lang_dir is not None:
            raise FileNotFoundError(f"{lang_dir / BPE_MODEL} not found (--lang-dir)")
        log.warning("the teacher's lang dir %s is not available: its vocabulary is not checked", path)
        return
    check_vocab(
        Tokenizer.from_dir(path),
        int(model.vocab_size),
        getattr(model, "trained_tokens", None),
        lang_dir=path,
        model=ckpt,
        model_lang_dir=trained_lang_dir,
    )


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.checkpoint is None and args.exp_dir is None:
        raise SystemExit("give --checkpoint or --exp-dir")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    from lhotse import CutSet

    from asr_kd.data import AsrDataConfig
    from asr_kd.kd.offline import DumpReport, dump_teacher_targets
    from asr_kd.kd.teachers import AsrTeacher

    ckpt = resolve_checkpoint(args.exp_dir or args.checkpoint.parent, args.checkpoint)
    device = torch.device(args.device)
    model, config = load_asr_model(ckpt, device=device)
    teacher = AsrTeacher(model)
    data_cfg = dict(config.get("data") or {})
    check_teacher_lang_dir(model, ckpt, args.lang_dir, data_cfg.get("lang_dir"))
    manifest_dir = Path(args.manifest_dir or data_cfg.get("manifest_dir", "data/manifests"))
    prefix = args.prefix or data_cfg.get("prefix", "synth")
    paths = cut_manifests(manifest_dir, prefix, args.splits or ["train"])
    features = AsrDataConfig(
        num_workers=args.num_workers,
        on_the_fly_feats=bool(data_cfg.get("on_the_fly_feats", True)),
        num_mel_bins=int(data_cfg.get("num_mel_bins", 80)),
        fbank_backend=data_cfg.get("fbank_backend", "auto"),
    )
    log.info(
        "teacher %s (%.2fM params), top-%d, %d-best (%s), splits %s -> %s",
        ckpt,
        sum(p.numel() for p in model.parameters()) / 1e6,
        args.topk,
        args.nbest,
        args.nbest_method,
        args.splits or ["train"],
        args.out_dir,
    )

    args.out_dir.mkdir(parents=True, exist_ok=True)
    total_failed = 0
    for split, path in paths.items():
        t0 = time.perf_counter()
        report = DumpReport()
        dump_teacher_targets(
            teacher,
            CutSet.from_jsonl_lazy(path),
            args.out_dir,
            topk=args.topk,
            nbest=args.nbest,
            nbest_method=args.nbest_method,
            max_duration=args.max_duration,
            device=device,
            data_config=features,
            storage_name=f"{prefix}_kd_{split}",
            output_manifest=args.out_dir / f"{prefix}_cuts_{split}.jsonl.gz",
            report=report,
        )
        failed_path = args.out_dir / f"{prefix}_kd_{split}_failed.txt"
        if report.failed:
            failed_path.write_text("".join(f"{cut_id}\t{reason}\n" for cut_id, reason in report.failed))
        elif failed_path.exists():
            failed_path.unlink()  # from an earlier run
        total_failed += report.num_failed
        seconds = time.perf_counter() - t0
        print(
            f"{split}: targets for {report.num_done} of {report.num_cuts} cuts ({report.num_failed} failed"
            + (f", listed in {failed_path}" if report.failed else "")
            + f"), {report.audio_seconds / 3600:.3f} h of audio in {seconds:.1f} s "
            f"(RTF {seconds / max(report.audio_seconds, 1e-9):.4f}) -> "
            f"{args.out_dir / f'{prefix}_cuts_{split}.jsonl.gz'}",
            flush=True,
        )
    if total_failed:
        log.warning("%d cuts have no teacher targets (kept in the manifests without them)", total_failed)
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "dump_teacher"))
