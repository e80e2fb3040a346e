"""AttentionDecoder (causality, cached incremental decoding) and MaskCtcDecoder."""

from __future__ import annotations

import pytest
import torch

from asr_kd.decoding.common import index_select_tree
from asr_kd.models.heads import AttentionDecoder, MaskCtcDecoder, add_sos_eos

V, D = 11, 16


def _memory(seed=0, n=2, t=7, d=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, d, generator=g), torch.tensor([t, t - 3])


def test_add_sos_eos():
    ys_in, ys_out = add_sos_eos([[5, 6, 7], [8], []], sos=1, eos=1)
    assert ys_in.tolist() == [[1, 5, 6, 7], [1, 8, 1, 1], [1, 1, 1, 1]]
    assert ys_out.tolist() == [[5, 6, 7, 1], [8, 1, -1, -1], [1, -1, -1, -1]]


def test_attention_decoder_is_causal():
    torch.manual_seed(0)
    dec = AttentionDecoder(V, D, num_layers=2, heads=4, d_ff=32, dropout=0.0).eval()
    mem, mem_lens = _memory()
    ys = torch.tensor([[1, 3, 4, 5, 6], [1, 7, 8, 9, 2]])
    out = dec(mem, mem_lens, ys)
    assert out.shape == (2, 5, V)
    ys2 = ys.clone()
    ys2[:, 3:] = torch.tensor([[10, 10], [3, 3]])
    out2 = dec(mem, mem_lens, ys2)
    assert torch.allclose(out[:, :3], out2[:, :3], atol=1e-6)
    assert not torch.allclose(out[:, 3:], out2[:, 3:], atol=1e-4)


def test_attention_decoder_ignores_padded_memory():
    torch.manual_seed(0)
    dec = AttentionDecoder(V, D, num_layers=2, heads=4, d_ff=32, dropout=0.0).eval()
    mem, mem_lens = _memory()
    ys = torch.tensor([[1, 3, 4], [1, 7, 8]])
    out = dec(mem, mem_lens, ys)
    mem2 = mem.clone()
    mem2[1, 4:] = 100.0
    assert torch.allclose(dec(mem2, mem_lens, ys), out, atol=1e-6)


