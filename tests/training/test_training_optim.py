from __future__ import annotations

import copy
import io
import logging
import math

import pytest
import torch

from asr_kd.training import ScaledAdam, build_optimizer, build_scheduler, clip_grad_norm
from asr_kd.training.optim import SCHEDULERS, EdenScheduler


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


def test_eden_matches_icefall_formula_at_chosen_points():
    """factor(b, e) = ((b²+B²)/B²)^-¼ · ((e²+E²)/E²)^-¼ · warm(b), warm linear from warmup_start."""
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = EdenScheduler(opt, lr_batches=100, lr_epochs=2, warmup_batches=10, warmup_start=0.5)
    assert sched.warmup_steps == 10
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5)  # b = 0: warmup_start
    for _ in range(5):
        opt.step()
        sched.step()
    # b = 5: (1 + 25/1e4)^-1/4 · (0.5 + 0.5 · 5/10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * (10025 / 10000) ** -0.25 * 0.75)
    sched.set_epoch(3)  # e = 3: ((9 + 4) / 4)^-1/4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * (10025 / 10000) ** -0.25 * 0.75 * (13 / 4) ** -0.25)
    for _ in range(195):
        opt.step()
        sched.step()
    # b = 200 (warm-up over): (1 + 4)^-1/4 · (13/4)^-1/4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 5**-0.25 * (13 / 4) ** -0.25)
    # icefall's defaults, through the factory (warmup_batches is icefall's name)
    d = build_scheduler(torch.optim.SGD([p], lr=1.0), {"name": "eden", "lr_batches": 7500, "lr_epochs": 3.5})
    assert (d.warmup_steps, d.warmup_start) == (500, 0.5)
    d = build_scheduler(torch.optim.SGD([p], lr=1.0), {"name": "eden", "warmup_batches": 7})
    assert d.warmup_steps == 7
    with pytest.raises(ValueError, match="warmup_start"):
        EdenScheduler(torch.optim.SGD([p], lr=1.0), warmup_start=1.5)


# --------------------------------------------------------------------------------------------- ScaledAdam
B1, B2, EPS, LR, SLR = 0.9, 0.98, 1e-8, 0.1, 0.1


def _rms(t):
    return t.pow(2).mean().sqrt()


