"""The machine line every benchmark prints next to its numbers (docs/RESULTS.md quotes it)."""

from __future__ import annotations

import os
import platform
from typing import Optional

import torch


def machine_description(threads: Optional[int] = None) -> str:
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
    return (f"{model}; {os.cpu_count()} logical CPUs{thr}{load}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")
