"""The machine line every benchmark prints next to its numbers (docs/RESULTS.md quotes it)."""

from __future__ import annotations

import ctypes
import os
import platform

import torch


def machine_description(threads: int | None = None) -> str:
    """CPU model, logical CPUs, torch threads (when given), load average, torch and Python versions."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    thr = f", torch threads = {threads}" if threads is not None else ""
    return (
        f"{model}; {os.cpu_count()} logical CPUs{thr}{load}; torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Return freed heap to the OS, reset the peak-RSS counter (VmHWM) to the current RSS and
    return that RSS in KiB: the baseline of a peak-memory measurement (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_kib("VmRSS")
