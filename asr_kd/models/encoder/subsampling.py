"""Conv2d front end that subsamples time by 4 (10 ms fbank -> 40 ms encoder frames).

Two 3x3 convolutions with stride 2 and no padding ("valid" convolutions), each followed by ReLU, then a
linear map of (channels x remaining frequency bins) to D. Because the convolutions are valid, encoder
frame j depends exactly on input frames ``4j .. 4j+6`` (receptive field 7, stride 4), which gives

    T' = ((T - 1) // 2 - 1) // 2 = max((T - 3) // 4, 0)

and makes exact streaming simple: keep the raw input frames that are not yet fully used
(at most 6 plus whatever has not been emitted), and start every window at a multiple of 4.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Input frames seen by one output frame, and the hop between output frames.
RECEPTIVE_FIELD = 7
SUBSAMPLING_FACTOR = 4


def conv2d_subsampled_lengths(lengths: Tensor) -> Tensor:
    """T' from T for :class:`Conv2dSubsampling4` (two valid 3x3 stride-2 convolutions).

    Args:
        lengths: (N,) input frame counts (any integer dtype).

    Returns:
        (N,) output frame counts, ``((T - 1) // 2 - 1) // 2`` clamped at 0.
    """
    t1 = torch.div(lengths - 1, 2, rounding_mode="floor")
    t2 = torch.div(t1 - 1, 2, rounding_mode="floor")
    return t2.clamp(min=0)


def _pack_rows(a: Tensor, a_lens: Tensor, b: Tensor, b_lens: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise concatenation of the valid prefixes: ``out[r] = cat(a[r, :a_lens[r]], b[r, :b_lens[r]])``.

    Args:
        a: (N, Ta, F); b: (N, Tb, F); a_lens, b_lens: (N,).

    Returns:
        (N, max(a_lens + b_lens), F) left-aligned, zero padded, and the (N,) lengths.
    """
    n, ta, f = a.shape
    total = a_lens + b_lens
    width = int(total.max().item()) if n > 0 else 0
    slots = torch.arange(width, device=a.device).unsqueeze(0)  # (1, W)
    a_l = a_lens.unsqueeze(1)
    idx = torch.where(slots < a_l, slots, ta + slots - a_l)
    idx = idx.clamp(0, max(ta + b.size(1) - 1, 0))
    both = torch.cat([a, b], dim=1)
    if both.size(1) == 0:
        return both.new_zeros(n, width, f), total
    out = torch.gather(both, 1, idx.unsqueeze(-1).expand(n, width, f))
    out = out.masked_fill((slots >= total.unsqueeze(1)).unsqueeze(-1), 0.0)
    return out, total


def _drop_prefix(x: Tensor, lens: Tensor, drop: Tensor) -> tuple[Tensor, Tensor]:
    """``out[r] = x[r, drop[r]:lens[r]]``, left-aligned and zero padded. x: (N, T, F); lens, drop: (N,)."""
    n, t, f = x.shape
    new_lens = lens - drop
    width = int(new_lens.max().item()) if n > 0 else 0
    slots = torch.arange(width, device=x.device).unsqueeze(0)
    idx = (slots + drop.unsqueeze(1)).clamp(0, max(t - 1, 0))
    if t == 0:
        return x.new_zeros(n, width, f), new_lens
    out = torch.gather(x, 1, idx.unsqueeze(-1).expand(n, width, f))
    out = out.masked_fill((slots >= new_lens.unsqueeze(1)).unsqueeze(-1), 0.0)
    return out, new_lens


class Conv2dSubsampling4(nn.Module):
    """Conv2d subsampling by 4: (N, T, F) fbank -> (N, T', D).

    Args:
        input_dim: F, feature bins (>= 7).
        d_model: D, output dimension.
        channels: convolution channels (defaults to D).
    """

    def __init__(self, input_dim: int, d_model: int, channels: int | None = None) -> None:
        super().__init__()
        if input_dim < RECEPTIVE_FIELD:
            raise ValueError(f"input_dim must be >= {RECEPTIVE_FIELD}, got {input_dim}")
        channels = channels or d_model
        self.input_dim = input_dim
        self.d_model = d_model
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq_out = ((input_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq_out, d_model)

    @staticmethod
    def subsampled_lengths(lengths: Tensor) -> Tensor:
        """(N,) T -> (N,) T'; see :func:`conv2d_subsampled_lengths`."""
        return conv2d_subsampled_lengths(lengths)

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            x: (N, T, F) features; frames beyond ``x_lens`` are padding (any value).
            x_lens: (N,) valid input frames.

        Returns:
            (N, T', D) with ``T' = subsampled_lengths(T)``, and (N,) output lengths. Valid output frames
            only depend on valid input frames.
        """
        t_out = int(conv2d_subsampled_lengths(torch.tensor(x.size(1))).item())
        if x.size(1) < RECEPTIVE_FIELD:  # too short for one window: pad so the convolutions run
            x = nn.functional.pad(x, (0, 0, 0, RECEPTIVE_FIELD - x.size(1)))
        h = self.conv(x.unsqueeze(1))  # (N, C, T', F')
        n, c, t, f = h.shape
        h = self.out(h.transpose(1, 2).reshape(n, t, c * f))
        return h[:, :t_out], conv2d_subsampled_lengths(x_lens)

    def streaming_forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        buf: Tensor,
        buf_lens: Tensor,
        *,
        chunk_size: int,
        final: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Streaming subsampling with a raw-frame buffer; the outputs equal :meth:`forward` exactly.

        The buffer keeps the input frames not yet consumed; it always starts at an input frame that is a
        multiple of 4, so each emitted frame sees exactly the same 7 input frames as in the full pass.
        Only whole chunks of ``chunk_size`` output frames are emitted (so the encoder above can process
        chunk-aligned blocks), except for rows where ``final`` is set: those emit every frame that can be
        computed and drop the remaining (< 7) frames, as the full pass does.

        Args:
            x: (N, Tc, F) new input frames; x_lens: (N,) valid new frames per row.
            buf: (N, B, F) buffered frames (left-aligned); buf_lens: (N,).
            chunk_size: emit output frames in multiples of this (> 0).
            final: (N,) bool, the stream of that row ends with this call.

        Returns:
            out (N, C, D), out_lens (N,) emitted frames per row, new buf (N, B', F), new buf_lens (N,).
        """
        if chunk_size <= 0:
            raise ValueError(f"streaming needs chunk_size > 0, got {chunk_size}")
        packed, total = _pack_rows(buf, buf_lens, x.to(buf.dtype), x_lens)
        avail = torch.div(total - 3, SUBSAMPLING_FACTOR, rounding_mode="floor").clamp(min=0)
        whole = torch.div(avail, chunk_size, rounding_mode="floor") * chunk_size
        n_out = torch.where(final, avail, whole)
        c = int(n_out.max().item()) if n_out.numel() > 0 else 0
        if c > 0:
            window = SUBSAMPLING_FACTOR * c + RECEPTIVE_FIELD - SUBSAMPLING_FACTOR
            out, _ = self.forward(packed[:, :window], total.clamp(max=window))
            out = out[:, :c]
        else:
            out = packed.new_zeros(packed.size(0), 0, self.d_model)
        consumed = torch.where(final, total, SUBSAMPLING_FACTOR * n_out)
        new_buf, new_lens = _drop_prefix(packed, total, consumed)
        return out, n_out, new_buf, new_lens
