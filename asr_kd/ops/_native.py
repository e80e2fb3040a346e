"""Loading of the native extension ``asr_kd._C`` (operators under ``torch.ops.asr_kd``)."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

__all__ = ["load_native", "native_available", "native_with_cuda", "native_supports"]


@functools.cache
def load_native() -> ModuleType | None:
    """Imports ``asr_kd._C`` once; returns the module, or None when it is not built.

    Importing the module registers ``torch.ops.asr_kd.frame_kd_forward`` / ``frame_kd_backward``.
    """
    try:
        return importlib.import_module("asr_kd._C")
    except ImportError:
        return None


def native_available() -> bool:
    """True when the compiled extension ``asr_kd._C`` can be imported."""
    return load_native() is not None


def native_with_cuda() -> bool:
    """True when ``asr_kd._C`` was built with its CUDA kernels."""
    mod = load_native()
    return mod is not None and bool(mod.with_cuda())


def native_supports(t: torch.Tensor) -> bool:
    """Whether the native kernels handle a tensor of this device and dtype."""
    if not native_available() or t.dtype not in (torch.float32, torch.float64):
        return False
    if t.device.type == "cpu":
        return True
    return t.device.type == "cuda" and native_with_cuda()
