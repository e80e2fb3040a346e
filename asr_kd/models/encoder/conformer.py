"""Conformer encoder: Conv2d subsampling + a stack of Conformer layers, with exact chunked streaming.

Layer (pre-norm, macaron):  x += 1/2 FFN(LN x);  x += MHSA(LN x);  x += Conv(LN x);  x += 1/2 FFN(LN x);
x = LN(x). The convolution module is pointwise conv -> GLU -> depthwise conv -> LayerNorm -> Swish ->
pointwise conv. It uses LayerNorm rather than the paper's BatchNorm: BatchNorm statistics mix frames of
different utterances and chunks (so a streamed utterance would not equal its full-sequence output, and
tiny/odd batches train badly), whereas LayerNorm is per frame.

Streaming (``causal=True``): the depthwise convolution is left-padded only, so with a chunk mask every
frame depends only on its own chunk and the past. :meth:`ConformerEncoder.streaming_forward` then
reproduces ``forward(..., chunk_size=c, left_context=l)`` exactly, using a raw-frame buffer for the
subsampling, a per-layer key/value cache of the last ``l * c`` frames (all frames when ``l = -1``) and a
per-layer cache of the last ``kernel - 1`` depthwise-conv inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from asr_kd.models.encoder.attention import RelPositionMultiHeadAttention, rel_positional_encoding
from asr_kd.models.encoder.base import Encoder, EncoderOutput
from asr_kd.models.encoder.masks import chunk_attention_mask, chunk_mask_from_positions, lengths_to_mask
from asr_kd.models.encoder.registry import register_encoder
from asr_kd.models.encoder.subsampling import SUBSAMPLING_FACTOR, Conv2dSubsampling4


def take_last(x: Tensor, end: Tensor, length: int) -> Tensor:
    """Per row, the ``length`` time steps ending (exclusive) at ``end[r]`` along dim 2.

    Args:
        x: (N, A, T) or (N, A, T, B) with time on dim 2.
        end: (N,) exclusive end index per row.
        length: steps to keep; slots before index 0 are clamped (callers track their validity).

    Returns:
        (N, A, length) or (N, A, length, B).
    """
    n = x.size(0)
    idx = end.unsqueeze(1) - length + torch.arange(length, device=x.device).unsqueeze(0)  # (N, length)
    idx = idx.clamp(0, max(x.size(2) - 1, 0))
    if x.size(2) == 0:
        return x.new_zeros(*x.shape[:2], length, *x.shape[3:])
    if x.dim() == 3:
        return torch.gather(x, 2, idx.unsqueeze(1).expand(n, x.size(1), length))
    return torch.gather(x, 2, idx[:, None, :, None].expand(n, x.size(1), length, x.size(3)))


class FeedForward(nn.Module):
    """Linear(D, ffn_dim) -> Swish -> Dropout -> Linear(ffn_dim, D) -> Dropout. (N, T, D) -> (N, T, D)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, ffn_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Conformer convolution module.

    Args:
        d_model: D.
        kernel_size: depthwise kernel (odd when not causal).
        dropout: output dropout.
        causal: left padding only (``kernel_size - 1`` past frames, no future frames).
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, causal: bool) -> None:
        super().__init__()
        if not causal and kernel_size % 2 != 1:
            raise ValueError(f"non-causal conv needs an odd kernel, got {kernel_size}")
        self.causal = causal
        self.kernel_size = kernel_size
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise2 = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor | None = None, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """
        Args:
            x: (N, T, D).
            valid: (N, T) bool; padded frames are zeroed before the depthwise conv so they act like the
                zero padding at the sequence end.
            cache: (N, D, kernel-1) previous depthwise-conv inputs (causal only); zeros when None.

        Returns:
            (N, T, D) output and the depthwise input with its left context, (N, D, kernel-1 + T) when causal
            (the caller keeps the last ``kernel - 1`` valid columns as the next cache).
        """
        h = nn.functional.glu(self.pointwise1(x.transpose(1, 2)), dim=1)  # (N, D, T)
        if valid is not None:
            h = h.masked_fill(~valid.unsqueeze(1), 0.0)
        if self.causal:
            if cache is None:
                cache = h.new_zeros(h.size(0), h.size(1), self.kernel_size - 1)
            h = torch.cat([cache, h], dim=2)
        elif cache is not None:
            raise ValueError("a conv cache needs causal=True")
        else:
            pad = (self.kernel_size - 1) // 2
            h = nn.functional.pad(h, (pad, pad))
        y = self.depthwise(h)  # (N, D, T)
        y = self.activation(self.norm(y.transpose(1, 2)))  # (N, T, D)
        y = self.pointwise2(y.transpose(1, 2)).transpose(1, 2)
        return self.dropout(y), h


