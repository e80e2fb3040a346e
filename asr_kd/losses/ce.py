"""Cross-entropy losses for the attention decoder and the Mask-CTC decoder.

Dimension legend (docs/DESIGN.md): N batch, L decoder positions, V vocabulary.
Padding / unscored positions carry the label ``ignore_index`` (-1).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["label_smoothing_loss", "masked_lm_loss"]


def label_smoothing_loss(logits: Tensor, targets: Tensor, *, smoothing: float = 0.1, ignore_index: int = -1) -> Tensor:
    """Label-smoothed cross entropy, summed over all scored positions of the batch.

    Per scored position the target distribution is ``(1 - smoothing) * onehot(y) + smoothing / V``
    (``F.cross_entropy(label_smoothing=...)``), so the loss is
    ``-(1 - smoothing) * log p(y) - smoothing / V * sum_v log p(v)``.

    Args:
      logits: (N, L, V) unnormalised scores (evaluated in float32).
      targets: (N, L) int64, ``ignore_index`` where not scored.
    Returns: scalar float32 sum.
    """
    return F.cross_entropy(
        logits.float().flatten(0, 1),
        targets.flatten().to(logits.device),
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        reduction="sum",
    )


def masked_lm_loss(logits: Tensor, targets: Tensor, *, ignore_index: int = -1) -> Tensor:
    """Cross entropy on the masked positions only (``targets != ignore_index``), summed.

    Divide by the number of masked tokens (``(targets != ignore_index).sum()``) for the
    ESPnet-style per-token Mask-CTC loss.

    Args:
      logits: (N, L, V); targets: (N, L) int64 with ``ignore_index`` at unmasked/padded positions.
    Returns: scalar float32 sum.
    """
    return label_smoothing_loss(logits, targets, smoothing=0.0, ignore_index=ignore_index)
