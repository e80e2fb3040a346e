import math

import pytest
import torch
from decoding_bruteforce import ctc_prefix_prob, ctc_sequence_probs, random_log_probs

from asr_kd.decoding.ctc import CtcPrefixScorer, ctc_greedy_search, ctc_prefix_beam_search


def _lp(rows):
    return torch.tensor(rows, dtype=torch.float64).log().unsqueeze(0)


def test_greedy_hand_made():
    # frames argmax: 1 1 0 1 2 2 0 -> [1, 1, 2]; second utterance truncated by its length
    ids = [[1, 1, 0, 1, 2, 2, 0], [2, 0, 2, 2, 1, 1, 1]]
    lp = torch.full((2, 7, 3), -5.0)
    for n, row in enumerate(ids):
        for t, c in enumerate(row):
            lp[n, t, c] = -0.1
    assert ctc_greedy_search(lp, torch.tensor([7, 4])) == [[1, 1, 2], [2, 2]]
    assert ctc_greedy_search(lp, torch.tensor([0, 1])) == [[], [2]]


@pytest.mark.parametrize("V,T,seed", [(3, 4, 0), (3, 5, 1), (4, 4, 2), (4, 5, 3)])
def test_prefix_beam_search_matches_enumeration(V, T, seed):
    lp = random_log_probs(1, T, V, seed=seed)
    ref = ctc_sequence_probs(lp[0])
    res = ctc_prefix_beam_search(lp, torch.tensor([T]), beam=10_000)[0]
    # every label sequence, with its exact probability
    assert len(res) == len(ref)
    for toks, score in zip(res.tokens, res.scores):
        assert score == pytest.approx(ref[tuple(toks)], abs=1e-9)
    best = max(ref, key=ref.get)
    assert tuple(res.best) == best
    assert res.scores == sorted(res.scores, reverse=True)
    assert math.isclose(torch.tensor(res.scores, dtype=torch.float64).logsumexp(0).item(), 0.0, abs_tol=1e-9)


def test_prefix_beam_search_batch_and_lengths():
    lp = random_log_probs(3, 5, 4, seed=7)
    lens = torch.tensor([5, 3, 1])
    batched = ctc_prefix_beam_search(lp, lens, beam=4)
    for n in range(3):
        single = ctc_prefix_beam_search(lp[n : n + 1, : lens[n]], lens[n : n + 1], beam=4)[0]
        assert batched[n].tokens == single.tokens
        assert batched[n].scores == pytest.approx(single.scores)
    assert len(batched[0]) == 4


def test_prefix_beam_search_beam1_vs_large_beam():
    # best path is all-blank, but the label sequence [1] has more total probability:
    # P([]) = .16, P([1]) = .35*.35 + .4*.35 + .35*.4 = .4025
    lp = _lp([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]])
    assert ctc_greedy_search(lp, torch.tensor([2])) == [[]]
    full = ctc_prefix_beam_search(lp, torch.tensor([2]), beam=100)[0]
    assert full.best == [1]
    assert full.scores[0] == pytest.approx(math.log(0.4025))
    # beam 1 keeps only () after frame 0 (0.4 > 0.35), then () again (0.16 > 0.14)
    one = ctc_prefix_beam_search(lp, torch.tensor([2]), beam=1)[0]
    assert one.tokens == [[]]
    assert one.scores[0] == pytest.approx(math.log(0.16))


def test_prune_options():
    lp = random_log_probs(1, 5, 4, seed=5)
    full = ctc_prefix_beam_search(lp, torch.tensor([5]), beam=8)[0]
    same = ctc_prefix_beam_search(lp, torch.tensor([5]), beam=8, top_k=4, prune_threshold=1e9)[0]
    assert full.tokens == same.tokens
    # top_k=1 with a big beam is the single best path, whose score is its path probability
    one = ctc_prefix_beam_search(lp, torch.tensor([5]), beam=8, top_k=1)[0]
    assert one.tokens == ctc_greedy_search(lp, torch.tensor([5]))
    assert one.scores[0] == pytest.approx(lp[0].max(-1).values.sum().item())
    # prune_threshold=0 keeps only the frame argmax as well
    zero = ctc_prefix_beam_search(lp, torch.tensor([5]), beam=8, prune_threshold=0.0)[0]
    assert zero.tokens == one.tokens


