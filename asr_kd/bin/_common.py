"""Helpers that several entry points share (the dump tools' own ones are in :mod:`asr_kd.bin._dump_common`).

:func:`cut_manifests` names the per-split cut manifests a tool reads and checks them all before any work starts
(``decode``, ``dump_teacher``, ``dump_mlm``, ``dump_repr``). :func:`refuse` is how the graph tools
(``prepare_lang``, ``compile_hlg``) turn an input they refuse into one line on stderr and exit status 1.
:func:`latest_result` reads the row of ``asr_kd.bin.decode``'s ``results.jsonl`` that a report shows
(``kd_report``, ``plot bars``, ``egs/synth/ASR/local/demo.py``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cut_manifests", "latest_result", "refuse", "results_file"]


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


def results_file(path: str | Path) -> Path:
    """``path`` when it names a ``.jsonl`` file, else ``path / "results.jsonl"`` (a decode ``--res-dir``)."""
    p = Path(path)
    return p if p.suffix == ".jsonl" else p / "results.jsonl"


def latest_result(results: str | Path, split: str, method: str | None = None) -> dict:
    """The newest (last) row of a ``results.jsonl`` (:func:`results_file`: the file or its res dir) for ``split``
    and, when given, ``method``: a row's full method suffix (``modified-beam_beam-4``) or its name before the
    first ``_`` (``modified-beam``).

    Raises :class:`asr_kd.training.metrics.MetricsError` (a user error) naming the file when it is missing, the
    line that is not JSON, or, when no row matches, the ``split/method`` pairs the file has."""
    # asr_kd.training imports torch: only a tool that reads results pays for it
    from asr_kd.training.metrics import MetricsError  # noqa: PLC0415

    path = results_file(results)
    if not path.is_file():
        raise MetricsError(f"{path} not found: decode first (asr_kd.bin.decode writes results.jsonl)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise MetricsError(f"{path}:{i}: not a JSON row") from None
    picked = [
        r
        for r in rows
        if r.get("split") == split
        and (method is None or r.get("method") == method or str(r.get("method", "")).split("_")[0] == method)
    ]
    if not picked:
        have = sorted({f"{r.get('split')}/{r.get('method')}" for r in rows})
        raise MetricsError(
            f"{path}: no result for split {split!r}" + (f" and method {method!r}" if method else "") + f"; has {have}"
        )
    return picked[-1]
