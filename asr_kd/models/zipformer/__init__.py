"""Zipformer encoder, registered as ``model.encoder.type: zipformer``.

Usage::

    from asr_kd.models.zipformer import zipformer_encoder, zipformer_preset
    enc = zipformer_preset("s")                 # ~4.6M parameters with a 128-token CTC head
    out = enc(x, x_lens)                        # EncoderOutput at 25 Hz, D = max(encoder_dim)
    h3 = out.layer(3)                           # layer 3 at 25 Hz, (N, T', D_3)

    enc = zipformer_preset("s", causal=True)    # causal: exact chunk-by-chunk streaming
    state = enc.init_state(n, chunk_size=4, left_context=4)
    out, out_lens, state = enc.streaming_forward(x_piece, piece_lens, state, final=last)  # (N, C, D)

Config (YAML)::

    model:
      encoder: {type: zipformer, preset: s, causal: false}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asr_kd.models.encoder.registry import builder_keys, register_encoder
from asr_kd.models.zipformer.encoder import ZipformerEncoder, ZipformerLayer, ZipformerStack, ZipformerStreamState
from asr_kd.models.zipformer.frontend import ZipformerFrontend, frontend_lengths
from asr_kd.models.zipformer.scaling import (
    Balancer,
    BiasNorm,
    Bypass,
    ProgressClock,
    ScheduledFloat,
    SwooshL,
    SwooshR,
    Whiten,
    swoosh_l,
    swoosh_r,
    whitening_metric,
)

__all__ = [
    "Balancer",
    "BiasNorm",
    "Bypass",
    "ProgressClock",
    "ScheduledFloat",
    "SwooshL",
    "SwooshR",
    "Whiten",
    "ZIPFORMER_PRESETS",
    "ZipformerEncoder",
    "ZipformerFrontend",
    "ZipformerLayer",
    "ZipformerStack",
    "ZipformerStreamState",
    "build_zipformer",
    "frontend_lengths",
    "swoosh_l",
    "swoosh_r",
    "whitening_metric",
    "zipformer_encoder",
    "zipformer_preset",
]


def zipformer_encoder(
    input_dim: int = 80,
    downsampling_factor: Sequence[int] = (1, 2, 4, 8, 4, 2),
    encoder_dim: Sequence[int] | int = (192, 256, 384, 512, 384, 256),
    num_layers: Sequence[int] | int = (2, 2, 3, 4, 3, 2),
    num_heads: Sequence[int] | int = (4, 4, 4, 8, 4, 4),
    feedforward_dim: Sequence[int] | int = (512, 768, 1024, 1536, 1024, 768),
    cnn_module_kernel: Sequence[int] | int = (31, 31, 15, 15, 15, 31),
    query_head_dim: int = 32,
    value_head_dim: int = 12,
    pos_head_dim: int = 4,
    pos_dim: int = 48,
    frontend_channels: Sequence[int] = (8, 32, 128),
    frontend_convnext: bool = True,
    dropout: float = 0.1,
    causal: bool = False,
    schedule_hours: float = 20.0,
    balancer_prob: float = 0.0,
    whiten_prob: float = 0.0,
    output_mode: str = "full",
) -> ZipformerEncoder:
    """Build a :class:`ZipformerEncoder` (defaults: icefall's medium Zipformer layout, ~65M).

    Args:
        input_dim: F, fbank bins.
        downsampling_factor: per stack, its frame-rate reduction relative to 50 Hz (powers of 2).
        encoder_dim, num_layers, num_heads, feedforward_dim, cnn_module_kernel: per stack (or one value
            for every stack).
        query_head_dim / value_head_dim / pos_head_dim: per-head dims of the attention weights' queries
            and keys, of the self-attention values, and of the query-position part.
        pos_dim: width of the compact relative positional encoding.
        frontend_channels: the front end's three Conv2d channel counts.
        frontend_convnext: the front end's ConvNeXt block (slow on CPU).
        dropout: final dropout; it starts at 0.3 and decays over ``schedule_hours``.
        causal: causal convolutions (chunked streaming training); required for streaming
            (:meth:`ZipformerEncoder.init_state` / :meth:`ZipformerEncoder.streaming_forward`).
        schedule_hours: audio hours over which dropout, module-skip rates and bypass bounds decay to
            their final values (icefall: thousands of hours; set to the size of your run).
        balancer_prob / whiten_prob: share of training steps on which the Balancer / Whiten
            gradient regularisers act (0 = off; each costs an extra small backward).
        output_mode: ``"full"`` (multi-stack output at max dim) or ``"last_layer"`` (a truncated model).
    """
    return ZipformerEncoder(
        input_dim=input_dim,
        downsampling_factor=downsampling_factor,
        encoder_dim=encoder_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        feedforward_dim=feedforward_dim,
        cnn_module_kernel=cnn_module_kernel,
        query_head_dim=query_head_dim,
        value_head_dim=value_head_dim,
        pos_head_dim=pos_head_dim,
        pos_dim=pos_dim,
        frontend_channels=frontend_channels,
        frontend_convnext=frontend_convnext,
        dropout=dropout,
        causal=causal,
        schedule_hours=schedule_hours,
        balancer_prob=balancer_prob,
        whiten_prob=whiten_prob,
        output_mode=output_mode,
    )


#: Sizes for a 2-core CPU; encoder parameters (input_dim 80): xs 1.41M, s 4.63M, m 11.78M.
ZIPFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "xs": dict(
        downsampling_factor=(1, 2, 4, 8, 4, 2),
        encoder_dim=(64, 80, 96, 96, 96, 80),
        num_layers=(1, 1, 1, 1, 1, 1),
        num_heads=(2, 4, 4, 4, 4, 4),
        feedforward_dim=(160, 192, 256, 256, 256, 192),
        cnn_module_kernel=(31, 31, 15, 15, 15, 31),
        frontend_channels=(8, 32, 32),
        frontend_convnext=False,
    ),
    "s": dict(
        downsampling_factor=(1, 2, 4, 8, 4, 2),
        encoder_dim=(96, 128, 144, 160, 144, 128),
        num_layers=(1, 1, 2, 2, 1, 1),
        num_heads=(4, 4, 4, 4, 4, 4),
        feedforward_dim=(256, 320, 384, 448, 384, 320),
        cnn_module_kernel=(31, 31, 15, 15, 15, 31),
        frontend_channels=(8, 32, 64),
        frontend_convnext=False,
    ),
    "m": dict(
        downsampling_factor=(1, 2, 4, 8, 4, 2),
        encoder_dim=(128, 192, 224, 256, 224, 192),
        num_layers=(1, 1, 2, 2, 2, 1),
        num_heads=(4, 4, 4, 8, 4, 4),
        feedforward_dim=(384, 512, 576, 640, 576, 512),
        cnn_module_kernel=(31, 31, 15, 15, 15, 31),
        frontend_channels=(8, 32, 64),
        frontend_convnext=False,
    ),
}


def zipformer_preset(name: str, **overrides: Any) -> ZipformerEncoder:
    """A preset Zipformer (``"xs"``, ``"s"``, ``"m"``), any :func:`zipformer_encoder` argument overridable."""
    if name not in ZIPFORMER_PRESETS:
        raise KeyError(f"unknown Zipformer preset {name!r}; choose from {sorted(ZIPFORMER_PRESETS)}")
    return zipformer_encoder(**{**ZIPFORMER_PRESETS[name], **overrides})


@register_encoder("zipformer")
def build_zipformer(preset: str | None = None, **kwargs: Any) -> ZipformerEncoder:
    """Registry entry: ``{"type": "zipformer", "preset": "xs" | "s" | "m" (optional), <zipformer_encoder
    arguments>}``."""
    known = builder_keys(zipformer_encoder)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(
            f"unknown keys {unknown} in the 'zipformer' encoder config; known: {sorted(['preset', *known])}"
        )
    return zipformer_preset(preset, **kwargs) if preset is not None else zipformer_encoder(**kwargs)
