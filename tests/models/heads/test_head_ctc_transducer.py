"""CtcHead, StatelessPredictor, Joiner and TransducerHead."""

from __future__ import annotations

import pytest
import torch

from asr_kd.losses.rnnt import fast_rnnt_available, rnnt_loss_reference
from asr_kd.models.heads import CtcHead, Joiner, StatelessPredictor, TransducerHead, prepend_blank


def test_ctc_head_shapes_and_normalisation():
    torch.manual_seed(0)
    head = CtcHead(8, 5)
    enc = torch.randn(2, 7, 8)
    assert head(enc).shape == (2, 7, 5)
    lp = head.log_probs(enc)
    assert lp.dtype == torch.float32
    assert head.bfloat16().log_probs(enc.bfloat16()).dtype == torch.float32
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 7), atol=1e-5)


def test_prepend_blank():
    assert prepend_blank(torch.tensor([[3, 4], [5, 0]])).tolist() == [[0, 3, 4], [0, 5, 0]]


@pytest.mark.parametrize("context_size", [1, 2, 3])
def test_predictor_sees_only_last_context_tokens(context_size):
    torch.manual_seed(0)
    pred = StatelessPredictor(vocab_size=10, d_pred=6, context_size=context_size).eval()
    y = torch.tensor([[0, 3, 4, 5, 6, 7]])
    out = pred(y)
    assert out.shape == (1, 6, 6)
    # changing token j only changes outputs j .. j + context_size - 1
    y2 = y.clone()
    y2[0, 2] = 9
    changed = (pred(y2) - out).abs().sum(-1)[0] > 1e-7
    expected = [2 <= u < 2 + context_size for u in range(6)]
    assert changed.tolist() == expected


def test_predictor_need_pad_false_matches_training_and_blank_context():
    torch.manual_seed(0)
    c = 3
    pred = StatelessPredictor(vocab_size=10, d_pred=6, context_size=c).eval()
    y = torch.tensor([[0, 3, 4, 5]])
    full = pred(y)
    for u in range(4):
        ctx = torch.cat([torch.zeros(1, c, dtype=torch.long), y], dim=1)[:, u + 1 : u + 1 + c]
        step = pred(ctx, need_pad=False)
        assert step.shape == (1, 1, 6)
        assert torch.allclose(step[:, 0], full[:, u], atol=1e-6)


def test_joiner_projected_and_unprojected():
    torch.manual_seed(0)
    j = Joiner(d_enc=8, d_pred=6, d_joint=5, vocab_size=7)
    enc, pred = torch.randn(2, 4, 8), torch.randn(2, 3, 6)
    out = j(j.enc_proj(enc).unsqueeze(2), j.pred_proj(pred).unsqueeze(1))
    assert out.shape == (2, 4, 3, 7)
    ref = j.output(torch.tanh(j.enc_proj(enc)[:, 1] + j.pred_proj(pred)[:, 2]))
    assert torch.allclose(out[:, 1, 2], ref, atol=1e-6)
    assert torch.allclose(j(enc.unsqueeze(2), pred.unsqueeze(1), project_input=True), out)


def _head_inputs():
    g = torch.Generator().manual_seed(0)
    enc = torch.randn(2, 6, 8, generator=g, requires_grad=True)
    enc_lens = torch.tensor([6, 4])
    targets = torch.tensor([[1, 2, 3], [4, 1, 0]])
    target_lens = torch.tensor([3, 2])
    return enc, enc_lens, targets, target_lens


def test_transducer_full_loss_matches_reference():
    torch.manual_seed(0)
    head = TransducerHead(8, 5, d_pred=6, d_joint=7)
    enc, enc_lens, targets, target_lens = _head_inputs()
    logits = head.full_logits(enc, targets)
    assert logits.shape == (2, 6, 4, 5)
    ref = rnnt_loss_reference(logits, targets, enc_lens, target_lens)
    got = head.full_loss(enc, enc_lens, targets, target_lens, backend="torch")
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.skipif(not fast_rnnt_available(), reason="fast_rnnt not importable")
def test_transducer_pruned_losses_and_backward():
    torch.manual_seed(0)
    head = TransducerHead(8, 5, d_pred=6, d_joint=7)
    enc, enc_lens, targets, target_lens = _head_inputs()
    simple, pruned = head(enc, enc_lens, targets, target_lens, prune_range=4)
    full = head.full_loss(enc, enc_lens, targets, target_lens)
    # prune_range >= S + 1 keeps the whole lattice for the longest utterance
    assert pruned.item() >= full.item() - 1e-4
    (simple + pruned).backward()
    assert torch.isfinite(enc.grad).all()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
