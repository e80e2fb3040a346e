"""KD methods and the KD loss on real tiny AsrModels of every encoder type (asr_kd.testing.encoders), as
students and as teachers: values against hand computations, gradient isolation of the teacher side, the
self-KD sub-model export, multi-rate layers (Zipformer) against a reference resampling, encoders with
other frame counts, and start-up errors for encoders without a capability a method needs."""

import math
import os
import tempfile

import pytest
import torch
from torch import nn

from asr_kd.kd import AsrTeacher, KdContext, KdLossFn, TeacherOutput, build_kd_loss_fn, build_kd_method
from asr_kd.kd.methods import EDGE_FRAMES
from asr_kd.kd.schedules import build_schedule
from asr_kd.kd.task import KdEntry
from asr_kd.losses.kd import attention_relation_kl
from asr_kd.models.asr_model import AsrModel, build_asr_model, combine_losses
from asr_kd.models.encoder import Encoder, EncoderOutput, MissingCapabilityError
from asr_kd.models.heads import CtcHead
from asr_kd.testing.encoders import layer_at_output_rate_reference, tiny_encoder_config, tiny_encoder_types

V = 11
F = 20
TEACHER_TYPES = tiny_encoder_types()


def make_model(encoder_type="conformer", seed=0, dim=None, inter=(2,), **heads):
    torch.manual_seed(seed)
    cfg = {
        "vocab_size": V,
        "encoder": tiny_encoder_config(encoder_type, F, dim),
        "ctc": {},
        "inter_ctc": {"layers": list(inter)},
    }
    cfg.update(heads)
    return build_asr_model(cfg)


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 48, F, generator=g)
    x_lens = torch.tensor([48, 40, 29])
    tokens = [[3, 4, 5], [6, 7], [8]]
    return {
        "inputs": x,
        "feature_lens": x_lens,
        "supervisions": {"tokens": tokens, "cut_id": ["a", "b", "c"], "text": ["x", "y", "z"]},
    }


def hand_kl(student_logits, teacher_logits, lens, tau=1.0, keep=None):
    """sum over valid frames of tau^2 * KL(softmax(t/tau) || softmax(s/tau)), in plain loops."""
    total = 0.0
    for n in range(student_logits.size(0)):
        for t in range(int(lens[n])):
            if keep is not None and not keep[n, t]:
                continue
            ps = torch.softmax(student_logits[n, t].double() / tau, -1)
            pt = torch.softmax(teacher_logits[n, t].double() / tau, -1)
            total += tau * tau * sum(float(pt[v] * (math.log(pt[v]) - math.log(ps[v]))) for v in range(V))
    return total


def ref_layer(enc_out, encoder, k):
    """Layer k (1-based) of an EncoderOutput at the output rate, by the plain-loop reference."""
    lens = enc_out.layer_lens[k - 1] if enc_out.layer_lens is not None else enc_out.out_lens
    return layer_at_output_rate_reference(
        enc_out.layer_outputs[k - 1],
        lens,
        encoder.layer_info[k - 1].subsampling,
        encoder.subsampling_factor,
        enc_out.out.size(1),
    )


def context(model, batch, teacher=None, needs=frozenset(), step=0):
    x, x_lens, tokens = batch["inputs"], batch["feature_lens"], batch["supervisions"]["tokens"]
    enc_kwargs = {"return_qkv": True} if "qkv" in needs else {}
    losses = model(x, x_lens, tokens, return_encoder_output=True, encoder_kwargs=enc_kwargs)
    enc = losses.pop("encoder_out")
    return KdContext(
        model=model,
        batch=batch,
        tokens=tokens,
        enc=enc,
        losses=losses,
        teacher=teacher(batch, set(needs)) if teacher is not None else None,
        step=step,
    )


# ------------------------------------------------------------------------------------------ self-KD
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("layer", [1, 2])
def test_self_kd_value_is_hand_computed_kl(batch, tau, layer, encoder_type):
    model = make_model(encoder_type, inter=(layer,)).eval()
    ctx = context(model, batch)
    loss = build_kd_method("self_kd", model, temperature=tau)(ctx)["self_kd"]
    enc = ctx.enc
    s = model.inter_ctc_head(layer)(ref_layer(enc, model.encoder, layer)).detach()
    t = model.ctc(enc.out).detach()
    assert loss.item() == pytest.approx(hand_kl(s, t, enc.out_lens, tau), rel=1e-5)


