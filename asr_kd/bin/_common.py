"""Helpers that several entry points share (the dump tools' own ones are in :mod:`asr_kd.bin._dump_common`).

:func:`cut_manifests` names the per-split cut manifests a tool reads and checks them all before any work starts
(``decode``, ``dump_teacher``, ``dump_mlm``, ``dump_repr``). :func:`refuse` is how the graph tools
(``prepare_lang``, ``compile_hlg``) turn an input they refuse into one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cut_manifests", "refuse"]


def cut_manifests(manifest_dir: Path, prefix: str, splits: Iterable[str]) -> dict[str, Path]:
    """``{split: <manifest_dir>/<prefix>_cuts_<split>.jsonl.gz}`` in ``splits`` order.

    Raises ``FileNotFoundError`` naming the first missing manifest (a user error for
    :func:`asr_kd.bin.run_main`), so that a tool can check its inputs before it loads a model or writes anything."""
    paths = {}
    for split in splits:
        path = Path(manifest_dir) / f"{prefix}_cuts_{split}.jsonl.gz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (run prepare.sh, or pass --manifest-dir/--prefix)")
        paths[split] = path
    return paths


def refuse(prog: str, message: object) -> int:
    """Print ``<prog>: <message>`` (e.g. the caught ``LangError``, or ``--text <path>: not found``) as one line on
    stderr and return 1, the status ``main`` then returns for the refused input."""
    print(f"{prog}: {message}", file=sys.stderr)
    return 1
