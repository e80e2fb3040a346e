"""CTC output head.

Dimension legend (docs/DESIGN.md): N batch, T' encoder frames, D encoder dim, V vocabulary (blank 0).
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

__all__ = ["CtcHead"]


class CtcHead(nn.Module):
    """Dropout + linear projection of encoder frames to CTC logits.

    Also used for intermediate CTC (InterCTC) on an encoder layer's output.
    """

    def __init__(self, d_model: int, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(d_model, vocab_size)

    def forward(self, enc: Tensor) -> Tensor:
        """enc (N, T', D) -> logits (N, T', V)."""
        return self.output(self.dropout(enc))

    def log_probs(self, enc: Tensor) -> Tensor:
        """enc (N, T', D) -> log-softmax over V in float32, (N, T', V)."""
        return self.forward(enc).float().log_softmax(dim=-1)