class LayerResult(NamedTuple):
    """out (N, T, D); attn (N, H, T, Tk); qkv or None; kv: (k, v) over all keys (N, H, Tk, Dh);
    conv_context: (N, D, kernel-1 + T) depthwise input with left context (causal) for the conv cache."""

    out: Tensor
    attn: Tensor
    qkv: tuple[Tensor, Tensor, Tensor] | None
    kv: tuple[Tensor, Tensor]
    conv_context: Tensor


class ConformerLayer(nn.Module):
    """One Conformer block (macaron FFN, rel-pos MHSA, conv module, FFN, final LayerNorm).

    Args:
        d_model: D. num_heads: H. ffn_dim: FFN hidden size. conv_kernel: depthwise kernel.
        dropout: dropout in FFNs, attention weights and residual branches. causal: causal depthwise conv.
    """

    def __init__(
        self, d_model: int, num_heads: int, ffn_dim: int, conv_kernel: int, dropout: float, causal: bool
    ) -> None:
        super().__init__()
        self.norm_ff1 = nn.LayerNorm(d_model)
        self.ff1 = FeedForward(d_model, ffn_dim, dropout)
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = RelPositionMultiHeadAttention(d_model, num_heads, dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.norm_conv = nn.LayerNorm(d_model)
        self.conv = ConvModule(d_model, conv_kernel, dropout, causal)
        self.norm_ff2 = nn.LayerNorm(d_model)
        self.ff2 = FeedForward(d_model, ffn_dim, dropout)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        pos_emb: Tensor,
        attn_mask: Tensor | None,
        valid: Tensor | None,
        *,
        attn_cache: tuple[Tensor, Tensor] | None = None,
        conv_cache: Tensor | None = None,
        need_qkv: bool = False,
    ) -> LayerResult:
        """
        Args:
            x: (N, T, D); pos_emb: (T + Tk - 1, D); attn_mask: (N|1, T, Tk) bool allowed;
            valid: (N, T) bool valid frames; attn_cache: (k, v) each (N, H, Tk - T, Dh);
            conv_cache: (N, D, kernel - 1).
        """
        x = x + 0.5 * self.ff1(self.norm_ff1(x))
        a = self.attn(self.norm_attn(x), pos_emb, attn_mask, cache=attn_cache, need_qkv=need_qkv)
        x = x + self.attn_dropout(a.out)
        c, conv_context = self.conv(self.norm_conv(x), valid, conv_cache)
        x = x + c
        x = x + 0.5 * self.ff2(self.norm_ff2(x))
        return LayerResult(self.norm_out(x), a.weights, a.qkv, a.kv, conv_context)


@dataclass
class ConformerStreamState:
    """Streaming state of :class:`ConformerEncoder` (one row per stream).

    feat_buf (N, B, F) / feat_buf_lens (N,): raw input frames not yet consumed by the subsampling.
    offset (N,): encoder frames emitted so far. attn_cache: per layer (k, v), each (N, H, L, Dh),
    right-aligned, the last ``attn_cache_lens[r]`` slots valid. conv_cache: per layer (N, D, kernel-1).
    finished (N,): streams that were flushed with ``final``.
    """

    chunk_size: int
    left_context: int
    feat_buf: Tensor
    feat_buf_lens: Tensor
    offset: Tensor
    attn_cache: list[tuple[Tensor, Tensor]]
    attn_cache_lens: Tensor
    conv_cache: list[Tensor]
    finished: Tensor


