from __future__ import annotations

import io
import math

import pytest
import torch

from asr_kd.training import build_optimizer, build_scheduler, clip_grad_norm
from asr_kd.training.optim import SCHEDULERS


def _lrs(name, n=30, **cfg):
    m = torch.nn.Linear(2, 2)
    opt = build_optimizer(m.parameters(), {"lr": 2e-3})
    sched = build_scheduler(opt, {"name": name, **cfg})
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, opt, sched


def test_noam_warmup_then_inverse_sqrt():
    lrs, _, _ = _lrs("noam", warmup_steps=10)
    assert lrs[0] == pytest.approx(2e-4)
    assert max(lrs) == pytest.approx(2e-3) and lrs.index(max(lrs)) == 9
    assert lrs[-1] == pytest.approx(2e-3 * math.sqrt(10 / 30))
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10])) and all(a > b for a, b in zip(lrs[9:], lrs[10:]))


def test_cosine_reaches_floor():
    lrs, _, _ = _lrs("cosine", warmup_steps=5, total_steps=20, min_ratio=0.1)
    assert lrs[4] == pytest.approx(2e-3) and lrs[20] == pytest.approx(2e-4) and lrs[-1] == pytest.approx(2e-4)


def test_eden_depends_on_epoch():
    m = torch.nn.Linear(2, 2)
    opt = build_optimizer(m.parameters(), {"lr": 1e-3})
    sched = build_scheduler(opt, {"name": "eden", "lr_batches": 100, "lr_epochs": 2, "warmup_steps": 0})
    lr0 = opt.param_groups[0]["lr"]
    sched.set_epoch(4)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr0 * ((16 + 4) / 4) ** -0.25)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_state_is_plain_and_resumes(name):
    lrs, opt, sched = _lrs(name, n=7, warmup_steps=3)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    m = torch.nn.Linear(2, 2)
    opt2 = build_optimizer(m.parameters(), {"lr": 2e-3})
    sched2 = build_scheduler(opt2, {"name": name, "warmup_steps": 3})
    sched2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    opt.step(), opt2.step(), sched.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_optimizer_factory_and_groups():
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(m.parameters(), {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1})
    assert isinstance(opt, torch.optim.AdamW)
    wds = sorted(g["weight_decay"] for g in opt.param_groups)
    assert wds == [0.0, 0.1] and sum(len(g["params"]) for g in opt.param_groups) == 4
    with pytest.raises(ValueError):
        build_optimizer(m.parameters(), {"name": "lion"})
    with pytest.raises(ValueError):
        build_scheduler(opt, {"name": "nope"})


def test_clip_grad_norm():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)  # norm 6
    assert float(clip_grad_norm([p], 3.0)) == pytest.approx(6.0)
    assert float(p.grad.norm()) == pytest.approx(3.0, rel=1e-5)
    p.grad = torch.tensor([float("nan"), 1.0, 1.0, 1.0])
    assert not math.isfinite(float(clip_grad_norm([p], 1.0)))


def test_scaled_adam_lite_trains_and_checkpoints():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    w_true = torch.randn(8, 3)
    y = x @ w_true
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    opt = build_optimizer(model.parameters(), {"name": "scaled_adam", "lr": 0.03})
    sched = build_scheduler(opt, {"name": "noam", "warmup_steps": 10})
    first = None
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    assert loss.item() < 0.2 * first
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = build_optimizer(model.parameters(), {"name": "scaled_adam"})
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
