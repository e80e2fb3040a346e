"""Progress bars for the long steps (synthesis, features, training, decoding), icefall/lhotse style.

Usage::

    from asr_kd.utils.progress import progress_enabled, progress_bar, setup_logging

    bar_on = progress_enabled()                       # or progress_enabled(cfg.progress_bar)
    setup_logging(log_file=exp_dir / "train.log", bar_on=bar_on)
    for batch in progress_bar(loader, total=len(cuts), desc="decode", enabled=bar_on):
        ...

When the bar is on, it is drawn on the terminal (stderr) and log records go to the log file; the
console handler shows only warnings and above, written through ``tqdm.write`` so that they do not
break the bar. When it is off, nothing is drawn and the console handler shows INFO as before.

The bar is on (:func:`progress_enabled`) when stderr is a terminal, unless

- the setting (``training.progress_bar`` of a config, a CLI option) is ``false``,
- ``ASR_KD_PROGRESS=0`` is in the environment, or
- ``CI`` is set to a true value (``CI=true``, as CI services set it).

``setting=True`` or ``ASR_KD_PROGRESS=1`` turns it on without a terminal too (e.g. to watch a run
through ``tee``); ``ASR_KD_PROGRESS=0`` wins over the setting.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "progress_enabled",
    "progress_bar",
    "setup_logging",
    "basic_logging",
    "add_log_file",
    "TqdmHandler",
    "LOG_FORMAT",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def progress_enabled(setting: bool | None = None, stream: TextIO | None = None) -> bool:
    """Whether to draw a progress bar on ``stream`` (default ``sys.stderr``); see the module docstring."""
    env = os.environ.get("ASR_KD_PROGRESS", "").strip().lower()
    if env in _FALSE or setting is False:
        return False
    if env in _TRUE or setting is True:
        return True
    if os.environ.get("CI", "").strip().lower() in _TRUE:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool | None = None, **kwargs: Any):
    """A ``tqdm`` bar on stderr, disabled unless ``enabled`` (default :func:`progress_enabled`).

    A disabled bar draws nothing and costs nothing; ``update`` / ``set_postfix_str`` / ``close`` still
    work, so callers need no ``if``. ``kwargs`` go to ``tqdm`` (``total``, ``desc``, ``unit``, ...)."""
    from tqdm import tqdm

    on = progress_enabled() if enabled is None else bool(enabled)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=not on, **kwargs)


class TqdmHandler(logging.StreamHandler):
    """A console handler that writes through ``tqdm.write``: records appear above a live bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _console_handler(bar_on: bool, fmt: str, level: int, console_level: int | None = None) -> logging.Handler:
    """The stderr handler: ``level`` and above with the bar off, warnings and above through
    :class:`TqdmHandler` with it on; ``console_level`` overrides both."""
    console: logging.Handler = TqdmHandler(sys.stderr) if bar_on else logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(fmt))
    if console_level is None:
        console_level = max(level, logging.WARNING) if bar_on else level
    console.setLevel(console_level)
    return console


def setup_logging(
    log_file: str | Path | None = None,
    *,
    bar_on: bool = False,
    fmt: str = LOG_FORMAT,
    level: int = logging.INFO,
    console_level: int | None = None,
) -> None:
    """Replace the root logger's handlers: a console handler on stderr and, with ``log_file``, a file
    handler appending to it (at ``level``).

    The console shows ``level`` and above when the bar is off, warnings and above when it is on
    (through :class:`TqdmHandler`); ``console_level`` overrides both (e.g. WARNING on DDP ranks > 0)."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
        if isinstance(h, logging.FileHandler):
            h.close()
    root.addHandler(_console_handler(bar_on, fmt, level, console_level))
    if log_file is not None:
        add_log_file(log_file, fmt=fmt, level=level)


def basic_logging(*, bar_on: bool = False, fmt: str = LOG_FORMAT, level: int = logging.INFO) -> None:
    """:func:`logging.basicConfig` for a CLI without its own log file set-up: a console handler (as in
    :func:`setup_logging`) when the root logger has none yet (an embedding program's handlers stay)."""
    root = logging.getLogger()
    if root.handlers:
        return
    root.setLevel(level)
    root.addHandler(_console_handler(bar_on, fmt, level))


def add_log_file(log_file: str | Path, *, fmt: str = LOG_FORMAT, level: int = logging.INFO) -> logging.Handler:
    """Append the root logger's records of ``level`` and above to ``log_file`` too. It replaces the file
    handler an earlier call added: a program that runs CLIs one after another in one process (e.g.
    ``scripts/wer_curve.py`` decoding each checkpoint) writes each run's lines to that run's file only."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_asr_kd_log_file", False):
            root.removeHandler(h)
            h.close()
    fh = logging.FileHandler(log_file)
    fh._asr_kd_log_file = True
    fh.setFormatter(logging.Formatter(fmt))
    fh.setLevel(level)
    root.addHandler(fh)
    return fh
