import math

import pytest
import torch

from asr_kd.decoding.common import best_paths
from asr_kd.decoding.ctc import ctc_greedy_search
from asr_kd.decoding.mask_ctc import (
    ctc_greedy_with_confidence,
    mask_ctc_beam_search,
    mask_ctc_easy_first,
    mask_fill_schedule,
)
from asr_kd.models.heads import MaskCtcDecoder
from tests.decoding.decoding_bruteforce import mask_ctc_exhaustive, reference_mask_ctc_beam_search

V, MASK = 6, 6  # tokens 1..5, blank 0, <mask> = V


def _ctc(frames, V=V):
    """frames: per utterance a list of (token, prob) per frame -> (N, T', V) log probs, lens."""
    T = max(len(f) for f in frames)
    lp = torch.full((len(frames), T, V), 1e-6)
    for n, fr in enumerate(frames):
        for t, (tok, p) in enumerate(fr):
            lp[n, t] = (1 - p) / (V - 1)
            lp[n, t, tok] = p
    return lp.log(), torch.tensor([len(f) for f in frames])


class ToyMLM(torch.nn.Module):
    """Predicts ``answer[n][l]`` with probability ``conf[n][l]``; records its inputs."""

    def __init__(self, answer, conf):
        super().__init__()
        self.answer, self.conf, self.calls = answer, conf, []

    def forward(self, memory, memory_lens, ys_masked):
        self.calls.append(ys_masked.clone())
        N, L = ys_masked.shape
        out = torch.full((N, L, V), -20.0)
        for i in range(N):
            n = int(memory[i, 0, 0])  # the utterance index is stored in the memory
            for l in range(L):
                if l < len(self.answer[n]):
                    p = self.conf[n][l]
                    out[i, l] = math.log((1 - p) / (V - 1))
                    out[i, l, self.answer[n][l]] = math.log(p)
                    out[i, l, 0] = 5.0  # blank is never predicted even if the MLM likes it
        return out


def _enc(N, T=8):
    enc = torch.zeros(N, T, 2)
    enc[:, :, 0] = torch.arange(N, dtype=torch.float)[:, None]
    return enc, torch.full((N,), T)


def test_confidence_is_max_over_segment():
    lp, lens = _ctc([[(1, 0.5), (1, 0.9), (0, 0.9), (2, 0.6), (3, 0.7), (3, 0.4)]])
    toks, conf = ctc_greedy_with_confidence(lp, lens)
    assert toks == [[1, 2, 3]]
    assert conf[0] == pytest.approx([0.9, 0.6, 0.7], rel=1e-4)
    assert toks == ctc_greedy_search(lp, lens)


def test_easy_first_fills_in_confidence_order():
    # utterance 0: tokens 1 2 3 4 5, confident: 1 (0.999) and 5 (0.995); masked: 2 3 4
    frames0 = [(1, 0.999), (0, 0.9), (2, 0.5), (3, 0.6), (0, 0.9), (4, 0.3), (5, 0.995)]
    # utterance 1: tokens 2 3, both confident -> untouched, never sent to the MLM
    frames1 = [(2, 0.999), (3, 0.999)]
    lp, lens = _ctc([frames0, frames1])
    # MLM answers: position 1 -> 5 (0.4), position 2 -> 4 (0.9), position 3 -> 1 (0.7);
    # at kept positions it disagrees with CTC, which must not matter
    mlm = ToyMLM([[3, 5, 4, 1, 2], [4, 4]], [[0.9, 0.4, 0.9, 0.7, 0.9], [0.9, 0.9]])
    enc, enc_lens = _enc(2)
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, p_thr=0.99, K=2, mask_id=MASK)
    assert out == [[1, 5, 4, 1, 5], [2, 3]]
    # 3 masks, K=2: round 0 fills ceil(3/2)=2 (positions 2 then 3), round 1 fills position 1
    assert len(mlm.calls) == 2
    assert mlm.calls[0].shape[0] == 1  # only utterance 0 had masks
    assert mlm.calls[0][0].tolist() == [1, MASK, MASK, MASK, 5]
    assert mlm.calls[1][0].tolist() == [1, MASK, 4, 1, 5]


