"""Zipformer encoder (Yao et al., "Zipformer: a faster and better encoder for ASR", arXiv 2310.11230).

Structure, (N, T, F) fbank at 100 Hz -> (N, T', D) at 25 Hz:

1. :class:`~asr_kd.models.zipformer.frontend.ZipformerFrontend`: Conv2d subsampling to 50 Hz.
2. A sequence of stacks, stack i running at ``50 / downsampling_factor[i]`` Hz with its own dim
   ``encoder_dim[i]`` (e.g. factors 1, 2, 4, 8, 4, 2: a U-Net in time). Each stack downsamples its
   input by a learned weighted average of ``ds`` frames, runs its layers, repeats each frame ``ds``
   times, and is joined to its input by a learned per-channel bypass. Between stacks the channels are
   cut or zero padded to the next dim.
3. The output combines the stacks' 50 Hz outputs at the largest dim (the last stack's channels, then
   the higher channels from the latest stack that has them), downsampled by 2 to 25 Hz:
   ``D = max(encoder_dim)``, ``T' = ((T - 7) // 2 + 1) // 2``.

Each layer (:class:`ZipformerLayer`) computes its attention weights once
(:class:`RelPositionAttentionWeights`, compact relative positions) and shares them between a
non-linear attention module and two self-attention modules; with three feed-forward modules
(SwooshL), two convolution modules (SwooshR), a mid-layer bypass, BiasNorm and the layer bypass.
Dropout, module-skip rates and the bypasses' lower bounds follow :class:`ScheduledFloat` schedules
over audio hours seen (``schedule_hours`` sets their length; the trainer reports progress through
:meth:`ZipformerEncoder.on_train_step_start`).

Per-layer outputs (``EncoderOutput.layer_outputs``) are at each stack's own rate and dim, declared in
``layer_info``; ``EncoderOutput.layer(k)`` brings layer k to 25 Hz. Chunked (causal) training:
``forward(chunk_size=c, left_context=l)`` restricts every stack's attention to chunks of ``c`` output
frames (``2c / ds`` frames at a stack's rate, so ``2c`` must be a multiple of every factor) and, with
``causal=True``, the convolutions see only the past. The front end is not chunked: 50 Hz frame j sees
input frames ``2j .. 2j + 8``, and with the ConvNeXt block (``frontend_convnext=True``) also the next 3
50 Hz frames, i.e. input up to ``2j + 14``, past the end of its chunk.

Streaming (``causal=True``): :meth:`ZipformerEncoder.streaming_forward` reproduces the chunked forward
exactly, chunk by chunk. The front end keeps a raw-frame buffer and holds back the ConvNeXt block's
look-ahead (:meth:`~asr_kd.models.zipformer.frontend.ZipformerFrontend.streaming_forward`); each stack
keeps per layer the last ``left_context`` chunks of attention keys and of the values of the non-linear
attention and both self-attention modules (the layer's attention weights are applied to cached values
too), and the last ``kernel - 1`` inputs of both convolution modules (:class:`StackCache`). Chunks are
``2c`` frames at 50 Hz, a whole number of groups of every stack's downsampling and of the final 2x
downsampling, so only the last call of a stream (``final``) processes partial groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from asr_kd.models.encoder.attention import rel_shift
from asr_kd.models.encoder.base import Encoder, EncoderOutput, LayerInfo, convert_channels, resample_frames
from asr_kd.models.encoder.conformer import take_last
from asr_kd.models.encoder.masks import chunk_mask_from_positions, lengths_to_mask
from asr_kd.models.zipformer.frontend import FrontendStreamState, ZipformerFrontend, frontend_lengths
from asr_kd.models.zipformer.scaling import (
    Balancer,
    BiasNorm,
    Bypass,
    ProgressClock,
    ScheduledFloat,
    Whiten,
    compact_rel_positional_encoding,
    init_scaled,
    swoosh_l,
    swoosh_r,
)

__all__ = [
    "LayerCache",
    "RelPositionAttentionWeights",
    "StackCache",
    "ZipformerEncoder",
    "ZipformerLayer",
    "ZipformerStack",
    "ZipformerStreamState",
]


def _skip(x: Tensor, rate: float, training: bool) -> Tensor:
    """Drop a residual branch for a random ``rate`` share of the sequences (training only). (N, T, D)."""
    if not training or rate <= 0.0:
        return x
    keep = (torch.rand(x.size(0), 1, 1, device=x.device) >= rate).to(x.dtype)
    return x * keep


class LayerCache(NamedTuple):
    """Streaming context of one :class:`ZipformerLayer` over ``Lc`` earlier frames (right-aligned).

    key: (N, H, Lc, Dq) attention keys; nla: (N, Lc, Dn) the non-linear attention's values;
    sa1 / sa2: (N, H, Lc, Dv) the two self-attention modules' values; conv1 / conv2: (N, D, kernel - 1)
    the two convolution modules' last depthwise inputs. A layer returns the same fields over all its
    keys (``Lc + T`` frames; ``kernel - 1 + T`` for the convolutions), from which the stack keeps the
    last ones.
    """

    key: Tensor
    nla: Tensor
    sa1: Tensor
    sa2: Tensor
    conv1: Tensor
    conv2: Tensor


#: every field None: a layer without cached frames (full-sequence forward)
_NO_CACHE = LayerCache(None, None, None, None, None, None)  # type: ignore[arg-type]


class LayerResult(NamedTuple):
    """out (N, T, D); weights (H, N, T, Tk); qkv: (q, k, v) of the T new frames or None;
    context: :class:`LayerCache` fields over all Tk keys (the caller keeps what the next call needs)."""

    out: Tensor
    weights: Tensor
    qkv: tuple[Tensor, Tensor, Tensor] | None
    context: LayerCache


class RelPositionAttentionWeights(nn.Module):
    """Multi-head attention *weights* with compact relative positions: (N, T, D) -> (H, N, T, Tk).

    ``s_ij = q_i . k_j / sqrt(Dq) + p_i . W r(i - j)`` per head, with a small query-position part ``p``
    (``pos_head_dim`` per head) and the compact positional table ``r`` (``pos_dim`` wide). The keys are
    ``Lc`` cached keys of earlier frames followed by the T new frames' (``Tk = Lc + T``; ``Lc = 0`` for a
    full sequence); queries and query positions come from the new frames only.
    """

    def __init__(
        self, dim: int, num_heads: int, query_head_dim: int, pos_head_dim: int, pos_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.num_heads, self.qd, self.pd, self.pos_dim = num_heads, query_head_dim, pos_head_dim, pos_dim
        self.in_proj = nn.Linear(dim, num_heads * (2 * query_head_dim + pos_head_dim))
        self.linear_pos = nn.Linear(pos_dim, num_heads * pos_head_dim, bias=False)
        self.dropout = dropout

    def forward(
        self, x: Tensor, pos_emb: Tensor, mask: Tensor | None, *, cache: Tensor | None = None, need_qk: bool = False
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """
        Args:
            x: (N, T, D) new frames; cache: (N, H, Lc, Dq) keys of the Lc frames before them, or None.
            pos_emb: (T + Tk - 1, pos_dim), ``compact_rel_positional_encoding(T, Tk, pos_dim)``.
            mask: (N or 1, T or 1, Tk) bool, True = allowed.
            need_qk: also return (q, k) of the new frames, each (N, H, T, Dq).
        Returns:
            weights (H, N, T, Tk), exactly 0 on disallowed keys (rows with no allowed key are all 0);
            keys (N, H, Tk, Dq) (cache + new); (q, k) or None.
        """
        n, t, _ = x.shape
        h, qd, pd = self.num_heads, self.qd, self.pd
        proj = self.in_proj(x)
        q, k, p = proj.split([h * qd, h * qd, h * pd], dim=-1)
        q = q.view(n, t, h, qd).transpose(1, 2)  # (N, H, T, Dq)
        k_new = k.view(n, t, h, qd).transpose(1, 2)
        p = p.view(n, t, h, pd).transpose(1, 2)  # (N, H, T, Dp)
        keys = torch.cat([cache, k_new], dim=2) if cache is not None else k_new  # (N, H, Tk, Dq)
        tk = keys.size(2)
        scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(qd)
        pos = self.linear_pos(pos_emb).view(-1, h, pd).permute(1, 2, 0)  # (H, Dp, T + Tk - 1)
        scores = scores + rel_shift(torch.matmul(p, pos), tk)  # (N, H, T, Tk)
        if mask is not None:
            m = mask.unsqueeze(1)  # (N|1, 1, T|1, Tk)
            scores = scores.masked_fill(~m, float("-inf"))
            w = torch.softmax(scores, dim=-1)
            w = w.masked_fill(~m, 0.0)  # fully masked rows: nan -> 0
        else:
            w = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            w = nn.functional.dropout(w, self.dropout)
        return w.transpose(0, 1), keys, ((q, k_new) if need_qk else None)


class SelfAttention(nn.Module):
    """Applies given attention weights to a value projection: (N, T, D) with (H, N, T, Tk) -> (N, T, D)."""

    def __init__(self, dim: int, num_heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.vd = num_heads, value_head_dim
        self.in_proj = nn.Linear(dim, num_heads * value_head_dim)
        self.out_proj = init_scaled(nn.Linear(num_heads * value_head_dim, dim), 0.05)

    def forward(self, x: Tensor, weights: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (N, T, D), weights (H, N, T, Tk), cache (N, H, Tk - T, Dv) values of earlier frames or None
        -> (out (N, T, D), values (N, H, Tk, Dv))."""
        n, t, _ = x.shape
        v = self.in_proj(x).view(n, t, self.num_heads, self.vd).transpose(1, 2)  # (N, H, T, Dv)
        if cache is not None:
            v = torch.cat([cache, v], dim=2)
        out = torch.matmul(weights, v.transpose(0, 1))  # (H, N, T, Dv)
        return self.out_proj(out.permute(1, 2, 0, 3).reshape(n, t, -1)), v


