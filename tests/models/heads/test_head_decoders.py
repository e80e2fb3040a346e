"""AttentionDecoder (causality, cached incremental decoding) and MaskCtcDecoder."""

from __future__ import annotations

import torch

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
        assert len(cache) == 3 and cache[0].shape == (2, l, D)
        assert torch.allclose(logp, ref[:, l - 1], atol=1e-5)
    # no cache with a longer prefix gives the same last step
    logp, _ = dec.forward_one_step(mem, mem_mask, ys, None)
    assert torch.allclose(logp, ref[:, -1], atol=1e-5)


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
