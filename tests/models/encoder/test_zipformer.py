"""Zipformer pieces against hand computations, its config checks, and its multi-rate layer outputs.
The encoder contract (shapes, padding, chunks, truncation, gradients) is in test_encoder_contract.py."""

from __future__ import annotations

import math

import pytest
import torch

from asr_kd.models.encoder import build_encoder, resample_frames
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

TINY = dict(type="zipformer", input_dim=20, downsampling_factor=[1, 2, 4, 2], encoder_dim=[16, 24, 32, 16],
            num_layers=[1, 2, 1, 1], num_heads=[2, 2, 4, 2], feedforward_dim=[32, 48, 64, 32],
            cnn_module_kernel=[5, 5, 3, 5], query_head_dim=8, value_head_dim=4, pos_head_dim=2, pos_dim=8,
            frontend_channels=[4, 8, 8], dropout=0.0)


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
    rms = math.sqrt(((2 - 1) ** 2 + 1 ** 2 + 1 ** 2) / 3)  # of x - bias = (1, 1, 1)
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


@pytest.mark.parametrize("bad, match", [
    ({"encoder_dim": [16, 24]}, "encoder_dim has 2 entries"),
    ({"downsampling_factor": [1, 3, 4, 2]}, "power of 2"),
    ({"num_layers": [1, 0, 1, 1]}, "num_layers"),
    ({"output_mode": "mean"}, "output_mode"),
])
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
