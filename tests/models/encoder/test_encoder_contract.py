"""The encoder contract, one suite for every registered encoder (Conformer and Zipformer): shapes and
declared layer info, padding invariance, chunk masks hide the future, truncation, streaming (where
declared), gradients, capability errors. Add an encoder by adding a spec to ``SPECS``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from asr_kd.models.encoder import (
    Encoder,
    EncoderOutput,
    MissingCapabilityError,
    build_encoder,
    list_encoders,
    stream_encoder,
)
from asr_kd.testing.encoders import tiny_encoder_config

F = 20


@dataclass
class Spec:
    """How to build a tiny encoder of one type, and the chunk sizes it can use."""

    name: str
    config: dict[str, Any]
    chunk: int  # a valid chunk size (output frames)
    # input frames from which a change cannot reach encoder chunks < m: lookahead(m, chunk)
    first_input_frame_of_chunk: Callable[[int, int], int]
    stream_chunks: tuple[int, ...] = ()  # chunk sizes the streaming test runs; () = streaming refused

    def build(self, **overrides: Any) -> Encoder:
        torch.manual_seed(0)
        return build_encoder({**self.config, **overrides})


CONFORMER = Spec(
    "conformer",
    dict(
        type="conformer",
        input_dim=F,
        d_model=32,
        num_layers=3,
        num_heads=4,
        ffn_dim=64,
        conv_kernel=5,
        dropout=0.0,
        subsampling_channels=8,
    ),
    chunk=3,
    first_input_frame_of_chunk=lambda m, c: 4 * c * m + 7,  # frame j sees input 4j..4j+6
    stream_chunks=(1, 3),
)
ZIPFORMER = Spec(
    "zipformer",
    tiny_encoder_config("zipformer", input_dim=F, frontend_convnext=True),
    chunk=2,  # 4 frames at 50 Hz; the slowest stack groups 4
    # 25 Hz frame j pools 50 Hz frames 2j, 2j+1; 50 Hz frame i sees input 2i..2i+8, and the ConvNeXt block
    # 3 more 50 Hz frames: a change at input s reaches 50 Hz frames >= (s - 8) / 2 - 3
    first_input_frame_of_chunk=lambda m, c: 2 * (2 * c * m + 3) + 7,
    stream_chunks=(2, 4, 6),
)
SPECS = [CONFORMER, ZIPFORMER]


@pytest.fixture(params=SPECS, ids=lambda s: s.name)
def spec(request) -> Spec:
    return request.param


def test_every_registered_encoder_is_in_the_suite():
    assert {s.name for s in SPECS} == set(list_encoders())


def test_shapes_lengths_and_declared_layers(spec):
    enc = spec.build().eval()
    assert isinstance(enc, Encoder)
    x_lens = torch.tensor([81, 50, 19])
    out = enc(torch.randn(3, 81, F), x_lens)
    assert isinstance(out, EncoderOutput)
    t_out = int(enc.subsampled_lengths(torch.tensor([81])))
    assert out.out.shape == (3, t_out, enc.output_dim)
    assert out.out_lens.tolist() == enc.subsampled_lengths(x_lens).tolist()
    info = enc.layer_info
    assert len(info) == len(out.layer_outputs) == enc.num_layers
    for k, (h, li) in enumerate(zip(out.layer_outputs, info), start=1):
        assert h.size(-1) == li.dim
        # frames of a layer ~ frames of the output x (output subsampling / layer subsampling)
        ratio = enc.subsampling_factor / li.subsampling
        assert abs(h.size(1) - t_out * ratio) <= max(ratio, 1), (k, h.shape, li)
        assert out.layer(k).shape == (3, t_out, li.dim)
        assert out.layer(k, dim=enc.output_dim).shape == out.out.shape
    assert torch.isfinite(out.out).all()


def test_padding_invariance(spec):
    enc = spec.build().double().eval()
    short = torch.randn(1, 45, F, dtype=torch.float64)
    long = torch.randn(1, 90, F, dtype=torch.float64)
    alone = enc(short, torch.tensor([45]))
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 45), value=5.0), long])
    both = enc(batch, torch.tensor([45, 90]))
    n = int(alone.out_lens)
    assert int(both.out_lens[0]) == n
    torch.testing.assert_close(both.out[0, :n], alone.out[0], atol=1e-9, rtol=0)
    for k in range(1, enc.num_layers + 1):
        torch.testing.assert_close(both.layer(k)[0, :n], alone.layer(k)[0], atol=1e-9, rtol=0)


def test_causal_chunks_hide_the_future(spec):
    enc = spec.build(causal=True).double().eval()
    assert enc.has("chunked")
    c = spec.chunk
    x = torch.randn(1, 121, F, dtype=torch.float64)
    lens = torch.tensor([121])
    a = enc(x, lens, chunk_size=c, left_context=-1).out
    m = 3  # change the input from where chunk m's receptive field may start
    start = spec.first_input_frame_of_chunk(m, c)
    changed = x.clone()
    changed[:, start:] += 1.0
    b = enc(changed, lens, chunk_size=c, left_context=-1).out
    same = (a - b).abs().amax(-1)[0] < 1e-10
    assert same[: m * c].all(), same
    assert not same[(m + 1) * c :].any()
    full_a, full_b = enc(x, lens).out, enc(changed, lens).out
    assert not ((full_a - full_b).abs().amax(-1)[0, : m * c] < 1e-10).all()  # full context sees it


def test_truncate_equals_layer_output(spec):
    enc = spec.build().eval()
    assert enc.has("truncate")
    x, lens = torch.randn(2, 70, F), torch.tensor([70, 43])
    full = enc(x, lens)
    for k in range(1, enc.num_layers + 1):
        sub = enc.truncate(k)
        assert sub.num_layers == k and not sub.training
        assert sub.output_dim == enc.layer_info[k - 1].dim
        out = sub(x, lens)
        n = out.out_lens
        assert n.tolist() == full.out_lens.tolist()
        torch.testing.assert_close(out.out, full.layer(k))
    with pytest.raises(ValueError):
        enc.truncate(enc.num_layers + 1)


@pytest.mark.parametrize("left_context", [-1, 2])
@pytest.mark.parametrize("feed", [5, 13, 37])  # input frames per call: never a whole number of chunks
def test_streaming_equals_chunked_or_is_refused(spec, left_context, feed):
    enc = spec.build(causal=True).double().eval()
    x, lens = torch.randn(2, 90, F, dtype=torch.float64), torch.tensor([90, 57])  # rows end at different calls
    if not spec.stream_chunks:  # an encoder that does not stream must refuse to
        assert not enc.has("streaming")
        with pytest.raises(MissingCapabilityError, match="streaming"):
            enc.init_state(2, chunk_size=spec.chunk, left_context=left_context)
        return
    assert enc.has("streaming")
    for chunk in spec.stream_chunks:
        ref = enc(x, lens, chunk_size=chunk, left_context=left_context)
        out, out_lens = stream_encoder(enc, x, lens, feed_frames=feed, chunk_size=chunk, left_context=left_context)
        assert out_lens.tolist() == ref.out_lens.tolist(), chunk
        for r in range(2):
            n = int(out_lens[r])
            torch.testing.assert_close(out[r, :n], ref.out[r, :n], atol=1e-9, rtol=0)


def test_gradients_reach_every_parameter(spec):
    enc = spec.build().train()
    if hasattr(enc, "on_train_step_start"):  # past every schedule: no module skipping
        enc.on_train_step_start(type("P", (), {"audio_seconds": 1e9})())
    out = enc(torch.randn(2, 61, F), torch.tensor([61, 40]), chunk_size=spec.chunk, return_attn=True)
    loss = out.out.pow(2).mean() + sum(h.mean() for h in out.layer_outputs)
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_attention_and_qkv_on_request(spec):
    enc = spec.build().eval()
    out = enc(torch.randn(2, 61, F), torch.tensor([61, 33]), return_attn=True, return_qkv=True)
    assert len(out.attn) == len(out.qkv) == enc.num_layers
    for k, (w, (q, kk, v)) in enumerate(zip(out.attn, out.qkv)):
        t = out.layer_outputs[k].size(1)
        assert w.shape[0] == 2 and w.shape[-2:] == (t, t)
        assert q.shape[:3] == kk.shape[:3] == v.shape[:3] == (2, w.size(1), t)
        sums = w.sum(-1)
        torch.testing.assert_close(sums[0], torch.ones_like(sums[0]))  # row 0 unpadded: rows sum to 1


def test_short_inputs_give_empty_outputs(spec):
    enc = spec.build().eval()
    out = enc(torch.randn(2, 6, F), torch.tensor([6, 2]))
    assert out.out.shape == (2, 0, enc.output_dim) and out.out_lens.tolist() == [0, 0]


def test_bad_chunk_sizes_and_capabilities(spec):
    enc = spec.build()
    with pytest.raises(ValueError):
        enc.check_chunk_size(0)
    with pytest.raises(ValueError, match="capability"):
        enc.has("telepathy")


def test_unknown_type_and_keys_name_themselves():
    with pytest.raises(ValueError, match=r"unknown encoder type 'lstm'.*conformer.*zipformer"):
        build_encoder({"type": "lstm"})
    with pytest.raises(ValueError, match="d_modle"):
        build_encoder({"type": "conformer", "d_modle": 3})
    with pytest.raises(ValueError, match="encoder_dims"):
        build_encoder({"type": "zipformer", "encoder_dims": [3]})
