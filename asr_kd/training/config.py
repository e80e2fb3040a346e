"""Experiment configs: one YAML file per experiment, ``key.sub=value`` overrides from the command line.

Usage::

    cfg = load_config("egs/synth/ASR/conf/conformer_ctc_xs.yaml", ["training.max_steps=200", "optim.lr=1e-3"])

Sections (all optional except ``model``): ``data`` (manifests, lang dir, sampler/augmentation
settings), ``model`` (passed to ``asr_kd.models.build_asr_model``), ``loss`` (normaliser, RNN-T warm-up),
``optim`` (``build_optimizer``), ``scheduler`` (``build_scheduler``), ``training``
(``TrainerConfig`` plus ``seed``). A config may name a ``base: other.yaml`` (relative to itself) whose
values it overrides.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_config", "apply_overrides", "deep_update", "dump_config"]


def deep_update(base: dict, other: Mapping[str, Any]) -> dict:
    """Recursively merge ``other`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in other.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``[1, 2]``, ``null``, ``true``), and
    number-like strings such as ``1e-3`` as floats."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty key")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _parse_value(value)
    return cfg


def _parse_value(text: str) -> Any:
    """YAML value, with numbers YAML 1.1 leaves as strings (``1e-3``, ``2E5``) read as floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict:
    """Read a YAML config (following ``base:`` chains) and apply ``overrides``."""
    path = Path(path)
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    base = cfg.pop("base", None)
    if base is not None:
        cfg = deep_update(load_config(path.parent / base), cfg)
    return apply_overrides(cfg, overrides)


def dump_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (the exact settings of a run, next to its checkpoints)."""
    with open(path, "w") as f:
        yaml.safe_dump(dict(cfg), f, sort_keys=False)
