"""Compile (and cache) a lang dir's decoding graph: HLG = H o det(L o G), or HL without an LM.

Usage::

    python -m asr_kd.bin.compile_hlg --lang-dir data/lang_bpe_500 --arpa data/lang_bpe_500/G_3gram.arpa
    python -m asr_kd.bin.compile_hlg --lang-dir data/lang_bpe_500            # HL (no G)
    python -m asr_kd.bin.compile_hlg --lang-dir data/lang_wp --ctc-topo modified  # 12k tokens: O(V) H

Writes ``<lang-dir>/HLG_<arpa stem>.fst`` (or ``HL.fst``) and a ``.json`` beside it with the
sha256 of the inputs, the build time, the number of states and arcs, the file size and the size
estimates (see :mod:`asr_kd.decoding.hlg`); ``decode --method ctc-hlg --arpa ...`` then loads it
instead of building it. A second run with the same inputs only loads the cached graph.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from asr_kd.bin._common import refuse


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang-dir", type=Path, required=True, help="tokens.txt, words.txt, lexicon.txt")
    p.add_argument("--arpa", type=Path, default=None, help="ARPA LM for G (default: HL, no G)")
    p.add_argument("--lm-scale", type=float, default=1.0, help="G cost scale [1.0]")
    p.add_argument("--max-order", type=int, default=None, help="use the ARPA's n-grams up to this order")
    p.add_argument(
        "--keep-epsilon",
        action="store_true",
        help="keep LG's eps:eps arcs (the removed #k, G's backoffs): a far smaller graph (HLG_..._eps.fst)",
    )
    p.add_argument(
        "--ctc-topo",
        choices=("standard", "modified", "auto"),
        default="auto",
        help="H's CTC topology: standard (V*V arcs, the CTC collapse), modified (4V-3 arcs; a run of equal frames "
        "may also be read as several tokens; cached as *_modified.fst) or auto = modified when the vocabulary has "
        "more than 1000 tokens (asr_kd.decoding.wfst.AUTO_MODIFIED_ABOVE) [%(default)s]",
    )
    p.add_argument("--max-mem-gb", type=float, default=None, help="refuse graphs estimated above this [80%% of free]")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from asr_kd.decoding.hlg import GraphTooLargeError, get_hlg  # noqa: PLC0415
    from asr_kd.lm.arpa import ArpaFormatError  # noqa: PLC0415
    from asr_kd.lm.lang import LangError  # noqa: PLC0415

    max_bytes = None if args.max_mem_gb is None else int(args.max_mem_gb * 2**30)
    try:
        _, _, info = get_hlg(
            args.lang_dir,
            args.arpa,
            lm_scale=args.lm_scale,
            max_order=args.max_order,
            max_bytes=max_bytes,
            remove_epsilon=not args.keep_epsilon,
            ctc_topo=args.ctc_topo,
        )
    except (LangError, ArpaFormatError, GraphTooLargeError, FileNotFoundError) as e:
        return refuse("compile_hlg", e)
    summary = {
        "graph": str(info.path),
        "kind": info.kind,
        "ctc_topo": info.ctc_topo,
        "cached": info.cached,
        "states": info.states,
        "arcs": info.arcs,
        "file_mib": None if info.file_bytes is None else round(info.file_bytes / 2**20, 2),
        "build_seconds": info.build_seconds,
    }
    print(f"compile_hlg: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "compile_hlg"))
