import math

import pytest
import torch
from decoding_bruteforce import brute_force_one_sym, ref_greedy

from asr_kd.decoding.transducer import modified_beam_search, transducer_greedy_search

D, P, J = 3, 4, 5


class ToyPredictor(torch.nn.Module):
    """Stateless stand-in: an output vector per (previous, last) token pair."""

    def __init__(self, V, seed=0, context_size=2):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(*(V,) * context_size, P, generator=g, dtype=torch.float64)
        self.context_size = context_size
        self.blank_id = 0

    def forward(self, y, need_pad=True):
        assert not need_pad and y.size(1) == self.context_size
        return self.table[tuple(y.T)].unsqueeze(1)  # (B, 1, P)


class ToyJoiner(torch.nn.Module):
    def __init__(self, V, seed=0, scale=2.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed + 7)
        self.we = torch.randn(D, J, generator=g, dtype=torch.float64)
        self.wp = torch.randn(P, J, generator=g, dtype=torch.float64)
        self.wo = scale * torch.randn(J, V, generator=g, dtype=torch.float64)

    def enc_proj(self, x):
        return x @ self.we

    def pred_proj(self, x):
        return x @ self.wp

    def forward(self, e, p):
        return torch.tanh(e + p) @ self.wo


def _setup(V=3, N=3, T=4, seed=0):
    g = torch.Generator().manual_seed(seed + 50)
    enc = torch.randn(N, T, D, generator=g, dtype=torch.float64)
    return ToyPredictor(V, seed), ToyJoiner(V, seed), enc


@pytest.mark.parametrize("max_sym", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_batched_matches_reference(max_sym, seed):
    pred, joiner, enc = _setup(V=4, N=3, T=6, seed=seed)
    joiner.wo[:, 0] -= 1.0  # emit more often so that several symbols per frame happen
    lens = torch.tensor([6, 2, 4])
    got = transducer_greedy_search(pred, joiner, enc, lens, max_sym_per_frame=max_sym)
    for n in range(3):
        assert got[n] == ref_greedy(pred, joiner, enc[n], int(lens[n]), max_sym)


def test_greedy_hand_made():
    # a joiner that ignores the predictor: frame t's argmax is fixed
    class FixedJoiner(torch.nn.Module):
        def __init__(self, table):
            super().__init__()
            self.table = table  # (T', V)

        def enc_proj(self, x):
            return x  # enc holds the frame index in channel 0

        def pred_proj(self, x):
            return torch.zeros(x.size(0), 1, dtype=x.dtype)

        def forward(self, e, p):
            return self.table[e[:, 0].long()]

    table = torch.tensor([[0.0, 5.0, 1.0], [5.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    enc = torch.arange(3.0).view(1, 3, 1).repeat(2, 1, 1)
    pred = ToyPredictor(3)
    out = transducer_greedy_search(pred, FixedJoiner(table), enc, torch.tensor([3, 1]))
    assert out == [[1, 2], [1]]
    # two symbols per frame: the fixed argmax repeats on frames 0 and 2
    out2 = transducer_greedy_search(pred, FixedJoiner(table), enc, torch.tensor([3, 1]), 2)
    assert out2 == [[1, 1, 2, 2], [1, 1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modified_beam_search_exact_with_large_beam(seed):
    V, T = 3, 4
    pred, joiner, enc = _setup(V=V, N=2, T=T, seed=seed)
    lens = torch.tensor([4, 3])
    res = modified_beam_search(pred, joiner, enc, lens, beam=200)
    for n in range(2):
        ref = brute_force_one_sym(pred, joiner, enc[n], int(lens[n]), V)
        assert len(res[n]) == len(ref)
        for toks, s in zip(res[n].tokens, res[n].scores):
            assert s == pytest.approx(ref[tuple(toks)], abs=1e-9)
        assert tuple(res[n].best) == max(ref, key=ref.get)
        total = torch.tensor(res[n].scores, dtype=torch.float64).logsumexp(0).item()
        assert total == pytest.approx(0.0, abs=1e-9)


def test_modified_beam_search_small_beam_and_batching():
    V = 4
    pred, joiner, enc = _setup(V=V, N=3, T=5, seed=3)
    lens = torch.tensor([5, 2, 4])
    res = modified_beam_search(pred, joiner, enc, lens, beam=3)
    for n in range(3):
        single = modified_beam_search(pred, joiner, enc[n : n + 1, : lens[n]], lens[n : n + 1], 3)[0]
        assert res[n].tokens == single.tokens
        assert res[n].scores == pytest.approx(single.scores)
        assert 1 <= len(res[n]) <= 3
        assert all(len(h) <= int(lens[n]) for h in res[n].tokens)
    # beam 1: the greedy one-symbol-per-frame path
    one = modified_beam_search(pred, joiner, enc, lens, beam=1)
    greedy = transducer_greedy_search(pred, joiner, enc, lens, max_sym_per_frame=1)
    assert [r.best for r in one] == greedy
    assert math.isfinite(one[0].scores[0])