def test_self_kd_blank_mask_drops_blank_frames(batch, encoder_type):
    model = make_model(encoder_type).eval()
    with torch.no_grad():  # make the final head confident in blank (p > 0.5) on about half of the frames
        enc = model.encode(batch["inputs"], batch["feature_lens"])
        t0 = model.ctc(enc.out)[enc.valid_mask()]
        margin = t0[:, 0] - t0[:, 1:].logsumexp(-1)
        model.ctc.output.bias[0] -= margin.median() - 1e-3
    ctx = context(model, batch)
    t = model.ctc(ctx.enc.out).detach()
    keep = torch.softmax(t, -1)[..., 0] <= 0.5
    valid = ctx.enc.valid_mask()
    assert 0 < int((keep & valid).sum()) < int(valid.sum())
    masked = build_kd_method("self_kd", model, blank_mask=True)(ctx)["self_kd"]
    s = model.inter_ctc_head(2)(ref_layer(ctx.enc, model.encoder, 2)).detach()
    assert masked.item() == pytest.approx(hand_kl(s, t, ctx.enc.out_lens, keep=keep), rel=1e-5)
    full = build_kd_method("self_kd", model)(ctx)["self_kd"]
    assert masked.item() < full.item()


def test_self_kd_gradient_only_reaches_the_student_side(batch, encoder_type):
    model = make_model(encoder_type)
    ctx = context(model, batch)
    build_kd_method("self_kd", model)(ctx)["self_kd"].backward()

    def learns(p):
        return p.grad is not None and p.grad.abs().max() > 0

    # the self-teacher (final head) and the encoder layers above the student's layer get nothing
    assert not any(learns(p) for p in model.ctc.parameters())
    below = {n for n, _ in model.submodel(2).encoder.named_parameters()}
    above = [(n, p) for n, p in model.encoder.named_parameters() if n not in below]
    assert above and not any(learns(p) for _, p in above)
    # the student head and the shared lower layers do learn
    assert any(learns(p) for p in model.inter_ctc_head(2).parameters())
    first = dict(model.encoder.named_parameters())[next(iter(below))]
    assert learns(first)


def test_self_kd_config_errors(encoder_type):
    with pytest.raises(ValueError, match="intermediate CTC head"):
        build_kd_method(
            "self_kd", build_asr_model({"vocab_size": V, "encoder": tiny_encoder_config(encoder_type, F), "ctc": {}})
        )
    with pytest.raises(ValueError, match="self_kd layer 1 has no inter-CTC head"):
        build_kd_method("self_kd", make_model(encoder_type), layer=1)
    with pytest.raises(ValueError, match="unknown KD method 'nope'"):
        build_kd_method("nope", make_model(encoder_type))