def test_k_one_fills_all_at_once_and_k_large_one_by_one():
    # schedule="espnet": K = number of iterations
    frames = [(1, 0.5), (0, 0.9), (2, 0.6), (0, 0.9), (3, 0.7)]
    lp, lens = _ctc([frames])
    enc, enc_lens = _enc(1)
    mlm = ToyMLM([[4, 5, 4]], [[0.5, 0.9, 0.7]])
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, K=1, mask_id=MASK, schedule="espnet")
    assert out == [[4, 5, 4]] and len(mlm.calls) == 1
    mlm = ToyMLM([[4, 5, 4]], [[0.5, 0.9, 0.7]])
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, K=10, mask_id=MASK, schedule="espnet")
    assert out == [[4, 5, 4]]
    assert [c[0].tolist() for c in mlm.calls] == [[MASK, MASK, MASK], [MASK, 5, MASK], [MASK, 5, 4]]


def test_paper_schedule_k_is_tokens_per_iteration():
    # schedule="paper" (default): K masks per iteration, ceil(M / K) iterations
    frames = [(1, 0.5), (0, 0.9), (2, 0.6), (0, 0.9), (3, 0.7)]
    lp, lens = _ctc([frames])
    enc, enc_lens = _enc(1)
    mlm = ToyMLM([[4, 5, 4]], [[0.5, 0.9, 0.7]])
    assert mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, K=10, mask_id=MASK) == [[4, 5, 4]]
    assert len(mlm.calls) == 1
    mlm = ToyMLM([[4, 5, 4]], [[0.5, 0.9, 0.7]])
    assert mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, K=1, mask_id=MASK) == [[4, 5, 4]]
    assert [c[0].tolist() for c in mlm.calls] == [[MASK, MASK, MASK], [MASK, 5, MASK], [MASK, 5, 4]]


def test_mask_fill_schedule():
    assert mask_fill_schedule(0, 2) == []
    assert mask_fill_schedule(5, 2) == [2, 2, 1]
    assert mask_fill_schedule(4, 2) == [2, 2]
    assert mask_fill_schedule(3, 10) == [3]
    assert mask_fill_schedule(3, 1) == [1, 1, 1]
    # ESPnet: min(K, M) iterations, M // R each, the rest in the last one
    assert mask_fill_schedule(5, 2, "espnet") == [2, 3]
    assert mask_fill_schedule(7, 3, "espnet") == [2, 2, 3]
    assert mask_fill_schedule(2, 5, "espnet") == [1, 1]
    assert mask_fill_schedule(3, 1, "espnet") == [3]
    with pytest.raises(ValueError, match="K must be"):
        mask_fill_schedule(3, 0)
    with pytest.raises(ValueError, match="schedule"):
        mask_fill_schedule(3, 2, "fastest")


def test_threshold_keeps_everything_and_empty_outputs():
    frames = [(1, 0.5), (0, 0.9), (2, 0.6)]
    lp, lens = _ctc([frames, [(0, 0.9)]])
    enc, enc_lens = _enc(2)
    mlm = ToyMLM([[4, 4], []], [[0.9, 0.9], []])
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, p_thr=0.0, mask_id=MASK)
    assert out == [[1, 2], []] and mlm.calls == []
    out = mask_ctc_easy_first(lp, torch.tensor([0, 0]), mlm, enc, enc_lens, mask_id=MASK)
    assert out == [[], []]


# ---- Mask-CTC beam search (Algorithm 1, Gong et al. 2022) ----


class Recorder(torch.nn.Module):
    """Wraps a masked LM, recording each call's decoder input."""

    def __init__(self, mlm):
        super().__init__()
        self.mlm, self.calls = mlm, []

    def forward(self, memory, memory_lens, ys_masked):
        self.calls.append(ys_masked.clone())
        return self.mlm(memory, memory_lens, ys_masked)


