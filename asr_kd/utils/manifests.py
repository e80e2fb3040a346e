"""Writing Lhotse manifests that other processes may be reading.

The offline-teacher dumps (``dump_repr``, ``dump_mlm``, ``dump_teacher``) rewrite the cut manifest they read, in
place when chained (``--manifest-dir`` = ``--out-dir``), and a training may be iterating that manifest lazily at
the same time. A plain ``CutSet.to_file`` truncates the file first, so such a reader sees a partial JSON line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_cuts(cuts, path: str | os.PathLike) -> Path:
    """``cuts.to_file`` to a temporary manifest next to ``path`` (same suffix), then ``os.replace``: a reader
    sees the old manifest or the whole new one, never a partial one; on error ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".jsonl"  # lhotse picks the format (and gzip) from the suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        cuts.to_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
