"""Building blocks of the Zipformer (arXiv 2310.11230): scheduled values, BiasNorm, SwooshL/SwooshR,
the learned-scale bypass, and Balancer / Whiten gradient regularisers.

Scheduled values (:class:`ScheduledFloat`) are piecewise-linear functions of *training progress*,
measured in audio hours seen (summed over ranks), not in steps: with small CPU batches a schedule
written in steps would stretch over far more audio than on a GPU. The trainer's step-start callback
(``on_train_step_start(progress)``) sets the progress on the encoder, which shares one
:class:`ProgressClock` with all its modules.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "Balancer",
    "BiasNorm",
    "Bypass",
    "ProgressClock",
    "ScheduledFloat",
    "SwooshL",
    "SwooshR",
    "Whiten",
    "swoosh_l",
    "swoosh_r",
]


class ProgressClock:
    """Training progress shared by the modules of one encoder: ``hours`` of audio seen so far."""

    def __init__(self) -> None:
        self.hours = 0.0


class ScheduledFloat:
    """A float that follows a piecewise-linear schedule over audio hours seen, constant outside it.

    Args:
        points: ``(hours, value)`` pairs with strictly increasing hours, e.g. ``((0.0, 0.3), (2.0, 0.1))``.
        clock: the shared :class:`ProgressClock` (the encoder's).

    ``float(s)`` / ``s.value`` is the value at ``clock.hours``.
    """

    def __init__(self, points: Sequence[tuple[float, float]], clock: ProgressClock) -> None:
        pts = [(float(x), float(y)) for x, y in points]
        if not pts:
            raise ValueError("ScheduledFloat needs at least one (hours, value) point")
        for (x0, _), (x1, _) in zip(pts, pts[1:]):
            if not x1 > x0:
                raise ValueError(f"ScheduledFloat points must have increasing hours, got {pts}")
        self.points = pts
        self.clock = clock

    def at(self, hours: float) -> float:
        """The value at ``hours`` of audio seen."""
        pts = self.points
        if hours <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if hours <= x1:
                return y0 + (y1 - y0) * (hours - x0) / (x1 - x0)
        return pts[-1][1]

    @property
    def value(self) -> float:
        return self.at(self.clock.hours)

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"ScheduledFloat({self.points})"


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035 (the paper's eq. 6)."""
    return nn.functional.softplus(x - 4.0) - 0.08 * x - 0.035


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687 (exactly 0 at x = 0)."""
    return nn.functional.softplus(x - 1.0) - 0.08 * x - 0.313261687


class SwooshL(nn.Module):
    """:func:`swoosh_l` as a module (used in the feed-forward modules)."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class SwooshR(nn.Module):
    """:func:`swoosh_r` as a module (used in the convolution modules and the front end)."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


class BiasNorm(nn.Module):
    """BiasNorm: ``y = x / RMS(x - b) * exp(g)`` over the last dim, with a learned channel bias ``b``
    and a learned scalar log-scale ``g`` (the Zipformer's replacement for LayerNorm: the bias lets
    the model keep length information that LayerNorm's mean removal would erase). (..., D) -> (..., D).
    """

    def __init__(self, dim: int, log_scale: float = 1.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))

    def forward(self, x: Tensor) -> Tensor:
        rms = (x - self.bias).pow(2).mean(dim=-1, keepdim=True).clamp(min=1e-8).rsqrt()
        return x * rms * self.log_scale.exp()


class Bypass(nn.Module):
    """Learned per-channel interpolation between a module's input and output:
    ``y = x_in + c * (x_out - x_in)`` with ``c`` initialised at ``init`` and, while training, clamped
    to ``[min_scale, 1]`` (``min_scale`` a :class:`ScheduledFloat`: high early, so every layer
    contributes while the model is young). (N, T, D) inputs."""

    def __init__(self, dim: int, min_scale: ScheduledFloat | float, init: float = 0.5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init)))
        self.min_scale = min_scale

    def forward(self, x_in: Tensor, x_out: Tensor) -> Tensor:
        c = self.scale
        if self.training:
            c = c.clamp(min=float(self.min_scale), max=1.0)
        return x_in + c * (x_out - x_in)


class _BalancerFunction(torch.autograd.Function):
    """Identity forward; backward adds a small gradient pushing the per-channel statistics into range."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        min_positive: float,
        max_positive: float,
        min_abs: float,
        max_abs: float,
        grad_scale: float,
        channel_dim: int,
    ) -> Tensor:
        ctx.save_for_backward(x)
        ctx.cfg = (min_positive, max_positive, min_abs, max_abs, grad_scale, channel_dim)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        min_pos, max_pos, min_abs, max_abs, grad_scale, cdim = ctx.cfg
        with torch.enable_grad():
            xd = x.detach().float().requires_grad_(True)
            dims = [d for d in range(xd.dim()) if d != cdim % xd.dim()]
            # smooth surrogates of the fraction of positive values and of the mean |x| per channel
            pos_frac = torch.sigmoid(xd * 4.0).mean(dim=dims)
            mean_abs = xd.abs().mean(dim=dims)
            penalty = (
                (min_pos - pos_frac).clamp(min=0)
                + (pos_frac - max_pos).clamp(min=0)
                + (min_abs - mean_abs).clamp(min=0) / max(min_abs, 1e-4)
                + (mean_abs - max_abs).clamp(min=0) / max_abs
            ).sum()
            (pgrad,) = torch.autograd.grad(penalty, xd)
        # scale the extra gradient relative to the incoming gradient's magnitude, element-wise
        scale = grad_scale * grad.abs().mean() / pgrad.abs().mean().clamp(min=1e-20)
        return grad + (pgrad * scale).to(grad.dtype), None, None, None, None, None, None


class Balancer(nn.Module):
    """Keeps per-channel activation statistics in a healthy range by adding a small gradient term
    (identity in the forward pass and in eval mode).

    Args:
        channel_dim: the channel axis of the input (-1 for (N, T, D)).
        min_positive / max_positive: allowed range of the fraction of positive values per channel.
        min_abs / max_abs: allowed range of the mean absolute value per channel.
        prob: fraction of training steps on which it acts (it costs a backward pass of its own).
        grad_scale: size of the corrective gradient relative to the incoming one (where violated).
    """

    def __init__(
        self,
        channel_dim: int = -1,
        *,
        min_positive: float = 0.05,
        max_positive: float = 0.95,
        min_abs: float = 0.2,
        max_abs: float = 100.0,
        prob: float = 0.25,
        grad_scale: float = 0.04,
    ) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.cfg = (min_positive, max_positive, min_abs, max_abs)
        self.prob = prob
        self.grad_scale = grad_scale

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not x.requires_grad or random.random() >= self.prob:
            return x
        return _BalancerFunction.apply(x, *self.cfg, self.grad_scale, self.channel_dim)


def whitening_metric(x: Tensor, num_groups: int = 1) -> Tensor:
    """How far the channel covariance of (..., C) frames is from a multiple of the identity: ``>= 1``,
    exactly 1 when the covariance is isotropic (each of ``num_groups`` channel groups separately,
    averaged). ``C**-1 * trace(S²) / (C**-1 * trace(S))²``."""
    x = x.reshape(-1, x.size(-1)).float()
    n, c = x.shape
    x = x.reshape(n, num_groups, c // num_groups).transpose(0, 1)  # (G, n, C/G)
    x = x - x.mean(dim=1, keepdim=True)
    cov = x.transpose(1, 2) @ x  # (G, C/G, C/G)
    d = cov.size(-1)
    mean_diag = cov.diagonal(dim1=1, dim2=2).mean(dim=1)
    mean_sq = (cov**2).sum(dim=(1, 2)) / d
    return (mean_sq / (mean_diag**2 + 1e-20)).mean()


class _WhitenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, limit: float, grad_scale: float, num_groups: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.cfg = (limit, grad_scale, num_groups)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        limit, grad_scale, groups = ctx.cfg
        with torch.enable_grad():
            xd = x.detach().float().requires_grad_(True)
            metric = whitening_metric(xd, groups)
            if float(metric) <= limit:
                return grad, None, None, None
            (pgrad,) = torch.autograd.grad(metric, xd)
        scale = grad_scale * grad.norm() / pgrad.norm().clamp(min=1e-20)
        return grad + (pgrad * scale).to(grad.dtype), None, None, None


class Whiten(nn.Module):
    """Penalises, through the gradient only, channel covariances far from white: when
    :func:`whitening_metric` exceeds ``whitening_limit`` a gradient that lowers it is added
    (identity forward; inactive in eval mode and on a ``1 - prob`` share of steps)."""

    def __init__(
        self, whitening_limit: float = 5.0, *, num_groups: int = 1, prob: float = 0.25, grad_scale: float = 0.01
    ) -> None:
        super().__init__()
        self.limit = whitening_limit
        self.num_groups = num_groups
        self.prob = prob
        self.grad_scale = grad_scale

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not x.requires_grad or random.random() >= self.prob:
            return x
        return _WhitenFunction.apply(x, self.limit, self.grad_scale, self.num_groups)


def compact_rel_positional_encoding(
    t_q: int, t_k: int, dim: int, *, device=None, dtype=None, length_factor: float = 1.0
) -> Tensor:
    """Compact relative positional encoding of offsets ``i - j``, i.e. the (t_q + t_k - 1, dim) table for
    offsets ``t_k - 1, ..., -(t_q - 1)`` (row ``r`` = offset ``t_k - 1 - r``, the order a relative
    shift expects).

    Offsets are compressed logarithmically and mapped through ``atan`` before the Fourier features,
    so that far offsets share coarse features and near ones stay distinct; ``dim`` is small (48),
    unlike Transformer-XL's full-width table.
    """
    if dim % 2:
        raise ValueError(f"positional dim must be even, got {dim}")
    offsets = torch.arange(t_k - 1, -t_q, -1, device=device, dtype=torch.float32)
    comp = dim * length_factor
    x = offsets.sign() * comp * torch.log1p(offsets.abs() / comp)
    angle = torch.atan(x / comp)  # (-pi/2, pi/2)
    freqs = torch.arange(1, dim // 2 + 1, device=device, dtype=torch.float32)
    ang = angle.unsqueeze(1) * freqs.unsqueeze(0)
    pe = torch.cat([ang.cos(), ang.sin()], dim=1)
    return pe.to(dtype) if dtype is not None else pe


def init_scaled(linear: nn.Linear, scale: float) -> nn.Linear:
    """Scale a freshly initialised linear layer's weights (and bias) by ``scale`` (a small initial
    output, as icefall's ``ScaledLinear(initial_scale=...)``)."""
    with torch.no_grad():
        linear.weight.mul_(scale)
        if linear.bias is not None:
            linear.bias.mul_(scale)
    return linear
