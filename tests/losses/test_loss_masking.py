"""Mask-CTC masking (counts, determinism) and the CE losses (values against manual formulas)."""

from __future__ import annotations

import pytest
import torch

from asr_kd.losses.ce import label_smoothing_loss, masked_lm_loss
from asr_kd.losses.masking import mask_tokens

MASK = 9
TOKENS = [[3, 4, 5, 6, 7], [2], [], [8, 8, 8]]


def test_mask_counts_and_layout():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        m = mask_tokens(TOKENS, MASK, generator=g)
        assert m.ys_in.shape == m.ys_out.shape == (4, 5)
        for i, seq in enumerate(TOKENS):
            length = len(seq)
            k = int(m.num_masked[i])
            is_mask = m.ys_in[i] == MASK
            if length == 0:
                assert k == 0 and (m.ys_in[i] == -1).all() and (m.ys_out[i] == -1).all()
                continue
            assert 1 <= k <= length
            assert int(is_mask.sum()) == k
            assert (m.ys_in[i, length:] == -1).all()  # padding
            assert (m.ys_out[i, ~is_mask] == -1).all()  # targets only where masked
            assert m.ys_out[i, is_mask].tolist() == [seq[j] for j in is_mask.nonzero()[:, 0]]
            keep = ~is_mask[:length]
            assert m.ys_in[i, :length][keep].tolist() == [s for s, kp in zip(seq, keep) if kp]


def test_mask_count_distribution_covers_range():
    g = torch.Generator().manual_seed(1)
    seen = {int(mask_tokens([[1, 2, 3, 4]], MASK, generator=g).num_masked[0]) for _ in range(200)}
    assert seen == {1, 2, 3, 4}


def test_mask_deterministic_with_seed():
    a = mask_tokens(TOKENS, MASK, generator=torch.Generator().manual_seed(123))
    b = mask_tokens(TOKENS, MASK, generator=torch.Generator().manual_seed(123))
    assert torch.equal(a.ys_in, b.ys_in) and torch.equal(a.ys_out, b.ys_out)
    draws = {
        tuple(mask_tokens(TOKENS, MASK, generator=torch.Generator().manual_seed(s)).ys_in.flatten().tolist())
        for s in range(10)
    }
    assert len(draws) > 1


def test_masked_lm_loss_only_on_masked_positions():
    g = torch.Generator().manual_seed(2)
    m = mask_tokens(TOKENS, MASK, generator=g)
    logits = torch.randn(4, 5, MASK, generator=g)
    loss = masked_lm_loss(logits, m.ys_out)
    logp = logits.log_softmax(-1)
    sel = m.ys_out != -1
    ref = -logp[sel].gather(-1, m.ys_out[sel].unsqueeze(-1)).sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    perturbed = logits.clone()
    perturbed[~sel] = torch.randn(int((~sel).sum()), MASK)
    assert masked_lm_loss(perturbed, m.ys_out).item() == pytest.approx(loss.item(), rel=1e-6)


def test_label_smoothing_loss_formula():
    g = torch.Generator().manual_seed(3)
    v, eps = 6, 0.1
    logits = torch.randn(2, 3, v, generator=g)
    targets = torch.tensor([[1, 2, -1], [4, -1, -1]])
    logp = logits.log_softmax(-1)
    ref = 0.0
    for n in range(2):
        for i in range(3):
            y = int(targets[n, i])
            if y == -1:
                continue
            ref += -(1 - eps) * logp[n, i, y] - eps / v * logp[n, i].sum()
    got = label_smoothing_loss(logits, targets, smoothing=eps)
    assert got.item() == pytest.approx(float(ref), rel=1e-6)
    assert label_smoothing_loss(logits, targets, smoothing=0.0).item() == pytest.approx(
        -(logp[0, 0, 1] + logp[0, 1, 2] + logp[1, 0, 4]).item(), rel=1e-6
    )
