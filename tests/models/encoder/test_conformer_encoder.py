"""ConformerEncoder: shapes, masks, padding invariance, truncation, gradients, presets."""

import pytest
import torch

from asr_kd.models.encoder import (
    CONFORMER_PRESETS,
    ConformerEncoder,
    Encoder,
    EncoderOutput,
    conformer_encoder,
    conformer_preset,
)
from asr_kd.models.encoder.masks import chunk_attention_mask

F = 20


def _tiny(causal: bool = False, num_layers: int = 3, dropout: float = 0.0) -> ConformerEncoder:
    torch.manual_seed(0)
    return conformer_encoder(
        input_dim=F,
        d_model=32,
        num_layers=num_layers,
        num_heads=4,
        ffn_dim=64,
        conv_kernel=5,
        dropout=dropout,
        causal=causal,
        subsampling_channels=8,
    )


def test_is_an_encoder_with_shapes_and_lengths():
    enc = _tiny().eval()
    assert isinstance(enc, Encoder)
    assert enc.output_dim == 32 and enc.num_layers == 3 and enc.subsampling_factor == 4
    x_lens = torch.tensor([61, 40, 7])
    out = enc(torch.randn(3, 61, F), x_lens)
    assert isinstance(out, EncoderOutput)
    assert out.out.shape == (3, 14, 32)
    assert out.out_lens.tolist() == [14, 9, 1] == enc.subsampled_lengths(x_lens).tolist()
    assert out.valid_mask().sum(1).tolist() == [14, 9, 1]
    assert len(out.layer_outputs) == 3
    assert all(h.shape == (3, 14, 32) for h in out.layer_outputs)
    assert out.layer_outputs[-1] is out.out
    assert out.attn is None and out.qkv is None


def test_attention_and_qkv_on_request_respect_padding_and_chunks():
    enc = _tiny().eval()
    x_lens = torch.tensor([61, 33])
    out = enc(torch.randn(2, 61, F), x_lens, chunk_size=3, left_context=1, return_attn=True, return_qkv=True)
    t = out.out.size(1)
    assert len(out.attn) == len(out.qkv) == 3
    allowed = out.valid_mask().unsqueeze(1) & chunk_attention_mask(t, 3, 1).unsqueeze(0)  # (N, T', T')
    allowed = allowed.unsqueeze(1).expand(2, 4, t, t)
    valid_q = out.valid_mask()[:, None, :].expand(2, 4, t)
    for w, (q, k, v) in zip(out.attn, out.qkv):
        assert w.shape == (2, 4, t, t)
        assert q.shape == k.shape == v.shape == (2, 4, t, 8)
        assert torch.all(w[~allowed] == 0)
        sums = w.sum(-1)
        torch.testing.assert_close(sums[valid_q], torch.ones_like(sums[valid_q]))
    # frame 0 of the second row can only see its own chunk: keys 0..2
    assert torch.all(out.attn[0][1, :, 0, 3:] == 0) and torch.all(out.attn[0][1, :, 0, :3] > 0)


def test_padding_invariance():
    enc = _tiny().double().eval()
    short = torch.randn(1, 37, F, dtype=torch.float64)
    long = torch.randn(1, 80, F, dtype=torch.float64)
    alone = enc(short, torch.tensor([37]))
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 43), value=5.0), long])
    both = enc(batch, torch.tensor([37, 80]))
    n = alone.out_lens.item()
    assert both.out_lens[0].item() == n
    for a, b in zip(alone.layer_outputs, both.layer_outputs):
        torch.testing.assert_close(b[0, :n], a[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_chunk_mask_hides_the_future(causal):
    enc = _tiny(causal=causal).double().eval()
    x = torch.randn(1, 63, F, dtype=torch.float64)  # T' = 15
    changed = x.clone()
    changed[:, 40:] += 1.0  # affects encoder frames >= 9 (frame j sees input 4j..4j+6)
    lens = torch.tensor([63])
    a = enc(x, lens, chunk_size=4, left_context=-1).out
    b = enc(changed, lens, chunk_size=4, left_context=-1).out
    same = (a - b).abs().amax(-1)[0] < 1e-12
    if causal:  # chunks [0,4) and [4,8) end before frame 9: untouched; later chunks change
        assert same[:8].all() and not same[8:].any()
    else:  # the symmetric depthwise conv leaks future frames across chunk borders
        assert not same[:8].all()
    full_a = enc(x, lens).out
    full_b = enc(changed, lens).out
    assert not ((full_a - full_b).abs().amax(-1)[0, :8] < 1e-12).all()  # full context sees the future


def test_truncate_equals_intermediate_layer():
    enc = _tiny(num_layers=4).eval()
    x, lens = torch.randn(2, 50, F), torch.tensor([50, 31])
    full = enc(x, lens, chunk_size=2, left_context=1)
    for k in (1, 2, 4):
        sub = enc.truncate(k)
        assert isinstance(sub, ConformerEncoder) and sub.num_layers == k and not sub.training
        out = sub(x, lens, chunk_size=2, left_context=1)
        torch.testing.assert_close(out.out, full.layer_outputs[k - 1])
        assert len(out.layer_outputs) == k
    sub = enc.truncate(2)
    with torch.no_grad():
        sub.layers[0].ff1.net[0].weight.add_(1.0)  # a copy: the original is untouched
    torch.testing.assert_close(enc(x, lens, chunk_size=2, left_context=1).out, full.out)
    with pytest.raises(ValueError):
        enc.truncate(5)


def test_gradients_reach_every_parameter():
    enc = _tiny(dropout=0.1).train()
    out = enc(torch.randn(2, 45, F), torch.tensor([45, 30]), chunk_size=2, return_attn=True)
    loss = out.out.pow(2).mean() + out.layer_outputs[0].mean()
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_dropout_only_in_training():
    enc = _tiny(dropout=0.3)
    x, lens = torch.randn(1, 40, F), torch.tensor([40])
    enc.train()
    assert not torch.allclose(enc(x, lens).out, enc(x, lens).out)
    enc.eval()
    torch.testing.assert_close(enc(x, lens).out, enc(x, lens).out)


def test_short_inputs():
    enc = _tiny().eval()
    out = enc(torch.randn(2, 5, F), torch.tensor([5, 2]))
    assert out.out.shape == (2, 0, 32) and out.out_lens.tolist() == [0, 0]
    out = enc(torch.randn(2, 9, F), torch.tensor([9, 4]))
    assert out.out.shape == (2, 1, 32) and out.out_lens.tolist() == [1, 0]
    assert torch.isfinite(out.out).all()


def test_presets_sizes():
    counts = {name: sum(p.numel() for p in conformer_preset(name).parameters()) for name in CONFORMER_PRESETS}
    print("preset parameters:", counts)
    assert 0.8e6 < counts["xs"] < 1.3e6
    assert 3.2e6 < counts["s"] < 4.8e6
    assert 8e6 < counts["m"] < 12e6
    enc = conformer_preset("xs", causal=True, num_layers=2)
    assert enc.causal and enc.num_layers == 2
    with pytest.raises(KeyError):
        conformer_preset("xxl")