# ------------------------------------------------------------------------------------------ teachers
@pytest.mark.parametrize("teacher_type", TEACHER_TYPES)
def test_ctc_kd_from_online_teacher(batch, encoder_type, teacher_type):
    teacher = AsrTeacher(make_model(teacher_type, seed=5))
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training and not teacher.model.training
    teacher.train()
    assert not teacher.model.training  # frozen teachers stay in eval mode
    student = make_model(encoder_type, seed=1)
    ctx = context(student, batch, teacher, {"ctc_logits"})
    # encoders at the same frame rate may count the last frame differently: the common frames count
    s_lens, t_lens = ctx.enc.out_lens, ctx.teacher.lens
    assert ctx.teacher.subsampling == student.encoder.subsampling_factor == 4
    assert int((s_lens - t_lens).abs().max()) <= 1
    if encoder_type != teacher_type:
        assert not torch.equal(s_lens, t_lens)
    common = torch.minimum(s_lens, t_lens)
    loss = build_kd_method("ctc_kd", student, temperature=2.0)(ctx)["ctc_kd"]
    s = student.ctc(ctx.enc.out).detach()
    assert loss.item() == pytest.approx(hand_kl(s, ctx.teacher.ctc_logits, common, 2.0), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert ctx.teacher.ctc_logits.grad_fn is None
    # the inter-CTC head of the student as the KD target
    loss2 = build_kd_method("ctc_kd", student, layer=2)(ctx)["ctc_kd"]
    s2 = student.inter_ctc_head(2)(ref_layer(ctx.enc, student.encoder, 2)).detach()
    assert loss2.item() == pytest.approx(hand_kl(s2, ctx.teacher.ctc_logits, common), rel=1e-5)


def test_frame_level_kd_refuses_another_frame_rate_or_frame_count(batch, encoder_type):
    student = make_model(encoder_type, seed=1).eval()
    ctx = context(student, batch)
    lens = ctx.enc.out_lens
    logits = torch.randn(3, int(lens.max()) * 2, V)
    ctx.teacher = TeacherOutput(ctc_logits=logits, lens=lens * 2, subsampling=2)
    with pytest.raises(ValueError, match="ctc_kd: the student runs at 4 input frames per frame and the teacher at 2"):
        build_kd_method("ctc_kd", student)(ctx)
    ctx.teacher = TeacherOutput(ctc_logits=logits, lens=lens + EDGE_FRAMES + 1)  # rate unknown: counts decide
    with pytest.raises(
        ValueError, match=f"ctc_kd: teacher and student frame counts differ .* by more than {EDGE_FRAMES}"
    ):
        build_kd_method("ctc_kd", student)(ctx)
    ctx.teacher = TeacherOutput(ctc_logits=logits, lens=lens + EDGE_FRAMES)  # within the slack: common frames
    loss = build_kd_method("ctc_kd", student)(ctx)["ctc_kd"]
    assert loss.item() == pytest.approx(hand_kl(student.ctc(ctx.enc.out).detach(), logits, lens), rel=1e-5)


@pytest.mark.parametrize("teacher_type", TEACHER_TYPES)
def test_seq_kd_ctc_uses_teacher_nbest(batch, encoder_type, teacher_type):
    teacher = AsrTeacher(make_model(teacher_type, seed=5), nbest_size=3)
    student = make_model(encoder_type, seed=1)
    ctx = context(student, batch, teacher, {"nbest"})
    assert all(len(h) <= 3 for h in ctx.teacher.nbest)
    loss = build_kd_method("seq_kd_ctc", student)(ctx)["seq_kd_ctc"]
    lp = student.ctc(ctx.enc.out).log_softmax(-1)
    want = 0.0
    for n, (hyps, scores) in enumerate(zip(ctx.teacher.nbest, ctx.teacher.nbest_scores)):
        w = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
        for h, wi in zip(hyps, w):
            l = torch.nn.functional.ctc_loss(
                lp[n : n + 1, : ctx.enc.out_lens[n]].transpose(0, 1),
                torch.tensor([h], dtype=torch.long),
                ctx.enc.out_lens[n : n + 1],
                torch.tensor([len(h)]),
                reduction="sum",
                zero_infinity=True,
            )
            want += float(wi) * l.item()
    assert loss.item() == pytest.approx(want, rel=1e-4)


def _pairs(student):
    """Feature pairs: student layers 1, L - 1 and the last (on the tiny Zipformer at 2, 8 and 4 input frames
    per frame, dims 16, 32, 16) against teacher layers 1, 2 and the last."""
    return [[1, 1], [student.encoder.num_layers - 1, 2], [-1, -1]]


@pytest.mark.parametrize("teacher_type", TEACHER_TYPES)
def test_feature_kd_projects_and_resamples(batch, encoder_type, teacher_type):
    """Feature KD between encoders of other dims (and layer rates): a learned projection per pair, student
    layers at the output rate by the reference resampling, teacher layers likewise, over the common frames."""
    teacher = AsrTeacher(make_model(teacher_type, seed=5, dim=24).eval())
    student = make_model(encoder_type, seed=1)
    pairs = _pairs(student)
    t_info = teacher.model.encoder.layer_info
    t_dims = [t_info[t - 1 if t > 0 else -1].dim for _, t in pairs]
    assert t_info[-1].dim != student.encoder.layer_info[-1].dim
    feat = build_kd_method("feature", student, pairs=pairs, teacher_dim=t_dims, kind="l2")
    s_info = student.encoder.layer_info
    s_dims = [s_info[s - 1 if s > 0 else -1].dim for s, _ in pairs]
    assert [(p.in_features, p.out_features) if isinstance(p, nn.Linear) else None for p in feat.proj] == [
        (sd, td) if sd != td else None for sd, td in zip(s_dims, t_dims)
    ]
    ctx = context(student, batch, teacher, {"layer_outputs"})
    lf = feat(ctx)["feature"]
    # by hand
    with torch.no_grad():
        t_enc = teacher.model.encode(batch["inputs"], batch["feature_lens"])
    common = torch.minimum(ctx.enc.out_lens, t_enc.out_lens)
    want = 0.0
    for (s, t), proj in zip(pairs, feat.proj):
        ks = student.encoder.num_layers if s == -1 else s
        kt = teacher.model.encoder.num_layers if t == -1 else t
        sh = proj(ref_layer(ctx.enc, student.encoder, ks)).detach().double()
        th = ref_layer(t_enc, teacher.model.encoder, kt).double()
        for n in range(3):
            for f in range(int(common[n])):
                want += float(((sh[n, f] - th[n, f]) ** 2).mean())
    assert lf.item() == pytest.approx(want, rel=1e-5)
    lf.backward()
    assert all(p.grad is not None for p in feat.parameters())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("teacher_type", TEACHER_TYPES)
def test_attention_relation_at_the_layers_own_rate(batch, encoder_type, teacher_type):
    teacher = AsrTeacher(make_model(teacher_type, seed=5, dim=24))
    student = make_model(encoder_type, seed=1)
    ctx = context(student, batch, teacher, {"qkv"})
    la = build_kd_method("attention_relation", student, relations=["q", "v"], num_relation_heads=2)(ctx)
    enc, t = ctx.enc, ctx.teacher
    common = torch.minimum(enc.out_lens, t.lens)  # the last layers run at the output rate
    frames = int(common.max())
    want = sum(
        attention_relation_kl(
            enc.qkv[-1][r][:, :, :frames], t.qkv[-1][r][:, :, :frames], common, num_relation_heads=2
        ).item()
        for r in (0, 2)
    )
    assert la["attention_relation"].item() == pytest.approx(want, rel=1e-5) and want > 0
    ctx_same = context(teacher.model, batch, teacher, {"qkv"})  # a student equal to the teacher: zero
    zero = build_kd_method("attention_relation", teacher.model)(ctx_same)["attention_relation"]
    assert zero.item() == pytest.approx(0.0, abs=1e-5)


def test_attention_relation_between_multi_rate_layers():
    """On a multi-rate student, a layer's relations use its own valid frames (``layer_lens``); pairing
    layers of different rates is refused, naming the pair and the layer rates."""
    if "zipformer" not in TEACHER_TYPES:
        pytest.skip("needs the zipformer")
    g = torch.Generator().manual_seed(3)
    batch = {
        "inputs": torch.randn(3, 48, F, generator=g),
        "feature_lens": torch.tensor([48, 40, 29]),
        "supervisions": {"tokens": [[3, 4, 5], [6, 7], [8]]},
    }
    teacher = AsrTeacher(make_model("zipformer", seed=5))
    student = make_model("zipformer", seed=1)
    ctx = context(student, batch, teacher, {"qkv"})
    assert student.encoder.layer_info[0].subsampling == 2  # layer 1 at twice the output rate
    got = build_kd_method("attention_relation", student, pairs=[[1, 1]], relations=["k"])(ctx)["attention_relation"]
    lens1 = ctx.enc.layer_lens[0]
    assert torch.equal(lens1, ctx.teacher.layer_lens[0]) and ctx.enc.qkv[0][1].size(2) == int(lens1.max())
    want = attention_relation_kl(ctx.enc.qkv[0][1], ctx.teacher.qkv[0][1], lens1).item()
    assert got.item() == pytest.approx(want, rel=1e-5)
    wrong = attention_relation_kl(ctx.enc.qkv[0][1], ctx.teacher.qkv[0][1], ctx.enc.out_lens).item()
    assert abs(wrong - want) > 1e-3 * abs(want)
    method = build_kd_method("attention_relation", student, pairs=[[1, -1]])
    with pytest.raises(
        ValueError,
        match=r"attention_relation pair \[1, -1\] \(student layer 1, teacher layer 5\): "
        r"the student runs at 2 input frames per frame and the teacher at 4.*"
        r"student layer rates: \[2, 4, 4, 8, 4\]",
    ):
        method(ctx)


# ------------------------------------------------------------------------------------------ the KD loss
def test_kd_loss_fn_total_is_asr_plus_scheduled_kd(batch, encoder_type):
    model = make_model(encoder_type)
    total_steps = 100
    loss_fn = build_kd_loss_fn(
        {"methods": [{"name": "self_kd", "weight": 0.5, "schedule": {"name": "self_kd", "t": 0.3}}]},
        model,
        normalize="frames",
        max_steps=total_steps,
        weights={"ctc": 1.0, "inter_ctc": 1.0},
    )
    for step, alpha in ((0, 0.0), (15, 0.5), (60, 1.0)):
        torch.manual_seed(0)  # the same dropout draws (the Zipformer's schedules start at 0.3) in both forwards
        out = loss_fn(model, batch, step)
        torch.manual_seed(0)
        ctx = context(model, batch)
        kd = build_kd_method("self_kd", model)(ctx)["self_kd"]
        asr = combine_losses(ctx.losses, {"ctc": 1.0, "inter_ctc": 1.0}, step)
        norm = ctx.losses["num_frames"].float()
        assert out.loss.item() == pytest.approx(((asr + 0.5 * alpha * kd) / norm).item(), rel=1e-5)
        assert out.parts["kd_w_self_kd"].item() == pytest.approx(0.5 * alpha)
        assert out.parts["self_kd"].item() == pytest.approx((kd / norm).item(), rel=1e-5)


def test_kd_loss_fn_config_errors(encoder_type):
    model = make_model(encoder_type)
    with pytest.raises(ValueError, match="need"):
        build_kd_loss_fn({"methods": [{"name": "ctc_kd"}]}, model)  # no teacher
    with pytest.raises(ValueError, match="planned number of steps"):
        build_kd_loss_fn({"methods": [{"name": "self_kd", "schedule": {"name": "self_kd"}}]}, model)
    with pytest.raises(ValueError, match="unknown keys"):
        build_kd_loss_fn({"methods": [], "teachr": {}}, model)
    with pytest.raises(ValueError, match="at least one"):
        KdLossFn([], None)
    with pytest.raises(ValueError, match="checkpoint"):
        build_kd_loss_fn({"teacher": {"type": "asr"}, "methods": [{"name": "ctc_kd"}]}, model)
    with pytest.raises(ValueError, match=r"kd.methods\[1\] \(self_kd\): self_kd layer 1 has no inter-CTC head"):
        build_kd_loss_fn({"methods": [{"name": "self_kd"}, {"name": "self_kd", "layer": 1}]}, model)


def test_parameterised_method_lives_in_kd_aux(batch, encoder_type):
    from asr_kd.training.asr_task import load_asr_model
    from asr_kd.training.checkpoint import save_checkpoint

    student = make_model(encoder_type, seed=1)
    teacher_model = make_model("conformer", seed=5, dim=24)
    KdLossFn(
        [KdEntry("feature", build_kd_method("feature", student, teacher_dim=24), 1.0, build_schedule(None))],
        AsrTeacher(teacher_model),
    )
    assert len(student.kd_aux) == 0  # only build_kd_loss_fn registers
    with tempfile.TemporaryDirectory() as d:
        ckpt = os.path.join(d, "t.pt")
        save_checkpoint(ckpt, model=teacher_model, config={"model": teacher_model.config}, rng=None)
        fn = build_kd_loss_fn(
            {"teacher": {"type": "asr", "checkpoint": ckpt}, "methods": [{"name": "feature", "teacher_dim": 24}]},
            student,
        )
        assert len(student.kd_aux) == 1
        (proj,) = student.kd_aux.values()
        assert proj.proj[0].in_features == student.encoder.layer_info[-1].dim and proj.proj[0].out_features == 24
        out = fn(student, batch, 0)
        assert torch.isfinite(out.loss) and out.parts["feature"].item() > 0
        # a student checkpoint with KD modules still loads as a plain model
        sckpt = os.path.join(d, "s.pt")
        save_checkpoint(sckpt, model=student, config={"model": student.config}, rng=None)
        loaded, _ = load_asr_model(sckpt)
        assert len(loaded.kd_aux) == 0


def test_submodel_equals_intermediate_head(batch, encoder_type):
    model = make_model(encoder_type).eval()
    sub = model.submodel(2).eval()
    x, x_lens = batch["inputs"], batch["feature_lens"]
    with torch.no_grad():
        enc = model.encode(x, x_lens)
        want = model.inter_ctc_head(2)(ref_layer(enc, model.encoder, 2))
        got_enc = sub.encode(x, x_lens)
        got = sub.ctc(got_enc.out)
    assert torch.equal(got_enc.out_lens, enc.out_lens)
    valid = enc.valid_mask()
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-5, atol=1e-5)
    assert sub.encoder.num_layers == 2 and sub.enabled_heads() == ["ctc"]
    rebuilt = build_asr_model(sub.config)
    rebuilt.load_state_dict(sub.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            rebuilt.eval().ctc(rebuilt.encode(x, x_lens).out)[valid], want[valid], rtol=1e-5, atol=1e-5
        )
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ AR -> NAR
DEC = {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0}


