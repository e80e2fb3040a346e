"""asr_kd.ops.ctc_prefix_beam: the native CTC prefix beam search against the Python reference.

Same hypotheses (exactly) and scores (float tolerance) as
:func:`asr_kd.decoding.ctc.ctc_prefix_beam_search` on random log-probs over several (N, T, V)
(V up to 500), beams 1 / 4 / 10, top_k / prune_threshold, variable lengths (0 and 1 included),
float32 / float64, a non-zero blank, nbest, a static bias vector vs the equivalent hook, exact ties,
impossible tokens (-inf), a dying beam; thread-count independence; backend selection and errors.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from asr_kd.decoding.ctc import ctc_prefix_beam_search as reference
from asr_kd.ops import ctc_prefix_beam as cpb
from asr_kd.ops import ctc_prefix_beam_search, ctc_prefix_beam_search_native, native_available
from asr_kd.ops import frame_kd as fk

needs_native = pytest.mark.skipif(not native_available(), reason="asr_kd._C is not built")


def random_inputs(N, T, V, seed=0, dtype=torch.float64, scale=3.0, lens=None):
    g = torch.Generator().manual_seed(seed)
    lp = (scale * torch.randn(N, T, V, generator=g, dtype=dtype)).log_softmax(-1)
    if lens is None:
        lens = torch.randint(0, T + 1, (N,), generator=g)
        lens[0] = T
        if N > 1:
            lens[1] = min(1, T)
        if N > 2:
            lens[2] = 0
    return lp, torch.as_tensor(lens)


def assert_same(got, ref, rtol=1e-9, atol=1e-9):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.tokens == r.tokens
        assert set(g.components) == set(r.components) == {"ctc", "bias"}
        torch.testing.assert_close(
            torch.tensor(g.scores, dtype=torch.float64),
            torch.tensor(r.scores, dtype=torch.float64),
            rtol=rtol,
            atol=atol,
        )
        for name in ("ctc", "bias"):
            torch.testing.assert_close(
                torch.tensor(g.components[name], dtype=torch.float64),
                torch.tensor(r.components[name], dtype=torch.float64),
                rtol=rtol,
                atol=atol,
            )


SHAPES = [(1, 1, 2), (3, 12, 5), (2, 40, 3), (4, 20, 30), (3, 10, 500)]
KNOBS = [
    {},
    {"top_k": 3},
    {"prune_threshold": 4.0},
    {"top_k": 8, "prune_threshold": 6.0},
]


@needs_native
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("beam", [1, 4, 10])
@pytest.mark.parametrize("knobs", KNOBS, ids=["all", "top_k", "thr", "top_k+thr"])
def test_matches_reference(shape, beam, knobs):
    lp, lens = random_inputs(*shape, seed=sum(shape) + beam)
    got = ctc_prefix_beam_search_native(lp, lens, beam, **knobs)
    assert_same(got, reference(lp, lens, beam, **knobs))
    assert [len(r) for r in got] == [min(beam, len(r)) for r in got]


@needs_native
@pytest.mark.parametrize("knobs", KNOBS[:2], ids=["all", "top_k"])
def test_static_bias_equals_hook(knobs):
    lp, lens = random_inputs(3, 15, 500, seed=7)
    bias = torch.randn(500, generator=torch.Generator().manual_seed(1))
    got = ctc_prefix_beam_search_native(lp, lens, 10, token_bias=bias, **knobs)
    ref = reference(lp, lens, 10, token_bias=lambda prefix, tok: bias[tok], **knobs)
    assert_same(got, ref)
    assert any(b != 0.0 for r in got for b in r.components["bias"])
    # a plain list of floats and the python backend give the same
    assert_same(ctc_prefix_beam_search(lp, lens, 10, token_bias=bias.tolist(), backend="python", **knobs), ref)


@needs_native
def test_strong_bias_changes_ranking():
    lp, lens = random_inputs(2, 12, 6, seed=3)
    bias = torch.tensor([0.0, 4.0, -4.0, 0.5, 0.0, -1.0], dtype=torch.float64)
    got = ctc_prefix_beam_search_native(lp, lens, 4, token_bias=bias)
    assert_same(got, reference(lp, lens, 4, token_bias=lambda p, t: float(bias[t])))
    assert got[0].best != ctc_prefix_beam_search_native(lp, lens, 4)[0].best


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_float64_and_blank(dtype):
    lp, lens = random_inputs(4, 18, 9, seed=11, dtype=dtype)
    for blank in (0, 4, 8):
        got = ctc_prefix_beam_search_native(lp, lens, 6, blank_id=blank, top_k=6)
        assert_same(got, reference(lp, lens, 6, blank_id=blank, top_k=6))
        assert all(blank not in seq for r in got for seq in r.tokens)


@needs_native
@pytest.mark.parametrize("nbest", [0, 1, 3, 20])
def test_nbest(nbest):
    lp, lens = random_inputs(3, 10, 7, seed=5)
    assert_same(ctc_prefix_beam_search_native(lp, lens, 5, nbest=nbest), reference(lp, lens, 5, nbest=nbest))


@needs_native
def test_exact_enumeration_large_beam():
    """Beam above the number of label sequences: every sequence with its total probability."""
    lp, lens = random_inputs(2, 4, 3, seed=2, lens=[4, 3])
    got = ctc_prefix_beam_search_native(lp, lens, 10_000)
    assert_same(got, reference(lp, lens, 10_000))
    # sequences over {1, 2} that fit in 4 frames (a repeat needs a blank in between)
    fits = [
        s
        for k in range(5)
        for s in itertools.product((1, 2), repeat=k)
        if k + sum(a == b for a, b in zip(s, s[1:])) <= 4
    ]
    assert sorted(map(tuple, got[0].tokens)) == sorted(fits)
    total = torch.tensor(got[0].scores, dtype=torch.float64).logsumexp(0)
    torch.testing.assert_close(total, torch.tensor(0.0, dtype=torch.float64), atol=1e-9, rtol=0)


@needs_native
def test_ties_break_to_smaller_tuple():
    """Uniform posteriors: every extension ties; the smaller token tuple must win."""
    lp = torch.full((2, 3, 6), -torch.log(torch.tensor(6.0)).item(), dtype=torch.float64)
    lens = torch.tensor([3, 2])
    for beam in (1, 3, 7):
        got = ctc_prefix_beam_search_native(lp, lens, beam)
        assert_same(got, reference(lp, lens, beam))
    # frame-0 view: () and (1,), (2,), ... all score log(1/6)
    one = ctc_prefix_beam_search_native(lp[:, :1], torch.tensor([1, 1]), 3)
    assert one[0].tokens == [[], [1], [2]]


@needs_native
def test_impossible_tokens_and_dying_beam():
    lp, lens = random_inputs(3, 8, 5, seed=9)
    lp[:, :, 2] = float("-inf")  # token 2 never possible
    lp[0, 3, 0] = float("-inf")  # no blank at one frame
    got = ctc_prefix_beam_search_native(lp, lens, 4)
    assert_same(got, reference(lp, lens, 4))
    assert all(2 not in seq for r in got for seq in r.tokens)
    # top_k = 0: no candidate at all, the beam dies at the first frame (length-0 utterances
    # keep the empty prefix); a negative threshold likewise
    for knobs in ({"top_k": 0}, {"prune_threshold": -1.0}):
        dead = ctc_prefix_beam_search_native(lp, lens, 4, **knobs)
        assert_same(dead, reference(lp, lens, 4, **knobs))
        assert dead[0].tokens == [] and dead[2].tokens == [[]]


@needs_native
def test_thread_count_does_not_matter():
    lp, lens = random_inputs(6, 25, 40, seed=4)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ctc_prefix_beam_search_native(lp, lens, 8, top_k=12)
        torch.set_num_threads(2)
        two = ctc_prefix_beam_search_native(lp, lens, 8, top_k=12)
    finally:
        torch.set_num_threads(old)
    assert_same(one, two, rtol=0, atol=0)


@needs_native
def test_backend_selection(monkeypatch):
    lp, lens = random_inputs(2, 6, 5, seed=1)
    calls = []
    real = cpb._search_native

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(cpb, "_search_native", spy)
    ref = reference(lp, lens, 3)
    assert_same(ctc_prefix_beam_search(lp, lens, 3), ref)
    assert len(calls) == 1  # auto -> native
    assert_same(ctc_prefix_beam_search(lp, lens.tolist(), 3, backend="python"), ref)
    assert len(calls) == 1
    # a callable hook runs in Python (auto), and is refused by backend="native"
    hook = lambda prefix, tok: 0.1 * len(prefix)  # noqa: E731
    assert_same(ctc_prefix_beam_search(lp, lens, 3, token_bias=hook), reference(lp, lens, 3, token_bias=hook))
    assert len(calls) == 1
    with pytest.raises(RuntimeError, match="callable"):
        ctc_prefix_beam_search(lp, lens, 3, token_bias=hook, backend="native")
    # the process-wide switch forces the reference
    monkeypatch.setattr(fk, "_GLOBAL_BACKEND", "torch")
    assert_same(ctc_prefix_beam_search(lp, lens, 3, backend="native"), ref)
    assert len(calls) == 1


def test_python_backend_without_extension(monkeypatch):
    monkeypatch.setattr(cpb, "load_native", lambda: None)
    lp, lens = random_inputs(2, 6, 5, seed=1)
    bias = [0.0, 0.5, -0.5, 0.0, 1.0]
    assert_same(
        ctc_prefix_beam_search(lp, lens, 3, token_bias=bias), reference(lp, lens, 3, token_bias=lambda p, t: bias[t])
    )
    with pytest.raises(RuntimeError, match="not built"):
        ctc_prefix_beam_search(lp, lens, 3, backend="native")


@needs_native
def test_errors():
    lp, lens = random_inputs(2, 6, 5, seed=1)
    with pytest.raises(ValueError, match="beam"):
        ctc_prefix_beam_search_native(lp, lens, 0)
    with pytest.raises(ValueError, match="backend"):
        ctc_prefix_beam_search(lp, lens, 3, backend="cuda")
    with pytest.raises(RuntimeError, match="blank_id"):
        ctc_prefix_beam_search_native(lp, lens, 3, blank_id=5)
    with pytest.raises(RuntimeError, match="lens"):
        ctc_prefix_beam_search_native(lp, torch.tensor([7, 1]), 3)
    with pytest.raises(ValueError, match="V = 5"):
        ctc_prefix_beam_search_native(lp, lens, 3, token_bias=torch.zeros(4))
    # auto falls back to the reference for what the native op does not take
    assert_same(ctc_prefix_beam_search(lp, lens, 3, blank_id=-1), reference(lp, lens, 3, blank_id=-1))
