"""The searches driven by the real heads (tiny, randomly initialised) of asr_kd.models.heads."""

import pytest
import torch

from asr_kd.decoding import (
    attention_beam_search,
    attention_rescoring,
    ctc_greedy_search,
    mask_ctc_easy_first,
    modified_beam_search,
    transducer_greedy_search,
)
from asr_kd.decoding.ctc import ctc_prefix_beam_search
from decoding_bruteforce import all_sequences, brute_force_one_sym, ctc_sequence_probs, ref_greedy

heads = pytest.importorskip("asr_kd.models.heads")

D = 8


def _enc(N=2, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, T, D, generator=g), torch.tensor([T, T - 1])


@torch.no_grad()
def test_attention_decoder_beam_search_exact():
    torch.manual_seed(0)
    V, SOS = 5, 4  # 0 blank, 1..3 tokens, 4 sos/eos
    dec = heads.AttentionDecoder(V, D, num_layers=2, heads=2, d_ff=16, dropout=0.0).eval()
    ctc = heads.CtcHead(D, V).eval()
    enc, lens = _enc()
    ctc_lp = ctc.log_probs(enc)
    for w, ctc_in in [(0.0, None), (0.3, ctc_lp)]:
        res = attention_beam_search(dec, enc, lens, beam=64, sos=SOS, eos=SOS, max_len=3,
                                    ctc_log_probs=ctc_in, ctc_weight=w, pre_beam=V, nbest=5)
        for n in range(2):
            L = int(lens[n])
            seqs = [list(s) for s in all_sequences((1, 2, 3), 3)]
            # teacher-forced scores of every sequence (the rescoring path)
            full = attention_rescoring(dec, enc[n : n + 1], lens[n : n + 1], [seqs],
                                       [[0.0] * len(seqs)], 0.0, sos=SOS, eos=SOS)[0]
            att = dict(zip(map(tuple, full.tokens), full.components["att"]))
            probs = ctc_sequence_probs(ctc_lp[n, :L].double())
            def total(s):
                if w == 0.0:
                    return att[tuple(s)]
                return (1 - w) * att[tuple(s)] + w * probs.get(tuple(s), float("-inf"))

            ref = sorted(((total(s), s) for s in seqs), key=lambda x: (-x[0], x[1]))[:5]
            assert res[n].tokens == [r[1] for r in ref]
            assert res[n].scores == pytest.approx([r[0] for r in ref], abs=1e-4)


class _TensorMemoryOnly:
    """The decoder without ``precompute_memory``: the search passes the memory tensor every step
    (the cross-attention K/V then live in the cache and are reordered with it)."""

    def __init__(self, dec):
        self.dec = dec

    def forward_one_step(self, memory, memory_mask, ys, cache):
        return self.dec.forward_one_step(memory, memory_mask, ys, cache)


class _Uncached:
    """Reference: every step is the teacher-forced forward over the whole prefix."""

    def __init__(self, dec):
        self.dec = dec

    def forward_one_step(self, memory, memory_mask, ys, cache):
        lens = memory_mask.reshape(memory.size(0), -1).sum(-1)
        return self.dec(memory, lens, ys)[:, -1].log_softmax(-1), None


@torch.no_grad()
@pytest.mark.parametrize("use_ctc", [False, True])
def test_attention_beam_search_cached_decoder_equals_uncached(use_ctc):
    torch.manual_seed(3)
    V, SOS, N, T = 12, 11, 3, 9
    dec = heads.AttentionDecoder(V, D, num_layers=2, heads=2, d_ff=16, dropout=0.0, d_memory=6)
    dec = dec.double().eval()
    g = torch.Generator().manual_seed(4)
    enc = torch.randn(N, T, 6, generator=g, dtype=torch.float64)
    lens = torch.tensor([T, 5, 2])
    enc[1, 5:] = 1e3  # padding must not matter
    enc[2, 2:] = -1e3
    ctc_lp = torch.randn(N, T, V, generator=g, dtype=torch.float64).log_softmax(-1) if use_ctc else None
    kw = dict(beam=4, sos=SOS, eos=SOS, ctc_log_probs=ctc_lp, ctc_weight=0.3, max_len=6, pre_beam=V)
    runs = [attention_beam_search(d, enc, lens, **kw) for d in (dec, _TensorMemoryOnly(dec), _Uncached(dec))]
    for res in runs[1:]:
        for a, b in zip(runs[0], res):
            assert a.tokens == b.tokens
            assert a.scores == pytest.approx(b.scores, abs=1e-9)
            assert a.components["att"] == pytest.approx(b.components["att"], abs=1e-9)


@torch.no_grad()
def test_attention_rescoring_runs_on_ctc_nbest():
    torch.manual_seed(1)
    V, SOS = 6, 5
    dec = heads.AttentionDecoder(V, D, num_layers=1, heads=2, d_ff=16, dropout=0.0).eval()
    ctc = heads.CtcHead(D, V).eval()
    enc, lens = _enc(T=6)
    nb = ctc_prefix_beam_search(ctc.log_probs(enc), lens, beam=4)
    res = attention_rescoring(dec, enc, lens, nb, ctc_weight=0.5, sos=SOS, eos=SOS)
    for n in range(2):
        assert sorted(map(tuple, res[n].tokens)) == sorted(map(tuple, nb[n].tokens))
        assert res[n].scores == sorted(res[n].scores, reverse=True)


@torch.no_grad()
def test_transducer_heads():
    torch.manual_seed(2)
    V = 3
    pred = heads.StatelessPredictor(V, 6, context_size=2).eval()
    joiner = heads.Joiner(D, 6, 7, V).eval()
    enc, lens = _enc(T=4)
    res = modified_beam_search(pred, joiner, enc, lens, beam=200)
    greedy = transducer_greedy_search(pred, joiner, enc, lens, max_sym_per_frame=2)
    for n in range(2):
        L = int(lens[n])
        ref = brute_force_one_sym(pred, joiner, enc[n], L, V)
        assert tuple(res[n].best) == max(ref, key=ref.get)
        for toks, s in zip(res[n].tokens, res[n].scores):
            assert s == pytest.approx(ref[tuple(toks)], abs=1e-4)
        assert greedy[n] == ref_greedy(pred, joiner, enc[n], L, 2)


@torch.no_grad()
def test_mask_ctc_decoder():
    torch.manual_seed(3)
    V = 6
    mlm = heads.MaskCtcDecoder(V, D, num_layers=1, heads=2, d_ff=16, dropout=0.0).eval()
    ctc = heads.CtcHead(D, V).eval()
    enc, lens = _enc(T=10)
    lp = (3 * ctc(enc)).log_softmax(-1)
    greedy = ctc_greedy_search(lp, lens)
    out = mask_ctc_easy_first(lp, lens, mlm, enc, lens, p_thr=0.9, K=2, mask_id=mlm.mask_id)
    for n in range(2):
        assert len(out[n]) == len(greedy[n])
        assert all(0 < t < V for t in out[n])
    assert mask_ctc_easy_first(lp, lens, mlm, enc, lens, p_thr=0.0, mask_id=mlm.mask_id) == greedy
