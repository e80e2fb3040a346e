"""asr_kd.ops.mask_ctc_beam: the native Mask-CTC beam-search step against the PyTorch reference.

Exact equality (``torch.equal`` on tokens, float64 scores and utterance ids, i.e. the order of the
beam included) of ``mask_ctc_beam_step`` native vs python on random steps: float32 / float64 MLM
log-probs, beams 1 / 5 / 10, k 1..3, V from 3 to 500, hypotheses that merge into the same sequence,
tie-heavy (quantised) log-probs and scores, banned tokens (-inf), utterances whose masks are done
(k = 0), empty (all-padding) utterances, utterances without hypotheses, k larger than the masks.
End to end: ``mask_ctc_beam_search(backend="native")`` == ``backend="python"`` with random
``MaskCtcDecoder`` s. Thread-count independence, backend selection and errors.
"""

from __future__ import annotations

import pytest
import torch

from asr_kd.decoding.mask_ctc import mask_ctc_beam_search
from asr_kd.models.heads import MaskCtcDecoder
from asr_kd.ops import frame_kd as fk
from asr_kd.ops import mask_ctc_beam as mcb
from asr_kd.ops import (
    mask_ctc_beam_step,
    mask_ctc_beam_step_native,
    mask_ctc_beam_step_reference,
    native_available,
)

needs_native = pytest.mark.skipif(not native_available(), reason="asr_kd._C is not built")

IGNORE = -1


