"""Optional dependencies in tests: skip with a reason when absent, or fail when CI said they must be there.

``.ci/run`` installs k2 from ``../shared/wheels/`` when that wheel exists and then exports
``ASR_KD_REQUIRE_K2=1``: from then on a test asking for k2 fails instead of skipping, so a broken k2
install cannot pass CI as "k2 tests skipped".
"""

from __future__ import annotations

import importlib
import os

import pytest

__all__ = ["require_k2"]


def require_k2():
    """``import k2`` and return it; otherwise ``pytest.skip`` (``pytest.fail`` under ``ASR_KD_REQUIRE_K2=1``)."""
    try:
        return importlib.import_module("k2")
    except Exception as e:  # ImportError, or a k2 built against another torch
        reason = f"k2 not importable ({type(e).__name__}: {e}); install it with ASR_KD_K2=... scripts/install.sh"
        if os.environ.get("ASR_KD_REQUIRE_K2", "0") == "1":
            pytest.fail(f"ASR_KD_REQUIRE_K2=1 but {reason}")
        pytest.skip(reason)
