"""CTC wrapper vs brute-force enumeration of all alignments (and k2 when importable)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from asr_kd.losses.ctc import ctc_loss, k2_available, pad_token_lists


def collapse(path, blank=0):
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return out


def ctc_brute_force(log_probs: torch.Tensor, target: list[int], blank: int = 0) -> float:
    """-log sum over all V^T frame labellings that collapse to ``target``. log_probs: (T, V)."""
    t, v = log_probs.shape
    total = -math.inf
    for path in itertools.product(range(v), repeat=t):
        if collapse(path, blank) == target:
            score = sum(float(log_probs[i, s]) for i, s in enumerate(path))
            total = float(torch.logaddexp(torch.tensor(total), torch.tensor(score)))
    return -total


@pytest.fixture
def tiny_batch():
    g = torch.Generator().manual_seed(0)
    n, t, v = 4, 5, 3
    log_probs = torch.randn(n, t, v, generator=g, dtype=torch.float64).log_softmax(-1)
    lens = torch.tensor([5, 4, 5, 3])
    tokens = [[1, 2], [1, 1], [2, 2, 1], []]  # repeated label needs a blank in between
    return log_probs, lens, tokens


def test_pad_token_lists():
    padded, lens = pad_token_lists([[3, 4], [], [5]], pad=0)
    assert padded.tolist() == [[3, 4], [0, 0], [5, 0]]
    assert lens.tolist() == [2, 0, 1]
    padded, lens = pad_token_lists([[], []])
    assert padded.shape == (2, 1) and lens.tolist() == [0, 0]


def test_ctc_matches_brute_force(tiny_batch):
    log_probs, lens, tokens = tiny_batch
    per_utt = ctc_loss(log_probs, lens, tokens, reduction="none")
    assert per_utt.dtype == torch.float32
    for i, tok in enumerate(tokens):
        ref = ctc_brute_force(log_probs[i, : lens[i]], tok)
        assert per_utt[i].item() == pytest.approx(ref, rel=1e-5, abs=1e-5)
    total = ctc_loss(log_probs, lens, tokens)
    assert total.item() == pytest.approx(per_utt.sum().item(), rel=1e-6)


def test_ctc_padding_frames_ignored(tiny_batch):
    log_probs, lens, tokens = tiny_batch
    noisy = log_probs.clone()
    noisy[1, 4:] = torch.randn(1, 3, dtype=torch.float64).log_softmax(-1)  # utt 1 has 4 frames
    noisy[3, 3:] = 0.0
    assert torch.allclose(
        ctc_loss(noisy, lens, tokens, reduction="none"), ctc_loss(log_probs, lens, tokens, reduction="none")
    )


def test_ctc_zero_infinity():
    log_probs = torch.randn(1, 2, 4).log_softmax(-1)
    tokens = [[1, 2, 3]]  # needs >= 3 frames
    assert ctc_loss(log_probs, torch.tensor([2]), tokens, zero_infinity=True).item() == 0.0
    assert math.isinf(ctc_loss(log_probs, torch.tensor([2]), tokens, zero_infinity=False).item())


def test_ctc_gradient_flows(tiny_batch):
    log_probs, lens, tokens = tiny_batch
    logits = torch.randn(4, 5, 3, requires_grad=True)
    ctc_loss(logits.log_softmax(-1), lens, tokens).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_ctc_bad_backend(tiny_batch):
    log_probs, lens, tokens = tiny_batch
    with pytest.raises(ValueError):
        ctc_loss(log_probs, lens, tokens, backend="nope")
    if not k2_available():
        with pytest.raises(RuntimeError, match="k2"):
            ctc_loss(log_probs, lens, tokens, backend="k2")


def test_ctc_k2_matches_torch(k2, tiny_batch):  # k2 fixture: skipped with the reason without k2
    log_probs, lens, tokens = tiny_batch
    ref = ctc_loss(log_probs, lens, tokens, reduction="none")
    got = ctc_loss(log_probs, lens, tokens, reduction="none", backend="k2")
    assert torch.allclose(got, ref, atol=1e-4)
