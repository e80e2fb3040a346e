"""Zipformer pieces against hand computations, its config checks, and its multi-rate layer outputs.
The encoder contract (shapes, padding, chunks, truncation, gradients) is in test_encoder_contract.py."""

from __future__ import annotations

import math

import pytest
import torch

from asr_kd.models.encoder import MissingCapabilityError, build_encoder, resample_frames, stream_encoder
from asr_kd.models.zipformer import (
    ZIPFORMER_PRESETS,
    Balancer,
    BiasNorm,
    Bypass,
    ProgressClock,
    ScheduledFloat,
    Whiten,
    swoosh_l,
    swoosh_r,
    whitening_metric,
    zipformer_preset,
)
from asr_kd.models.zipformer.encoder import masked_downsample
from asr_kd.models.zipformer.scaling import compact_rel_positional_encoding
from asr_kd.testing.encoders import tiny_encoder_config

TINY = tiny_encoder_config("zipformer", input_dim=20)  # stacks at 50/25/12.5/25 Hz, dims 16/24/32/16


def test_swoosh_values():
    x = torch.tensor([-3.0, 0.0, 1.0, 4.0])
    expect_l = [math.log1p(math.exp(v - 4)) - 0.08 * v - 0.035 for v in x.tolist()]
    expect_r = [math.log1p(math.exp(v - 1)) - 0.08 * v - 0.313261687 for v in x.tolist()]
    torch.testing.assert_close(swoosh_l(x), torch.tensor(expect_l))
    torch.testing.assert_close(swoosh_r(x), torch.tensor(expect_r))
    assert abs(float(swoosh_r(torch.tensor(0.0)))) < 1e-6


def test_bias_norm_by_hand():
    norm = BiasNorm(3)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
        norm.log_scale.fill_(math.log(2.0))
    x = torch.tensor([[2.0, 1.0, 0.0]])
    rms = math.sqrt(((2 - 1) ** 2 + 1**2 + 1**2) / 3)  # of x - bias = (1, 1, 1)
    torch.testing.assert_close(norm(x), x / rms * 2.0)


def test_scheduled_float_interpolates_on_audio_hours():
    clock = ProgressClock()
    s = ScheduledFloat([(0.0, 0.3), (2.0, 0.1), (4.0, 0.0)], clock)
    assert float(s) == pytest.approx(0.3)
    clock.hours = 1.0
    assert float(s) == pytest.approx(0.2)
    clock.hours = 3.0
    assert float(s) == pytest.approx(0.05)
    clock.hours = 99.0
    assert float(s) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        ScheduledFloat([(1.0, 0.0), (1.0, 1.0)], clock)


def test_encoder_schedules_follow_the_trainer_progress_in_audio_not_steps():
    enc = build_encoder({**TINY, "schedule_hours": 10.0})
    progress = type("P", (), {"audio_seconds": 5 * 3600.0, "step": 3})()
    enc.on_train_step_start(progress)  # 5 of 10 hours: dropout halfway from 0.3 to its final 0.0
    assert float(enc.sched["dropout"]) == pytest.approx(0.15)
    assert float(enc.sched["bypass_min"]) == pytest.approx(0.9 + 0.5 * (0.2 - 0.9))
    progress.audio_seconds = 20 * 3600.0
    enc.on_train_step_start(progress)
    assert float(enc.sched["attention_skip"]) == 0.0


def test_bypass_clamps_only_in_training():
    b = Bypass(2, min_scale=0.5, init=0.1)
    x_in, x_out = torch.zeros(1, 1, 2), torch.ones(1, 1, 2)
    b.train()
    torch.testing.assert_close(b(x_in, x_out), torch.full((1, 1, 2), 0.5))
    b.eval()
    torch.testing.assert_close(b(x_in, x_out), torch.full((1, 1, 2), 0.1))


def test_masked_downsample_ignores_padding_and_weights_sum_to_one():
    x = torch.arange(10, dtype=torch.float32).view(1, 5, 2)
    valid = torch.tensor([[True, True, True, False, False]])
    w = torch.tensor([0.0, math.log(3.0)])  # softmax -> 0.25, 0.75
    out, v = masked_downsample(x, valid, w)
    assert out.shape == (1, 3, 2) and v.tolist() == [[True, True, False]]
    torch.testing.assert_close(out[0, 0], 0.25 * x[0, 0] + 0.75 * x[0, 1])
    torch.testing.assert_close(out[0, 1], x[0, 2])  # its partner frame is padding


def test_resample_frames_by_hand():
    x = torch.tensor([[[1.0], [3.0], [5.0], [7.0], [9.0]]])
    torch.testing.assert_close(resample_frames(x, 2, 4, 3), torch.tensor([[[2.0], [6.0], [9.0]]]))
    torch.testing.assert_close(resample_frames(x, 2, 4, 3, torch.tensor([3])), torch.tensor([[[2.0], [5.0], [0.0]]]))
    torch.testing.assert_close(resample_frames(x[:, :2], 8, 4, 3), torch.tensor([[[1.0], [1.0], [3.0]]]))
    with pytest.raises(ValueError):
        resample_frames(x, 3, 4, 2)