class ConformerEncoder(Encoder):
    """Conformer encoder, (N, T, F) -> (N, T', D) with T' = ((T - 1) // 2 - 1) // 2.

    Build it with :func:`conformer_encoder` or :func:`conformer_preset`.
    """

    subsampling_factor = SUBSAMPLING_FACTOR

    # chunked masks, truncation, attention maps and Q/K/V always; streaming when causal
    declared_capabilities = frozenset({"chunked", "truncate", "attn", "qkv"})
    streams_when_causal = True

    def __init__(
        self,
        input_dim: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        conv_kernel: int,
        dropout: float,
        causal: bool,
        subsampling_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.config = dict(
            input_dim=input_dim,
            d_model=d_model,
            num_layers=num_layers,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            conv_kernel=conv_kernel,
            dropout=dropout,
            causal=causal,
            subsampling_channels=subsampling_channels,
        )
        self.input_dim = input_dim
        self.d_model = d_model
        self.num_heads = num_heads
        self.conv_kernel = conv_kernel
        self.causal = causal
        self.subsampling = Conv2dSubsampling4(input_dim, d_model, subsampling_channels)
        self.layers = nn.ModuleList(
            ConformerLayer(d_model, num_heads, ffn_dim, conv_kernel, dropout, causal) for _ in range(num_layers)
        )

    @property
    def output_dim(self) -> int:
        return self.d_model

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def subsampled_lengths(self, x_lens: Tensor) -> Tensor:
        return self.subsampling.subsampled_lengths(x_lens)

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
        """See :meth:`Encoder.forward`. x: (N, T, F), x_lens: (N,) -> :class:`EncoderOutput` with T'."""
        h, lens = self.subsampling(x, x_lens)
        t = h.size(1)
        if t == 0:  # every utterance shorter than 7 frames: empty outputs of the right shapes
            n, heads = h.size(0), self.num_heads
            empty = h.new_zeros(n, heads, 0, self.d_model // heads)
            return EncoderOutput(
                out=h,
                out_lens=lens,
                layer_outputs=[h for _ in self.layers],
                attn=[h.new_zeros(n, heads, 0, 0) for _ in self.layers] if return_attn else None,
                qkv=[(empty, empty, empty) for _ in self.layers] if return_qkv else None,
            )
        valid = lengths_to_mask(lens, t)  # (N, T')
        mask = valid.unsqueeze(1) & chunk_attention_mask(t, chunk_size, left_context, h.device).unsqueeze(0)
        pos_emb = rel_positional_encoding(t, t, self.d_model, device=h.device, dtype=h.dtype)
        layer_outputs: list[Tensor] = []
        attn: list[Tensor] = []
        qkv: list[tuple[Tensor, Tensor, Tensor]] = []
        for layer in self.layers:
            res = layer(h, pos_emb, mask, valid, need_qkv=return_qkv)
            h = res.out
            layer_outputs.append(h)
            if return_attn:
                attn.append(res.attn)
            if return_qkv:
                assert res.qkv is not None
                qkv.append(res.qkv)
        return EncoderOutput(
            out=h,
            out_lens=lens,
            layer_outputs=layer_outputs,
            attn=attn if return_attn else None,
            qkv=qkv if return_qkv else None,
        )

    # ------------------------------------------------------------------ streaming
    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        *,
        chunk_size: int = 4,
        left_context: int = 4,
        dtype: torch.dtype | None = None,
        **unused: Any,
    ) -> ConformerStreamState:
        """Fresh state for ``batch_size`` streams.

        Args:
            chunk_size: encoder frames per chunk (> 0). Default 4 = 160 ms, as in the streaming-KD paper.
            left_context: visible chunks to the left (-1 = all; then the attention cache grows with the
                stream). Default 4 chunks = 640 ms. Use the values the model is evaluated with in
                ``forward(chunk_size=..., left_context=...)``.
            dtype: state dtype (defaults to the parameters' dtype).
        """
        if unused:
            raise TypeError(f"unknown streaming options: {sorted(unused)}")
        if chunk_size <= 0:
            raise ValueError(f"streaming needs chunk_size > 0, got {chunk_size}")
        param = next(self.parameters())
        device = torch.device(device) if device is not None else param.device
        dtype = dtype or param.dtype
        n, d, h = batch_size, self.d_model, self.num_heads
        cache_len = left_context * chunk_size if left_context >= 0 else 0
        zeros_kv = torch.zeros(n, h, cache_len, d // h, device=device, dtype=dtype)
        return ConformerStreamState(
            chunk_size=chunk_size,
            left_context=left_context,
            feat_buf=torch.zeros(n, 0, self.input_dim, device=device, dtype=dtype),
            feat_buf_lens=torch.zeros(n, dtype=torch.long, device=device),
            offset=torch.zeros(n, dtype=torch.long, device=device),
            attn_cache=[(zeros_kv.clone(), zeros_kv.clone()) for _ in self.layers],
            attn_cache_lens=torch.zeros(n, dtype=torch.long, device=device),
            conv_cache=[torch.zeros(n, d, self.conv_kernel - 1, device=device, dtype=dtype) for _ in self.layers],
            finished=torch.zeros(n, dtype=torch.bool, device=device),
        )

    def streaming_forward(
        self, x_chunk: Tensor, x_lens: Tensor, state: ConformerStreamState, *, final: bool | Tensor = False
    ) -> tuple[Tensor, Tensor, ConformerStreamState]:
        """Feed the next input frames; see :meth:`Encoder.streaming_forward`.

        Frames are emitted in whole chunks of ``state.chunk_size`` encoder frames (a chunk needs
        ``4 * chunk_size`` new input frames, plus 3 look-ahead frames for the very first one); ``final``
        flushes the last partial chunk. Input may be fed in pieces of any size. Requires ``causal=True``.

        Args:
            x_chunk: (N, Tc, F); x_lens: (N,) valid frames (rows that already ended pass 0).
            state: :class:`ConformerStreamState`, updated in place and returned.
            final: bool or (N,) bool.

        Returns:
            out (N, C, D), out_lens (N,) new encoder frames per row, state.
        """
        if not self.causal:
            raise ValueError("streaming_forward needs a causal encoder (conformer_encoder(..., causal=True))")
        n = x_chunk.size(0)
        device = x_chunk.device
        final_t = torch.as_tensor(final, dtype=torch.bool, device=device).expand(n)
        if bool((state.finished & (x_lens > 0)).any()):
            raise ValueError("input for a stream that was already finalised")
        c, lc = state.chunk_size, state.left_context
        h, new_lens, state.feat_buf, state.feat_buf_lens = self.subsampling.streaming_forward(
            x_chunk, x_lens, state.feat_buf, state.feat_buf_lens, chunk_size=c, final=final_t
        )
        state.finished = state.finished | final_t
        t_new = h.size(1)
        if t_new == 0:
            return h, new_lens, state

        cache_len = state.attn_cache[0][0].size(2) if self.layers else 0
        t_keys = cache_len + t_new
        slots = torch.arange(t_keys, device=device).unsqueeze(0)  # (1, Tk)
        q_pos = state.offset.unsqueeze(1) + torch.arange(t_new, device=device).unsqueeze(0)  # (N, T)
        k_pos = state.offset.unsqueeze(1) - cache_len + slots  # (N, Tk)
        key_valid = (slots >= cache_len - state.attn_cache_lens.unsqueeze(1)) & (
            slots < cache_len + new_lens.unsqueeze(1)
        )
        mask = chunk_mask_from_positions(q_pos, k_pos, c, lc) & key_valid.unsqueeze(1)  # (N, T, Tk)
        pos_emb = rel_positional_encoding(t_new, t_keys, self.d_model, device=device, dtype=h.dtype)
        valid = lengths_to_mask(new_lens, t_new)

        total_valid = state.attn_cache_lens + new_lens
        new_cache_len = lc * c if lc >= 0 else int(total_valid.max().item())
        for i, layer in enumerate(self.layers):
            res = layer(h, pos_emb, mask, valid, attn_cache=state.attn_cache[i], conv_cache=state.conv_cache[i])
            h = res.out
            end = cache_len + new_lens
            state.attn_cache[i] = (
                take_last(res.kv[0], end, new_cache_len),
                take_last(res.kv[1], end, new_cache_len),
            )
            state.conv_cache[i] = take_last(res.conv_context, self.conv_kernel - 1 + new_lens, self.conv_kernel - 1)
        state.attn_cache_lens = total_valid.clamp(max=new_cache_len)
        state.offset = state.offset + new_lens
        return h, new_lens, state

    # ------------------------------------------------------------------ sub-models
    def truncate(self, num_layers: int) -> ConformerEncoder:
        """The subsampling and first ``num_layers`` layers as a new encoder (deep copies of the weights)."""
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"num_layers must be in 1..{self.num_layers}, got {num_layers}")
        config = dict(self.config, num_layers=num_layers)
        sub = ConformerEncoder(**config)
        sub.subsampling.load_state_dict(self.subsampling.state_dict())
        for mine, theirs in zip(sub.layers, self.layers):
            mine.load_state_dict(theirs.state_dict())
        param = next(self.parameters())
        return sub.to(device=param.device, dtype=param.dtype).train(self.training)


def conformer_encoder(
    input_dim: int = 80,
    d_model: int = 144,
    num_layers: int = 8,
    num_heads: int = 4,
    ffn_dim: int = 576,
    conv_kernel: int = 15,
    dropout: float = 0.1,
    causal: bool = False,
    subsampling_channels: int | None = None,
) -> ConformerEncoder:
    """Build a :class:`ConformerEncoder`.

    Args:
        input_dim: F, fbank bins.
        d_model: D (even, divisible by ``num_heads``).
        num_layers: Conformer layers.
        num_heads: attention heads.
        ffn_dim: hidden size of each of the two FFNs.
        conv_kernel: depthwise kernel (odd unless ``causal``).
        dropout: dropout probability.
        causal: causal depthwise conv; required for :meth:`ConformerEncoder.streaming_forward`.
        subsampling_channels: Conv2d channels of the front end (default D).
    """
    return ConformerEncoder(
        input_dim=input_dim,
        d_model=d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        ffn_dim=ffn_dim,
        conv_kernel=conv_kernel,
        dropout=dropout,
        causal=causal,
        subsampling_channels=subsampling_channels,
    )


#: Sizes for a 2-core CPU (parameter counts for input_dim=80 in the docstring of conformer_preset).
CONFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "xs": dict(d_model=96, num_layers=4, num_heads=4, ffn_dim=384, conv_kernel=15, subsampling_channels=64),
    "s": dict(d_model=144, num_layers=7, num_heads=4, ffn_dim=576, conv_kernel=15, subsampling_channels=96),
    "m": dict(d_model=192, num_layers=10, num_heads=4, ffn_dim=768, conv_kernel=15, subsampling_channels=128),
}


def conformer_preset(name: str, **overrides: Any) -> ConformerEncoder:
    """A preset Conformer (``"xs"``, ``"s"``, ``"m"``), any :func:`conformer_encoder` argument overridable.

    Example: ``conformer_preset("s", causal=True, dropout=0.0)``.
    """
    if name not in CONFORMER_PRESETS:
        raise KeyError(f"unknown Conformer preset {name!r}; choose from {sorted(CONFORMER_PRESETS)}")
    return conformer_encoder(**{**CONFORMER_PRESETS[name], **overrides})


@register_encoder("conformer")
def build_conformer(preset: str | None = None, **kwargs: Any) -> ConformerEncoder:
    """Registry entry: ``{"type": "conformer", "preset": "xs" | "s" | "m" (optional), <conformer_encoder
    arguments>}``."""
    from asr_kd.models.encoder.registry import builder_keys

    unknown = sorted(set(kwargs) - set(builder_keys(conformer_encoder)))
    if unknown:
        raise ValueError(
            f"unknown keys {unknown} in the 'conformer' encoder config; "
            f"known: {sorted(['preset', *builder_keys(conformer_encoder)])}"
        )
    return conformer_preset(preset, **kwargs) if preset is not None else conformer_encoder(**kwargs)
