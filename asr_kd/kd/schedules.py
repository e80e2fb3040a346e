"""Weight schedules of KD methods: ``schedule(step, total_steps) -> weight multiplier``.

A KD method's effective weight at a training step is ``weight * schedule(step, total_steps)``, where
``total_steps`` is the planned length of the run (``kd.total_steps``, else ``training.max_steps``).

Config (``schedule:`` of one entry of ``kd.methods``)::

    {name: constant}                                   # 1 (the default)
    {name: linear, start: 0.0, end: 1.0, begin: 0.0, until: 0.3}    # ramp over a fraction of training
    {name: self_kd, t: 0.3}                            # the self-KD alpha schedule (below)
    {name: step, value: 1.0, from: 0.5}                # 0 before, `value` from a fraction of training on

``self_kd`` (arXiv 2406.07909 uses ``t = 0.3``; the summary of the paper in ``../shared/papers`` does not
give the formula, so this is the one asr_kd chooses and documents): with training progress
``p = step / total_steps`` (clamped to [0, 1]),

    alpha(p) = min(1, p / t)

i.e. the self-teacher (the final CTC head, itself untrained at the start) contributes nothing at step 0,
its weight grows linearly while the final layer learns its alignments, reaches 1 at ``p = t`` (30 % of
training) and stays there. Endpoints: alpha(0) = 0, alpha(t) = 1, alpha(1) = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Schedule", "build_schedule", "SCHEDULES", "progress"]

Schedule = Callable[[int, int | None], float]


def progress(step: int, total_steps: int | None) -> float:
    """Training progress ``step / total_steps`` clamped to [0, 1]; needs ``total_steps > 0``."""
    if total_steps is None or total_steps <= 0:
        raise ValueError("this KD schedule needs the planned number of steps: set kd.total_steps or training.max_steps")
    return min(max(step / total_steps, 0.0), 1.0)


def _constant(value: float = 1.0) -> Schedule:
    return lambda step, total: float(value)


def _linear(start: float = 0.0, end: float = 1.0, begin: float = 0.0, until: float = 1.0) -> Schedule:
    if not 0.0 <= begin < until <= 1.0:
        raise ValueError(f"linear schedule needs 0 <= begin < until <= 1, got {begin}, {until}")

    def f(step: int, total: int | None) -> float:
        p = progress(step, total)
        r = min(max((p - begin) / (until - begin), 0.0), 1.0)
        return float(start + (end - start) * r)

    return f


def _self_kd(t: float = 0.3, max_value: float = 1.0) -> Schedule:
    if not 0.0 < t <= 1.0:
        raise ValueError(f"self_kd schedule needs 0 < t <= 1, got {t}")

    def f(step: int, total: int | None) -> float:
        return float(max_value * min(1.0, progress(step, total) / t))

    return f


def _step(value: float = 1.0, **kw: Any) -> Schedule:
    start = float(kw.get("from", 0.0))

    def f(step: int, total: int | None) -> float:
        return float(value) if progress(step, total) >= start else 0.0

    return f


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": _constant,
    "linear": _linear,
    "self_kd": _self_kd,
    "step": _step,
}


def build_schedule(config: Mapping[str, Any] | None) -> Schedule:
    """A schedule from its config (None = constant 1)."""
    if config is None:
        return _constant()
    cfg = dict(config)
    name = cfg.pop("name", "constant")
    if name not in SCHEDULES:
        raise ValueError(f"unknown KD schedule {name!r}; known: {sorted(SCHEDULES)}")
    try:
        return SCHEDULES[name](**cfg)
    except TypeError as e:
        raise ValueError(f"bad arguments for KD schedule {name!r}: {e}") from None
