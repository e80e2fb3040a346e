"""Machine-readable training metrics: ``<exp_dir>/metrics.jsonl``, and the same rows parsed from ``train.log``.

The trainer (:class:`asr_kd.training.Trainer`) appends one JSON object per train log interval and per
validation::

    {"kind": "train", "step": 50, "epoch": 0, "train_seconds": 91.2, "audio_seconds": 3120.5,
     "lr": 0.00068, "loss": 1.705, "ctc": 1.705, "grad_norm": 0.43}
    {"kind": "valid", "step": 500, "epoch": 1, "train_seconds": 905.0, "audio_seconds": 31000.2,
     "lr": 0.0012, "loss": 1.174, "ctc": 1.174, "wer": 61.3, "cer": 30.2}

``step``: training steps done; ``train_seconds`` / ``audio_seconds``: wall time of the training steps
and audio seen, both cumulative over resumes; then the loss and its named parts (frame-weighted means
over the interval / the validation set); ``wer`` / ``cer`` (percent) in valid rows when the run decodes
the validation set (``training.valid_decode``). On resume from step S the trainer drops the rows after
S (:func:`truncate_metrics`), so the file describes one run.

Experiments older than ``metrics.jsonl`` have only ``train.log``: :func:`parse_train_log` reads the
same rows from its ``epoch E step S: ...`` and ``step S: validation ...`` lines (the epoch of a
validation from the line before it or the ``saved checkpoint`` line of its epoch end), with ``train_seconds``
from the log's timestamps (the wall clock since each run's ``config`` / ``resumed from`` line,
validation included) and without ``audio_seconds``. :func:`load_metrics` reads an experiment directory either way.

Rows read from either source obey one rule: a row at step s supersedes the earlier rows after s and
the earlier rows of its kind at s (a run resumed from an older checkpoint overwrites the steps it
repeats).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS_FILE",
    "MetricsError",
    "append_metrics",
    "truncate_metrics",
    "read_metrics",
    "parse_train_log",
    "load_metrics",
    "supersede",
]

METRICS_FILE = "metrics.jsonl"
TRAIN_LOG = "train.log"


class MetricsError(ValueError):
    """An experiment directory without metrics, or a metrics file that cannot be read; names the path."""


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN / inf
    return v


def append_metrics(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append ``row`` as one JSON line (non-finite floats are written as ``null``; the directory is created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep the rows of ``path`` with ``step <= step`` (a resume from that step); returns how many were
    dropped. A torn last line (a kill during a write) is dropped too. Atomic (write, then rename)."""
    path = Path(path)
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            ok = int(row["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


def supersede(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Apply the superseding rule of the module docstring (rows in file order)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        s = row["step"]
        out = [r for r in out if r["step"] < s or (r["step"] == s and r["kind"] != row["kind"])]
        out.append(dict(row))
    return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (superseded ones removed). A torn last line is ignored; any other
    unreadable line raises :class:`MetricsError` naming the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or row.get("kind") not in ("train", "valid"):
                raise ValueError("not a train/valid row")
            row["step"] = int(row["step"])
        except (ValueError, KeyError, TypeError) as e:
            if i == len(lines):
                break  # killed during the last write
            raise MetricsError(f"{path}:{i}: not a metrics row ({e}): {line[:80]!r}") from None
        rows.append(row)
    return supersede(rows)


_TS = r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_TRAIN_RE = re.compile(
    _TS + r" INFO .*?: epoch (?P<epoch>\d+) step (?P<step>\d+): (?P<vals>.*?) ?lr=(?P<lr>\S+) "
    r"grad_norm=(?P<gn>\S+) bad=\d+$"
)
_VALID_RE = re.compile(_TS + r" INFO .*?: step (?P<step>\d+): validation (?P<vals>.*)$")
_CONFIG_RE = re.compile(_TS + r" INFO .*?: config \S+, exp dir ")
_RESUME_RE = re.compile(_TS + r" INFO .*?: resumed from .*: step (?P<step>\d+), epoch (?P<epoch>\d+)")
_SAVED_RE = re.compile(_TS + r" INFO .*?: saved checkpoint .* \(step \d+, epoch (?P<epoch>\d+)\)$")
_KV_RE = re.compile(r"(\w[\w/.-]*)=(\S+)")


def _stamp(ts: str) -> float:
    return _dt.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _values(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in _KV_RE.findall(text)}


def parse_train_log(path: str | Path) -> list[dict[str, Any]]:
    """Metrics rows from a ``train.log`` of the train CLI (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    run_start: float | None = None  # timestamp of the current run's start line
    offset = 0.0  # train_seconds reached before the current run
    epoch = 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        m = _CONFIG_RE.match(line)
        if m:  # a new invocation of the train CLI
            run_start, offset = _stamp(m.group("ts")), (rows[-1]["train_seconds"] if rows else 0.0)
            continue
        m = _RESUME_RE.match(line)
        if m:  # it continues from step S: what the log has after S was not kept
            rows = [r for r in rows if r["step"] <= int(m.group("step"))]
            run_start, offset = _stamp(m.group("ts")), (rows[-1]["train_seconds"] if rows else 0.0)
            epoch = int(m.group("epoch"))
            continue
        m = _SAVED_RE.match(line)
        if m:  # the epoch of the next validation (an epoch-end one follows the epoch's checkpoint)
            epoch = int(m.group("epoch"))
            continue
        m = _TRAIN_RE.match(line)
        kind = "train"
        if m is None:
            m, kind = _VALID_RE.match(line), "valid"
            if m is None:
                continue
        t = _stamp(m.group("ts"))
        if run_start is None:
            run_start = t
        if kind == "train":
            epoch = int(m.group("epoch"))
        row: dict[str, Any] = {"kind": kind, "step": int(m.group("step")), "epoch": epoch}
        row["train_seconds"] = offset + (t - run_start)
        if kind == "train":
            row["lr"] = float(m.group("lr"))
        row.update(_values(m.group("vals")))
        if kind == "train":
            row["grad_norm"] = float(m.group("gn"))
        rows = supersede(rows + [row])
    return rows


def load_metrics(exp_dir: str | Path) -> tuple[list[dict[str, Any]], Path]:
    """``(rows, source)`` of an experiment: its ``metrics.jsonl``, else its ``train.log``.

    Raises :class:`MetricsError` naming the directory when it is missing or has neither file."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise MetricsError(f"experiment directory {exp_dir} not found")
    for name, reader in ((METRICS_FILE, read_metrics), (TRAIN_LOG, parse_train_log)):
        path = exp_dir / name
        if path.is_file():
            return reader(path), path
    raise MetricsError(f"{exp_dir} has no {METRICS_FILE} and no {TRAIN_LOG}: not a training experiment directory")