def test_token_bias_changes_result():
    lp = _lp([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1]])
    base = ctc_prefix_beam_search(lp, torch.tensor([2]), beam=10)[0]
    assert base.best == [1]

    def bias(prefix, token):
        return 2.0 if token == 2 else 0.0

    biased = ctc_prefix_beam_search(lp, torch.tensor([2]), beam=10, token_bias=bias)[0]
    assert biased.best == [2]
    i = biased.tokens.index([2])
    assert biased.components["bias"][i] == 2.0
    ref = ctc_sequence_probs(lp[0])
    assert biased.components["ctc"][i] == pytest.approx(ref[(2,)])
    assert biased.scores[i] == pytest.approx(ref[(2,)] + 2.0)


def test_token_bias_sees_prefix():
    lp = random_log_probs(1, 4, 3, seed=3)
    seen = []

    def bias(prefix, token):
        seen.append((prefix, token))
        return -1.0 * len(prefix)

    res = ctc_prefix_beam_search(lp, torch.tensor([4]), beam=1000, token_bias=bias)[0]
    for toks, b in zip(res.tokens, res.components["bias"]):
        assert b == pytest.approx(-sum(range(len(toks))))
    assert all(isinstance(p, tuple) for p, _ in seen)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_scorer_matches_brute_force(seed):
    V, T = 4, 4
    eos = 3  # a label that the "CTC" also owns; scored as end-of-sequence
    lp = random_log_probs(2, T, V, seed=seed)
    lens = torch.tensor([4, 3])
    scorer = CtcPrefixScorer(lp, lens, blank_id=0, eos_id=eos)
    state = scorer.initial_state(torch.tensor([0, 1]))
    prefixes = [(), ()]
    for step in range(3):
        ext = scorer.score(state)  # all candidates
        for b in range(2):
            n = b
            seq_probs = ctc_sequence_probs(lp[n, : lens[n]])
            for c in range(V):
                got = ext.log_psi[b, c].item()
                if c == 0:
                    assert got == -math.inf
                elif c == eos:
                    want = seq_probs.get(prefixes[b], -math.inf)
                    assert got == pytest.approx(want, abs=1e-9)
                else:
                    want = ctc_prefix_prob(lp[n, : lens[n]], prefixes[b] + (c,))
                    assert got == pytest.approx(want, abs=1e-9) or (got == want == -math.inf)
        # follow token 1 for utt 0 and token 2 for utt 1 (then repeat: exercises c == last)
        choice = [1, 2] if step != 1 else [1, 1]
        state = scorer.select(ext, torch.tensor([0, 1]), torch.tensor(choice))
        prefixes = [p + (c,) for p, c in zip(prefixes, choice)]
        assert state.log_psi[0].item() == pytest.approx(ctc_prefix_prob(lp[0], prefixes[0]))


def test_prefix_scorer_candidates_subset():
    lp = random_log_probs(1, 5, 5, seed=4)
    scorer = CtcPrefixScorer(lp, torch.tensor([5]))
    state = scorer.initial_state(torch.tensor([0, 0]))
    full = scorer.score(state).log_psi
    cands = torch.tensor([[4, 2], [1, 3]])
    sub = scorer.score(state, cands).log_psi
    assert torch.allclose(sub, full.gather(1, cands))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "kw",
    [
        dict(beam=1),
        dict(beam=3),
        dict(beam=5, top_k=3),
        dict(beam=4, prune_threshold=2.0),
        dict(beam=4, top_k=2, prune_threshold=1.0),
    ],
)
def test_prefix_beam_search_matches_dict_reference(seed, kw):
    from decoding_bruteforce import reference_prefix_beam_search

    lp = random_log_probs(2, 8, 5, seed=seed)
    lens = torch.tensor([8, 6])

    def bias(prefix, token):
        return 0.3 * ((len(prefix) + token) % 3) - 0.2

    for tb in (None, bias):
        got = ctc_prefix_beam_search(lp, lens, token_bias=tb, **kw)
        ref = reference_prefix_beam_search(lp, lens, token_bias=tb, **kw)
        for n in range(2):
            assert got[n].tokens == [list(r[3]) for r in ref[n]]
            assert got[n].scores == pytest.approx([r[0] for r in ref[n]], abs=1e-9)
            assert got[n].components["ctc"] == pytest.approx([r[1] for r in ref[n]], abs=1e-9)
