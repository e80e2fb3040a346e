"""LibriSpeech manifests through lhotse's recipe, in icefall's file naming.

Command line (stages 0 and 1 of ``egs/librispeech/ASR/prepare.sh``)::

    python -m asr_kd.corpus.librispeech download --target-dir download \\
        --parts train-clean-100 dev-clean test-clean
    python -m asr_kd.corpus.librispeech prepare --corpus-dir download/LibriSpeech \\
        --out-dir data/manifests --parts train-clean-100 dev-clean test-clean --nj 2

``prepare`` writes, per part, ``librispeech_recordings_<part>.jsonl.gz`` and
``librispeech_supervisions_<part>.jsonl.gz`` (lhotse's ``prepare_librispeech``) and
``librispeech_cuts_<part>.jsonl.gz`` (one cut per utterance, cut id = utterance id, e.g.
``103-1240-0000``), validated. Transcripts are kept as LibriSpeech writes them (upper case,
apostrophes), which is the alphabet of the synthetic corpus too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "librispeech"
DEFAULT_PARTS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")


def download(target_dir: str | Path, parts: Sequence[str]) -> Path:
    """Download and unpack ``parts`` from openslr.org into ``<target_dir>/LibriSpeech`` (network)."""
    from lhotse.recipes import download_librispeech

    return download_librispeech(target_dir, dataset_parts=list(parts))


def cuts_from_manifests(recordings, supervisions):
    """A CutSet with one MonoCut per supervision, spanning it exactly; cut id = supervision id. Supervisions
    get ``doc_id`` = ``<speaker>-<chapter>`` and ``doc_pos`` = the utterance index (:mod:`asr_kd.corpus.documents`)."""
    from lhotse import CutSet, MonoCut
    from lhotse.utils import fastcopy

    from asr_kd.corpus.documents import DOC_ID, DOC_POS, librispeech_document

    cuts = []
    for sup in supervisions:
        rec = recordings[sup.recording_id]
        doc, pos = librispeech_document(sup.id)  # the chapter is the document (context augmentation)
        sup = fastcopy(sup, custom={**(sup.custom or {}), DOC_ID: doc, DOC_POS: pos})
        cuts.append(
            MonoCut(
                id=sup.id,
                start=sup.start,
                duration=sup.duration,
                channel=sup.channel if isinstance(sup.channel, int) else 0,
                recording=rec,
                supervisions=[sup.with_offset(-sup.start)],
            )
        )
    return CutSet.from_cuts(cuts)


def prepare(corpus_dir: str | Path, out_dir: str | Path, parts: Sequence[str], num_jobs: int = 1) -> dict[str, int]:
    """Write recordings, supervisions and cuts for ``parts``; returns utterances per part."""
    from lhotse.qa import validate, validate_recordings_and_supervisions
    from lhotse.recipes import prepare_librispeech

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    missing = [p for p in parts if not (corpus_dir / p).is_dir()]
    if missing:
        raise FileNotFoundError(f"{corpus_dir} lacks the LibriSpeech parts {missing}")
    manifests = prepare_librispeech(corpus_dir, dataset_parts=list(parts), output_dir=out_dir, num_jobs=num_jobs)
    counts = {}
    for part in parts:
        recs, sups = manifests[part]["recordings"], manifests[part]["supervisions"]
        validate_recordings_and_supervisions(recs, sups)
        cuts = cuts_from_manifests(recs, sups)
        validate(cuts)
        cuts.to_file(out_dir / f"{PREFIX}_cuts_{part}.jsonl.gz")
        counts[part] = len(cuts)
        hours = sum(c.duration for c in cuts) / 3600
        print(f"librispeech: {part}: {len(cuts)} utterances, {hours:.2f} h", flush=True)
    return counts


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="download parts from openslr.org (needs the network)")
    d.add_argument("--target-dir", type=Path, required=True)
    d.add_argument("--parts", nargs="+", default=list(DEFAULT_PARTS))
    r = sub.add_parser("prepare", help="write Lhotse manifests for a local LibriSpeech directory")
    r.add_argument("--corpus-dir", type=Path, required=True, help="the LibriSpeech/ directory")
    r.add_argument("--out-dir", type=Path, required=True)
    r.add_argument("--parts", nargs="+", default=list(DEFAULT_PARTS))
    r.add_argument("--nj", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "download":
        print(f"librispeech: downloaded into {download(args.target_dir, args.parts)}")
    else:
        prepare(args.corpus_dir, args.out_dir, args.parts, args.nj)
    return 0


if __name__ == "__main__":
    sys.exit(main())