def test_compact_positional_encoding_rows_follow_offsets():
    pe = compact_rel_positional_encoding(3, 3, 8)
    assert pe.shape == (5, 8)
    # row r holds offset t_k - 1 - r = 2 - r; offset 0 is the middle row: cos 1, sin 0
    torch.testing.assert_close(pe[2], torch.tensor([1.0] * 4 + [0.0] * 4))
    torch.testing.assert_close(pe[0, :4], pe[4, :4])  # cos is even in the offset
    torch.testing.assert_close(pe[0, 4:], -pe[4, 4:])  # sin is odd


def test_balancer_and_whiten_are_identity_forward_and_push_statistics():
    torch.manual_seed(0)
    x = (torch.randn(200, 4) + torch.tensor([5.0, 0.0, 0.0, 0.0])).requires_grad_(True)
    bal = Balancer(-1, min_positive=0.1, max_positive=0.9, min_abs=0.2, max_abs=3.0, prob=1.0).train()
    y = bal(x)
    torch.testing.assert_close(y, x)
    y.sum().backward()  # incoming gradient 1 everywhere; channel 0 is too positive and too large
    extra = x.grad - 1.0
    assert extra[:, 0].mean() > 0 and extra[:, 1:].abs().max() < 1e-6  # descent lowers channel 0
    bal.eval()
    assert bal(x) is x

    mixed = torch.randn(500, 1) @ torch.ones(1, 6) + 0.1 * torch.randn(500, 6)  # nearly rank 1
    z = mixed.clone().requires_grad_(True)
    w = Whiten(2.0, prob=1.0, grad_scale=0.1).train()
    out = w(z)
    torch.testing.assert_close(out, z)
    before = float(whitening_metric(z.detach()))
    out.sum().backward()
    after = float(whitening_metric(z.detach() - 0.1 * (z.grad - 1.0)))
    assert before > 2.0 and after < before


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"encoder_dim": [16, 24]}, "encoder_dim has 2 entries"),
        ({"downsampling_factor": [1, 3, 4, 2]}, "power of 2"),
        ({"num_layers": [1, 0, 1, 1]}, "num_layers"),
        ({"output_mode": "mean"}, "output_mode"),
    ],
)
def test_inconsistent_stacks_are_rejected_at_build(bad, match):
    with pytest.raises(ValueError, match=match):
        build_encoder({**TINY, **bad})


def test_chunk_size_the_slowest_stack_cannot_use_is_rejected():
    enc = build_encoder({**TINY, "causal": True})  # slowest factor 4: chunk (25 Hz) must be even
    x, lens = torch.randn(1, 60, 20), torch.tensor([60])
    with pytest.raises(ValueError, match="multiple of 2"):
        enc(x, lens, chunk_size=3)
    enc(x, lens, chunk_size=4)


def test_layer_outputs_run_at_their_stack_rates():
    enc = build_encoder(TINY).eval()
    out = enc(torch.randn(2, 87, 20), torch.tensor([87, 60]))
    t50 = (87 - 7) // 2
    assert [li.subsampling for li in enc.layer_info] == [2, 4, 4, 8, 4]
    assert [h.size(1) for h in out.layer_outputs] == [t50, 20, 20, 10, 20]
    assert [li.dim for li in enc.layer_info] == [16, 24, 24, 32, 16]
    assert enc.output_dim == 32 and out.out.size(1) == (t50 + 1) // 2


def test_presets_sizes():
    counts = {name: sum(p.numel() for p in zipformer_preset(name).parameters()) for name in ZIPFORMER_PRESETS}
    assert 1.0e6 < counts["xs"] < 2.0e6
    assert 4.0e6 < counts["s"] < 5.0e6  # <= 5M with a CTC head, the budget
    assert counts["s"] < counts["m"] < 12.5e6  # an fp16 "m" teacher fits in 25 MB


def test_inputs_too_short_for_one_frame_give_empty_outputs():
    enc = build_encoder(TINY).eval()  # 50 Hz frame 0 needs input frames 0..8
    out = enc(torch.randn(2, 8, 20), torch.tensor([8, 7]))
    assert out.out.shape == (2, 0, enc.output_dim) and out.out_lens.tolist() == [0, 0]
    assert enc(torch.randn(1, 9, 20), torch.tensor([9])).out.shape == (1, 1, enc.output_dim)


