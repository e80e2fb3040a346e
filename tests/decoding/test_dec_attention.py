import pytest
import torch
from decoding_bruteforce import all_sequences, ctc_sequence_probs, random_log_probs

from asr_kd.decoding.attention import attention_beam_search, attention_rescoring
from asr_kd.decoding.ctc import ctc_prefix_beam_search

V, D, SOS = 4, 3, 3  # 0 = blank, 1 and 2 = tokens, 3 = sos/eos
TOKENS = (1, 2)


class ToyDecoder(torch.nn.Module):
    """Deterministic stand-in: a running-sum state (the cache) and the masked memory mean."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(V, D, generator=g, dtype=torch.float64)
        self.w_state = 2 * torch.randn(D, V, generator=g, dtype=torch.float64)
        self.w_last = torch.randn(D, V, generator=g, dtype=torch.float64)
        self.w_mem = torch.randn(D, V, generator=g, dtype=torch.float64)

    def forward_one_step(self, memory, memory_mask, ys, cache):
        if cache is None:
            state = self.emb[ys].sum(dim=1)
        else:
            state = cache + self.emb[ys[:, -1]]
        m = memory_mask.transpose(1, 2).to(memory.dtype)  # (B, T', 1)
        mem = (memory * m).sum(1) / m.sum(1).clamp(min=1)
        logits = torch.tanh(state) @ self.w_state + self.emb[ys[:, -1]] @ self.w_last + mem @ self.w_mem
        return logits.log_softmax(-1), state

    def forward(self, memory, memory_lens, ys_in):
        mask = (torch.arange(memory.size(1))[None] < memory_lens[:, None]).unsqueeze(1)
        cache, outs = None, []
        for l in range(ys_in.size(1)):
            lp, cache = self.forward_one_step(memory, mask, ys_in[:, : l + 1], cache)
            outs.append(lp)
        return torch.stack(outs, dim=1)


def att_logprob(dec, enc, enc_len, seq):
    mem = enc[None, :enc_len]
    mask = torch.ones(1, 1, enc_len, dtype=torch.bool)
    ys = [SOS]
    total, cache = 0.0, None
    for tok in list(seq) + [SOS]:
        lp, cache = dec.forward_one_step(mem, mask, torch.tensor([ys]), cache)
        total += lp[0, tok].item()
        ys.append(tok)
    return total


def brute_force(dec, enc, enc_len, max_len, ctc_lp=None, w=0.0, lp_pen=0.0):
    ctc = ctc_sequence_probs(ctc_lp) if ctc_lp is not None else None
    out = []
    for seq in all_sequences(TOKENS, max_len):
        a = att_logprob(dec, enc, enc_len, seq)
        c = ctc.get(seq, float("-inf")) if ctc is not None else 0.0
        s = (1 - w) * a + w * c + lp_pen * (len(seq) + 1) if ctc is not None else a + lp_pen * (len(seq) + 1)
        if w == 1.0:
            s = c + lp_pen * (len(seq) + 1)
        out.append((s, list(seq)))
    out.sort(key=lambda x: (-x[0], x[1]))
    return [x for x in out if x[0] > float("-inf")]


def _setup(seed=0, N=2, T=4):
    g = torch.Generator().manual_seed(seed + 100)
    enc = torch.randn(N, T, D, generator=g, dtype=torch.float64)
    ctc = random_log_probs(N, T, V, seed=seed)
    return ToyDecoder(seed), enc, ctc


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("lp_pen", [0.0, 0.7])
def test_attention_only_matches_exhaustive(seed, lp_pen):
    dec, enc, _ = _setup(seed)
    lens = torch.tensor([4, 3])
    res = attention_beam_search(dec, enc, lens, beam=40, sos=SOS, eos=SOS, max_len=3, length_penalty=lp_pen, nbest=6)
    for n in range(2):
        ref = brute_force(dec, enc[n], int(lens[n]), 3, lp_pen=lp_pen)[:6]
        assert res[n].tokens == [r[1] for r in ref]
        assert res[n].scores == pytest.approx([r[0] for r in ref])


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("w", [0.3, 0.5, 1.0])
def test_joint_ctc_attention_matches_exhaustive(seed, w):
    dec, enc, ctc = _setup(seed)
    lens = torch.tensor([4, 3])
    res = attention_beam_search(
        dec, enc, lens, beam=40, sos=SOS, eos=SOS, ctc_log_probs=ctc, ctc_weight=w, pre_beam=V, nbest=5
    )
    for n in range(2):
        L = int(lens[n])
        ref = brute_force(dec, enc[n], L, L, ctc_lp=ctc[n, :L], w=w)[:5]
        assert res[n].tokens == [r[1] for r in ref]
        assert res[n].scores == pytest.approx([r[0] for r in ref])
        ctc_ref = ctc_sequence_probs(ctc[n, :L])
        for toks, c, a in zip(res[n].tokens, res[n].components["ctc"], res[n].components["att"]):
            assert c == pytest.approx(ctc_ref[tuple(toks)])
            assert a == pytest.approx(att_logprob(dec, enc[n], L, toks))


def test_small_beam_scores_are_consistent():
    dec, enc, ctc = _setup(5)
    lens = torch.tensor([4, 4])
    res = attention_beam_search(dec, enc, lens, beam=2, sos=SOS, eos=SOS, ctc_log_probs=ctc, ctc_weight=0.4)
    for n in range(2):
        assert 1 <= len(res[n]) <= 2
        ref = {tuple(s): v for v, s in brute_force(dec, enc[n], 4, 4, ctc_lp=ctc[n], w=0.4)}
        for toks, sc in zip(res[n].tokens, res[n].scores):
            assert sc == pytest.approx(ref[tuple(toks)])
            assert 0 not in toks and SOS not in toks


def test_zero_length_input():
    dec, enc, ctc = _setup(0)
    res = attention_beam_search(dec, enc, torch.tensor([0, 4]), beam=3, sos=SOS, eos=SOS)
    assert res[0].tokens == [[]]


def test_attention_rescoring():
    dec, enc, ctc = _setup(2)
    lens = torch.tensor([4, 3])
    nb = ctc_prefix_beam_search(ctc, lens, beam=6)
    res = attention_rescoring(dec, enc, lens, nb, ctc_weight=0.5, sos=SOS, eos=SOS)
    for n in range(2):
        L = int(lens[n])
        # (the pruned prefix search's ctc scores are what gets combined)
        want = sorted(
            ((att_logprob(dec, enc[n], L, h) + 0.5 * c, h) for h, c in zip(nb[n].tokens, nb[n].components["ctc"])),
            key=lambda x: (-x[0], x[1]),
        )
        assert res[n].tokens == [w[1] for w in want]
        assert res[n].scores == pytest.approx([w[0] for w in want])
    # plain token lists with explicit scores
    res2 = attention_rescoring(
        dec, enc, lens, [[[1], []], [[2, 1]]], [[0.0, -10.0], [-1.0]], ctc_weight=1.0, sos=SOS, eos=SOS
    )
    assert res2[1].scores[0] == pytest.approx(att_logprob(dec, enc[1], 3, [2, 1]) - 1.0)
    assert set(map(tuple, res2[0].tokens)) == {(1,), ()}
