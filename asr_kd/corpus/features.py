"""Optional precomputed 80-bin fbank features, stored with lilcom (icefall's ``compute_fbank_*.py``).

Recipes normally compute features on the fly; this step trades disk for speed. For each split::

    python -m asr_kd.corpus.features --in-dir data/manifests --out-dir data/fbank \\
        --prefix synth --splits train dev test --nj 2

reads ``<in-dir>/<prefix>_cuts_<split>.jsonl.gz`` and writes ``<out-dir>/<prefix>_cuts_<split>.jsonl.gz``
(the same cuts with features attached) plus the lilcom archive ``<out-dir>/<prefix>_feats_<split>``.
A split whose output cut manifest exists is skipped. In a terminal lhotse draws a progress bar per split
(not under ``CI=true`` / ``ASR_KD_PROGRESS=0``, :mod:`asr_kd.utils.progress`).

The extractor is the data pipeline's own (:func:`asr_kd.data.features.make_fbank`): Kaldi-compatible
fbank, 25 ms window, 10 ms shift, 80 mel bins, no dither; ``KaldifeatFbank`` when ``kaldifeat`` is
importable, else lhotse's pure-PyTorch ``Fbank`` (``--extractor`` forces one).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from asr_kd.utils.manifests import write_cuts

log = logging.getLogger(__name__)

NUM_MEL_BINS = 80


def make_extractor(kind: str = "auto", num_mel_bins: int = NUM_MEL_BINS):
    """The project's fbank extractor (:func:`asr_kd.data.features.make_fbank`, no dither).

    ``kind``: ``"kaldifeat"``, ``"lhotse"`` or ``"auto"`` (kaldifeat if importable). Using the same
    factory as the on-the-fly data pipeline keeps precomputed and on-the-fly features identical.
    """
    from asr_kd.data.features import make_fbank

    return make_fbank(num_mel_bins=num_mel_bins, backend=kind)


def compute_fbank(
    in_dir: str | Path,
    out_dir: str | Path,
    prefix: str,
    splits: Sequence[str],
    num_jobs: int = 1,
    extractor: str = "auto",
) -> list[Path]:
    """Compute and store features for ``splits``; returns the written cut manifests."""
    import torch
    from lhotse import CutSet, LilcomChunkyWriter

    from asr_kd.utils.progress import progress_enabled

    torch.set_num_threads(1)
    # absolute storage paths, like the recordings': the manifests then work from any directory
    in_dir, out_dir = Path(in_dir), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = make_extractor(extractor)
    written = []
    for split in splits:
        out = out_dir / f"{prefix}_cuts_{split}.jsonl.gz"
        if out.is_file():
            print(f"fbank: {out} exists; skipping")
            written.append(out)
            continue
        cuts = CutSet.from_file(in_dir / f"{prefix}_cuts_{split}.jsonl.gz")
        print(f"fbank: {split}: {len(cuts)} cuts with {type(ex).__name__}, {num_jobs} jobs", flush=True)
        cuts = cuts.compute_and_store_features(
            extractor=ex,
            storage_path=out_dir / f"{prefix}_feats_{split}",
            num_jobs=num_jobs,
            storage_type=LilcomChunkyWriter,
            progress_bar=progress_enabled(),  # lhotse's tqdm bar, in a terminal only
        )
        write_cuts(cuts, out)  # atomic: never a partial manifest at out
        written.append(out)
    return written


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in-dir", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--prefix", required=True, help="manifest prefix, e.g. synth or librispeech")
    p.add_argument("--splits", nargs="+", required=True)
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--extractor", choices=("auto", "kaldifeat", "lhotse"), default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    compute_fbank(args.in_dir, args.out_dir, args.prefix, args.splits, args.nj, args.extractor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
