"""Encoder registry: ``model.encoder.type`` in a config names a builder registered here.

Usage::

    @register_encoder("my_encoder")
    def my_encoder(input_dim: int = 80, d_model: int = 256, preset: str | None = None) -> Encoder:
        ...

    encoder = build_encoder({"type": "my_encoder", "d_model": 192})

A builder is a function of keyword arguments returning an :class:`~asr_kd.models.encoder.base.Encoder`.
:func:`build_encoder` rejects keys the builder does not take, naming them and the known ones, so a
typo in a config fails at start-up.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from asr_kd.models.encoder.base import Encoder

__all__ = ["ENCODERS", "build_encoder", "list_encoders", "register_encoder"]

#: name -> builder
ENCODERS: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator registering an encoder builder under ``name`` (must be new)."""

    def deco(builder: Callable[..., Encoder]) -> Callable[..., Encoder]:
        if name in ENCODERS and ENCODERS[name] is not builder:
            raise ValueError(f"encoder type {name!r} is already registered")
        ENCODERS[name] = builder
        return builder

    return deco


def list_encoders() -> list[str]:
    """Registered encoder type names, sorted."""
    return sorted(ENCODERS)


def builder_keys(builder: Callable[..., Any]) -> list[str]:
    """The keyword arguments a builder accepts, in signature order."""
    return [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def build_encoder(config: Mapping[str, Any]) -> Encoder:
    """Encoder from ``{"type": name, **builder kwargs}`` (``type`` defaults to ``"conformer"``).

    Raises ``ValueError`` for an unknown type (listing the registered ones) or unknown keys (listing
    the builder's keys).
    """
    cfg = dict(config)
    kind = cfg.pop("type", "conformer")
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder type {kind!r}; registered: {list_encoders()}")
    builder = ENCODERS[kind]
    params = inspect.signature(builder).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):  # builders with **kwargs check their own keys
        known = builder_keys(builder)
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise ValueError(f"unknown keys {unknown} in the {kind!r} encoder config; known: {sorted(known)}")
    return builder(**cfg)