def test_forward_one_step_with_cache_equals_teacher_forcing():
    torch.manual_seed(0)
    dec = AttentionDecoder(V, D, num_layers=3, heads=4, d_ff=32, dropout=0.0, d_memory=12).eval()
    mem, mem_lens = _memory(d=12)
    mem_mask = torch.arange(mem.size(1)).unsqueeze(0) < mem_lens.unsqueeze(1)  # (N, T')
    ys = torch.tensor([[1, 3, 4, 5, 6], [1, 7, 8, 9, 2]])
    ref = dec(mem, mem_lens, ys).log_softmax(-1)
    cache = None
    for l in range(1, ys.size(1) + 1):
        logp, cache = dec.forward_one_step(mem, mem_mask.unsqueeze(1), ys[:, :l], cache)
        assert logp.shape == (2, V)
        assert len(cache["self"]) == 3 and len(cache["memory"]) == 3
        k, v = cache["self"][0]
        assert k.shape == v.shape == (2, 4, l, D // 4)
        assert cache["memory"][0][0].shape == (2, 4, mem.size(1), D // 4)
        assert torch.allclose(logp, ref[:, l - 1], atol=1e-5)
    # no cache with a longer prefix gives the same last step
    logp, _ = dec.forward_one_step(mem, mem_mask, ys, None)
    assert torch.allclose(logp, ref[:, -1], atol=1e-5)


def _random_case(seed, dtype, n=3, t=9, d_mem=12, length=8, pad=True):
    g = torch.Generator().manual_seed(seed)
    mem = torch.randn(n, t, d_mem, generator=g, dtype=dtype)
    mem_lens = torch.tensor([t, t - 4, 2][:n]) if pad else torch.full((n,), t)
    mem = torch.where(torch.arange(t)[None, :, None] < mem_lens[:, None, None], mem, 1e3)  # junk padding
    ys = torch.randint(0, V, (n, length), generator=g)
    ys[:, 0] = 1
    return mem, mem_lens, ys


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("precomputed", [False, True])
def test_incremental_steps_equal_teacher_forced_forward(dtype, atol, pad, precomputed):
    """Step-by-step log-probs (cached cross- and self-attention K/V) == teacher-forced forward."""
    torch.manual_seed(0)
    dec = AttentionDecoder(V, D, num_layers=2, heads=4, d_ff=32, dropout=0.0, d_memory=12).eval()
    dec = dec.to(dtype)
    for seed in range(3):
        mem, mem_lens, ys = _random_case(seed, dtype, pad=pad)
        mem_mask = torch.arange(mem.size(1))[None] < mem_lens[:, None]
        with torch.no_grad():
            ref = dec(mem, mem_lens, ys).log_softmax(-1)
            memory = dec.precompute_memory(mem) if precomputed else mem
            cache = None
            for l in range(1, ys.size(1) + 1):
                logp, cache = dec.forward_one_step(memory, mem_mask.unsqueeze(1), ys[:, :l], cache)
                assert logp.dtype == dtype
                assert ("memory" in cache) != precomputed
                torch.testing.assert_close(logp, ref[:, l - 1], atol=atol, rtol=0)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_incremental_steps_with_grouped_memory(dtype, atol):
    """Memory precomputed per utterance (G rows), W hypotheses per utterance (B = G * W rows)."""
    torch.manual_seed(1)
    dec = AttentionDecoder(V, D, num_layers=2, heads=4, d_ff=32, dropout=0.0, d_memory=12).eval().to(dtype)
    G, W = 3, 4
    mem, mem_lens, _ = _random_case(7, dtype, n=G)
    utt = torch.arange(G).repeat_interleave(W)  # (B,)
    ys = torch.randint(0, V, (G * W, 6), generator=torch.Generator().manual_seed(8))
    ys[:, 0] = 1
    mem_mask = (torch.arange(mem.size(1))[None] < mem_lens[:, None])[utt].unsqueeze(1)  # (B, 1, T')
    with torch.no_grad():
        ref = dec(mem[utt], mem_lens[utt], ys).log_softmax(-1)
        memory = dec.precompute_memory(mem)
        assert memory[0][0].shape == (G, 4, mem.size(1), D // 4)
        cache = None
        for l in range(1, ys.size(1) + 1):
            logp, cache = dec.forward_one_step(memory, mem_mask, ys[:, :l], cache)
            torch.testing.assert_close(logp, ref[:, l - 1], atol=atol, rtol=0)
        with pytest.raises(ValueError):  # 12 hypotheses cannot be spread over 5 utterances
            dec.forward_one_step(dec.precompute_memory(torch.cat([mem, mem[:2]])), mem_mask, ys, None)


def test_incremental_cache_reorder_and_partial_cache():
    """Reordering the cache rows (beam search) and a cache covering fewer positions than ys - 1."""
    torch.manual_seed(0)
    dec = AttentionDecoder(V, D, num_layers=2, heads=4, d_ff=32, dropout=0.0).eval().double()
    mem, mem_lens, ys = _random_case(5, torch.float64, n=3, d_mem=D)
    mem_mask = torch.arange(mem.size(1))[None] < mem_lens[:, None]
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        ref = dec(mem[perm], mem_lens[perm], ys[perm]).log_softmax(-1)
        _, cache = dec.forward_one_step(mem, mem_mask, ys[:, :3], None)
        cache = index_select_tree(cache, perm)  # rows follow the permuted hypotheses
        logp, cache = dec.forward_one_step(mem[perm], mem_mask[perm], ys[perm, :4], cache)
        torch.testing.assert_close(logp, ref[:, 3], atol=1e-10, rtol=0)
        # the cache covers 4 positions, ys 7: the 3 new ones are computed (causally) at once
        logp, cache = dec.forward_one_step(mem[perm], mem_mask[perm], ys[perm, :7], cache)
        torch.testing.assert_close(logp, ref[:, 6], atol=1e-10, rtol=0)
        assert cache["self"][1][0].size(2) == 7
        with pytest.raises(ValueError):
            dec.forward_one_step(mem[perm], mem_mask[perm], ys[perm, :7], cache)


def test_mask_ctc_decoder_shapes_bidirectional_and_padding():
    torch.manual_seed(0)
    dec = MaskCtcDecoder(V, D, num_layers=2, heads=4, d_ff=32, dropout=0.0).eval()
    assert dec.mask_id == V
    assert dec.embed.embed.num_embeddings == V + 1 and dec.output.out_features == V
    mem, mem_lens = _memory()
    ys = torch.tensor([[3, V, 5, V], [V, 7, -1, -1]])
    out = dec(mem, mem_lens, ys)
    assert out.shape == (2, 4, V) and torch.isfinite(out).all()
    # bidirectional: position 0 depends on a later token
    ys2 = ys.clone()
    ys2[0, 3] = 9
    assert not torch.allclose(dec(mem, mem_lens, ys2)[0, 0], out[0, 0], atol=1e-4)
    # padding is invisible: same outputs on valid positions with more padding
    ys_pad = torch.cat([ys, torch.full((2, 3), -1)], dim=1)
    assert torch.allclose(dec(mem, mem_lens, ys_pad)[1, :2], out[1, :2], atol=1e-5)
    assert torch.allclose(dec(mem[1:2], mem_lens[1:2], ys[1:2, :2])[0], out[1, :2], atol=1e-5)