@pytest.mark.parametrize("convnext", [False, True])
def test_streaming_ragged_batch_and_truncated_encoders(convnext):
    """Rows that end in different calls (one of 8 frames, too short for an output frame, one empty),
    one input frame per call, and truncated sub-encoders (last-layer output)."""
    torch.manual_seed(0)
    enc = build_encoder({**TINY, "causal": True, "frontend_convnext": convnext}).double().eval()
    torch.manual_seed(1)
    x, lens = torch.randn(4, 75, 20, dtype=torch.float64), torch.tensor([75, 42, 8, 0])
    for model, feed in ((enc, 1), (enc.truncate(2), 11), (enc.truncate(4), 11)):
        ref = model(x, lens, chunk_size=4, left_context=1)
        out, out_lens = stream_encoder(model, x, lens, feed_frames=feed, chunk_size=4, left_context=1)
        assert out_lens.tolist() == ref.out_lens.tolist()
        for r, n in enumerate(out_lens.tolist()):
            torch.testing.assert_close(out[r, :n], ref.out[r, :n], atol=1e-9, rtol=0)
    # control: the streamed frames are those of the chunked forward, not of the full-context one
    full = enc(x, lens).out
    assert (
        stream_encoder(enc, x, lens, feed_frames=16, chunk_size=4, left_context=1)[0][0, :8] - full[0, :8]
    ).abs().max() > 1e-6


def _cache_sizes(state) -> list[tuple[int, ...]]:
    sizes = [tuple(state.frontend.raw.shape), tuple(state.frontend.frames.shape)]
    for stack in state.stacks:
        for layer in stack.layers:
            sizes.extend(tuple(t.shape) for t in layer)
    return sizes


@pytest.mark.parametrize("convnext", [False, True])
def test_streaming_caches_stay_bounded_with_a_finite_left_context(convnext):
    torch.manual_seed(0)
    enc = build_encoder({**TINY, "causal": True, "frontend_convnext": convnext}).eval()
    chunk, left = 2, 3
    x = torch.randn(1, 400, 20)
    state = enc.init_state(1, chunk_size=chunk, left_context=left)
    sizes = []
    with torch.no_grad():
        for start in range(0, 400, 8):  # 8 input frames = 1 chunk per call
            _, _, state = enc.streaming_forward(x[:, start : start + 8], torch.tensor([8]), state)
            sizes.append(_cache_sizes(state))
    assert all(s == sizes[5] for s in sizes[5:])  # constant once the stream is under way
    for i, stack in enumerate(state.stacks):  # the attention caches hold exactly `left` chunks
        assert int(stack.lens.max()) == left * 2 * chunk // enc.ds[i]
        for layer in stack.layers:
            assert layer.key.size(2) == layer.nla.size(1) == layer.sa1.size(2) == left * 2 * chunk // enc.ds[i]
    assert state.frontend.raw.size(1) < 9  # only input the convolutions cannot use yet
    # conv frames: the ConvNeXt context on both sides and less than one chunk (2 * chunk at 50 Hz) pending
    assert state.frontend.frames.size(1) < 2 * chunk + 2 * enc.frontend.context

    grow = enc.init_state(1, chunk_size=chunk, left_context=-1)  # unlimited left context: caches grow
    with torch.no_grad():
        for start in range(0, 80, 8):
            _, _, grow = enc.streaming_forward(x[:, start : start + 8], torch.tensor([8]), grow)
    assert grow.stacks[0].layers[0].key.size(2) > left * 2 * chunk


def test_non_causal_zipformer_refuses_streaming():
    enc = build_encoder(TINY)
    assert not enc.has("streaming") and enc.has("chunked")
    with pytest.raises(MissingCapabilityError, match="streaming"):
        enc.init_state(1, chunk_size=2, left_context=2)
    with pytest.raises(MissingCapabilityError, match="streaming"):
        enc.streaming_forward(torch.randn(1, 8, 20), torch.tensor([8]), None)
    assert build_encoder({**TINY, "causal": True}).has("streaming")


def test_init_state_refuses_chunk_sizes_the_encoder_cannot_use():
    enc = build_encoder({**TINY, "causal": True})  # slowest factor 4: chunk (25 Hz) must be even
    with pytest.raises(ValueError, match="multiple of 2"):
        enc.init_state(1, chunk_size=3, left_context=2)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="chunk_size"):
            enc.init_state(1, chunk_size=bad, left_context=2)
    with pytest.raises(ValueError, match="left_context"):
        enc.init_state(1, chunk_size=2, left_context=-2)
    enc.init_state(1, chunk_size=4, left_context=-1)


def test_streaming_refuses_input_after_the_final_call():
    enc = build_encoder({**TINY, "causal": True, "frontend_convnext": False}).eval()
    state = enc.init_state(2, chunk_size=2, left_context=1)
    x = torch.randn(2, 30, 20)
    with torch.no_grad():
        _, out_lens, state = enc.streaming_forward(x, torch.tensor([30, 20]), state, final=torch.tensor([True, False]))
        assert out_lens.tolist() == [6, 2]  # row 0 flushed: ceil(11 / 2); row 1: one whole chunk of its 6
        with pytest.raises(ValueError, match="finalised"):
            enc.streaming_forward(x, torch.tensor([3, 3]), state)
