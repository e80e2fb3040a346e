"""Command-line entry points (``python -m asr_kd.bin.<name>``).

Each entry point runs its ``main`` through :func:`run_main`: a mistake of the user's (a config key, a corrupt
checkpoint, a vocabulary mismatch, a bad ARPA or lexicon line, a missing input file, ...) prints one line
``<prog>: error: <ErrorType>: <message>`` and exits with status 2, instead of a traceback. Set
``ASR_KD_TRACEBACK=1`` to get the traceback too; any other exception propagates as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["USER_ERRORS", "run_main"]

#: exception classes (module.qualname; subclasses included) that describe a mistake in the user's input
USER_ERRORS = frozenset(
    {
        "asr_kd.training.config.ConfigError",
        "asr_kd.training.checkpoint.CorruptCheckpointError",
        "asr_kd.training.asr_task.BundleError",
        "asr_kd.training.trainer.EmptyEpochError",
        "asr_kd.training.trainer.TooManyBadBatchesError",
        "asr_kd.data.tokenizer.VocabMismatchError",
        "asr_kd.data.tokenizer.UntokenizableError",
        "asr_kd.data.validation.BadCutError",
        "asr_kd.models.encoder.base.MissingCapabilityError",
        "asr_kd.lm.arpa.ArpaFormatError",
        "asr_kd.lm.lang.LangError",
        "asr_kd.decoding.hlg.GraphTooLargeError",
        "asr_kd.training.metrics.MetricsError",
        "asr_kd.kd.repr.ReprTeacherError",
        "asr_kd.kd.repr.MissingDocumentError",
        "builtins.FileNotFoundError",  # a missing manifest, model folder, lang dir, ... (the message names it)
    }
)


def _is_user_error(exc: BaseException) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in USER_ERRORS for c in type(exc).__mro__)


def run_main(main: Callable[[], int | None], prog: str) -> int:
    """``main()``'s exit status; a user error (:data:`USER_ERRORS`) is printed as one line on stderr and gives 2."""
    try:
        return main() or 0
    except Exception as e:
        if os.environ.get("ASR_KD_TRACEBACK") or not _is_user_error(e):
            raise
        print(f"{prog}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
