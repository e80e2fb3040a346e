"""Encoders behind one interface (:class:`Encoder` / :class:`EncoderOutput`): Conformer now, Zipformer later."""

from asr_kd.models.encoder.base import Encoder, EncoderOutput
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
from asr_kd.models.encoder.streaming import stream_encoder
from asr_kd.models.encoder.subsampling import Conv2dSubsampling4, conv2d_subsampled_lengths

__all__ = [
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