class NonlinAttention(nn.Module):
    """Non-linear attention: ``out = W_o((A @ (x * tanh(s))) * y)`` with (s, x, y) three projections
    of the input and A one head's attention weights (N, T, Tk). (N, T, D) -> (N, T, D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.in_proj = nn.Linear(dim, 3 * hidden)
        self.out_proj = init_scaled(nn.Linear(hidden, dim), 0.05)

    def forward(self, x: Tensor, weights: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (N, T, D), weights (N, T, Tk), cache (N, Tk - T, hidden) values of earlier frames or None
        -> (out (N, T, D), values (N, Tk, hidden))."""
        s, v, y = self.in_proj(x).chunk(3, dim=-1)
        v = v * torch.tanh(s)
        if cache is not None:
            v = torch.cat([cache, v], dim=1)
        return self.out_proj(torch.matmul(weights, v) * y), v


class FeedForward(nn.Module):
    """Linear -> SwooshL -> dropout -> Linear. (N, T, D) -> (N, T, D)."""

    def __init__(self, dim: int, hidden: int, dropout: ScheduledFloat | float, balancer_prob: float) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, hidden)
        self.balancer = Balancer(-1, min_positive=0.2, max_positive=0.8, min_abs=0.5, max_abs=10.0, prob=balancer_prob)
        self.out_proj = init_scaled(nn.Linear(hidden, dim), 0.1)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        h = swoosh_l(self.balancer(self.in_proj(x)))
        h = nn.functional.dropout(h, float(self.dropout), self.training)
        return self.out_proj(h)


