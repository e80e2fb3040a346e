"""AMP paths of the trainer (CUDA only; skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from training_toy import ListBatches, TinyModel, toy_trainer

from asr_kd.training import LossOutput, Trainer, TrainerConfig, build_optimizer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_and_resume(tmp_path, amp):
    def make(max_steps):
        return toy_trainer(tmp_path / amp, amp, max_steps=max_steps, device="cuda")

    t = make(6)
    assert t.amp_dtype == (torch.bfloat16 if amp == "bf16" else torch.float16)
    assert t.scaler.is_enabled() == (amp == "fp16")
    res = t.fit()
    assert res["step"] == 6 and all(torch.isfinite(p).all() for p in t.model.parameters())
    ck = torch.load(tmp_path / amp / "checkpoint-6.pt", weights_only=True)
    assert ck["rng"]["cuda"] is not None
    if amp == "fp16":
        assert ck["grad_scaler"]["scale"] > 0
    t2 = make(8)
    assert t2.resume() and t2.fit()["step"] == 8


def test_fp16_overflow_is_not_a_bad_batch():
    torch.manual_seed(0)
    model = TinyModel().cuda()
    opt = build_optimizer(model.parameters(), {"lr": 1e-2})
    t = Trainer(
        model,
        opt,
        lambda m, b, s: LossOutput(loss=m(b["x"]).float().sum() * 1e30),
        ListBatches(),
        cfg=TrainerConfig(amp="fp16", tensorboard=False, progress_bar=False),
    )
    assert t.train_step(next(iter(ListBatches()))) is None  # inf gradients: the scaler skips the step
    assert t.num_bad_batches == 0
