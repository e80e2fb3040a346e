"""asr_kd.ops.frame_kd: the native fused frame-level KD loss against the PyTorch reference.

Values and student gradients of ``backend="native"`` vs ``backend="torch"`` over every teacher
type, loss type and reduction, in float32 and float64; edge cases (T = 1, all frames masked,
V = 5000, top-k with k = V and small k); gradcheck; a hand-computed value; teacher never gets a
gradient; input validation; blank handling; CUDA (skipped without a GPU).
"""

from __future__ import annotations

import math

import pytest
import torch

from asr_kd.ops import frame_kd as fk
from asr_kd.ops import (
    frame_kd_loss,
    frame_kd_loss_reference,
    get_backend,
    native_available,
    native_with_cuda,
    set_backend,
)

needs_native = pytest.mark.skipif(not native_available(), reason="asr_kd._C is not built")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and native_available() and native_with_cuda()),
    reason="needs a CUDA device and asr_kd._C built with CUDA",
)

TOL = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}


def make_inputs(N, T, V, dtype, teacher_type, k=None, seed=0, mask_p=0.3, scale=3.0):
    """Random student logits (leaf, requires grad), teacher in the requested form, and weights.

    Returns:
        student (N, T, V), teacher ((N, T, V) or ((N, T, k), (N, T, k))), weights (N, T) with
        about ``mask_p`` zeros and the rest in [0.5, 1.5].
    """
    g = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(N, T, V, generator=g, dtype=dtype)).requires_grad_()
    t_logits = scale * torch.randn(N, T, V, generator=g, dtype=dtype)
    if teacher_type == "logits":
        teacher = t_logits
    elif teacher_type == "log_probs":
        teacher = t_logits.log_softmax(-1)
    else:
        values, indices = t_logits.log_softmax(-1).topk(k or V, dim=-1)
        teacher = (values, indices)
    keep = torch.rand(N, T, generator=g) >= mask_p
    weights = torch.where(keep, 0.5 + torch.rand(N, T, generator=g), 0.0).to(dtype)
    return student, teacher, weights


def loss_and_grad(student, teacher, backend, upstream=None, **kw):
    """Loss and d(objective)/d(student); the objective is loss.sum() or (loss * upstream).sum()."""
    loss = frame_kd_loss(student, teacher, backend=backend, **kw)
    obj = loss.sum() if upstream is None else (loss * upstream).sum()
    (grad,) = torch.autograd.grad(obj, student)
    return loss.detach(), grad


def test_native_extension_is_built():
    # scripts/install.sh always builds asr_kd._C; a silently missing build would skip half this file
    import os

    if os.environ.get("ASR_KD_REQUIRE_NATIVE", "1") == "0":
        pytest.skip("ASR_KD_REQUIRE_NATIVE=0")
    assert native_available(), "asr_kd._C is not importable: pip install --no-build-isolation -e ."
    assert hasattr(torch.ops.asr_kd, "frame_kd_forward") and hasattr(torch.ops.asr_kd, "frame_kd_backward")