class ConvModule(nn.Module):
    """Gated depthwise convolution: Linear(D, 2D) -> x * sigmoid(gate) -> depthwise conv -> SwooshR ->
    Linear. ``causal``: left padding only. (N, T, D) with (N, T) valid mask -> (N, T, D)."""

    def __init__(self, dim: int, kernel_size: int, causal: bool, balancer_prob: float) -> None:
        super().__init__()
        if not causal and kernel_size % 2 != 1:
            raise ValueError(f"a non-causal Zipformer conv needs an odd kernel, got {kernel_size}")
        self.causal, self.kernel_size = causal, kernel_size
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, groups=dim)
        self.balancer = Balancer(1, min_positive=0.05, max_positive=1.0, min_abs=0.2, max_abs=10.0, prob=balancer_prob)
        self.out_proj = init_scaled(nn.Linear(dim, dim), 0.05)

    def forward(self, x: Tensor, valid: Tensor | None, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """
        Args:
            x: (N, T, D); valid: (N, T) bool, padded frames are zeroed before the depthwise conv (like the
                zero padding at the sequence end); cache: (N, D, kernel - 1) previous depthwise inputs
                (causal only; zeros when None).
        Returns:
            (N, T, D) output and the depthwise input with its context, (N, D, kernel - 1 + T) when causal.
        """
        v, gate = self.in_proj(x).chunk(2, dim=-1)
        h = (v * torch.sigmoid(gate)).transpose(1, 2)  # (N, D, T)
        if valid is not None:
            h = h * valid.unsqueeze(1).to(h.dtype)
        k = self.kernel_size
        if self.causal:
            if cache is None:
                cache = h.new_zeros(h.size(0), h.size(1), k - 1)
            h = torch.cat([cache, h], dim=2)
        elif cache is not None:
            raise ValueError("a conv cache needs causal=True")
        else:
            h = nn.functional.pad(h, ((k - 1) // 2, (k - 1) // 2))
        y = swoosh_r(self.balancer(self.depthwise(h)))
        return self.out_proj(y.transpose(1, 2)), h


class ZipformerLayer(nn.Module):
    """One Zipformer block. (N, T, D) -> (N, T, D).

    ``x0 = x; x += FF1(x); x += NLA(x, A_0); x += SA1(x, A); x += Conv1(x); x += FF2(x);
    x = bypass_mid(x0, x); x += SA2(x, A); x += Conv2(x); x += FF3(x); x = BiasNorm(x);
    x = bypass(x0, x)``, with A the layer's attention weights, computed once.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        kernel_size: int,
        *,
        query_head_dim: int,
        value_head_dim: int,
        pos_head_dim: int,
        pos_dim: int,
        causal: bool,
        clock: ProgressClock,
        sched: dict[str, ScheduledFloat],
        balancer_prob: float,
        whiten_prob: float,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.attn_weights = RelPositionAttentionWeights(dim, num_heads, query_head_dim, pos_head_dim, pos_dim)
        self.self_attn1 = SelfAttention(dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(dim, num_heads, value_head_dim)
        self.nonlin_attention = NonlinAttention(dim, 3 * dim // 4)
        self.ff1 = FeedForward(dim, ffn_dim * 3 // 4, sched["dropout"], balancer_prob)
        self.ff2 = FeedForward(dim, ffn_dim, sched["dropout"], balancer_prob)
        self.ff3 = FeedForward(dim, ffn_dim * 5 // 4, sched["dropout"], balancer_prob)
        self.conv1 = ConvModule(dim, kernel_size, causal, balancer_prob)
        self.conv2 = ConvModule(dim, kernel_size, causal, balancer_prob)
        self.norm = BiasNorm(dim)
        self.bypass_mid = Bypass(dim, sched["bypass_mid_min"])
        self.bypass = Bypass(dim, sched["bypass_min"])
        self.whiten = Whiten(4.0, prob=whiten_prob)
        self.sched = sched

    def init_cache(self, batch_size: int, length: int, device: torch.device, dtype: torch.dtype) -> LayerCache:
        """Zero :class:`LayerCache` for ``batch_size`` streams with ``length`` cached frames."""
        n, h = batch_size, self.attn_weights.num_heads
        k = self.conv1.kernel_size

        def z(*shape: int) -> Tensor:
            return torch.zeros(*shape, device=device, dtype=dtype)

        return LayerCache(
            key=z(n, h, length, self.attn_weights.qd),
            nla=z(n, length, self.nonlin_attention.hidden),
            sa1=z(n, h, length, self.self_attn1.vd),
            sa2=z(n, h, length, self.self_attn2.vd),
            conv1=z(n, self.dim, k - 1),
            conv2=z(n, self.dim, k - 1),
        )

    def forward(
        self,
        x: Tensor,
        pos_emb: Tensor,
        mask: Tensor | None,
        valid: Tensor | None,
        *,
        cache: LayerCache | None = None,
        need_qk: bool = False,
    ) -> LayerResult:
        """
        Args:
            x: (N, T, D) new frames; valid: (N, T) bool.
            pos_emb: (T + Tk - 1, pos_dim) for Tk = Lc + T keys; mask: (N|1, T|1, Tk) bool, True = allowed.
            cache: the Lc earlier frames' :class:`LayerCache` (streaming), or None (Lc = 0).
            need_qk: fill ``LayerResult.qkv`` with the attention's (q, k) and the first self-attention
                module's values v of the new frames, each (N, H, T, Dq|Dv).
        """
        tr = self.training
        att_skip = float(self.sched["attention_skip"]) if tr else 0.0
        conv_skip = float(self.sched["conv_skip"]) if tr else 0.0
        ff_skip = float(self.sched["ff_skip"]) if tr else 0.0
        c = cache if cache is not None else _NO_CACHE
        t = x.size(1)
        x0 = x
        w, keys, qk = self.attn_weights(x, pos_emb, mask, cache=c.key, need_qk=need_qk)
        x = x + _skip(self.ff1(x), ff_skip, tr)
        nla, nla_v = self.nonlin_attention(x, w[0], c.nla)
        x = x + _skip(nla, att_skip, tr)
        sa, v1 = self.self_attn1(x, w, c.sa1)
        x = x + _skip(sa, att_skip, tr)
        conv, conv1_ctx = self.conv1(x, valid, c.conv1)
        x = x + _skip(conv, conv_skip, tr)
        x = x + _skip(self.ff2(x), ff_skip, tr)
        x = self.bypass_mid(x0, x)
        sa, v2 = self.self_attn2(x, w, c.sa2)
        x = x + _skip(sa, att_skip, tr)
        conv, conv2_ctx = self.conv2(x, valid, c.conv2)
        x = x + _skip(conv, conv_skip, tr)
        x = x + _skip(self.ff3(x), ff_skip, tr)
        x = self.whiten(self.norm(x))
        qkv = (qk[0], qk[1], v1[:, :, v1.size(2) - t :]) if qk is not None else None
        return LayerResult(self.bypass(x0, x), w, qkv, LayerCache(keys, nla_v, v1, v2, conv1_ctx, conv2_ctx))


def masked_downsample(x: Tensor, valid: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Learned weighted average of groups of ``ds = len(weights)`` frames, ignoring padded frames.

    Args:
        x: (N, T, D); valid: (N, T) bool; weights: (ds,) unnormalised log-weights.
    Returns:
        (N, ceil(T / ds), D) and its (N, ceil(T / ds)) valid mask. A group's output only depends on its
        valid frames, so outputs do not depend on padding.
    """
    ds = weights.numel()
    n, t, d = x.shape
    pad = (-t) % ds
    if pad:
        x = nn.functional.pad(x, (0, 0, 0, pad))
        valid = nn.functional.pad(valid, (0, pad))
    x = x.view(n, -1, ds, d)
    v = valid.view(n, -1, ds)
    w = torch.softmax(weights, dim=0).to(x.dtype) * v.to(x.dtype)  # (N, T/ds, ds)
    w = w / w.sum(dim=-1, keepdim=True).clamp(min=1e-6)
    return (x * w.unsqueeze(-1)).sum(dim=2), v.any(dim=-1)


@dataclass
class StackCache:
    """Streaming state of one :class:`ZipformerStack` (one row per stream).

    offset (N,): frames at the stack's rate processed so far. lens (N,): valid cached frames, the last
    ``lens[r]`` of the ``Lc`` slots of every layer's attention cache (right-aligned).
    layers: one :class:`LayerCache` per layer.
    """

    offset: Tensor
    lens: Tensor
    layers: list[LayerCache]


def _keep_last(context: LayerCache, key_end: Tensor, length: int, conv_end: Tensor, conv_len: int) -> LayerCache:
    """The last ``length`` keys / values before ``key_end`` (N,) and the last ``conv_len`` conv inputs
    before ``conv_end`` (N,) of a layer's context."""
    return LayerCache(
        key=take_last(context.key, key_end, length),
        nla=take_last(context.nla.unsqueeze(1), key_end, length).squeeze(1),
        sa1=take_last(context.sa1, key_end, length),
        sa2=take_last(context.sa2, key_end, length),
        conv1=take_last(context.conv1, conv_end, conv_len),
        conv2=take_last(context.conv2, conv_end, conv_len),
    )


class ZipformerStack(nn.Module):
    """Layers at ``50 / ds`` Hz: downsample, layers, upsample by repetition, learned bypass.
    (N, T50, D) -> (N, T50, D)."""

    def __init__(self, dim: int, ds: int, layers: list[ZipformerLayer], sched: dict[str, ScheduledFloat]) -> None:
        super().__init__()
        self.ds = ds
        self.layers = nn.ModuleList(layers)
        self.downsample_weights = nn.Parameter(torch.zeros(ds)) if ds > 1 else None
        self.out_bypass = Bypass(dim, sched["stack_bypass_min"], init=0.5) if ds > 1 else None

    def init_cache(self, batch_size: int, length: int, device: torch.device, dtype: torch.dtype) -> StackCache:
        """Fresh :class:`StackCache` with ``length`` (zero, invalid) cached frames per layer."""
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        return StackCache(
            offset=zeros,
            lens=zeros.clone(),
            layers=[layer.init_cache(batch_size, length, device, dtype) for layer in self.layers],
        )

    def forward(
        self,
        x: Tensor,
        valid: Tensor,
        chunk_size: int,
        left_context: int,
        pos_dim: int,
        *,
        need_attn: bool = False,
        need_qk: bool = False,
        cache: StackCache | None = None,
    ) -> dict[str, Any]:
        """Full sequence (``cache=None``) or the next frames of a stream.

        Args:
            x: (N, T50, D) frames at 50 Hz; valid: (N, T50) bool, a prefix per row. With a cache, every
                row's frames start at a multiple of ``ds`` (only a stream's last call may end inside a group).
            chunk_size: in 50 Hz frames (-1 = full context); left_context: visible chunks (-1 = all).
            cache: :class:`StackCache` of the frames before ``x`` (streaming).

        Returns:
            dict with ``out`` (N, T50, D), ``layers`` (each (N, T, D), T = ceil(T50 / ds)), ``valid``
            (N, T), ``attn`` (per layer (N, H, T, Tk) if ``need_attn``), ``qk`` (per layer (q, k, v) if
            ``need_qk``) and ``cache`` (the updated :class:`StackCache`, or None).
        """
        t50 = x.size(1)
        h, v = masked_downsample(x, valid, self.downsample_weights) if self.ds > 1 else (x, valid)
        n, t, _ = h.shape
        device = h.device
        lens = v.sum(dim=1)  # (N,) valid new frames
        cached = cache.layers[0].key.size(2) if cache is not None else 0
        slots = torch.arange(cached + t, device=device).unsqueeze(0)  # (1, Tk)
        key_valid = slots < cached + lens.unsqueeze(1)
        if cache is not None:
            key_valid = key_valid & (slots >= cached - cache.lens.unsqueeze(1))
        mask = key_valid.unsqueeze(1)  # (N, 1, Tk)
        if chunk_size > 0:
            q_pos = torch.arange(t, device=device).unsqueeze(0)  # (1|N, T)
            if cache is not None:
                q_pos = q_pos + cache.offset.unsqueeze(1)
            k_pos = q_pos[:, :1] - cached + slots  # (1|N, Tk): the cache precedes the new frames
            mask = mask & chunk_mask_from_positions(q_pos, k_pos, chunk_size // self.ds, left_context)
        pos_emb = compact_rel_positional_encoding(t, cached + t, pos_dim, device=device, dtype=h.dtype)
        outs, attn, qk, new_layers = [], [], [], []
        if cache is not None:
            keep = (
                left_context * (chunk_size // self.ds) if left_context >= 0 else int((cache.lens + lens).max().item())
            )
        for i, layer in enumerate(self.layers):
            res = layer(h, pos_emb, mask, v, cache=cache.layers[i] if cache is not None else None, need_qk=need_qk)
            h = res.out
            outs.append(h)
            if need_attn:
                attn.append(res.weights.transpose(0, 1))
            if need_qk:
                qk.append(res.qkv)
            if cache is not None:
                k1 = layer.conv1.kernel_size - 1
                new_layers.append(_keep_last(res.context, cached + lens, keep, k1 + lens, k1))
        if self.ds > 1:
            up = h.repeat_interleave(self.ds, dim=1)[:, :t50]
            out = self.out_bypass(x, up)
        else:
            out = h
        new_cache = None
        if cache is not None:
            new_cache = StackCache(
                offset=cache.offset + lens, lens=(cache.lens + lens).clamp(max=keep), layers=new_layers
            )
        return {"out": out, "layers": outs, "valid": v, "attn": attn, "qk": qk, "cache": new_cache}


@dataclass
class ZipformerStreamState:
    """Streaming state of :class:`ZipformerEncoder` (one row per stream).

    chunk_size / left_context: as in ``forward`` (output frames / chunks). frontend: the front end's
    raw-frame and conv-frame buffers (:class:`~asr_kd.models.zipformer.frontend.FrontendStreamState`).
    stacks: one :class:`StackCache` per stack. finished (N,): streams flushed with ``final``.
    """

    chunk_size: int
    left_context: int
    frontend: FrontendStreamState
    stacks: list[StackCache]
    finished: Tensor


class ZipformerEncoder(Encoder):
    """Zipformer encoder, (N, T, F) -> (N, T', max(encoder_dim)) at 25 Hz. Build it with
    :func:`~asr_kd.models.zipformer.zipformer_encoder` or a preset; arguments are documented there.

    ``output_mode="last_layer"`` (made by :meth:`truncate`) outputs the last layer brought to 25 Hz at
    its own dim instead of the multi-stack combination.

    With ``causal=True``, :meth:`init_state` / :meth:`streaming_forward` reproduce
    ``forward(x, x_lens, chunk_size=c, left_context=l)`` exactly for input fed in pieces of any size.
    """

    subsampling_factor = 4

    # chunked masks, truncation, attention maps and Q/K/V always; streaming when causal
    declared_capabilities = frozenset({"chunked", "truncate", "attn", "qkv"})
    streams_when_causal = True

    def __init__(
        self,
        *,
        input_dim: int,
        downsampling_factor: Sequence[int],
        encoder_dim: Sequence[int],
        num_layers: Sequence[int],
        num_heads: Sequence[int],
        feedforward_dim: Sequence[int],
        cnn_module_kernel: Sequence[int],
        query_head_dim: int,
        value_head_dim: int,
        pos_head_dim: int,
        pos_dim: int,
        frontend_channels: Sequence[int],
        frontend_convnext: bool,
        dropout: float,
        causal: bool,
        schedule_hours: float,
        balancer_prob: float,
        whiten_prob: float,
        output_mode: str = "full",
    ) -> None:
        super().__init__()
        lists = dict(
            downsampling_factor=downsampling_factor,
            encoder_dim=encoder_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            feedforward_dim=feedforward_dim,
            cnn_module_kernel=cnn_module_kernel,
        )
        lists = {
            k: [int(v) for v in (vals if isinstance(vals, (list, tuple)) else [vals])] for k, vals in lists.items()
        }
        n_stacks = len(lists["downsampling_factor"])
        for k, vals in lists.items():
            if len(vals) == 1 and n_stacks > 1:
                lists[k] = vals * n_stacks
            elif len(lists[k]) != n_stacks:
                raise ValueError(
                    f"zipformer {k} has {len(vals)} entries but downsampling_factor has "
                    f"{n_stacks}; give one per stack (or one for all)"
                )
        ds_list = lists["downsampling_factor"]
        if n_stacks == 0:
            raise ValueError("zipformer needs at least one stack")
        for i, ds in enumerate(ds_list):
            if ds < 1 or ds & (ds - 1):
                raise ValueError(f"zipformer downsampling_factor[{i}] = {ds}: each factor must be a power of 2")
        for i, (d, h) in enumerate(zip(lists["encoder_dim"], lists["num_heads"])):
            if d < 8 or h < 1:
                raise ValueError(f"zipformer stack {i}: encoder_dim {d} / num_heads {h} out of range")
        for i, n in enumerate(lists["num_layers"]):
            if n < 1:
                raise ValueError(f"zipformer num_layers[{i}] = {n}: every stack needs >= 1 layer")
        if output_mode not in ("full", "last_layer"):
            raise ValueError(f"output_mode must be 'full' or 'last_layer', got {output_mode!r}")
        self.config = dict(
            input_dim=input_dim,
            **{k: list(v) for k, v in lists.items()},
            query_head_dim=query_head_dim,
            value_head_dim=value_head_dim,
            pos_head_dim=pos_head_dim,
            pos_dim=pos_dim,
            frontend_channels=list(frontend_channels),
            frontend_convnext=frontend_convnext,
            dropout=dropout,
            causal=causal,
            schedule_hours=schedule_hours,
            balancer_prob=balancer_prob,
            whiten_prob=whiten_prob,
            output_mode=output_mode,
        )
        self.input_dim = input_dim
        self.causal = causal
        self.pos_dim = pos_dim
        self.output_mode = output_mode
        self.clock = ProgressClock()
        hrs = float(schedule_hours)

        def sf(*pts: tuple[float, float]) -> ScheduledFloat:
            return ScheduledFloat([(x * hrs, y) for x, y in pts], self.clock)

        # fractions of schedule_hours (icefall's shapes: early regularisation that fades out)
        self.sched = {
            "dropout": sf((0.0, 0.3), (1.0, dropout)),
            "attention_skip": sf((0.0, 0.2), (0.2, 0.05), (0.8, 0.0)),
            "conv_skip": sf((0.0, 0.2), (0.2, 0.05), (0.8, 0.0)),
            "ff_skip": sf((0.0, 0.1), (0.2, 0.025), (0.8, 0.0)),
            "bypass_min": sf((0.0, 0.9), (1.0, 0.2)),
            "bypass_mid_min": sf((0.0, 0.9), (1.0, 0.2)),
            "stack_bypass_min": sf((0.0, 0.5), (1.0, 0.0)),
        }
        dims = lists["encoder_dim"]
        self.frontend = ZipformerFrontend(input_dim, dims[0], frontend_channels, dropout, frontend_convnext)
        stacks = []
        for i in range(n_stacks):
            layers = [
                ZipformerLayer(
                    dims[i],
                    lists["num_heads"][i],
                    lists["feedforward_dim"][i],
                    lists["cnn_module_kernel"][i],
                    query_head_dim=query_head_dim,
                    value_head_dim=value_head_dim,
                    pos_head_dim=pos_head_dim,
                    pos_dim=pos_dim,
                    causal=causal,
                    clock=self.clock,
                    sched=self.sched,
                    balancer_prob=balancer_prob,
                    whiten_prob=whiten_prob,
                )
                for _ in range(lists["num_layers"][i])
            ]
            stacks.append(ZipformerStack(dims[i], ds_list[i], layers, self.sched))
        self.stacks = nn.ModuleList(stacks)
        self.dims = dims
        self.ds = ds_list
        self.output_downsample_weights = nn.Parameter(torch.zeros(2))
        self._layer_info = [
            LayerInfo(dims[i], 2 * ds_list[i]) for i in range(n_stacks) for _ in range(lists["num_layers"][i])
        ]

    # ------------------------------------------------------------------ contract
    @property
    def output_dim(self) -> int:
        return self._layer_info[-1].dim if self.output_mode == "last_layer" else max(self.dims)

    @property
    def num_layers(self) -> int:
        return len(self._layer_info)

    @property
    def layer_info(self) -> list[LayerInfo]:
        return list(self._layer_info)

    def subsampled_lengths(self, x_lens: Tensor) -> Tensor:
        return torch.div(frontend_lengths(x_lens) + 1, 2, rounding_mode="floor")

    @property
    def chunk_multiple(self) -> int:
        """Half the slowest stack's factor: a chunk of ``c`` output frames is ``2c`` frames at 50 Hz."""
        return max(max(self.ds) // 2, 1)

    def check_chunk_size(self, chunk_size: int, left_context: int = -1) -> None:
        super().check_chunk_size(chunk_size, left_context)
        if chunk_size is not None and chunk_size > 0 and (2 * chunk_size) % max(self.ds) != 0:
            step = max(max(self.ds) // 2, 1)
            raise ValueError(
                f"zipformer chunk_size {chunk_size} (output frames) must be a multiple of {step}: a chunk is "
                f"{2 * chunk_size} frames at 50 Hz and the slowest stack groups {max(self.ds)} of them"
            )

    def on_train_step_start(self, progress: Any) -> None:
        """Trainer callback: schedules follow ``progress.audio_seconds`` (audio seen on all ranks)."""
        self.clock.hours = float(progress.audio_seconds) / 3600.0

    # ------------------------------------------------------------------ forward
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
        """See :meth:`Encoder.forward`. x (N, T, F), x_lens (N,) -> :class:`EncoderOutput` at 25 Hz with
        per-layer outputs at their stacks' rates. ``qkv`` holds per layer the attention's (q, k) and the
        first self-attention module's values v (the weights feed three modules), at the layer's rate."""
        self.check_chunk_size(chunk_size, left_context)
        h, lens = self.frontend(x, x_lens)
        c50 = 2 * chunk_size if chunk_size > 0 else -1
        res = self._encode(h, lens, c50, left_context, need_attn=return_attn, need_qk=return_qkv)
        return EncoderOutput(
            out=res["out"],
            out_lens=torch.div(lens + 1, 2, rounding_mode="floor"),
            layer_outputs=res["layers"],
            attn=res["attn"] if return_attn else None,
            qkv=res["qk"] if return_qkv else None,
            layer_info=self.layer_info,
            layer_lens=res["layer_lens"],
            subsampling=self.subsampling_factor,
        )

    def _encode(
        self,
        h: Tensor,
        lens: Tensor,
        c50: int,
        left_context: int,
        *,
        need_attn: bool = False,
        need_qk: bool = False,
        caches: list[StackCache] | None = None,
    ) -> dict[str, Any]:
        """The stacks and the output combination, for a whole sequence or (with ``caches``) the next
        chunk-aligned frames of a stream.

        Args:
            h: (N, T50, D_0) front-end frames at 50 Hz; lens: (N,) valid frames.
            c50: chunk size in 50 Hz frames (-1 = full context); left_context: visible chunks (-1 = all).
            caches: one :class:`StackCache` per stack (streaming), or None.

        Returns:
            dict with ``out`` (N, ceil(T50 / 2), D), ``layers`` / ``layer_lens`` (per layer (N, T_k, D_k)
            and (N,)), ``attn``, ``qk`` and ``caches`` (updated, or None).
        """
        t50 = h.size(1)
        valid = lengths_to_mask(lens, t50)
        layer_outputs: list[Tensor] = []
        attn: list[Tensor] = []
        qkv: list[tuple[Tensor, Tensor, Tensor]] = []
        stack_outs: list[Tensor] = []
        layer_lens: list[Tensor] = []
        new_caches: list[StackCache] = []
        for i, stack in enumerate(self.stacks):
            h = convert_channels(h, self.dims[i])
            if t50 == 0:
                res = {"out": h, "layers": [h[:, :0] for _ in stack.layers], "attn": [], "qk": [], "cache": None}
            else:
                res = stack(
                    h,
                    valid,
                    c50,
                    left_context,
                    self.pos_dim,
                    need_attn=need_attn,
                    need_qk=need_qk,
                    cache=caches[i] if caches is not None else None,
                )
            h = res["out"]
            stack_outs.append(h)
            layer_outputs.extend(res["layers"])
            ds = self.ds[i]
            layer_lens.extend([torch.div(lens + ds - 1, ds, rounding_mode="floor")] * len(res["layers"]))
            attn.extend(res["attn"])
            qkv.extend(res["qk"])
            new_caches.append(res["cache"])
        t_out = (t50 + 1) // 2
        if self.output_mode == "last_layer":
            last = self._layer_info[-1]
            out = resample_frames(layer_outputs[-1], last.subsampling, self.subsampling_factor, t_out, layer_lens[-1])
        else:
            full = self._full_dim(stack_outs)
            out = (
                masked_downsample(full, valid, self.output_downsample_weights)[0]
                if t50 > 0
                else full.new_zeros(full.size(0), 0, full.size(2))
            )
        assert out.size(1) == t_out
        return {
            "out": out,
            "layers": layer_outputs,
            "layer_lens": layer_lens,
            "attn": attn,
            "qk": qkv,
            "caches": new_caches if caches is not None else None,
        }

    def _full_dim(self, stack_outs: list[Tensor]) -> Tensor:
        """(N, T50, max dim): the last stack's channels, then, for each higher channel range, the
        latest stack that has it."""
        pieces = [stack_outs[-1]]
        have = stack_outs[-1].size(-1)
        for out in reversed(stack_outs[:-1]):
            if out.size(-1) > have:
                pieces.append(out[..., have:])
                have = out.size(-1)
        return torch.cat(pieces, dim=-1)

    # ------------------------------------------------------------------ streaming
    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        *,
        chunk_size: int,
        left_context: int,
        dtype: torch.dtype | None = None,
    ) -> ZipformerStreamState:
        """Fresh streaming state for ``batch_size`` streams (``streaming`` capability: ``causal=True``).

        Args:
            chunk_size: output (25 Hz) frames per chunk, > 0 and accepted by :meth:`check_chunk_size`
                (``2 * chunk_size`` a multiple of every downsampling factor).
            left_context: visible chunks to the left (-1 = all; the caches then grow with the stream).
                Use the values the model is evaluated with in ``forward(chunk_size=..., left_context=...)``.
            dtype: state dtype (defaults to the parameters' dtype).
        """
        self.require("streaming", "init_state")
        if chunk_size is None or chunk_size <= 0:
            raise ValueError(f"streaming needs chunk_size > 0, got {chunk_size}")
        self.check_chunk_size(chunk_size, left_context)
        param = next(self.parameters())
        device = torch.device(device) if device is not None else param.device
        dtype = dtype or param.dtype
        stacks = []
        for stack in self.stacks:
            cache_len = left_context * (2 * chunk_size // stack.ds) if left_context >= 0 else 0
            stacks.append(stack.init_cache(batch_size, cache_len, device, dtype))
        return ZipformerStreamState(
            chunk_size=chunk_size,
            left_context=left_context,
            frontend=self.frontend.init_stream(batch_size, device, dtype),
            stacks=stacks,
            finished=torch.zeros(batch_size, dtype=torch.bool, device=device),
        )

    def streaming_forward(
        self, x_chunk: Tensor, x_lens: Tensor, state: ZipformerStreamState, *, final: bool | Tensor = False
    ) -> tuple[Tensor, Tensor, ZipformerStreamState]:
        """Feed the next input frames; see :meth:`Encoder.streaming_forward`.

        Output frames come in whole chunks of ``state.chunk_size`` (a chunk needs ``4 * chunk_size`` new
        input frames, plus the front end's look-ahead: 9 input frames for the first 50 Hz frame, and 6
        more with the ConvNeXt block); ``final`` flushes the rest of a stream.

        Args:
            x_chunk: (N, Tc, F) next frames; x_lens: (N,) valid frames in this call (0 allowed; rows that
                already ended must pass 0).
            state: :class:`ZipformerStreamState`, updated in place and returned.
            final: bool or (N,) bool, these streams end with this call.

        Returns:
            out (N, C, D), out_lens (N,) new output frames per row, state.
        """
        self.require("streaming", "streaming_forward")
        n, device = x_chunk.size(0), x_chunk.device
        x_lens = x_lens.to(device)
        final_t = torch.as_tensor(final, dtype=torch.bool, device=device).expand(n)
        if bool((state.finished & (x_lens > 0)).any()):
            raise ValueError("input for a stream that was already finalised")
        c50 = 2 * state.chunk_size
        h, lens = self.frontend.streaming_forward(x_chunk, x_lens, state.frontend, chunk_frames=c50, final=final_t)
        state.finished = state.finished | final_t
        out_lens = torch.div(lens + 1, 2, rounding_mode="floor")
        if h.size(1) == 0:
            return h.new_zeros(n, 0, self.output_dim), out_lens, state
        res = self._encode(h, lens, c50, state.left_context, caches=state.stacks)
        state.stacks = res["caches"]
        return res["out"], out_lens, state

    # ------------------------------------------------------------------ sub-models
    def truncate(self, num_layers: int) -> ZipformerEncoder:
        """The front end and the first ``num_layers`` layers (across stacks) as a new encoder whose output
        is layer ``num_layers`` brought to 25 Hz at its own dim (``output_mode="last_layer"``), i.e.
        ``EncoderOutput.layer(num_layers)`` of this encoder; the later stacks' bypasses are dropped,
        so a multi-rate sub-model ends at a layer, not at a stack's (upsampled) output. Weights are copied.
        """
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"num_layers must be in 1..{self.num_layers}, got {num_layers}")
        cfg = dict(self.config)
        counts, left = [], num_layers
        for n in cfg["num_layers"]:
            if left <= 0:
                break
            counts.append(min(n, left))
            left -= counts[-1]
        k = len(counts)
        for key in ("downsampling_factor", "encoder_dim", "num_heads", "feedforward_dim", "cnn_module_kernel"):
            cfg[key] = cfg[key][:k]
        cfg["num_layers"] = counts
        cfg["output_mode"] = "last_layer"
        sub = ZipformerEncoder(**cfg)
        sub.frontend.load_state_dict(self.frontend.state_dict())
        for i in range(k):
            mine, theirs = sub.stacks[i], self.stacks[i]
            if theirs.downsample_weights is not None:
                mine.downsample_weights.data.copy_(theirs.downsample_weights.data)
                mine.out_bypass.load_state_dict(theirs.out_bypass.state_dict())
            for a, b in zip(mine.layers, theirs.layers):
                a.load_state_dict(b.state_dict())
        sub.clock.hours = self.clock.hours
        param = next(self.parameters())
        return sub.to(device=param.device, dtype=param.dtype).train(self.training)
