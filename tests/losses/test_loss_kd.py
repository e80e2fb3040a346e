"""asr_kd.losses.kd: KD losses against hand / independently computed values.

frame_kd vs ``ops.frame_kd_loss_reference`` with explicit weights (dense, top-k, blank masking);
n-best weights; sequence-level CTC KD vs per-hypothesis ``F.ctc_loss`` one by one; feature
distances, attention-map KL and MiniLM relation KL vs hand / einsum computations; gradcheck in
float64; no teacher gradient; padding garbage (NaN included) changes neither values nor gradients;
reductions sum / mean / none consistent.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from asr_kd.losses import kd
from asr_kd.losses.kd import (
    attention_map_kl,
    attention_relation_kl,
    feature_distance,
    frame_kd,
    nbest_weights,
    sequence_kd_ctc,
)
from asr_kd.ops import frame_kd_loss_reference

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=F64, requires_grad=False):
    x = torch.randn(*shape, generator=gen(seed), dtype=dtype)
    return x.requires_grad_(requires_grad)


def kl_np(p, q):
    """KL(p || q) of two python lists of probabilities."""
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def softmax_list(x, tau=1.0):
    m = max(x)
    e = [math.exp((v - m) / tau) for v in x]
    s = sum(e)
    return [v / s for v in e]


def check_reductions(fn, count):
    """sum == none.sum(), mean == sum / count."""
    total = fn("sum")
    per = fn("none")
    mean = fn("mean")
    torch.testing.assert_close(total, per.sum())
    expected = total / count if count else torch.zeros_like(total)
    torch.testing.assert_close(mean, expected)
    return per


# ============================================================================ frame_kd


def test_frame_kd_hand_computed():
    zs = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]  # student logits, 2 frames, V = 3
    zt = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]
    student = torch.tensor([zs], dtype=F64, requires_grad=True)
    teacher = torch.tensor([zt], dtype=F64)
    per_frame = [kl_np(softmax_list(t), softmax_list(s)) for s, t in zip(zs, zt)]
    for backend in ("torch", "auto"):
        out = frame_kd(student, teacher, backend=backend)
        assert out.item() == pytest.approx(sum(per_frame), rel=1e-12)
        # lens = 1: only the first frame counts.
        out = frame_kd(student, teacher, torch.tensor([1]), backend=backend, reduction="none")
        assert out.tolist()[0] == pytest.approx([per_frame[0], 0.0], rel=1e-12, abs=1e-15)
    # temperature 2 with the tau^2 scaling
    tau = 2.0
    expected = tau**2 * sum(kl_np(softmax_list(t, tau), softmax_list(s, tau)) for s, t in zip(zs, zt))
    assert frame_kd(student, teacher, temperature=tau).item() == pytest.approx(expected, rel=1e-12)
    # CE = KL + H(p_t)
    ent = sum(-sum(p * math.log(p) for p in softmax_list(t)) for t in zt)
    ce = frame_kd(student, teacher, loss_type="ce")
    assert ce.item() == pytest.approx(sum(per_frame) + ent, rel=1e-12)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("teacher_type", ["logits", "log_probs"])
def test_frame_kd_lens_and_mask_match_reference(backend, teacher_type):
    N, T, V = 3, 5, 6
    student = randn(N, T, V, seed=1, requires_grad=True)
    teacher = randn(N, T, V, seed=2)
    if teacher_type == "log_probs":
        teacher = teacher.log_softmax(-1)
    lens = torch.tensor([5, 3, 1])
    mask = torch.rand(N, T, generator=gen(3)) > 0.3
    w = (torch.arange(T)[None] < lens[:, None]).to(F64) * mask.to(F64)
    for red in ("sum", "mean", "none"):
        out = frame_kd(
            student,
            teacher,
            lens,
            mask=mask,
            teacher_type=teacher_type,
            temperature=1.5,
            reduction=red,
            backend=backend,
        )
        ref = frame_kd_loss_reference(
            student, teacher, teacher_type=teacher_type, temperature=1.5, weights=w, reduction=red
        )
        torch.testing.assert_close(out, ref)
    # float mask = per-frame weights, multiplied
    fmask = torch.rand(N, T, generator=gen(4), dtype=F64)
    out = frame_kd(student, teacher, lens, mask=fmask, teacher_type=teacher_type, backend=backend)
    len_w = (torch.arange(T)[None] < lens[:, None]).to(F64)
    ref = frame_kd_loss_reference(student, teacher, teacher_type=teacher_type, weights=len_w * fmask, reduction="sum")
    torch.testing.assert_close(out, ref)
    # reductions: mean == sum / number of valid frames
    check_reductions(
        lambda r: frame_kd(student, teacher, lens, mask=mask, teacher_type=teacher_type, reduction=r, backend=backend),
        int(w.sum()),
    )


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_frame_kd_topk(backend):
    N, T, V, K = 2, 4, 7, 3
    student = randn(N, T, V, seed=5, requires_grad=True)
    t_logp = randn(N, T, V, seed=6).log_softmax(-1)
    values, indices = t_logp.topk(K, dim=-1)
    lens = torch.tensor([4, 2])
    w = (torch.arange(T)[None] < lens[:, None]).to(F64)
    out = frame_kd(student, (values, indices), lens, teacher_type="topk", temperature=2.0, backend=backend)
    ref = frame_kd_loss_reference(
        student, (values, indices), teacher_type="topk", temperature=2.0, weights=w, reduction="sum"
    )
    torch.testing.assert_close(out, ref)
    # hand check of one frame: teacher renormalised over the kept entries
    p_t = torch.softmax(values[0, 0], -1)
    log_ps = student[0, 0].detach().log_softmax(-1)[indices[0, 0]]
    one = (p_t * (p_t.log() - log_ps)).sum()
    per = frame_kd(student, (values, indices), lens, teacher_type="topk", reduction="none", backend=backend)
    torch.testing.assert_close(per[0, 0], one)
    # k = V equals the dense teacher
    vals, idx = t_logp.topk(V, dim=-1)
    dense = frame_kd(student, t_logp, lens, teacher_type="log_probs", backend=backend)
    topv = frame_kd(student, (vals, idx), lens, teacher_type="topk", backend=backend)
    torch.testing.assert_close(dense, topv)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_frame_kd_blank_masking_excludes_frames(backend):
    N, T, V = 2, 6, 4
    student = randn(N, T, V, seed=7, requires_grad=True)
    teacher = randn(N, T, V, seed=8)
    teacher[0, 1, 0] = 10.0  # blank-dominated frames
    teacher[1, 0, 0] = 10.0
    teacher[1, 4, 0] = 10.0  # beyond lens: excluded anyway
    lens = torch.tensor([6, 4])
    p_blank = teacher.softmax(-1)[..., 0]
    keep = (p_blank <= 0.9) & (torch.arange(T)[None] < lens[:, None])
    assert int(keep.sum()) == 10 - 2
    out = frame_kd(student, teacher, lens, blank_id=0, blank_threshold=0.9, backend=backend)
    ref = frame_kd(student, teacher, mask=keep, backend=backend)
    torch.testing.assert_close(out, ref)
    per = frame_kd(student, teacher, lens, blank_id=0, blank_threshold=0.9, reduction="none", backend=backend)
    assert per[0, 1] == 0 and per[1, 0] == 0 and (per[keep] > 0).all()
    # "mean" counts only the kept frames
    mean = frame_kd(student, teacher, lens, blank_id=0, blank_threshold=0.9, reduction="mean", backend=backend)
    torch.testing.assert_close(mean, out / keep.sum())
    # blank_weight scales instead of excluding
    half = frame_kd(
        student, teacher, lens, blank_id=0, blank_threshold=0.9, blank_weight=0.5, reduction="none", backend=backend
    )
    full = frame_kd(student, teacher, lens, reduction="none", backend=backend)
    torch.testing.assert_close(half[0, 1], 0.5 * full[0, 1])


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_frame_kd_padding_garbage_and_teacher_grad(backend):
    N, T, V = 2, 5, 4
    student = randn(N, T, V, seed=9)
    teacher = randn(N, T, V, seed=10, requires_grad=True)
    lens = torch.tensor([5, 2])
    garbage = student.clone()
    garbage[1, 2:] = 1e4 * randn(3, V, seed=11)
    tgarbage = teacher.detach().clone()
    tgarbage[1, 2:] = -1e4
    grads = []
    for s, t in ((student, teacher), (garbage, tgarbage)):
        s = s.clone().requires_grad_(True)
        loss = frame_kd(s, t, lens, temperature=2.0, backend=backend)
        loss.backward()
        grads.append((loss.detach(), s.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert (grads[1][1][1, 2:] == 0).all()
    assert teacher.grad is None or (teacher.grad == 0).all()


def test_frame_kd_masked_positions_mean():
    """Masked-position decoder KD: mask = masked positions, mean = / number of masks."""
    N, L, V = 2, 4, 5
    student = randn(N, L, V, seed=12, requires_grad=True)
    teacher = randn(N, L, V, seed=13)
    masked = torch.tensor([[True, False, True, False], [False, False, True, False]])
    per = frame_kd(student, teacher, reduction="none")
    mean = frame_kd(student, teacher, mask=masked, reduction="mean")
    torch.testing.assert_close(mean, per[masked].sum() / 3)


def test_frame_kd_time_mismatch_raises():
    student = randn(2, 10, 4)
    with pytest.raises(ValueError, match="teacher has 12 frames and the student 10"):
        frame_kd(student, randn(2, 12, 4))
    vals, idx = randn(2, 9, 4).topk(2, dim=-1)
    with pytest.raises(ValueError, match="teacher has 9 frames"):
        frame_kd(student, (vals, idx), teacher_type="topk")
    with pytest.raises(ValueError, match="batch size"):
        frame_kd(student, randn(3, 10, 4))
    with pytest.raises(ValueError, match="mask"):
        frame_kd(student, randn(2, 10, 4), mask=torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        frame_kd(student, randn(2, 10, 4), reduction="avg")


# ============================================================================ n-best weights


def test_nbest_weights():
    scores = [[-1.0, -2.0, -4.0], [], [-3.0], [-math.inf, -1.0]]
    w = nbest_weights(scores)
    assert [x.numel() for x in w] == [3, 0, 1, 2]
    expected = softmax_list(scores[0])
    assert w[0].tolist() == pytest.approx(expected, rel=1e-12)
    for x in (w[0], w[2], w[3]):
        assert x.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert w[3].tolist() == [0.0, 1.0]
    assert w[1].shape == (0,)
    # temperature: higher flattens towards uniform, lower sharpens towards the 1-best
    hot = nbest_weights([scores[0]], temperature=100.0)[0]
    cold = nbest_weights([scores[0]], temperature=0.01)[0]
    assert hot.tolist() == pytest.approx([1 / 3] * 3, abs=1e-2)
    assert cold.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-12)
    assert nbest_weights([scores[0]], temperature=2.0)[0].tolist() == pytest.approx(
        softmax_list(scores[0], 2.0), rel=1e-12
    )
    # tensors in, all -inf -> uniform, dtype
    w = nbest_weights([torch.tensor([-math.inf, -math.inf])], dtype=torch.float32)[0]
    assert w.dtype == torch.float32 and w.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        nbest_weights([[0.0]], temperature=0.0)
    with pytest.raises(ValueError):
        nbest_weights([[float("nan"), 0.0]])


# ============================================================================ sequence_kd_ctc


def ctc_one(log_probs_row, length, target, blank=0):
    """-log p_ctc(target | row[:length]) with F.ctc_loss on one utterance."""
    return F.ctc_loss(
        log_probs_row[:length, None, :],
        torch.tensor([target if target else [blank]], dtype=torch.int64),
        torch.tensor([length]),
        torch.tensor([len(target)]),
        blank=blank,
        reduction="sum",
    )


@pytest.fixture
def seq_batch():
    N, T, V = 3, 6, 4
    logits = randn(N, T, V, seed=20, requires_grad=True)
    lens = torch.tensor([6, 5, 4])
    nbest = [[[1, 2], [1, 2, 2], []], [[3]], [[2, 1], [1]]]
    scores = [[-1.0, -1.5, -4.0], [-0.3], [-2.0, -2.2]]
    return logits, lens, nbest, scores


def test_sequence_kd_ctc_one_best_equals_ctc(seq_batch):
    logits, lens, nbest, _ = seq_batch
    lp = logits.log_softmax(-1)
    one_best = [[h[0]] for h in nbest]
    per = sequence_kd_ctc(lp, lens, one_best, [[0.0]] * 3, reduction="none")
    targets = torch.tensor([[1, 2], [3, 0], [2, 1]])
    ref = F.ctc_loss(lp.transpose(0, 1), targets, lens, torch.tensor([2, 1, 2]), reduction="none")
    torch.testing.assert_close(per, ref)


@pytest.mark.parametrize("tau", [1.0, 0.5, 3.0])
def test_sequence_kd_ctc_weighted_sum_one_by_one(seq_batch, tau):
    logits, lens, nbest, scores = seq_batch
    lp = logits.log_softmax(-1)
    per = sequence_kd_ctc(lp, lens, nbest, scores, temperature=tau, reduction="none")
    weights = nbest_weights(scores, temperature=tau)
    for n in range(3):
        assert weights[n].sum().item() == pytest.approx(1.0, abs=1e-12)
        assert weights[n].tolist() == pytest.approx(softmax_list(scores[n], tau), rel=1e-12)
        expected = sum(w * ctc_one(lp[n], int(lens[n]), hyp) for w, hyp in zip(weights[n].tolist(), nbest[n]))
        torch.testing.assert_close(per[n], expected)
    check_reductions(lambda r: sequence_kd_ctc(lp, lens, nbest, scores, temperature=tau, reduction=r), 3)
    # gradient: one batched call == the sum of one-by-one calls
    (g_batched,) = torch.autograd.grad(per.sum(), logits)
    explicit = sum(
        w * ctc_one(logits[n].log_softmax(-1), int(lens[n]), hyp)
        for n in range(3)
        for w, hyp in zip(weights[n].tolist(), nbest[n])
    )
    (g_explicit,) = torch.autograd.grad(explicit, logits)
    torch.testing.assert_close(g_batched, g_explicit)


def test_sequence_kd_ctc_temperature_limits(seq_batch):
    logits, lens, nbest, scores = seq_batch
    lp = logits.log_softmax(-1).detach()
    hyp_losses = [torch.stack([ctc_one(lp[n], int(lens[n]), h) for h in nbest[n]]) for n in range(3)]
    cold = sequence_kd_ctc(lp, lens, nbest, scores, temperature=1e-3, reduction="none")
    hot = sequence_kd_ctc(lp, lens, nbest, scores, temperature=1e6, reduction="none")
    for n in range(3):
        torch.testing.assert_close(cold[n], hyp_losses[n][0])  # 1-best (highest score first)
        torch.testing.assert_close(hot[n], hyp_losses[n].mean(), rtol=1e-5, atol=1e-8)


def test_sequence_kd_ctc_gradcheck():
    N, T, V = 2, 4, 3
    logits = randn(N, T, V, seed=21, requires_grad=True)
    lens = torch.tensor([4, 3])
    nbest = [[[1, 2], [2], []], [[1], [2, 2]]]  # [2, 2] needs 3 frames: feasible with 3
    scores = [[-0.5, -1.0, -3.0], [-0.1, -0.7]]

    def fn(x):
        return sequence_kd_ctc(x.log_softmax(-1), lens, nbest, scores, temperature=1.3, reduction="none")

    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-7)


def test_sequence_kd_ctc_infeasible_and_empty(seq_batch, caplog):
    logits, lens, _, _ = seq_batch
    lp = logits.log_softmax(-1)
    # utterance 0: [1, 1, 1, 1] needs 7 frames > 6; utterance 1: empty n-best;
    # utterance 2: [1, 2, 3, 1, 2] needs 5 frames > 4.
    nbest = [[[1, 2], [1, 1, 1, 1]], [], [[1, 2, 3, 1, 2], [3]]]
    scores = [[-1.0, -0.5], [], [-0.2, -1.0]]
    with caplog.at_level(logging.WARNING, logger="asr_kd.losses.kd"):
        per, bad = sequence_kd_ctc(lp, lens, nbest, scores, reduction="none", return_num_infeasible=True)
    assert bad == 2
    assert "2 of 4 teacher hypotheses" in caplog.text
    assert torch.isfinite(per).all()
    w = nbest_weights(scores)
    torch.testing.assert_close(per[0], w[0][0] * ctc_one(lp[0], 6, [1, 2]))
    assert per[1].item() == 0.0
    torch.testing.assert_close(per[2], w[2][1] * ctc_one(lp[2], 4, [3]))
    per.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[1] == 0).all()
    # mean divides by the utterances with a non-empty n-best
    mean = sequence_kd_ctc(lp, lens, nbest, scores, reduction="mean")
    torch.testing.assert_close(mean, per.sum() / 2)
    # no hypotheses at all: zeros, still differentiable
    zero = sequence_kd_ctc(lp, lens, [[], [], []], [[], [], []])
    assert zero.item() == 0.0 and zero.requires_grad
    assert sequence_kd_ctc(lp, lens, [[], [], []], [[], [], []], reduction="mean").item() == 0.0


def test_sequence_kd_ctc_padding_garbage(seq_batch):
    logits, lens, nbest, scores = seq_batch
    garbage = logits.detach().clone()
    garbage[2, 4:] = 1e3 * randn(2, 4, seed=22)
    out = []
    for x in (logits.detach(), garbage):
        x = x.clone().requires_grad_(True)
        loss = sequence_kd_ctc(x.log_softmax(-1), lens, nbest, scores)
        loss.backward()
        out.append((loss.detach(), x.grad))
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])
    assert (out[1][1][2, 4:] == 0).all()


def test_sequence_kd_ctc_validation(seq_batch):
    logits, lens, nbest, scores = seq_batch
    lp = logits.log_softmax(-1)
    with pytest.raises(ValueError, match="blank"):
        sequence_kd_ctc(lp, lens, [[[0, 1]], [], []], [[0.0], [], []])
    with pytest.raises(ValueError, match="outside"):
        sequence_kd_ctc(lp, lens, [[[4]], [], []], [[0.0], [], []])
    with pytest.raises(ValueError, match="scores"):
        sequence_kd_ctc(lp, lens, [[[1], [2]], [], []], [[0.0], [], []])
    with pytest.raises(ValueError, match="one entry per utterance"):
        sequence_kd_ctc(lp, lens, nbest[:2], scores[:2])


# ============================================================================ feature_distance


def test_feature_distance_hand_computed():
    s = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [5.0, 5.0]]], dtype=F64)
    t = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [0.0, 0.0]]], dtype=F64)
    lens = torch.tensor([2])
    l1 = feature_distance(s, t, lens, kind="l1", reduction="none")
    assert l1.tolist() == [[1.5, 1.0, 0.0]]
    l2 = feature_distance(s, t, lens, kind="l2", reduction="none")
    assert l2.tolist() == [[2.5, 2.0, 0.0]]
    assert feature_distance(s, t, lens, kind="mse").item() == pytest.approx(4.5)
    cos = feature_distance(s, t, lens, kind="cosine", reduction="none")
    c0 = 1 - (2.0 + 0.0) / (math.sqrt(5) * 2.0)
    assert cos.tolist()[0] == pytest.approx([c0, 0.0, 0.0], abs=1e-12)
    assert feature_distance(s, t, lens, kind="cosine", reduction="mean").item() == pytest.approx(c0 / 2)
    # zero vectors: finite value (1 - 0) and finite gradient
    z = torch.zeros(1, 1, 3, dtype=F64, requires_grad=True)
    out = feature_distance(z, torch.zeros(1, 1, 3, dtype=F64), kind="cosine")
    out.backward()
    assert out.item() == 1.0 and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("kind", ["l1", "l2", "mse", "cosine"])
def test_feature_distance_gradcheck_reductions_teacher(kind):
    N, T, D = 2, 4, 3
    student = randn(N, T, D, seed=30, requires_grad=True)
    teacher = randn(N, T, D, seed=31, requires_grad=True)
    lens = torch.tensor([4, 2])
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    for red in ("sum", "mean", "none"):
        assert torch.autograd.gradcheck(
            lambda x: feature_distance(x, teacher, lens, kind=kind, mask=mask, reduction=red),
            (student,),
        )
    check_reductions(lambda r: feature_distance(student, teacher, lens, kind=kind, mask=mask, reduction=r), 5)
    feature_distance(student, teacher, lens, kind=kind).backward()
    assert teacher.grad is None
    # float mask = weights
    fw = torch.rand(N, T, generator=gen(32), dtype=F64)
    per = feature_distance(student, teacher, kind=kind, reduction="none")
    torch.testing.assert_close(feature_distance(student, teacher, kind=kind, mask=fw), (fw * per).sum())
    torch.testing.assert_close(
        feature_distance(student, teacher, kind=kind, mask=fw, reduction="mean"),
        (fw * per).sum() / fw.sum(),
    )


@pytest.mark.parametrize("kind", ["l1", "l2", "cosine"])
def test_feature_distance_nan_padding(kind):
    N, T, D = 2, 5, 3
    student = randn(N, T, D, seed=33)
    teacher = randn(N, T, D, seed=34)
    lens = torch.tensor([5, 3])
    mask = torch.ones(N, T, dtype=torch.bool)
    mask[0, 1] = False
    s_bad, t_bad = student.clone(), teacher.clone()
    s_bad[1, 3:] = float("nan")
    s_bad[0, 1] = float("inf")
    t_bad[1, 3:] = float("-inf")
    t_bad[0, 1] = float("nan")
    res = []
    for s, t in ((student, teacher), (s_bad, t_bad)):
        s = s.clone().requires_grad_(True)
        loss = feature_distance(s, t, lens, kind=kind, mask=mask)
        loss.backward()
        res.append((loss.detach(), s.grad))
    torch.testing.assert_close(res[0][0], res[1][0])
    torch.testing.assert_close(res[0][1], res[1][1])
    assert torch.isfinite(res[1][1]).all()
    assert (res[1][1][1, 3:] == 0).all() and (res[1][1][0, 1] == 0).all()


def test_feature_distance_validation():
    with pytest.raises(ValueError, match="project"):
        feature_distance(randn(1, 2, 3), randn(1, 2, 4))
    with pytest.raises(ValueError, match="teacher has 3 frames and the student 2"):
        feature_distance(randn(1, 2, 3), randn(1, 3, 3))
    with pytest.raises(ValueError, match="kind"):
        feature_distance(randn(1, 2, 3), randn(1, 2, 3), kind="l3")


# ============================================================================ attention_map_kl


def attn_maps(N, H, T, lens, seed, requires_grad=False):
    """Softmax-over-valid-keys maps with NaN garbage in padded rows / keys."""
    scores = randn(N, H, T, T, seed=seed)
    valid = torch.arange(T)[None] < lens[:, None]
    keymask = valid[:, None, None, :]
    a = torch.softmax(scores.masked_fill(~keymask, float("-inf")), dim=-1)
    a = torch.where(valid[:, None, :, None], a, torch.full_like(a, float("nan")))
    return a.requires_grad_(requires_grad)


def test_attention_map_kl_hand_computed():
    s = [[0.7, 0.3], [0.2, 0.8]]
    t = [[0.5, 0.5], [0.9, 0.1]]
    st = torch.tensor([[s]], dtype=F64)
    tt = torch.tensor([[t]], dtype=F64)
    per = attention_map_kl(st, tt, reduction="none", eps=0.0)
    assert per.tolist()[0][0] == pytest.approx([kl_np(t[0], s[0]), kl_np(t[1], s[1])], rel=1e-12)
    # default eps: negligible here
    assert attention_map_kl(st, tt).item() == pytest.approx(kl_np(t[0], s[0]) + kl_np(t[1], s[1]), rel=1e-6)
    assert attention_map_kl(st, st).item() == 0.0
    # lens = 1: only row 0, key 0 counts (maps are taken as given, not renormalised)
    assert attention_map_kl(st, tt, torch.tensor([1]), eps=0.0).item() == pytest.approx(
        0.5 * math.log(0.5 / 0.7), rel=1e-12
    )


def test_attention_map_kl_lens_garbage_gradcheck_reductions():
    N, H, T = 2, 2, 4
    lens = torch.tensor([4, 2])
    s = attn_maps(N, H, T, lens, seed=40)
    t = attn_maps(N, H, T, lens, seed=41).requires_grad_(True)
    # equals the unpadded computation on the cropped maps
    per = attention_map_kl(s, t, lens, reduction="none")
    assert torch.isfinite(per).all() and (per[1, :, 2:] == 0).all()
    for n in range(N):
        L = int(lens[n])
        crop = attention_map_kl(s[n : n + 1, :, :L, :L], t[n : n + 1, :, :L, :L].detach(), reduction="none")
        torch.testing.assert_close(per[n, :, :L], crop[0])
    check_reductions(lambda r: attention_map_kl(s, t, lens, reduction=r), H * 6)
    # gradcheck on the student map; NaN garbage in padded cells gets 0 gradient
    x = s.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: attention_map_kl(a, t, lens), (x,))
    loss = attention_map_kl(x, t, lens)
    loss.backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1, :, 2:] == 0).all()
    assert (x.grad[1, :, :, 2:] == 0).all()
    assert t.grad is None


def test_attention_map_kl_validation():
    with pytest.raises(ValueError, match="teacher has 5 frames"):
        attention_map_kl(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, H\)"):
        attention_map_kl(torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4))


# ============================================================================ attention_relation_kl


def relation_kl_ref(student, teacher, hr):
    """Unpadded MiniLM relation KL via einsum + F.kl_div (independent code path)."""

    def heads(x):
        if x.dim() == 4:
            x = torch.cat(list(x.unbind(1)), dim=-1)  # (N, T, H * Dh), head-major
        N, T, D = x.shape
        return x.view(N, T, hr, D // hr).transpose(1, 2)

    s, t = heads(student), heads(teacher)
    rs = torch.einsum("nhid,nhjd->nhij", s, s) / math.sqrt(s.shape[-1])
    rt = torch.einsum("nhid,nhjd->nhij", t, t) / math.sqrt(t.shape[-1])
    kl = F.kl_div(rs.log_softmax(-1), rt.log_softmax(-1), log_target=True, reduction="none")
    return kl.sum(-1)  # (N, Hr, T)


def test_attention_relation_kl_reference_and_shapes():
    N, T = 2, 5
    student = randn(N, 2, T, 3, seed=50)  # D_s = 6
    teacher = randn(N, 4, T, 6, seed=51)  # D_t = 24
    # default Hr = teacher H = 4 needs D_s divisible by 4 -> error; Hr = 2 works
    with pytest.raises(ValueError, match="divisible"):
        attention_relation_kl(student, teacher)
    per = attention_relation_kl(student, teacher, num_relation_heads=2, reduction="none")
    assert per.shape == (N, 2, T)
    torch.testing.assert_close(per, relation_kl_ref(student, teacher, 2))
    assert (per >= -1e-12).all()
    # default relation heads = teacher H; (N, H, T, Dh) == (N, T, H * Dh)
    s4 = randn(N, 2, T, 4, seed=52)  # D_s = 8, divisible by 4
    a = attention_relation_kl(s4, teacher, reduction="none")
    assert a.shape == (N, 4, T)
    torch.testing.assert_close(a, relation_kl_ref(s4, teacher, 4))
    s3 = s4.permute(0, 2, 1, 3).reshape(N, T, 8)
    t3 = teacher.permute(0, 2, 1, 3).reshape(N, T, 24)
    torch.testing.assert_close(attention_relation_kl(s3, t3, num_relation_heads=4, reduction="none"), a)
    with pytest.raises(ValueError, match="num_relation_heads is required"):
        attention_relation_kl(s3, t3)
    # identical inputs -> 0
    assert attention_relation_kl(teacher, teacher).abs().item() < 1e-12
    with pytest.raises(ValueError, match="teacher has 4 frames"):
        attention_relation_kl(s4, teacher[:, :, :4])


def test_attention_relation_kl_hand_computed():
    # one head, T = 2, d = 1: relation logits a_i a_j
    s = torch.tensor([[[1.0], [2.0]]], dtype=F64)  # (1, 2, 1)
    t = torch.tensor([[[0.5], [-1.0]]], dtype=F64)
    out = attention_relation_kl(s, t, num_relation_heads=1, reduction="none")
    rows = []
    for i in range(2):
        rs = softmax_list([s[0, i, 0].item() * s[0, j, 0].item() for j in range(2)])
        rt = softmax_list([t[0, i, 0].item() * t[0, j, 0].item() for j in range(2)])
        rows.append(kl_np(rt, rs))
    assert out.tolist()[0][0] == pytest.approx(rows, rel=1e-12)


def test_attention_relation_kl_lens_garbage_gradcheck_reductions():
    N, T = 2, 4
    lens = torch.tensor([4, 3])
    student = randn(N, 2, T, 2, seed=53)
    teacher = randn(N, 3, T, 2, seed=54).requires_grad_(True)  # Hr = 1 below: D 4 vs 6
    per = attention_relation_kl(student, teacher, lens, num_relation_heads=1, reduction="none")
    for n in range(N):
        L = int(lens[n])
        ref = relation_kl_ref(student[n : n + 1, :, :L], teacher[n : n + 1, :, :L].detach(), 1)
        torch.testing.assert_close(per[n, :, :L], ref[0])
    assert (per[1, :, 3:] == 0).all()
    check_reductions(
        lambda r: attention_relation_kl(student, teacher, lens, num_relation_heads=1, reduction=r),
        7,
    )
    # NaN garbage in padded frames: same value and gradient, 0 gradient there
    bad = student.clone()
    bad[1, :, 3:] = float("nan")
    tbad = teacher.detach().clone()
    tbad[1, :, 3:] = float("inf")
    res = []
    for s, t in ((student, teacher), (bad, tbad)):
        x = s.clone().requires_grad_(True)
        loss = attention_relation_kl(x, t, lens, num_relation_heads=1)
        loss.backward()
        res.append((loss.detach(), x.grad))
    torch.testing.assert_close(res[0][0], res[1][0])
    torch.testing.assert_close(res[0][1], res[1][1])
    assert (res[1][1][1, :, 3:] == 0).all()
    assert teacher.grad is None
    # gradcheck with two relation heads (student D = 4, teacher D = 6)
    x = student.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: attention_relation_kl(a, teacher, lens, num_relation_heads=2, reduction="none"),
        (x,),
    )
    # a zero-length utterance gives 0, no NaN
    zl = attention_relation_kl(x, teacher, torch.tensor([4, 0]), num_relation_heads=2, reduction="none")
    assert torch.isfinite(zl).all() and (zl[1] == 0).all()


def test_module_exports():
    import asr_kd.losses as losses

    for name in kd.__all__:
        if name != "FEATURE_DISTANCES":
            assert getattr(losses, name) is getattr(kd, name)
