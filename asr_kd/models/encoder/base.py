"""The encoder interface every encoder in asr_kd implements (Conformer now, Zipformer later).

Heads, ``AsrModel``, KD methods and decoders only rely on what is declared here.
Dimension legend: N batch, T input frames, F feature bins, T' encoder frames, D model dim, H heads,
Dh = D / H head dim.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class EncoderOutput:
    """Result of :meth:`Encoder.forward`.

    Attributes:
        out: (N, T', D) final encoder output. Frames at ``t >= out_lens[n]`` are padding (undefined values).
        out_lens: (N,) valid encoder frames.
        layer_outputs: one (N, T', D) per layer, first layer first; ``layer_outputs[-1]`` is ``out``
            (before any final projection).
        attn: per layer (N, H, T', T') attention weights, or None unless requested. Each row sums to 1 over
            the allowed keys and is exactly 0 on padded keys and keys outside the chunk mask.
        qkv: per layer (q, k, v), each (N, H, T', Dh) (q without positional biases), or None unless
            requested; used for self-attention-relation distillation.
    """

    out: Tensor
    out_lens: Tensor
    layer_outputs: list[Tensor]
    attn: list[Tensor] | None = None
    qkv: list[tuple[Tensor, Tensor, Tensor]] | None = None

    def valid_mask(self) -> Tensor:
        """(N, T') bool, True on valid (non-padded) encoder frames."""
        frames = torch.arange(self.out.size(1), device=self.out.device)
        return frames.unsqueeze(0) < self.out_lens.unsqueeze(1)


class Encoder(nn.Module, abc.ABC):
    """Abstract acoustic encoder: (N, T, F) features -> (N, T', D) frames.

    Subclasses set ``subsampling_factor`` (T / T', approximately) and implement the methods below.
    ``chunk_size`` is in encoder frames, ``left_context`` in chunks; -1 means unlimited for both.
    """

    subsampling_factor: int = 1

    @property
    @abc.abstractmethod
    def output_dim(self) -> int:
        """D of ``EncoderOutput.out``."""

    @property
    @abc.abstractmethod
    def num_layers(self) -> int:
        """Number of layers, i.e. ``len(EncoderOutput.layer_outputs)``."""

    @abc.abstractmethod
    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        *,
        chunk_size: int = -1,
        left_context: int = -1,
        return_attn: bool = False,
        return_qkv: bool = False,
    ) -> EncoderOutput:
        """Full-sequence forward.

        Args:
            x: (N, T, F) features; x_lens: (N,) valid frames.
            chunk_size: -1 full context; > 0 restricts attention to chunks of this many encoder frames
                (frame i sees its own chunk and ``left_context`` chunks to the left).
            left_context: visible chunks to the left, -1 = all.
            return_attn / return_qkv: fill ``EncoderOutput.attn`` / ``.qkv``.
        """

    @abc.abstractmethod
    def subsampled_lengths(self, x_lens: Tensor) -> Tensor:
        """(N,) T -> (N,) T'. Data filters use the same formula to drop too-short utterances."""

    @abc.abstractmethod
    def init_state(self, batch_size: int, device: torch.device | str | None = None, **stream_options: Any) -> Any:
        """Fresh streaming state for ``batch_size`` streams. Encoders accept their streaming options
        (for the Conformer: ``chunk_size``, ``left_context``, ``dtype``) as keywords."""

    @abc.abstractmethod
    def streaming_forward(
        self, x_chunk: Tensor, x_lens: Tensor, state: Any, *, final: bool | Tensor = False
    ) -> tuple[Tensor, Tensor, Any]:
        """Feed the next input frames of each stream.

        Args:
            x_chunk: (N, Tc, F) next frames; x_lens: (N,) valid frames in this call (0 allowed).
            state: from :meth:`init_state` or the previous call.
            final: bool or (N,) bool: these streams end with this call (flush what is buffered).

        Returns:
            (out (N, C, D), out_lens (N,), state): the encoder frames that became available. Concatenating
            the valid frames of all calls equals ``forward(x, x_lens, chunk_size=..., left_context=...)``.
        """

    @abc.abstractmethod
    def truncate(self, num_layers: int) -> "Encoder":
        """A standalone encoder made of the first ``num_layers`` layers (weights copied); its ``out``
        equals ``layer_outputs[num_layers - 1]`` of this encoder."""
