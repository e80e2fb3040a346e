"""RNN-T: pure-PyTorch reference vs brute force vs fast_rnnt; pruned vs full; warm-up scales."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from asr_kd.losses.rnnt import (
    fast_rnnt_available,
    pruned_rnnt_loss,
    rnnt_loss_full,
    rnnt_loss_reference,
    transducer_loss_scales,
)

needs_fast_rnnt = pytest.mark.skipif(not fast_rnnt_available(), reason="fast_rnnt not importable")


def rnnt_brute_force(logits: torch.Tensor, target: list[int], blank: int = 0) -> float:
    """-log p(y|x) by enumerating every lattice path. logits: (T, U, V) with U >= len(target) + 1.

    A path is an ordering of T - 1 blanks and S label emissions from (0, 0) to (T - 1, S),
    followed by the final blank at (T - 1, S).
    """
    logp = logits.log_softmax(-1)
    t_len, s_len = logp.shape[0], len(target)
    n_moves = t_len - 1 + s_len
    total = -math.inf
    for emit_pos in itertools.combinations(range(n_moves), s_len):
        t = u = 0
        score = 0.0
        for m in range(n_moves):
            if m in emit_pos:
                score += float(logp[t, u, target[u]])
                u += 1
            else:
                score += float(logp[t, u, blank])
                t += 1
        score += float(logp[t_len - 1, s_len, blank])
        total = math.log(math.exp(total) + math.exp(score)) if total > -math.inf else score
    return -total


def _batch(seed=0, n=3, t=4, s=3, v=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, s + 1, v, generator=g, dtype=dtype)
    targets = torch.randint(1, v, (n, s), generator=g)
    t_lens = torch.tensor([t, t - 1, 1][:n])
    s_lens = torch.tensor([s, s - 1, 1][:n])
    return logits, targets, t_lens, s_lens


def test_transducer_loss_scales():
    assert transducer_loss_scales(0, 100) == pytest.approx((1.0, 0.1))
    assert transducer_loss_scales(50, 100) == pytest.approx((0.75, 0.55))
    assert transducer_loss_scales(100, 100) == pytest.approx((0.5, 1.0))
    assert transducer_loss_scales(10**6, 100, 0.3) == pytest.approx((0.3, 1.0))
    assert transducer_loss_scales(0, 0) == pytest.approx((0.5, 1.0))


def test_reference_matches_brute_force():
    logits, targets, t_lens, s_lens = _batch()
    got = rnnt_loss_reference(logits, targets, t_lens, s_lens, reduction="none")
    for i in range(logits.size(0)):
        ref = rnnt_brute_force(logits[i, : t_lens[i]], targets[i, : s_lens[i]].tolist())
        assert got[i].item() == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert rnnt_loss_reference(logits, targets, t_lens, s_lens).item() == pytest.approx(got.sum().item())


def test_reference_empty_target_and_single_frame():
    logits, targets, _, _ = _batch(seed=1, n=2, t=3, s=2)
    t_lens, s_lens = torch.tensor([1, 3]), torch.tensor([0, 0])
    got = rnnt_loss_reference(logits, targets, t_lens, s_lens, reduction="none")
    logp = logits.log_softmax(-1)
    assert got[0].item() == pytest.approx(-logp[0, 0, 0, 0].item())
    assert got[1].item() == pytest.approx(-logp[1, :3, 0, 0].sum().item())


def test_reference_gradcheck():
    logits, targets, t_lens, s_lens = _batch(seed=2, n=2, t=3, s=2, v=3)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: rnnt_loss_reference(z, targets, t_lens[:2], s_lens[:2]), (logits,))


@needs_fast_rnnt
def test_fast_rnnt_full_matches_reference():
    logits, targets, t_lens, s_lens = _batch(seed=3, n=3, t=6, s=4, v=7)
    ref = rnnt_loss_full(logits, targets, t_lens, s_lens, reduction="none", backend="torch")
    got = rnnt_loss_full(logits, targets, t_lens, s_lens, reduction="none", backend="fast_rnnt")
    assert ref.dtype == got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)
    # and gradients
    a = logits.float().clone().requires_grad_(True)
    b = logits.float().clone().requires_grad_(True)
    rnnt_loss_full(a, targets, t_lens, s_lens, backend="torch").backward()
    rnnt_loss_full(b, targets, t_lens, s_lens, backend="fast_rnnt").backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)


def _pruned_setup(seed, n, t, s, v, j=8):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(n, t, v, generator=g)
    lm = torch.randn(n, s + 1, v, generator=g)
    enc = torch.randn(n, t, j, generator=g)
    pred = torch.randn(n, s + 1, j, generator=g)
    w = torch.randn(j, v, generator=g)
    joint = lambda e, p: torch.tanh(e + p) @ w  # noqa: E731
    targets = torch.randint(1, v, (n, s), generator=g)
    return am, lm, enc, pred, joint, targets


@needs_fast_rnnt
def test_simple_loss_is_rnnt_of_trivial_joiner():
    n, t, s, v = 2, 5, 3, 6
    am, lm, enc, pred, joint, targets = _pruned_setup(4, n, t, s, v)
    t_lens, s_lens = torch.tensor([5, 4]), torch.tensor([3, 2])
    simple, _ = pruned_rnnt_loss(
        am, lm, enc, pred, joint, targets, t_lens, s_lens, lm_only_scale=0.0, am_only_scale=0.0, reduction="none"
    )
    trivial = am.unsqueeze(2) + lm.unsqueeze(1)  # (N, T', U, V)
    ref = rnnt_loss_reference(trivial.double(), targets, t_lens, s_lens, reduction="none")
    assert torch.allclose(simple.double(), ref, atol=1e-4)


@needs_fast_rnnt
def test_pruned_equals_full_when_range_covers_lattice():
    n, t, s, v = 2, 6, 3, 5
    am, lm, enc, pred, joint, targets = _pruned_setup(5, n, t, s, v)
    t_lens, s_lens = torch.tensor([6, 6]), torch.tensor([3, 3])
    _, pruned = pruned_rnnt_loss(am, lm, enc, pred, joint, targets, t_lens, s_lens, prune_range=s + 1, reduction="none")
    full_logits = joint(enc.unsqueeze(2), pred.unsqueeze(1))
    full = rnnt_loss_reference(full_logits.double(), targets, t_lens, s_lens, reduction="none")
    assert torch.allclose(pruned.double(), full, atol=1e-4)


@needs_fast_rnnt
def test_pruned_is_upper_bound_of_full():
    n, t, s, v = 3, 8, 6, 5
    am, lm, enc, pred, joint, targets = _pruned_setup(6, n, t, s, v)
    t_lens, s_lens = torch.tensor([8, 7, 8]), torch.tensor([6, 4, 5])
    simple, pruned = pruned_rnnt_loss(
        am, lm, enc, pred, joint, targets, t_lens, s_lens, prune_range=2, reduction="none"
    )
    full_logits = joint(enc.unsqueeze(2), pred.unsqueeze(1))
    full = rnnt_loss_reference(full_logits.double(), targets, t_lens, s_lens, reduction="none")
    assert (pruned.double() >= full - 1e-4).all()
    assert torch.isfinite(simple).all()


@needs_fast_rnnt
def test_pruned_backward():
    n, t, s, v = 2, 5, 3, 5
    am, lm, enc, pred, joint, targets = _pruned_setup(7, n, t, s, v)
    for x in (am, lm, enc, pred):
        x.requires_grad_(True)
    simple, pruned = pruned_rnnt_loss(
        am, lm, enc, pred, joint, targets, torch.tensor([5, 3]), torch.tensor([3, 1]), prune_range=2
    )
    (simple + pruned).backward()
    for x in (am, lm, enc, pred):
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