def test_scaled_adam_two_steps_match_hand_computation():
    """A (2, 3) matrix and a scalar, size_update_period=2 (the scale is learned at the 2nd step)."""
    torch.manual_seed(0)
    w0 = torch.randn(2, 3, dtype=torch.float64)
    q0 = torch.tensor(0.7, dtype=torch.float64)
    g = [torch.randn(2, 3, dtype=torch.float64) for _ in range(2)]
    h = [torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.2, dtype=torch.float64)]
    w = torch.nn.Parameter(w0.clone())
    q = torch.nn.Parameter(q0.clone())
    opt = ScaledAdam(
        [("w", w), ("q", q)],
        lr=LR,
        betas=(B1, B2),
        eps=EPS,
        scalar_lr_scale=SLR,
        size_update_period=2,
        clipping_scale=None,
    )
    assert opt.param_groups[0]["param_names"] == ["w", "q"]

    # ---- the reference, written out step by step
    # step 1 (t = 0): v = (1-b2) g², bias-corrected v̂ = g²; the step is lr·rms·g/|g|, no scale update
    rms0 = _rms(w0)
    d_w = -LR * (1 - B1) * rms0 * g[0] / (g[0].abs() + EPS)
    w1 = w0 + d_w
    d_q = -LR * SLR * (1 - B1) * h[0] / (h[0].abs() + EPS)
    q1 = q0 + d_q
    # step 2 (t = 1 = P-1): rms re-measured on w1; scale learned from c = <p, g> of both steps
    c = torch.stack([(w0 * g[0]).sum(), (w1 * g[1]).sum()])
    s_hat = c.pow(2).mean()  # (1 - b2²)·mean(c²) / (1 - b2²)
    sigma = -LR * SLR * c.sum() / (s_hat.sqrt() + EPS)
    rms1 = _rms(w1)
    v2 = (B2 * (1 - B2) * g[0] ** 2 + (1 - B2) * g[1] ** 2) / (1 - B2**2)
    d_w = B1 * d_w + (1 - B1) * sigma * w1 - LR * (1 - B1) * rms1 * g[1] / (v2.sqrt() + EPS)
    w2 = w1 + d_w
    vq = (B2 * (1 - B2) * h[0] ** 2 + (1 - B2) * h[1] ** 2) / (1 - B2**2)
    q2 = q1 + B1 * d_q - LR * SLR * (1 - B1) * h[1] / (vq.sqrt() + EPS)

    for k, (wk, qk) in enumerate([(w1, q1), (w2, q2)]):
        w.grad, q.grad = g[k].clone(), h[k].clone()
        opt.step()
        torch.testing.assert_close(w.detach(), wk, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(q.detach(), qk, rtol=1e-12, atol=1e-14)
    st = opt.state[w]
    assert st["step"] == 2 and torch.allclose(st["param_rms"], rms1)


def test_scaled_adam_updates_are_relative_to_the_parameter_rms():
    """The same gradient direction moves a 100x larger tensor 100x further (the first step)."""
    small = torch.nn.Parameter(torch.full((4, 4), 0.01))
    large = torch.nn.Parameter(torch.full((4, 4), 1.0))
    opt = ScaledAdam([small, large], lr=0.05)
    small.grad = torch.ones(4, 4)
    large.grad = torch.ones(4, 4)
    opt.step()
    ds, dl = (0.01 - small.detach()).mean(), (1.0 - large.detach()).mean()
    assert float(dl / ds) == pytest.approx(100.0, rel=1e-4)
    assert float(ds) == pytest.approx(0.05 * 0.1 * 0.01, rel=1e-4)  # lr·(1-b1)·rms
    # param_min_rms bounds the step of a (near) zero tensor
    z = torch.nn.Parameter(torch.zeros(3, 3))
    opt = ScaledAdam([z], lr=0.05, param_min_rms=1e-3)
    z.grad = torch.ones(3, 3)
    opt.step()
    assert torch.allclose(z.detach(), torch.full((3, 3), -0.05 * 0.1 * 1e-3))


def _norm_of(opt, params):
    """ScaledAdam's clipping norm: sqrt(Σ rms²·‖g‖²) over the (non-scalar) parameters."""
    return math.sqrt(sum(float(opt.state[p]["param_rms"]) ** 2 * float(p.grad.pow(2).sum()) for p in params))


def test_scaled_adam_clipping_triggers_and_scales_by_threshold_over_norm(caplog):
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(3, 4))
    b = torch.nn.Parameter(torch.randn(5))
    opt = ScaledAdam([("enc.a", a), ("dec.b", b)], lr=0.02, clipping_scale=1.5, size_update_period=4)
    norms = []
    for t in range(11):  # steps 0..10; the threshold is first set at step 10
        a.grad = torch.randn(3, 4) * (1 + 0.1 * t)
        b.grad = torch.randn(5)
        if t:
            norms.append(_norm_of(opt, [a, b]))
        else:
            opt.step()  # the state (param_rms) exists only after the first step
            norms.append(opt.clip_state["norms"][0])
            assert opt.clip_state["threshold"] is None and opt.clip_state["last_scale"] == 1.0
            continue
        opt.step()
        assert opt.clip_state["norms"][-1] == pytest.approx(norms[-1], rel=1e-5)
        if t < 10:
            assert opt.clip_state["threshold"] is None and opt.clip_state["last_scale"] == 1.0
    # step 10 is an early estimate: threshold = 2 · clipping_scale · median of the 11 norms so far
    threshold = 2 * 1.5 * sorted(norms)[len(norms) // 2]
    assert opt.clip_state["threshold"] == pytest.approx(threshold, rel=1e-6)
    assert opt.clip_state["total_clipped"] == 0

    # step 11: a gradient 50x too large on "enc.a" is scaled by threshold / norm
    a.grad = torch.randn(3, 4) * 50
    b.grad = torch.randn(5)
    norm = _norm_of(opt, [a, b])
    expected = threshold / norm
    assert expected < 0.1
    twin = copy.deepcopy(opt)  # the same optimiser, fed the pre-scaled gradients, without clipping
    ta, tb = (p for group in twin.param_groups for p in group["params"])
    ta.grad, tb.grad = a.grad * expected, b.grad * expected
    twin.clipping_scale = None
    with caplog.at_level(logging.WARNING, logger="asr_kd.training.optim"):
        opt.step()
    twin.step()
    assert opt.clip_state["last_scale"] == pytest.approx(expected, rel=1e-5)
    assert opt.clip_state["total_clipped"] == 1 and opt.clip_state["dominant"] == "enc.a"
    assert "enc.a" in caplog.text and "scaling gradients" in caplog.text
    torch.testing.assert_close(a.detach(), ta.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.detach(), tb.detach(), rtol=1e-5, atol=1e-7)

    # the refresh at step 20 reports how often it clipped since step 10 (1 of 10 steps)
    with caplog.at_level(logging.INFO, logger="asr_kd.training.optim"):
        for _ in range(12, 21):
            a.grad, b.grad = torch.randn(3, 4), torch.randn(5)
            opt.step()
    assert "clipped 10.0% of 10 steps" in caplog.text and "dominated by enc.a" in caplog.text


def test_scaled_adam_nonfinite_norm_zeroes_the_step():
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = ScaledAdam([p], lr=0.1, clipping_scale=2.0)
    p.grad = torch.full((2, 2), float("nan"))
    opt.step()
    assert torch.equal(p.detach(), torch.ones(2, 2)) and opt.clip_state["last_scale"] == 0.0


def _train_steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 8, generator=g)
        loss = model(x).pow(2).mean() + model[0].weight.sum() * 0.0
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_scaled_adam_state_dict_is_plain_and_resumes_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    model.register_parameter("gain", torch.nn.Parameter(torch.tensor(1.0)))
    cfg = {"name": "scaled_adam", "lr": 0.05, "clipping_scale": 1.0, "clipping_update_period": 8}
    opt = build_optimizer(model.named_parameters(), cfg)
    _train_steps(model, opt, 25, seed=1)  # past the first threshold refreshes (10, 20) and period 8
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    assert ck["opt"]["param_groups"][0]["param_names"] == ["gain", "0.weight", "0.bias", "2.weight", "2.bias"]
    model2 = copy.deepcopy(model)
    model2.load_state_dict(ck["model"])
    opt2 = build_optimizer(model2.named_parameters(), cfg)
    opt2.load_state_dict(ck["opt"])
    assert opt2.clip_state == opt.clip_state
    _train_steps(model, opt, 10, seed=2)
    _train_steps(model2, opt2, 10, seed=2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt2.clip_state == opt.clip_state


def test_scaled_adam_trains_and_accepts_named_groups():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 3)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    groups = [
        {"named_params": list(model[0].named_parameters(prefix="0"))},
        {"named_params": list(model[2].named_parameters(prefix="2")), "lr": 0.01},
    ]
    opt = build_optimizer(groups, {"name": "scaled_adam", "lr": 0.03})
    assert isinstance(opt, ScaledAdam) and opt.clipping_scale == 2.0  # icefall's recipe value
    assert [g["param_names"] for g in opt.param_groups] == [["0.weight", "0.bias"], ["2.weight", "2.bias"]]
    assert opt.param_groups[1]["lr"] == 0.01
    sched = build_scheduler(opt, {"name": "eden", "lr_batches": 100, "lr_epochs": 2, "warmup_batches": 10})
    first = None
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    assert loss.item() < 0.2 * first
    # DDP's "module." prefix is dropped from the names; plain optimisers still take named parameters
    wrapped = torch.nn.Sequential()
    wrapped.add_module("module", model)
    opt = build_optimizer(wrapped.named_parameters(), {"name": "scaled_adam"})
    assert opt.param_groups[0]["param_names"][0] == "0.weight"
    adam = build_optimizer(model.named_parameters(), {"name": "adamw"})
    assert "param_names" not in adam.param_groups[0] and len(adam.param_groups) == 2
