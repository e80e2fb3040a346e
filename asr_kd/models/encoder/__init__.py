"""Encoders behind one contract (:class:`Encoder` / :class:`EncoderOutput`, capabilities declared per
encoder), registered by name: ``"conformer"`` and ``"zipformer"``."""

from asr_kd.models.encoder.base import (
    CAPABILITIES,
    Encoder,
    EncoderOutput,
    LayerInfo,
    MissingCapabilityError,
    convert_channels,
    resample_frames,
)
from asr_kd.models.encoder.conformer import (
    CONFORMER_PRESETS,
    ConformerEncoder,
    ConformerLayer,
    ConformerStreamState,
    conformer_encoder,
    conformer_preset,
)
from asr_kd.models.encoder.masks import (
    chunk_attention_mask,
    chunk_mask_from_positions,
    lengths_to_mask,
    sample_chunk_size,
    sample_left_context,
)
from asr_kd.models.encoder.registry import ENCODERS, build_encoder, list_encoders, register_encoder
from asr_kd.models.encoder.streaming import stream_encoder
from asr_kd.models.encoder.subsampling import Conv2dSubsampling4, conv2d_subsampled_lengths
from asr_kd.models.zipformer import ZIPFORMER_PRESETS, ZipformerEncoder, zipformer_encoder  # noqa: E402

__all__ = [
    "CAPABILITIES",
    "ENCODERS",
    "LayerInfo",
    "MissingCapabilityError",
    "ZIPFORMER_PRESETS",
    "ZipformerEncoder",
    "build_encoder",
    "convert_channels",
    "list_encoders",
    "register_encoder",
    "resample_frames",
    "zipformer_encoder",
    "CONFORMER_PRESETS",
    "ConformerEncoder",
    "ConformerLayer",
    "ConformerStreamState",
    "Conv2dSubsampling4",
    "Encoder",
    "EncoderOutput",
    "chunk_attention_mask",
    "chunk_mask_from_positions",
    "conformer_encoder",
    "conformer_preset",
    "conv2d_subsampled_lengths",
    "lengths_to_mask",
    "sample_chunk_size",
    "sample_left_context",
    "stream_encoder",
]