def random_step(seed, N=5, L=12, V=20, beam=5, K=2, dtype=torch.float32, ties=False, mask_id=None, max_hyps=None):
    """A random beam-search state and MLM output, shaped like an iteration of the search.

    Per utterance a length in [0, L] (0: empty, all padding) and a number of masks; its hypotheses
    (1..max_hyps, default beam) have the same number of masks at different positions and share
    many tokens, so that filled candidates collide and get merged. Utterance 0 always has masks;
    the last utterance has no hypotheses. k = min(K, masks) (0 when no masks: done).
    ``ties``: log-probs and scores quantised to a few values (many exact ties).
    """
    g = torch.Generator().manual_seed(seed)
    mask_id = V if mask_id is None else mask_id
    max_hyps = beam if max_hyps is None else max_hyps
    ys, utt, kk = [], [], []
    for n in range(N - 1):
        length = int(torch.randint(0, L + 1, (1,), generator=g)) if n else L
        masks = int(torch.randint(0, length + 1, (1,), generator=g)) if n else max(1, length // 2)
        if n and length and torch.rand(1, generator=g) < 0.2:
            masks = 0  # an utterance whose masks are all filled
        base = torch.randint(1, min(V, 4), (length,), generator=g)  # few token ids: collisions
        for _ in range(int(torch.randint(1, max_hyps + 1, (1,), generator=g))):
            row = torch.full((L,), IGNORE, dtype=torch.long)
            row[:length] = base
            if masks:
                flip = torch.rand(length, generator=g) < 0.2  # a few tokens differ between hypotheses
                row[:length][flip] = torch.randint(1, 3, (int(flip.sum()),), generator=g)
                row[torch.randperm(length, generator=g)[:masks]] = mask_id
            ys.append(row)
            utt.append(n)
            kk.append(min(K, masks))
    hyp_ys = torch.stack(ys)
    hyp_utt = torch.tensor(utt)
    k = torch.tensor(kk)
    H = hyp_ys.size(0)
    if ties:
        hyp_score = -torch.randint(0, 3, (H,), generator=g).double() / 2
        logits = torch.randint(-3, 2, (int((k > 0).sum()), L, V), generator=g).to(dtype) / 2
        logp = logits  # quantised values themselves (log_softmax would break the exact ties less)
    else:
        hyp_score = -3 * torch.rand(H, generator=g, dtype=torch.float64)
        logp = (2 * torch.randn(int((k > 0).sum()), L, V, generator=g, dtype=dtype)).log_softmax(-1)
    logp = logp.clone()
    logp[..., 0] = float("-inf")  # blank
    if 0 <= mask_id < V:
        logp[..., mask_id] = float("-inf")
    return logp, hyp_ys, hyp_score, hyp_utt, k, N, mask_id


def assert_equal_step(args, beam):
    logp, hyp_ys, hyp_score, hyp_utt, k, N, mask_id = args
    ref = mask_ctc_beam_step_reference(logp, hyp_ys, hyp_score, hyp_utt, k, beam, N, mask_id=mask_id, ignore_id=IGNORE)
    nat = mask_ctc_beam_step_native(logp, hyp_ys, hyp_score, hyp_utt, k, beam, N, mask_id=mask_id, ignore_id=IGNORE)
    for name, r, n in zip(("ys", "score", "utt"), ref, nat):
        assert r.dtype == n.dtype, name
        assert r.shape == n.shape, (name, r.shape, n.shape)
        assert torch.equal(r, n), (name, r, n)
    return ref


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beam", [1, 5, 10])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_step_matches_reference(dtype, beam, K):
    for seed in range(12):
        for V in (3, 8, 60):
            args = random_step(seed, V=V, beam=beam, K=K, dtype=dtype)
            ys, _, utt = assert_equal_step(args, beam)
            assert torch.all(utt[1:] >= utt[:-1])


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beam", [1, 5, 10])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_step_exact_ties(dtype, beam, K):
    # quantised log-probs: exact ties between tokens (torch.topk's order), positions (leftmost),
    # sets (DP order) and hypotheses (sequence order)
    for seed in range(12):
        for V in (4, 9, 200):
            assert_equal_step(random_step(100 + seed, V=V, beam=beam, K=K, dtype=dtype, ties=True), beam)


@needs_native
@pytest.mark.parametrize("beam", [1, 10])
def test_step_large_vocab_both_topk_paths(beam):
    # torch.topk uses partial_sort when k * 64 <= V and nth_element + sort otherwise
    for V in (63, 64, 65, 128, 500, 640, 641):
        for ties in (False, True):
            assert_equal_step(random_step(7, N=4, L=20, V=V, beam=beam, K=2, ties=ties), beam)


@needs_native
def test_step_mask_id_inside_vocab_and_k_beyond_masks():
    # mask_id an output (banned), and a k larger than a hypothesis' masks (no finite set: dropped)
    args = list(random_step(3, V=12, beam=4, K=2, mask_id=5))
    assert_equal_step(args, 4)
    k = args[4].clone()
    k[k > 0] += 3
    args[4] = k
    ys, score, utt = assert_equal_step(args, 4)
    assert torch.isfinite(score).all()


@needs_native
def test_step_edge_cases():
    V, mask = 5, 5
    f = torch.float32
    # a single hypothesis, one mask, beam 3: its 3 best tokens
    logp = torch.tensor([[[-9.0] * V, [float("-inf"), -1.0, -0.5, -3.0, -2.0]]], dtype=f)
    ys = torch.tensor([[2, mask]])
    out = assert_equal_step(
        (logp, ys, torch.zeros(1, dtype=torch.float64), torch.tensor([0]), torch.tensor([1]), 1, mask), 3
    )
    assert out[0].tolist() == [[2, 2], [2, 1], [2, 4]]
    assert out[1].tolist() == [-0.5, -1.0, -2.0]
    # two hypotheses reaching the same sequence: merged, the larger score kept
    logp = torch.log(torch.tensor([[[0.0, 0.5, 0.3, 0.2, 0.0], [0.0, 0.1, 0.6, 0.3, 0.0]]] * 2, dtype=f))
    ys = torch.tensor([[mask, 2], [2, mask]])
    score = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    out = assert_equal_step((logp, ys, score, torch.tensor([0, 0]), torch.tensor([1, 1]), 1, mask), 10)
    seqs = [tuple(s) for s in out[0].tolist()]
    assert len(seqs) == len(set(seqs)) == 5  # [x, 2] (3 tokens) and [2, x] (3 tokens) share [2, 2]
    best22 = max(-1.0 + float(logp[0, 0, 2]), -2.0 + float(logp[1, 1, 2]))
    assert out[1][seqs.index((2, 2))].item() == best22
    # nothing active: every hypothesis passes through, pruned to beam and sorted
    ys = torch.tensor([[1, 2], [1, 1], [3, 3], [2, 2]])
    score = torch.tensor([-1.0, -1.0, 0.0, -0.5], dtype=torch.float64)
    utt = torch.tensor([0, 0, 1, 0])
    out = assert_equal_step(
        (torch.empty(0, 2, V, dtype=f), ys, score, utt, torch.zeros(4, dtype=torch.long), 3, mask), 2
    )
    assert out[0].tolist() == [[2, 2], [1, 1], [3, 3]] and out[2].tolist() == [0, 0, 1]
    # L = 0 (every utterance empty)
    out = assert_equal_step(
        (
            torch.empty(0, 0, V, dtype=f),
            torch.empty(2, 0, dtype=torch.long),
            torch.zeros(2, dtype=torch.float64),
            torch.tensor([0, 1]),
            torch.zeros(2, dtype=torch.long),
            2,
            mask,
        ),
        5,
    )
    assert out[0].shape == (2, 0)
    # every token banned at the masked position: the hypothesis dies
    logp = torch.full((1, 2, V), float("-inf"), dtype=f)
    out = assert_equal_step(
        (
            logp,
            torch.tensor([[1, mask]]),
            torch.zeros(1, dtype=torch.float64),
            torch.tensor([0]),
            torch.tensor([1]),
            1,
            mask,
        ),
        3,
    )
    assert out[0].shape == (0, 2)


@needs_native
def test_thread_count_does_not_matter():
    args = random_step(11, N=9, L=30, V=100, beam=10, K=3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mask_ctc_beam_step(*args[:5], 10, args[5], mask_id=args[6], backend="native")
        torch.set_num_threads(2)
        two = mask_ctc_beam_step(*args[:5], 10, args[5], mask_id=args[6], backend="native")
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


# ---- end to end: mask_ctc_beam_search on both backends


def _setup(seed, V, N=4, T=40, D=16, layers=1, sharp=2.0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mlm = MaskCtcDecoder(V, D, num_layers=layers, heads=2, d_ff=32, dropout=0.0).eval()
    with torch.no_grad():
        mlm.output.weight.mul_(4.0)
    memory = torch.randn(N, T, D, generator=g)
    lp = (sharp * torch.randn(N, T, V, generator=g)).log_softmax(-1)
    lens = torch.tensor([T, T - 7, 0, T // 2][:N])
    return mlm, memory, lp, lens


@needs_native
@pytest.mark.parametrize("schedule", ["paper", "espnet"])
@pytest.mark.parametrize("beam", [1, 5, 10])
@pytest.mark.parametrize("K", [1, 2, 3])
@torch.no_grad()
def test_search_native_equals_python(schedule, beam, K):
    for seed, V in ((0, 6), (1, 30)):
        mlm, memory, lp, lens = _setup(seed, V)
        kw = dict(beam=beam, p_thr=0.99, K=K, mask_id=mlm.mask_id, schedule=schedule)
        ref = mask_ctc_beam_search(lp, lens, mlm, memory, lens, backend="python", **kw)
        nat = mask_ctc_beam_search(lp, lens, mlm, memory, lens, backend="native", **kw)
        auto = mask_ctc_beam_search(lp, lens, mlm, memory, lens, **kw)
        for r, n, a in zip(ref, nat, auto):
            assert r.tokens == n.tokens == a.tokens
            assert r.scores == n.scores == a.scores  # exactly
        assert ref[2].tokens == [[]]  # the empty utterance


@needs_native
@torch.no_grad()
def test_search_float64_decoder():
    mlm, memory, lp, lens = _setup(3, 12)
    mlm = mlm.double()
    kw = dict(beam=5, p_thr=0.99, K=2, mask_id=mlm.mask_id)
    ref = mask_ctc_beam_search(lp, lens, mlm, memory.double(), lens, backend="python", **kw)
    nat = mask_ctc_beam_search(lp, lens, mlm, memory.double(), lens, backend="native", **kw)
    assert [r.tokens for r in ref] == [n.tokens for n in nat]
    assert [r.scores for r in ref] == [n.scores for n in nat]


# ---- backend selection and errors


def test_backend_selection(monkeypatch):
    monkeypatch.setattr(fk, "_GLOBAL_BACKEND", "auto")  # whatever ASR_KD_NATIVE says
    args = random_step(2)
    calls = []
    real = mcb.mask_ctc_beam_step_native

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(mcb, "mask_ctc_beam_step_native", spy)
    ref = mask_ctc_beam_step(*args[:5], 5, args[5], mask_id=args[6], backend="python")
    assert calls == []
    if native_available():
        out = mask_ctc_beam_step(*args[:5], 5, args[5], mask_id=args[6])  # auto
        assert calls == [1] and all(torch.equal(a, b) for a, b in zip(out, ref))
        # half-precision log-probs: auto falls back to the reference, native refuses
        mask_ctc_beam_step(args[0].half(), *args[1:5], 5, args[5], mask_id=args[6])
        assert calls == [1]
        with pytest.raises(RuntimeError, match="float32 or float64"):
            mask_ctc_beam_step(args[0].half(), *args[1:5], 5, args[5], mask_id=args[6], backend="native")
    # the process-wide switch forces the reference
    monkeypatch.setattr(fk, "_GLOBAL_BACKEND", "torch")
    n = len(calls)
    mask_ctc_beam_step(*args[:5], 5, args[5], mask_id=args[6], backend="native")
    assert len(calls) == n


def test_python_backend_without_extension(monkeypatch):
    monkeypatch.setattr(fk, "_GLOBAL_BACKEND", "auto")
    monkeypatch.setattr(mcb, "load_native", lambda: None)
    args = random_step(4)
    out = mask_ctc_beam_step(*args[:5], 5, args[5], mask_id=args[6])  # auto -> reference
    ref = mask_ctc_beam_step_reference(*args[:5], 5, args[5], mask_id=args[6])
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    with pytest.raises(RuntimeError, match="not built"):
        mask_ctc_beam_step(*args[:5], 5, args[5], mask_id=args[6], backend="native")


@needs_native
def test_errors():
    logp, ys, score, utt, k, N, mask = random_step(5)
    with pytest.raises(ValueError, match="backend"):
        mask_ctc_beam_step(logp, ys, score, utt, k, 5, N, mask_id=mask, backend="cuda")
    with pytest.raises(ValueError, match="beam"):
        mask_ctc_beam_step(logp, ys, score, utt, k, 0, N, mask_id=mask)
    op = torch.ops.asr_kd.mask_ctc_beam_step
    with pytest.raises(RuntimeError, match="rows but"):
        op(logp[1:], ys, score, utt, k, 5, N, mask)
    with pytest.raises(RuntimeError, match="out of range"):
        op(logp, ys, score, utt, k, 5, 1, mask)
    with pytest.raises(RuntimeError, match="< 0"):
        op(logp, ys, score, utt, -k, 5, N, mask)
    with pytest.raises(RuntimeError, match="positions"):
        op(logp[:, :-1], ys, score, utt, k, 5, N, mask)
    with pytest.raises(ValueError, match="backend"):
        mlm, memory, lp, lens = _setup(0, 6)
        mask_ctc_beam_search(lp, lens, mlm, memory, lens, mask_id=mlm.mask_id, backend="gpu")


@pytest.mark.gpu
@needs_native
@torch.no_grad()
def test_cuda_inputs():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    args = random_step(6, V=50, beam=5)
    dev = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
    ref = mask_ctc_beam_step(*dev[:5], 5, args[5], mask_id=args[6], backend="python")  # on the GPU
    nat = mask_ctc_beam_step(*dev[:5], 5, args[5], mask_id=args[6], backend="native")  # via the CPU
    for r, n in zip(ref, nat):
        assert n.device == r.device and torch.equal(r, n)
