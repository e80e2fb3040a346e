"""CPU bf16 autocast in the trainer (``amp: bf16``): asked for explicitly it runs the forward in bf16; ``auto``
stays fp32 on CPU; fp16 is refused on CPU with a message that says what to use."""

from __future__ import annotations

import pytest
import torch
from training_toy import toy_trainer

from asr_kd.training import LossOutput


def _trainer(tmp_path, amp, seen, max_steps=4):
    """``toy_trainer`` under ``tmp_path / amp`` whose loss records the dtype of each forward's logits in ``seen``."""

    def loss_fn(m, batch, step):
        logits = m(batch["x"])
        seen.append(logits.dtype)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["y"])
        return LossOutput(loss=loss, num_frames=len(batch["y"]))

    return toy_trainer(tmp_path / amp, amp, loss=loss_fn, max_steps=max_steps)


def test_bf16_on_cpu_runs_the_forward_in_bf16_and_keeps_fp32_weights(tmp_path):
    seen: list[torch.dtype] = []
    t = _trainer(tmp_path, "bf16", seen)
    assert t.amp_dtype == torch.bfloat16 and not t.scaler.is_enabled()
    before = [p.detach().clone() for p in t.model.parameters()]
    assert t.fit()["step"] == 4
    assert seen and all(d == torch.bfloat16 for d in seen)  # linear layers ran under autocast
    for p, b in zip(t.model.parameters(), before):
        assert p.dtype == torch.float32 and torch.isfinite(p).all() and not torch.equal(p, b)


def test_auto_and_off_stay_fp32_on_cpu(tmp_path):
    for amp in ("auto", "off"):
        seen: list[torch.dtype] = []
        t = _trainer(tmp_path, amp, seen, max_steps=2)
        assert t.amp_dtype is None
        t.fit()
        assert seen and all(d == torch.float32 for d in seen)


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fp16 autocast needs CUDA; on CPU use amp=bf16"):
        _trainer(tmp_path, "fp16", [])


def test_unknown_amp_is_refused(tmp_path):
    with pytest.raises(ValueError, match="amp must be auto, bf16, fp16 or off, not 'fp8'"):
        _trainer(tmp_path, "fp8", [])


def test_native_bf16_detection_reads_the_cpu_flags(tmp_path):
    from asr_kd.training.trainer import cpu_has_native_bf16

    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    with_amx = tmp_path / "b"
    with_amx.write_text("flags\t\t: fpu avx2 amx_tile amx_bf16\n")
    without = tmp_path / "c"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_has_native_bf16(with_bf16) is True
    assert cpu_has_native_bf16(with_amx) is True
    assert cpu_has_native_bf16(without) is False
    assert cpu_has_native_bf16(tmp_path / "missing") is None


def test_bf16_on_a_cpu_without_bf16_instructions_warns(tmp_path, monkeypatch, caplog):
    import asr_kd.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="asr_kd.training.trainer"):
        t = _trainer(tmp_path, "bf16", [], max_steps=1)
    assert t.amp_dtype == torch.bfloat16
    assert "without bf16 instructions" in caplog.text and "training.amp=off" in caplog.text