# ----------------------------------------------------------------------------- hand-computed


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_hand_computed_values(backend):
    # frame 0: p_s = [1/2, 1/2], p_t = [3/4, 1/4]
    #   KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.30409883 - 0.17328680 = 0.13081204
    #   CE = ln 2 = 0.69314718;  dKL/dz_s = p_s - p_t = [-1/4, 1/4]
    # frame 1: p_s = [3/4, 1/4], p_t = [1/2, 1/2]
    #   KL = 1/2 ln(2/3) + 1/2 ln 2 = -0.20273255 + 0.34657359 = 0.14384104
    # weights [1, 0.5]: mean = (0.13081204 + 0.5 * 0.14384104) / 1.5 = 0.13515504
    ln3 = math.log(3.0)
    student = torch.tensor([[[0.0, 0.0], [ln3, 0.0]]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[[ln3, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.5]], dtype=torch.float64)

    per_frame = frame_kd_loss(student, teacher, weights=w, reduction="none", backend=backend)
    torch.testing.assert_close(
        per_frame, torch.tensor([[0.1308120360, 0.5 * 0.1438410362]], dtype=torch.float64), rtol=0, atol=1e-9
    )
    mean = frame_kd_loss(student, teacher, weights=w, reduction="mean", backend=backend)
    assert abs(mean.item() - 0.1351550361) < 1e-9
    ce = frame_kd_loss(student[:, :1], teacher[:, :1], loss_type="ce", reduction="sum", backend=backend)
    assert abs(ce.item() - 0.6931471806) < 1e-9

    (g,) = torch.autograd.grad(frame_kd_loss(student[:, :1], teacher[:, :1], reduction="sum", backend=backend), student)
    torch.testing.assert_close(g[0, 0], torch.tensor([-0.25, 0.25], dtype=torch.float64))
    assert torch.all(g[0, 1] == 0)

    # tau = 2 with Hinton scaling: teacher [2 ln 3, 0] / 2 gives p_t = [3/4, 1/4] again,
    # loss = 4 * 0.13081204 = 0.52324814, gradient = tau * (p_s - p_t) = [-0.5, 0.5].
    s2 = torch.zeros(1, 1, 2, dtype=torch.float64, requires_grad=True)
    t2 = torch.tensor([[[2 * ln3, 0.0]]], dtype=torch.float64)
    loss = frame_kd_loss(s2, t2, temperature=2.0, reduction="sum", backend=backend)
    assert abs(loss.item() - 0.5232481440) < 1e-9
    loss.backward()
    torch.testing.assert_close(s2.grad[0, 0], torch.tensor([-0.5, 0.5], dtype=torch.float64))
    # without the scaling: loss / tau^2, gradient / tau^2
    loss = frame_kd_loss(s2, t2, temperature=2.0, reduction="sum", scale_by_t2=False, backend=backend)
    assert abs(loss.item() - 0.1308120360) < 1e-9


# ----------------------------------------------------------------------------- native vs reference


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("teacher_type", ["logits", "log_probs", "topk"])
@pytest.mark.parametrize("loss_type", ["kl", "ce"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
def test_native_matches_reference(dtype, teacher_type, loss_type, reduction):
    N, T, V = 3, 11, 37  # V not a multiple of the CPU tile or of a vector width
    student, teacher, w = make_inputs(N, T, V, dtype, teacher_type, k=7, seed=1)
    upstream = torch.rand(N, T, dtype=dtype) if reduction == "none" else None
    kw = dict(teacher_type=teacher_type, temperature=1.7, weights=w, reduction=reduction, loss_type=loss_type)
    l_nat, g_nat = loss_and_grad(student, teacher, "native", upstream, **kw)
    l_ref, g_ref = loss_and_grad(student, teacher, "torch", upstream, **kw)
    assert l_nat.shape == ((N, T) if reduction == "none" else ())
    torch.testing.assert_close(l_nat, l_ref, **TOL[dtype])
    torch.testing.assert_close(g_nat, g_ref, **TOL[dtype])


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale_by_t2", [True, False])
@pytest.mark.parametrize("shape", [(2, 1, 5), (1, 1, 1), (4, 9, 64), (2, 5, 129)])
def test_native_matches_reference_shapes(dtype, scale_by_t2, shape):
    for teacher_type in ("logits", "topk"):
        student, teacher, w = make_inputs(*shape, dtype, teacher_type, k=max(1, shape[2] // 3), seed=2)
        kw = dict(teacher_type=teacher_type, temperature=0.6, weights=w, reduction="sum", scale_by_t2=scale_by_t2)
        l_nat, g_nat = loss_and_grad(student, teacher, "native", **kw)
        l_ref, g_ref = loss_and_grad(student, teacher, "torch", **kw)
        torch.testing.assert_close(l_nat, l_ref, **TOL[dtype])
        torch.testing.assert_close(g_nat, g_ref, **TOL[dtype])


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_frame_T1(dtype):
    student, teacher, _ = make_inputs(3, 1, 10, dtype, "logits", seed=3)
    for reduction in ("none", "mean", "batchmean"):
        l_nat, g_nat = loss_and_grad(student, teacher, "native", reduction=reduction, temperature=3.0)
        l_ref, g_ref = loss_and_grad(student, teacher, "torch", reduction=reduction, temperature=3.0)
        torch.testing.assert_close(l_nat, l_ref, **TOL[dtype])
        torch.testing.assert_close(g_nat, g_ref, **TOL[dtype])


@needs_native
def test_native_deterministic_across_threads():
    # frames are independent units of work: the thread count must not change a single bit
    student, teacher, w = make_inputs(4, 50, 300, torch.float32, "logits", seed=16)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        l1, g1 = loss_and_grad(student, teacher, "native", weights=w, reduction="none")
        torch.set_num_threads(max(2, old))
        l2, g2 = loss_and_grad(student, teacher, "native", weights=w, reduction="none")
    finally:
        torch.set_num_threads(old)
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_bool_mask_is_weights(backend):
    student, teacher, _ = make_inputs(2, 6, 10, torch.float64, "logits", seed=17)
    mask = torch.rand(2, 6, generator=torch.Generator().manual_seed(0)) > 0.4
    a = frame_kd_loss(student, teacher, weights=mask, backend=backend)
    b = frame_kd_loss(student, teacher, weights=mask.double(), backend=backend)
    torch.testing.assert_close(a, b)
    expected = frame_kd_loss(student, teacher, reduction="none", backend=backend)[mask].mean()
    torch.testing.assert_close(a, expected)


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
@pytest.mark.parametrize("teacher_type", ["logits", "topk"])
def test_all_frames_masked(backend, teacher_type):
    student, teacher, _ = make_inputs(2, 4, 6, torch.float32, teacher_type, k=3, seed=4)
    w = torch.zeros(2, 4)
    for reduction in ("none", "sum", "mean", "batchmean"):
        loss, grad = loss_and_grad(student, teacher, backend, teacher_type=teacher_type, weights=w, reduction=reduction)
        assert torch.all(loss == 0) and not torch.isnan(loss).any()
        assert torch.all(grad == 0) and not torch.isnan(grad).any()


@needs_native
def test_masked_frames_ignore_garbage():
    # padded frames may hold anything: the native kernel never reads frames of weight 0
    student, teacher, _ = make_inputs(2, 5, 8, torch.float32, "logits", seed=5)
    w = torch.ones(2, 5)
    w[1, 3:] = 0
    bad_s = student.detach().clone()
    bad_s[1, 3:] = float("nan")
    bad_s.requires_grad_()
    bad_t = teacher.clone()
    bad_t[1, 3:] = float("inf")
    loss, grad = loss_and_grad(bad_s, bad_t, "native", weights=w)
    ref, g_ref = loss_and_grad(student, teacher, "torch", weights=w)
    torch.testing.assert_close(loss, ref, **TOL[torch.float32])
    torch.testing.assert_close(grad, g_ref, **TOL[torch.float32])


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_vocab(dtype):
    student, teacher, w = make_inputs(2, 3, 5000, dtype, "logits", seed=6, scale=5.0)
    kw = dict(weights=w, temperature=2.0)
    l_nat, g_nat = loss_and_grad(student, teacher, "native", **kw)
    l_ref, g_ref = loss_and_grad(student, teacher, "torch", **kw)
    torch.testing.assert_close(l_nat, l_ref, **TOL[dtype])
    torch.testing.assert_close(g_nat, g_ref, **TOL[dtype])
    values, indices = teacher.log_softmax(-1).topk(100, dim=-1)
    kw["teacher_type"] = "topk"
    l_nat, g_nat = loss_and_grad(student, (values, indices), "native", **kw)
    l_ref, g_ref = loss_and_grad(student, (values, indices), "torch", **kw)
    torch.testing.assert_close(l_nat, l_ref, **TOL[dtype])
    torch.testing.assert_close(g_nat, g_ref, **TOL[dtype])


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_with_k_equal_V_is_dense(backend, dtype):
    student, teacher, w = make_inputs(2, 6, 19, dtype, "logits", seed=7)
    values, indices = teacher.log_softmax(-1).topk(19, dim=-1)
    perm = torch.randperm(19)  # order of the kept entries must not matter
    values, indices = values[..., perm], indices[..., perm]
    for loss_type in ("kl", "ce"):
        kw = dict(weights=w, temperature=1.3, loss_type=loss_type, reduction="none")
        l_dense, g_dense = loss_and_grad(student, teacher, backend, **kw)
        l_topk, g_topk = loss_and_grad(student, (values, indices), backend, teacher_type="topk", **kw)
        torch.testing.assert_close(l_topk, l_dense, **TOL[dtype])
        torch.testing.assert_close(g_topk, g_dense, **TOL[dtype])


def test_topk_small_k_renormalises():
    # k = 1: p_t is a one-hot on the kept token, so KL = CE = -log p_s(token) (times tau^2)
    student, teacher, _ = make_inputs(2, 3, 9, torch.float64, "topk", k=1, seed=8)
    for backend in ["torch"] + (["native"] if native_available() else []):
        loss = frame_kd_loss(student, teacher, teacher_type="topk", reduction="none", temperature=2.0, backend=backend)
        expected = -4.0 * (student / 2.0).log_softmax(-1).gather(-1, teacher[1]).squeeze(-1)
        torch.testing.assert_close(loss, expected.detach(), **TOL[torch.float64])


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_topk_small_k_native_vs_reference(dtype, k):
    student, teacher, w = make_inputs(3, 4, 70, dtype, "topk", k=k, seed=9)
    for loss_type in ("kl", "ce"):
        kw = dict(teacher_type="topk", weights=w, temperature=0.8, loss_type=loss_type)
        l_nat, g_nat = loss_and_grad(student, teacher, "native", **kw)
        l_ref, g_ref = loss_and_grad(student, teacher, "torch", **kw)
        torch.testing.assert_close(l_nat, l_ref, **TOL[dtype])
        torch.testing.assert_close(g_nat, g_ref, **TOL[dtype])


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_properties(backend):
    student, teacher, w = make_inputs(2, 5, 12, torch.float64, "logits", seed=10)
    kw = dict(weights=w, reduction="none", temperature=1.5, backend=backend)
    kl = frame_kd_loss(student, teacher, **kw)
    # logits and log-probs of the same teacher are the same target
    torch.testing.assert_close(kl, frame_kd_loss(student, teacher.log_softmax(-1), teacher_type="log_probs", **kw))
    # CE - KL = tau^2 * w * H(p_t)
    ce = frame_kd_loss(student, teacher, loss_type="ce", **kw)
    log_pt = (teacher / 1.5).log_softmax(-1)
    entropy = -(log_pt.exp() * log_pt).sum(-1)
    torch.testing.assert_close(ce - kl, 1.5**2 * w * entropy)
    # KL >= 0, = 0 when the student equals the teacher; shift invariance of logits
    assert torch.all(kl >= -1e-12)
    same = frame_kd_loss(teacher.clone().requires_grad_(), teacher, **kw)
    torch.testing.assert_close(same, torch.zeros_like(same), atol=1e-12, rtol=0)
    torch.testing.assert_close(frame_kd_loss(student + 1000.0, teacher - 500.0, **kw), kl, rtol=1e-9, atol=1e-9)


@needs_native
@pytest.mark.parametrize("teacher_type", ["logits", "log_probs", "topk"])
@pytest.mark.parametrize("loss_type", ["kl", "ce"])
def test_gradcheck_native(teacher_type, loss_type):
    student, teacher, w = make_inputs(2, 3, 5, torch.float64, teacher_type, k=3, seed=11, mask_p=0.2)

    def f(s):
        return frame_kd_loss(
            s,
            teacher,
            teacher_type=teacher_type,
            weights=w,
            temperature=1.4,
            loss_type=loss_type,
            reduction="none",
            backend="native",
        )

    assert torch.autograd.gradcheck(f, (student,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
@pytest.mark.parametrize("teacher_type", ["logits", "log_probs", "topk"])
def test_no_grad_reaches_teacher(backend, teacher_type):
    student, teacher, w = make_inputs(2, 3, 8, torch.float32, teacher_type, k=4, seed=12)
    if teacher_type == "topk":
        values = teacher[0].clone().requires_grad_()
        teacher_in = (values, teacher[1])
    else:
        values = teacher.clone().requires_grad_()
        teacher_in = values
    loss = frame_kd_loss(student, teacher_in, teacher_type=teacher_type, weights=w, backend=backend)
    loss.backward()
    assert values.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_validation_errors(backend):
    student, teacher, _ = make_inputs(2, 3, 8, torch.float32, "logits")
    values, indices = teacher.log_softmax(-1).topk(4, dim=-1)
    call = lambda *a, **k: frame_kd_loss(*a, backend=backend, **k)  # noqa: E731
    with pytest.raises(ValueError, match="teacher shape"):
        call(student, teacher[:, :2])
    with pytest.raises(ValueError, match="k <= V"):
        call(student, (torch.zeros(2, 3, 9), torch.zeros(2, 3, 9, dtype=torch.long)), teacher_type="topk")
    with pytest.raises(ValueError, match="indices shape"):
        call(student, (values, indices[..., :2]), teacher_type="topk")
    with pytest.raises(TypeError, match="int64"):
        call(student, (values, indices.int()), teacher_type="topk")
    with pytest.raises(TypeError, match="topk"):
        call(student, teacher, teacher_type="topk")
    for tau in (-1.0, 0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            call(student, teacher, temperature=tau)
    with pytest.raises(ValueError, match="reduction"):
        call(student, teacher, reduction="avg")
    with pytest.raises(ValueError, match="loss_type"):
        call(student, teacher, loss_type="js")
    with pytest.raises(ValueError, match="teacher_type"):
        call(student, teacher, teacher_type="probs")
    with pytest.raises(ValueError, match="weights"):
        call(student, teacher, weights=torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"\(N, T, V\)"):
        call(student[0], teacher[0])
    with pytest.raises(ValueError, match="blank"):
        call(student, teacher, blank_id=0)
    with pytest.raises(ValueError, match="backend"):
        frame_kd_loss(student, teacher, backend="cuda")


@needs_native
def test_native_rejects_out_of_range_indices():
    student, teacher, _ = make_inputs(2, 3, 8, torch.float32, "logits")
    values, indices = teacher.log_softmax(-1).topk(4, dim=-1)
    indices = indices.clone()
    indices[1, 2, 0] = 8
    with pytest.raises(RuntimeError, match="out of range"):
        frame_kd_loss(student, (values, indices), teacher_type="topk", backend="native")


@needs_native
def test_raw_op_checks_and_meta():
    s = torch.randn(2, 3, 8)
    w = torch.ones(2, 3)
    with pytest.raises(RuntimeError, match="temperature"):
        torch.ops.asr_kd.frame_kd_forward(s, s, None, w, -1.0, True, True)
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.asr_kd.frame_kd_forward(s, s.double(), None, w, 1.0, True, True)
    m = torch.empty(2, 3, 8, device="meta")
    loss, ls, lt = torch.ops.asr_kd.frame_kd_forward(m, m, None, torch.empty(2, 3, device="meta"), 1.0, True, True)
    assert loss.shape == ls.shape == lt.shape == (2, 3) and loss.device.type == "meta"


# ----------------------------------------------------------------------------- blank handling


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
@pytest.mark.parametrize("teacher_type", ["logits", "log_probs", "topk"])
def test_blank_handling(backend, teacher_type):
    N, T, V, blank = 2, 8, 6, 0
    g = torch.Generator().manual_seed(13)
    t_logits = torch.randn(N, T, V, generator=g, dtype=torch.float64)
    t_logits[:, ::2, blank] += 6.0  # even frames: the teacher is sure of blank
    student = torch.randn(N, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    p_blank = t_logits.softmax(-1)[..., blank]
    if teacher_type == "logits":
        teacher = t_logits
    elif teacher_type == "log_probs":
        teacher = t_logits.log_softmax(-1)
    else:
        teacher = t_logits.log_softmax(-1).topk(V, dim=-1)
    w = torch.rand(N, T, generator=g, dtype=torch.float64)
    kw = dict(teacher_type=teacher_type, reduction="none", temperature=2.0, backend=backend)
    for blank_weight in (0.0, 0.25):
        got = frame_kd_loss(
            student, teacher, weights=w, blank_id=blank, blank_threshold=0.9, blank_weight=blank_weight, **kw
        )
        w_exp = w * torch.where(p_blank > 0.9, blank_weight, 1.0)
        assert 0 < (p_blank > 0.9).sum() < N * T  # the test really exercises the rule
        torch.testing.assert_close(got, frame_kd_loss(student, teacher, weights=w_exp, **kw))


def test_blank_not_in_topk_counts_as_zero():
    student = torch.zeros(1, 2, 4, dtype=torch.float64)
    values = torch.log(torch.tensor([[[0.95, 0.05], [0.6, 0.4]]], dtype=torch.float64))
    indices = torch.tensor([[[0, 1], [2, 3]]])
    loss = frame_kd_loss_reference(
        student, (values, indices), teacher_type="topk", reduction="none", blank_id=0, blank_threshold=0.5
    )
    assert loss[0, 0] == 0 and loss[0, 1] > 0


# ----------------------------------------------------------------------------- backend switch


@needs_native
def test_set_backend_forces_reference(monkeypatch):
    student, teacher, _ = make_inputs(2, 3, 8, torch.float32, "logits")

    def boom(*args, **kwargs):
        raise AssertionError("native path used")

    monkeypatch.setattr(fk._FrameKDNative, "apply", boom)
    with pytest.raises(AssertionError, match="native path"):
        frame_kd_loss(student, teacher)  # auto -> native
    old = get_backend()
    try:
        set_backend("torch")
        frame_kd_loss(student, teacher)
        frame_kd_loss(student, teacher, backend="native")
    finally:
        set_backend(old)
    with pytest.raises(ValueError):
        set_backend("gpu")


def test_auto_falls_back_for_unsupported_dtype():
    student, teacher, _ = make_inputs(1, 2, 5, torch.float64, "logits")
    s16 = student.detach().to(torch.bfloat16).requires_grad_()
    loss = frame_kd_loss(s16, teacher)  # bfloat16: no native kernel, reference used
    assert loss.dtype == torch.bfloat16
    if native_available():
        with pytest.raises(RuntimeError, match="no native kernel"):
            frame_kd_loss(s16, teacher, backend="native")


def test_env_switch(monkeypatch):
    import importlib

    try:
        monkeypatch.setenv("ASR_KD_NATIVE", "0")
        assert importlib.reload(fk).get_backend() == "torch"
        monkeypatch.setenv("ASR_KD_NATIVE", "1")
        assert importlib.reload(fk).get_backend() == "auto"
    finally:
        monkeypatch.undo()
        importlib.reload(fk)


# ----------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("teacher_type", ["logits", "log_probs", "topk"])
@pytest.mark.parametrize("V", [37, 3000])  # warp-per-frame and block-per-frame kernels
def test_cuda_matches_reference(dtype, teacher_type, V):
    student, teacher, w = make_inputs(3, 17, V, dtype, teacher_type, k=min(V, 50), seed=14)
    for loss_type in ("kl", "ce"):
        kw = dict(teacher_type=teacher_type, weights=w, temperature=1.9, loss_type=loss_type, reduction="none")
        upstream = torch.rand(3, 17, dtype=dtype)
        l_ref, g_ref = loss_and_grad(student, teacher, "torch", upstream, **kw)
        s_cuda = student.detach().cuda().requires_grad_()
        t_cuda = tuple(x.cuda() for x in teacher) if teacher_type == "topk" else teacher.cuda()
        kw["weights"] = w.cuda()
        l_cu, g_cu = loss_and_grad(s_cuda, t_cuda, "native", upstream.cuda(), **kw)
        torch.testing.assert_close(l_cu.cpu(), l_ref, **TOL[dtype])
        torch.testing.assert_close(g_cu.cpu(), g_ref, **TOL[dtype])


@needs_cuda
@pytest.mark.gpu
def test_cuda_gradcheck_and_masked():
    student, teacher, w = make_inputs(2, 3, 5, torch.float64, "topk", k=3, seed=15)
    s = student.detach().cuda().requires_grad_()
    t = tuple(x.cuda() for x in teacher)
    f = lambda x: frame_kd_loss(x, t, teacher_type="topk", weights=w.cuda(), reduction="none", backend="native")  # noqa: E731
    assert torch.autograd.gradcheck(f, (s,), eps=1e-6, atol=1e-8)
    loss, grad = loss_and_grad(
        s, t, "native", teacher_type="topk", weights=torch.zeros(2, 3, dtype=torch.float64, device="cuda")
    )
    assert loss.item() == 0 and torch.all(grad == 0)
