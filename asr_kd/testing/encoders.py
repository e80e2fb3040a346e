"""Tiny configs of every registered encoder type, for tests that must run on each encoder.

Usage::

    from asr_kd.models.encoder import build_encoder
    from asr_kd.testing.encoders import input_frames, tiny_encoder_config, tiny_encoder_types

    @pytest.mark.parametrize("kind", tiny_encoder_types())
    def test_something(kind):
        enc = build_encoder(tiny_encoder_config(kind, input_dim=10))
        T = input_frames(enc, 6)                # input frames giving T' = 6 encoder frames

(``tests/conftest.py`` runs a test taking an ``encoder_type`` argument once per :func:`tiny_encoder_types`.) A new
encoder type joins every such test by one entry in :data:`TINY_ENCODERS`.

:func:`layer_at_output_rate_reference` is a plain-loop reference of ``EncoderOutput.layer`` for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "TINY_ENCODERS",
    "input_frames",
    "layer_at_output_rate_reference",
    "tiny_encoder_config",
    "tiny_encoder_types",
]


def _tiny_conformer(input_dim: int, dim: int | None) -> dict[str, Any]:
    d = 16 if dim is None else int(dim)
    return dict(
        type="conformer",
        input_dim=input_dim,
        d_model=d,
        num_layers=3,
        num_heads=2,
        ffn_dim=2 * d,
        conv_kernel=3,
        subsampling_channels=4,
        dropout=0.0,
    )


def _tiny_zipformer(input_dim: int, dim: int | None) -> dict[str, Any]:
    # stacks at 50, 25, 12.5 and 25 Hz (layer rates 2, 4, 4, 8, 4 input frames per frame), dims
    # D/2, 3D/4, D, D/2: the layers differ in rate and dim from the output (D = max)
    d = 32 if dim is None else int(dim)
    dims = [d // 2, 3 * d // 4, d, d // 2]
    return dict(
        type="zipformer",
        input_dim=input_dim,
        downsampling_factor=[1, 2, 4, 2],
        encoder_dim=dims,
        num_layers=[1, 2, 1, 1],
        num_heads=[2, 2, 4, 2],
        feedforward_dim=[2 * x for x in dims],
        cnn_module_kernel=[5, 5, 3, 5],
        query_head_dim=8,
        value_head_dim=4,
        pos_head_dim=2,
        pos_dim=8,
        frontend_channels=[4, 8, 8],
        dropout=0.0,
    )


#: encoder type -> ``(input_dim, dim) -> config`` of a tiny encoder of output dim ``dim`` (None: the
#: entry's default) for :func:`asr_kd.models.encoder.build_encoder`
TINY_ENCODERS: dict[str, Callable[[int, int | None], dict[str, Any]]] = {
    "conformer": _tiny_conformer,
    "zipformer": _tiny_zipformer,
}


def tiny_encoder_types() -> list[str]:
    """The registered encoder types that have a tiny config, sorted."""
    from asr_kd.models.encoder import list_encoders

    return [k for k in list_encoders() if k in TINY_ENCODERS]


def tiny_encoder_config(kind: str, input_dim: int, dim: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Config of a tiny ``kind`` encoder: F = ``input_dim``, output dim ``dim`` (default: the entry's),
    dropout 0; ``overrides`` replace config keys."""
    if kind not in TINY_ENCODERS:
        raise KeyError(
            f"no tiny config for encoder type {kind!r}; add one to asr_kd.testing.encoders.TINY_ENCODERS "
            f"(have: {sorted(TINY_ENCODERS)})"
        )
    return {**TINY_ENCODERS[kind](input_dim, dim), **overrides}


def input_frames(encoder: Any, out_frames: int, limit: int = 100_000) -> int:
    """The smallest number of input frames T with ``encoder.subsampled_lengths(T) == out_frames``."""
    lo = 1
    while int(encoder.subsampled_lengths(torch.tensor([lo]))[0]) < out_frames:
        lo += 1
        if lo > limit:
            raise ValueError(f"no input length up to {limit} gives {out_frames} encoder frames")
    if int(encoder.subsampled_lengths(torch.tensor([lo]))[0]) != out_frames:
        raise ValueError(f"{type(encoder).__name__} gives no input length exactly {out_frames} encoder frames")
    return lo


def layer_at_output_rate_reference(h: Tensor, lens: Tensor, rate: int, out_rate: int, out_frames: int) -> Tensor:
    """Reference of ``EncoderOutput.layer``, one frame at a time: layer frames (N, T_k, D) at ``rate`` input
    frames per frame with (N,) valid ``lens`` -> (N, out_frames, D) at ``out_rate``. A faster layer's
    output frame t is the mean of its valid frames ``t*g .. t*g + g - 1`` (g = out_rate / rate; 0 when
    none is valid), a slower layer's is its frame ``t // g`` (g = rate / out_rate); 0 past the layer's end."""
    n, t_k, d = h.shape
    out = torch.zeros(n, out_frames, d, dtype=h.dtype)
    for b in range(n):
        for t in range(out_frames):
            if rate <= out_rate:
                g = out_rate // rate
                src = [j for j in range(t * g, (t + 1) * g) if j < min(int(lens[b]), t_k)]
                if src:
                    out[b, t] = h[b, src].mean(0)
            else:
                j = t // (rate // out_rate)
                if j < t_k:
                    out[b, t] = h[b, j]
    return out
