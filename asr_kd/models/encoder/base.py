"""The encoder contract: what heads, ``AsrModel``, KD methods and decoders may rely on.

Every encoder implements :meth:`Encoder.forward`, ``output_dim``, ``subsampled_lengths`` and declares its
layers (:attr:`Encoder.layer_info`: each layer's output dim and frame rate). Everything else is a
*capability* the encoder declares in :attr:`Encoder.capabilities` and a caller asks for with
:meth:`Encoder.require`:

==============  ===============================================================================
 capability      meaning
==============  ===============================================================================
 ``chunked``     ``forward(chunk_size=c, left_context=l)`` restricts every frame to its chunk and the
                 past (causal chunked training; :meth:`Encoder.check_chunk_size` validates ``c``)
 ``streaming``   :meth:`Encoder.init_state` / :meth:`Encoder.streaming_forward` reproduce the chunked
                 ``forward`` chunk by chunk
 ``truncate``    :meth:`Encoder.truncate` builds the first-``k``-layers sub-encoder
 ``attn``        ``forward(return_attn=True)`` fills ``EncoderOutput.attn``
 ``qkv``         ``forward(return_qkv=True)`` fills ``EncoderOutput.qkv``
==============  ===============================================================================

Encoders are registered by name (:mod:`asr_kd.models.encoder.registry`) and built from a config's
``model.encoder`` section.

Dimension legend: N batch, T input frames, F feature bins, T' encoder (output) frames, T'_k frames of
layer k, D output dim, D_k dim of layer k, H heads, Dh head dim.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

#: capabilities an encoder may declare (see the module docstring)
CAPABILITIES = frozenset({"chunked", "streaming", "truncate", "attn", "qkv"})


class MissingCapabilityError(ValueError):
    """An encoder lacks a capability a head, KD method or decoder asked for."""


@dataclass(frozen=True)
class LayerInfo:
    """What one encoder layer produces.

    Attributes:
        dim: D_k, channels of the layer's output.
        subsampling: input frames per output frame of this layer (4 = 40 ms frames from 10 ms fbank).
            The encoder output has ``Encoder.subsampling_factor``; a layer may run faster (smaller
            value) or slower (larger value) than the output.
    """

    dim: int
    subsampling: int


def resample_frames(x: Tensor, factor_in: int, factor_out: int, length: int, lens: Tensor | None = None) -> Tensor:
    """Bring (N, T_in, C) frames at ``factor_in`` input frames per frame to ``factor_out``, (N, length, C).

    Faster layers (``factor_in < factor_out``) are averaged over groups of ``factor_out // factor_in``
    frames (only over each row's first ``lens[n]`` valid frames when ``lens`` (N,) is given, so the
    result does not depend on padding); slower ones are repeated ``factor_in // factor_out`` times;
    then the time axis is cut or zero padded to ``length``. The ratio of the factors must be an integer.
    """
    if factor_in == factor_out:
        out = x
    elif factor_out % factor_in == 0:
        r = factor_out // factor_in
        n, t, c = x.shape
        pad = (-t) % r
        w = torch.ones(n, t, device=x.device, dtype=x.dtype)
        if lens is not None:
            w = (torch.arange(t, device=x.device).unsqueeze(0) < lens.unsqueeze(1)).to(x.dtype)
        x = torch.nn.functional.pad(x * w.unsqueeze(-1), (0, 0, 0, pad))
        w = torch.nn.functional.pad(w, (0, pad)).reshape(n, -1, r)
        out = x.reshape(n, -1, r, c).sum(dim=2) / w.sum(dim=2, keepdim=True).clamp(min=1.0)
    elif factor_in % factor_out == 0:
        out = x.repeat_interleave(factor_in // factor_out, dim=1)
    else:
        raise ValueError(f"cannot resample frames from subsampling {factor_in} to {factor_out}")
    if out.size(1) >= length:
        return out[:, :length]
    return torch.cat([out, out.new_zeros(out.size(0), length - out.size(1), out.size(2))], dim=1)


def convert_channels(x: Tensor, dim: int) -> Tensor:
    """(..., C) -> (..., dim): the first ``dim`` channels, or zero padding up to ``dim``."""
    c = x.size(-1)
    if c == dim:
        return x
    if c > dim:
        return x[..., :dim]
    return torch.nn.functional.pad(x, (0, dim - c))


@dataclass
class EncoderOutput:
    """Result of :meth:`Encoder.forward`.

    Attributes:
        out: (N, T', D) final encoder output. Frames at ``t >= out_lens[n]`` are padding (undefined values).
        out_lens: (N,) valid encoder frames.
        layer_outputs: one (N, T'_k, D_k) per layer k, first layer first, at the layer's own frame rate
            and dim (``Encoder.layer_info``); use :meth:`layer` to get layer k at the output rate.
            For single-rate encoders (Conformer) ``layer_outputs[-1]`` is ``out``.
        layer_info / layer_lens / subsampling: multi-rate encoders only: the layers' declared dims and
            rates, their (N,) valid frames, and the output's subsampling (used by :meth:`layer`).
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
    layer_info: list[LayerInfo] | None = None
    layer_lens: list[Tensor] | None = None
    subsampling: int = 0

    def layer(self, k: int, dim: int | None = None) -> Tensor:
        """Layer ``k`` (1-based) at the output frame rate: (N, T', D_k), or (N, T', dim) with ``dim``.

        Single-rate encoders return ``layer_outputs[k - 1]`` unchanged. Multi-rate encoders (Zipformer)
        average faster layers over groups of frames and repeat slower ones
        (:func:`resample_frames`); frames at ``t >= out_lens[n]`` are padding, as in ``out``. ``dim``
        cuts or zero pads the channels (:func:`convert_channels`) so that any layer can be compared
        with, or fed to, something of the output's width.
        """
        if not 1 <= k <= len(self.layer_outputs):
            raise IndexError(f"layer {k} out of 1..{len(self.layer_outputs)}")
        h = self.layer_outputs[k - 1]
        if self.layer_info is not None:
            lens = self.layer_lens[k - 1] if self.layer_lens is not None else None
            h = resample_frames(h, self.layer_info[k - 1].subsampling, self.subsampling, self.out.size(1), lens)
        return h if dim is None else convert_channels(h, dim)

    def valid_mask(self) -> Tensor:
        """(N, T') bool, True on valid (non-padded) encoder frames."""
        frames = torch.arange(self.out.size(1), device=self.out.device)
        return frames.unsqueeze(0) < self.out_lens.unsqueeze(1)


class Encoder(nn.Module, abc.ABC):
    """Abstract acoustic encoder: (N, T, F) features -> (N, T', D) frames.

    Subclasses set ``subsampling_factor`` (T / T', approximately) and ``capabilities``, and implement
    the abstract methods; the optional ones (streaming, truncate) raise :class:`MissingCapabilityError`
    unless the capability is declared. ``chunk_size`` is in encoder (output) frames, ``left_context``
    in chunks; -1 means unlimited for both.
    """

    subsampling_factor: int = 1
    #: capabilities (a subset of :data:`CAPABILITIES`) every instance of the class has
    declared_capabilities: ClassVar[frozenset[str]] = frozenset()
    #: instances with ``causal = True`` also have ``"streaming"``
    streams_when_causal: ClassVar[bool] = False

    @property
    def capabilities(self) -> frozenset[str]:
        """What this encoder supports: ``declared_capabilities``, plus ``"streaming"`` for a causal
        instance of a class with ``streams_when_causal``. A subclass may also set a plain
        ``capabilities = frozenset(...)`` class attribute."""
        if self.streams_when_causal and getattr(self, "causal", False):
            return self.declared_capabilities | {"streaming"}
        return self.declared_capabilities

    def has(self, capability: str) -> bool:
        """Whether this encoder declares ``capability``."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown encoder capability {capability!r}; known: {sorted(CAPABILITIES)}")
        return capability in self.capabilities

    def require(self, capability: str, who: str) -> None:
        """Raise :class:`MissingCapabilityError` naming ``who`` (a head, KD method, decoder) when this
        encoder lacks ``capability``."""
        if not self.has(capability):
            raise MissingCapabilityError(
                f"{who} needs an encoder with the {capability!r} capability, but {type(self).__name__} "
                f"declares only {sorted(self.capabilities)}"
            )

    @property
    def layer_info(self) -> list[LayerInfo]:
        """Per layer, its output dim and frame rate. Default: every layer at ``output_dim`` and the
        output rate (single-rate encoders)."""
        return [LayerInfo(self.output_dim, self.subsampling_factor) for _ in range(self.num_layers)]

    @property
    def chunk_multiple(self) -> int:
        """Chunk sizes (encoder output frames) this encoder can use are multiples of this (default 1);
        an encoder with a larger multiple rejects other sizes in :meth:`check_chunk_size`, and
        dynamic chunk training draws only multiples."""
        return 1

    def check_chunk_size(self, chunk_size: int, left_context: int = -1) -> None:
        """Raise ``ValueError`` when this encoder cannot use ``chunk_size`` / ``left_context``
        (needs the ``chunked`` capability for any ``chunk_size > 0``)."""
        if chunk_size == -1 or chunk_size is None:
            return
        self.require("chunked", f"chunk_size={chunk_size}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be -1 (full context) or > 0, got {chunk_size}")
        if left_context < -1:
            raise ValueError(f"left_context must be -1 (all) or >= 0, got {left_context}")

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

    def init_state(self, batch_size: int, device: torch.device | str | None = None, **stream_options: Any) -> Any:
        """(``streaming`` capability) Fresh streaming state for ``batch_size`` streams. Encoders accept
        their streaming options (for the Conformer: ``chunk_size``, ``left_context``, ``dtype``) as keywords."""
        self.require("streaming", "init_state")
        raise NotImplementedError

    def streaming_forward(
        self, x_chunk: Tensor, x_lens: Tensor, state: Any, *, final: bool | Tensor = False
    ) -> tuple[Tensor, Tensor, Any]:
        """(``streaming`` capability) Feed the next input frames of each stream.

        Args:
            x_chunk: (N, Tc, F) next frames; x_lens: (N,) valid frames in this call (0 allowed).
            state: from :meth:`init_state` or the previous call.
            final: bool or (N,) bool: these streams end with this call (flush what is buffered).

        Returns:
            (out (N, C, D), out_lens (N,), state): the encoder frames that became available. Concatenating
            the valid frames of all calls equals ``forward(x, x_lens, chunk_size=..., left_context=...)``.
        """
        self.require("streaming", "streaming_forward")
        raise NotImplementedError

    def truncate(self, num_layers: int) -> Encoder:
        """(``truncate`` capability) A standalone encoder made of the first ``num_layers`` layers
        (weights copied); its ``out`` equals ``EncoderOutput.layer(num_layers)`` of this encoder."""
        self.require("truncate", "truncate")
        raise NotImplementedError