def _random_setup(seed, V=6, N=3, T=12, D=8, sharp=2.0):
    """A random tiny MaskCtcDecoder, memory and CTC log-probs with padded lengths (one empty)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mlm = MaskCtcDecoder(V, D, num_layers=1, heads=2, d_ff=16, dropout=0.0).eval()
    with torch.no_grad():
        mlm.output.weight.mul_(4.0)  # sharper, more context-dependent MLM posteriors
    memory = torch.randn(N, T, D, generator=g)
    lp = (sharp * torch.randn(N, T, V, generator=g)).log_softmax(-1)
    lens = torch.tensor([T, T - 3, 0][:N])
    return mlm, memory, lp, lens


def _single_logp(mlm, memory, mem_lens, n):
    """seq -> (L, V) MLM log posteriors of utterance n alone (the brute-force searches' scorer)."""

    def logp(seq):
        out = mlm(memory[n : n + 1], mem_lens[n : n + 1], torch.tensor([list(seq)]))
        return out.float().log_softmax(-1).double()[0].tolist()

    return logp


@pytest.mark.parametrize("schedule", ["paper", "espnet"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@torch.no_grad()
def test_beam_one_equals_easy_first(seed, schedule):
    mlm, memory, lp, lens = _random_setup(seed)
    for K in (1, 2, 3):
        a, b = Recorder(mlm), Recorder(mlm)
        greedy = mask_ctc_easy_first(lp, lens, a, memory, lens, p_thr=0.99, K=K, mask_id=mlm.mask_id, schedule=schedule)
        res = mask_ctc_beam_search(
            lp, lens, b, memory, lens, beam=1, p_thr=0.99, K=K, mask_id=mlm.mask_id, schedule=schedule
        )
        assert best_paths(res) == greedy
        assert all(len(r) == 1 for r in res)
        # the same decoder inputs: one batched call per iteration over the utterances with masks left
        assert len(a.calls) == len(b.calls) > 0
        for x, y in zip(a.calls, b.calls):
            assert torch.equal(x, y)


@pytest.mark.parametrize("schedule", ["paper", "espnet"])
@torch.no_grad()
def test_large_beam_equals_exhaustive_search(schedule):
    V4, mask = 4, 4  # tokens 1..3, blank 0, <mask> = 4
    torch.manual_seed(5)
    mlm = MaskCtcDecoder(V4, 8, num_layers=1, heads=2, d_ff=16, dropout=0.0).eval()
    with torch.no_grad():
        mlm.output.weight.mul_(4.0)
    # utterance 0: 1 2 3 1 2 with 3 masks (positions 1, 2, 4); utterance 1: 3 1 2, 2 masks
    frames0 = [(1, 0.999), (2, 0.5), (0, 0.9), (3, 0.6), (1, 0.999), (2, 0.4)]
    frames1 = [(3, 0.3), (1, 0.999), (0, 0.9), (2, 0.7)]
    lp, lens = _ctc([frames0, frames1], V=V4)
    memory = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    mem_lens = torch.tensor([6, 6])
    res = mask_ctc_beam_search(lp, lens, mlm, memory, mem_lens, beam=100, K=2, mask_id=mask, schedule=schedule)
    inits = [[1, mask, mask, 1, mask], [mask, 1, mask]]
    for n, init in enumerate(inits):
        plan = mask_fill_schedule(init.count(mask), 2, schedule)
        ref = mask_ctc_exhaustive(_single_logp(mlm, memory, mem_lens, n), init, plan, mask, [1, 2, 3])
        assert len(ref) == 3 ** init.count(mask)
        got = dict(zip(map(tuple, res[n].tokens), res[n].scores))
        assert set(got) == set(ref)
        for seq, s in ref.items():
            assert got[seq] == pytest.approx(s, abs=1e-5)
        assert res[n].scores == sorted(res[n].scores, reverse=True)
        assert res[n].best == list(max(ref, key=ref.get))


@pytest.mark.parametrize("beam", [2, 3, 5])
@torch.no_grad()
def test_beam_matches_unvectorised_reference(beam):
    mlm, memory, lp, lens = _random_setup(7, N=2)
    K = 2
    res = mask_ctc_beam_search(lp, lens, mlm, memory, lens, beam=beam, p_thr=0.99, K=K, mask_id=mlm.mask_id)
    toks, confs = ctc_greedy_with_confidence(lp, lens)
    for n in range(2):
        init = [mlm.mask_id if c < 0.99 else t for t, c in zip(toks[n], confs[n])]
        plan = mask_fill_schedule(init.count(mlm.mask_id), K)
        assert len(plan) >= 2  # a real beam search (several iterations)
        ref = reference_mask_ctc_beam_search(
            _single_logp(mlm, memory, lens, n), init, plan, mlm.mask_id, list(range(1, 6)), beam
        )
        assert [list(q) for _, q in ref] == res[n].tokens
        assert res[n].scores == pytest.approx([s for s, _ in ref], abs=1e-5)


@torch.no_grad()
def test_beam_batch_equals_per_utterance_and_nbest_is_well_formed():
    mlm, memory, lp, lens = _random_setup(3)
    batch = mask_ctc_beam_search(lp, lens, mlm, memory, lens, beam=4, p_thr=0.99, mask_id=mlm.mask_id)
    toks, confs = ctc_greedy_with_confidence(lp, lens)
    for n in range(3):
        one = mask_ctc_beam_search(
            lp[n : n + 1],
            lens[n : n + 1],
            mlm,
            memory[n : n + 1],
            lens[n : n + 1],
            beam=4,
            p_thr=0.99,
            mask_id=mlm.mask_id,
        )[0]
        assert one.tokens == batch[n].tokens
        assert one.scores == pytest.approx(batch[n].scores, abs=1e-5)
        r = batch[n]
        assert r.scores == sorted(r.scores, reverse=True) and r.components["mlm"] == r.scores
        assert 1 <= len(r) <= 4 and len({tuple(t) for t in r.tokens}) == len(r)
        for hyp in r.tokens:  # kept CTC tokens stay; masks are filled with real tokens
            assert len(hyp) == len(toks[n])
            assert all(h == t for h, t, c in zip(hyp, toks[n], confs[n]) if c >= 0.99)
            assert all(0 < h < 6 for h in hyp)
    assert batch[2].tokens == [[]] and batch[2].scores == [0.0]  # zero-length utterance


@torch.no_grad()
def test_beam_without_masks_is_ctc_greedy():
    mlm, memory, lp, lens = _random_setup(4)
    rec = Recorder(mlm)
    res = mask_ctc_beam_search(lp, lens, rec, memory, lens, beam=5, p_thr=0.0, mask_id=mlm.mask_id)
    assert [r.tokens for r in res] == [[g] for g in ctc_greedy_search(lp, lens)]
    assert [r.scores for r in res] == [[0.0]] * 3 and rec.calls == []
    res = mask_ctc_beam_search(lp, torch.zeros(3, dtype=torch.long), rec, memory, lens, mask_id=mlm.mask_id)
    assert [r.tokens for r in res] == [[[]]] * 3 and rec.calls == []
    with pytest.raises(ValueError, match="beam"):
        mask_ctc_beam_search(lp, lens, rec, memory, lens, beam=0, mask_id=mlm.mask_id)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@torch.no_grad()
def test_larger_beam_never_scores_below_greedy_within_two_iterations(seed):
    # Within two iterations the greedy path's first step is the top candidate (always kept), and its
    # best extension is pruned only by better hypotheses, so a wider beam's best cannot score lower
    # than B = 1. (With more iterations beam search gives no such guarantee.)
    mlm, memory, lp, lens = _random_setup(seed)
    _, confs = ctc_greedy_with_confidence(lp, lens)
    M = max(sum(c < 0.99 for c in cs) for cs in confs)
    K = (M + 1) // 2  # ceil(M / 2): at most two iterations, exactly two for the utterance with M masks
    assert M >= 3
    g = mask_ctc_beam_search(lp, lens, mlm, memory, lens, beam=1, p_thr=0.99, K=K, mask_id=mlm.mask_id)
    for beam in (2, 3, 8):
        res = mask_ctc_beam_search(lp, lens, mlm, memory, lens, beam=beam, p_thr=0.99, K=K, mask_id=mlm.mask_id)
        for r, r1 in zip(res, g):
            assert r.scores[0] >= r1.scores[0] - 1e-9