def _ar_teacher(teacher_type="conformer", seed=5):
    return AsrTeacher(make_model(teacher_type, seed=seed, attention_decoder=dict(DEC)), nbest_size=3)


def _nar_student(encoder_type="conformer", seed=1):
    return make_model(encoder_type, seed=seed, mask_ctc=dict(DEC))


def _ctx_heads(student, batch, teacher, needs):
    x, x_lens, tokens = batch["inputs"], batch["feature_lens"], batch["supervisions"]["tokens"]
    losses = student(
        x,
        x_lens,
        tokens,
        return_encoder_output=True,
        return_head_outputs=True,
        mask_generator=torch.Generator().manual_seed(0),
    )
    enc, heads = losses.pop("encoder_out"), losses.pop("head_outputs")
    return KdContext(
        model=student,
        batch=batch,
        tokens=tokens,
        enc=enc,
        losses=losses,
        teacher=teacher(batch, set(needs)),
        step=7,
        heads=heads,
    )


@pytest.mark.parametrize("teacher_type", TEACHER_TYPES)
def test_mlm_kd_is_kl_at_masked_positions_normalised_by_masks(batch, encoder_type, teacher_type):
    teacher, student = _ar_teacher(teacher_type), _nar_student(encoder_type)
    ctx = _ctx_heads(student, batch, teacher, {"att_logits"})
    tokens = batch["supervisions"]["tokens"]
    assert ctx.teacher.att_logits.shape[:2] == (3, max(map(len, tokens)) + 1)
    loss = build_kd_method("mlm_kd", student)(ctx)["mlm_kd"]
    s, t = ctx.heads["mlm_logits"].detach(), ctx.teacher.att_logits
    masked = ctx.heads["mlm_masked"]
    total, count = 0.0, 0
    for n in range(3):
        for j in range(len(tokens[n])):
            if masked.ys_out[n, j] == -1:
                continue
            count += 1
            ps, pt = torch.softmax(s[n, j].double(), -1), torch.softmax(t[n, j].double(), -1)
            total += float((pt * (pt.log() - ps.log())).sum())
    assert count == int(masked.num_masked.sum())
    assert loss.item() == pytest.approx(total / count * 3, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in student.mask_ctc.parameters())


