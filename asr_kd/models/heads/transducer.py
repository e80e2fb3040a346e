"""Transducer head: stateless predictor, joiner, and the module that computes their losses.

Dimension legend (docs/DESIGN.md): N batch, T' encoder frames, D encoder dim, S label length,
U = S + 1 predictor steps, P predictor dim, J joiner dim, V vocabulary (blank 0), R prune range.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from asr_kd.losses.rnnt import pruned_rnnt_loss, rnnt_loss_full

__all__ = ["StatelessPredictor", "Joiner", "TransducerHead", "prepend_blank"]


def prepend_blank(targets: Tensor, blank_id: int = 0) -> Tensor:
    """(N, S) labels -> (N, U = S + 1) predictor input ``[blank, y_1, ..., y_S]``."""
    col = torch.full_like(targets[:, :1], blank_id)
    return torch.cat([col, targets], dim=1)


class StatelessPredictor(nn.Module):
    """Stateless prediction network: the output at step u sees only the last ``context_size``
    tokens ``y[u - context_size + 1 .. u]`` (embedding, then a depthwise convolution over them,
    then ReLU). Positions before the sequence start are filled with blank.

    ``forward(y (N, U), need_pad=True) -> (N, U, P)``. With ``need_pad=False`` the input must
    already hold ``context_size`` tokens per output (decoding: y (N, context_size) -> (N, 1, P)).
    """

    def __init__(self, vocab_size: int, d_pred: int, context_size: int = 2, blank_id: int = 0):
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        self.vocab_size = vocab_size
        self.d_pred = d_pred
        self.context_size = context_size
        self.blank_id = blank_id
        self.embedding = nn.Embedding(vocab_size, d_pred)
        self.conv = (
            nn.Conv1d(d_pred, d_pred, kernel_size=context_size, groups=d_pred, bias=False) if context_size > 1 else None
        )

    def forward(self, y: Tensor, need_pad: bool = True) -> Tensor:
        emb = self.embedding(y.clamp(min=0))  # (N, U, P)
        if self.conv is not None:
            x = emb.transpose(1, 2)  # (N, P, U)
            if need_pad:
                pad = self.embedding.weight[self.blank_id].view(1, -1, 1)
                x = torch.cat([pad.expand(x.size(0), -1, self.context_size - 1), x], dim=2)
            emb = self.conv(x).transpose(1, 2)
        return F.relu(emb)


class Joiner(nn.Module):
    """``logits = output(tanh(enc_proj(enc) + pred_proj(pred)))``.

    ``forward(enc, pred)`` takes *projected* inputs by default (DESIGN.md: the projections are
    applied outside the joint so that pruning selects (T', R) cells of J-dim vectors), e.g.
    enc (N, T', 1, J) + pred (N, 1, U, J) -> (N, T', U, V), or (N, T', R, J) twice after pruning.
    ``project_input=True`` applies ``enc_proj``/``pred_proj`` first (D / P-dim inputs).
    """

    def __init__(self, d_enc: int, d_pred: int, d_joint: int, vocab_size: int):
        super().__init__()
        self.enc_proj = nn.Linear(d_enc, d_joint)
        self.pred_proj = nn.Linear(d_pred, d_joint)
        self.output = nn.Linear(d_joint, vocab_size)

    def forward(self, enc: Tensor, pred: Tensor, project_input: bool = False) -> Tensor:
        if project_input:
            enc, pred = self.enc_proj(enc), self.pred_proj(pred)
        return self.output(torch.tanh(enc + pred))


class TransducerHead(nn.Module):
    """Predictor + joiner + the two vocabulary projections of the pruned RNN-T "simple" loss.

    ``forward`` returns the pruned-RNN-T pair ``(simple, pruned)``; :meth:`full_loss` the full
    RNN-T loss (whole (T', U, V) lattice, small models only). Losses are summed over the batch.
    fast_rnnt needs every S_n >= 1 (pruned loss and its full-loss backend); so does k2, the other
    ``backend`` (same functions, :data:`asr_kd.losses.rnnt.RNNT_BACKENDS`).
    """

    def __init__(
        self,
        d_enc: int,
        vocab_size: int,
        *,
        d_pred: int = 256,
        d_joint: int = 256,
        context_size: int = 2,
        blank_id: int = 0,
    ):
        super().__init__()
        self.blank_id = blank_id
        self.vocab_size = vocab_size
        self.predictor = StatelessPredictor(vocab_size, d_pred, context_size, blank_id)
        self.joiner = Joiner(d_enc, d_pred, d_joint, vocab_size)
        self.simple_am_proj = nn.Linear(d_enc, vocab_size)
        self.simple_lm_proj = nn.Linear(d_pred, vocab_size)

    def forward(
        self,
        enc: Tensor,
        enc_lens: Tensor,
        targets: Tensor,
        target_lens: Tensor,
        *,
        prune_range: int = 5,
        lm_scale: float = 0.25,
        am_scale: float = 0.0,
        backend: str = "fast_rnnt",
    ) -> tuple[Tensor, Tensor]:
        """enc (N, T', D), enc_lens (N,), targets (N, S) padded with blank, target_lens (N,)
        -> ``(simple, pruned)`` scalars (sums over the batch); ``backend``: ``"fast_rnnt"`` or ``"k2"``."""
        pred = self.predictor(prepend_blank(targets, self.blank_id))  # (N, U, P)
        return pruned_rnnt_loss(
            am=self.simple_am_proj(enc),
            lm=self.simple_lm_proj(pred),
            enc_proj=self.joiner.enc_proj(enc),
            pred_proj=self.joiner.pred_proj(pred),
            joint=self.joiner,
            targets=targets,
            logit_lens=enc_lens,
            target_lens=target_lens,
            prune_range=prune_range,
            lm_only_scale=lm_scale,
            am_only_scale=am_scale,
            blank=self.blank_id,
            backend=backend,
        )

    def full_logits(self, enc: Tensor, targets: Tensor) -> Tensor:
        """enc (N, T', D), targets (N, S) -> joiner logits on the whole lattice (N, T', U, V)."""
        pred = self.predictor(prepend_blank(targets, self.blank_id))
        return self.joiner(self.joiner.enc_proj(enc).unsqueeze(2), self.joiner.pred_proj(pred).unsqueeze(1))

    def full_loss(
        self,
        enc: Tensor,
        enc_lens: Tensor,
        targets: Tensor,
        target_lens: Tensor,
        *,
        backend: str = "auto",
    ) -> Tensor:
        """Full RNN-T loss (summed over the batch); see :func:`asr_kd.losses.rnnt.rnnt_loss_full`."""
        logits = self.full_logits(enc, targets)
        return rnnt_loss_full(logits, targets, enc_lens, target_lens, blank=self.blank_id, backend=backend)