@pytest.mark.parametrize("teacher_type", TEACHER_TYPES)
def test_mlm_seq_kd_weighted_masked_ce_over_nbest(batch, encoder_type, teacher_type):
    teacher, student = _ar_teacher(teacher_type), _nar_student(encoder_type)
    teacher.nbest_method = "attention-beam"  # the AR teacher's joint CTC/attention beam search
    ctx = _ctx_heads(student, batch, teacher, {"nbest"})
    method = build_kd_method("mlm_seq_kd", student, seed=11)
    loss = method(ctx)["mlm_seq_kd"]
    # by hand, one hypothesis at a time, replaying the method's masking RNG
    from asr_kd.losses.masking import mask_tokens

    g = torch.Generator().manual_seed(11 + ctx.step)
    flat = [
        (n, h, float(w))
        for n, (hs, sc) in enumerate(zip(ctx.teacher.nbest, ctx.teacher.nbest_scores))
        for h, w in zip(hs, torch.softmax(torch.tensor(sc, dtype=torch.float64), 0))
        if len(h) > 0
    ]
    assert flat
    masked = mask_tokens([h for _, h, _ in flat], student.mask_ctc.mask_id, generator=g)
    want = 0.0
    for r, (n, h, w) in enumerate(flat):
        logits = student.mask_ctc(
            ctx.enc.out[n : n + 1], ctx.enc.out_lens[n : n + 1], masked.ys_in[r : r + 1, : masked.ys_in.size(1)]
        )
        lp = logits[0].detach().double().log_softmax(-1)
        pos = [j for j in range(len(h)) if masked.ys_out[r, j] != -1]
        want += w * sum(-float(lp[j, h[j]]) for j in pos) / len(pos)
    assert loss.item() == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="Mask-CTC"):
        build_kd_method("mlm_kd", make_model(encoder_type))


# ------------------------------------------------------------------------------------------ capabilities
class PlainEncoder(Encoder):
    """A minimal encoder declaring only the capabilities it is given: frames stacked by 4, then Linear+tanh
    layers (T' = T // 4)."""

    subsampling_factor = 4

    def __init__(self, capabilities=frozenset(), num_layers=2, d=8):
        super().__init__()
        self.declared_capabilities = frozenset(capabilities)
        self.d = d
        self.inp = nn.Linear(4 * F, d)
        self.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(num_layers))

    @property
    def output_dim(self):
        return self.d

    @property
    def num_layers(self):
        return len(self.layers)

    def subsampled_lengths(self, x_lens):
        return x_lens // 4

    def forward(self, x, x_lens, *, chunk_size=-1, left_context=-1, return_attn=False, return_qkv=False):
        n, t, f = x.shape
        h = self.inp(x[:, : t // 4 * 4].reshape(n, t // 4, 4 * f))
        outs = []
        for layer in self.layers:
            h = torch.tanh(layer(h))
            outs.append(h)
        return EncoderOutput(out=h, out_lens=self.subsampled_lengths(x_lens), layer_outputs=outs)


def _plain_model(capabilities):
    enc = PlainEncoder(capabilities)
    return AsrModel(enc, V, ctc=CtcHead(enc.output_dim, V), inter_ctc_layers=[1])


@pytest.mark.parametrize(
    "method,capability,declared",
    [
        ("attention_relation", "qkv", {"chunked", "truncate", "attn"}),
        ("self_kd", "truncate", {"chunked", "attn", "qkv"}),
    ],
)
def test_a_method_needing_a_missing_capability_fails_at_start_up(method, capability, declared):
    model = _plain_model(declared)
    with pytest.raises(
        MissingCapabilityError,
        match=rf"KD method '{method}' needs an encoder with the '{capability}' capability, but "
        rf"PlainEncoder declares only \[{', '.join(repr(c) for c in sorted(declared))}\]",
    ):
        build_kd_method(method, model)
    methods = [{"name": "ctc_kd"}, {"name": method}] if method != "self_kd" else [{"name": method}]
    cfg = {"methods": methods}
    i = len(methods) - 1
    with pytest.raises(MissingCapabilityError, match=rf"^kd.methods\[{i}\] \({method}\): KD method '{method}' needs"):
        build_kd_loss_fn({"teacher": None, **cfg}, model)
    # with the capability declared, the same model passes the start-up check
    assert type(build_kd_method(method, _plain_model(declared | {capability}))).kd_name == method


def test_submodel_needs_truncation():
    with pytest.raises(MissingCapabilityError, match="AsrModel.submodel needs an encoder with the 'truncate'"):
        _plain_model({"chunked"}).submodel(1)
