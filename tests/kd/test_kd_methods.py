"""KD methods and the KD loss on a real tiny AsrModel: values against hand computations, gradient
isolation of the teacher side, the self-KD sub-model export."""

import math

import pytest
import torch

from asr_kd.kd import AsrTeacher, KdContext, KdLossFn, build_kd_loss_fn, build_kd_method
from asr_kd.kd.task import KdEntry
from asr_kd.kd.schedules import build_schedule
from asr_kd.models.asr_model import build_asr_model, combine_losses

V = 11
ENC = {"type": "conformer", "input_dim": 20, "d_model": 16, "num_layers": 3, "num_heads": 2, "ffn_dim": 32,
       "conv_kernel": 3, "subsampling_channels": 4, "dropout": 0.0}


def make_model(seed=0, **heads):
    torch.manual_seed(seed)
    cfg = {"vocab_size": V, "encoder": dict(ENC), "ctc": {}, "inter_ctc": {"layers": [2]}}
    cfg.update(heads)
    return build_asr_model(cfg)


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 48, 20, generator=g)
    x_lens = torch.tensor([48, 40, 29])
    tokens = [[3, 4, 5], [6, 7], [8]]
    return {"inputs": x, "feature_lens": x_lens,
            "supervisions": {"tokens": tokens, "cut_id": ["a", "b", "c"], "text": ["x", "y", "z"]}}


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


def context(model, batch, teacher=None, needs=frozenset(), step=0):
    x, x_lens, tokens = batch["inputs"], batch["feature_lens"], batch["supervisions"]["tokens"]
    enc_kwargs = {"return_qkv": True} if "qkv" in needs else {}
    losses = model(x, x_lens, tokens, return_encoder_output=True, encoder_kwargs=enc_kwargs)
    enc = losses.pop("encoder_out")
    return KdContext(model=model, batch=batch, tokens=tokens, enc=enc, losses=losses,
                     teacher=teacher(batch, set(needs)) if teacher is not None else None, step=step)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_self_kd_value_is_hand_computed_kl(batch, tau):
    model = make_model().eval()
    ctx = context(model, batch)
    loss = build_kd_method("self_kd", model, temperature=tau)(ctx)["self_kd"]
    enc = ctx.enc
    s = model.inter_ctc_head(2)(enc.layer_outputs[1]).detach()
    t = model.ctc(enc.out).detach()
    assert loss.item() == pytest.approx(hand_kl(s, t, enc.out_lens, tau), rel=1e-5)


def test_self_kd_blank_mask_drops_blank_frames(batch):
    model = make_model().eval()
    with torch.no_grad():  # make the final head confident in blank on about half the frames
        model.ctc.output.bias[0] += 2.0
    ctx = context(model, batch)
    t = model.ctc(ctx.enc.out).detach()
    keep = torch.softmax(t, -1)[..., 0] <= 0.5
    masked = build_kd_method("self_kd", model, blank_mask=True)(ctx)["self_kd"]
    s = model.inter_ctc_head(2)(ctx.enc.layer_outputs[1]).detach()
    assert masked.item() == pytest.approx(hand_kl(s, t, ctx.enc.out_lens, keep=keep), rel=1e-5)
    full = build_kd_method("self_kd", model)(ctx)["self_kd"]
    assert masked.item() <= full.item()


def test_self_kd_gradient_only_reaches_the_student_side(batch):
    model = make_model()
    ctx = context(model, batch)
    build_kd_method("self_kd", model)(ctx)["self_kd"].backward()
    # the self-teacher (final head) and the layers above the student's layer get nothing
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.ctc.parameters())
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.encoder.layers[2].parameters())
    # the student head and the shared lower layers do learn
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.inter_ctc_head(2).parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.encoder.layers[0].parameters())


def test_self_kd_config_errors():
    with pytest.raises(ValueError, match="intermediate CTC head"):
        build_kd_method("self_kd", build_asr_model({"vocab_size": V, "encoder": dict(ENC), "ctc": {}}))
    with pytest.raises(ValueError, match="no inter-CTC head"):
        build_kd_method("self_kd", make_model(), layer=1)
    with pytest.raises(ValueError, match="unknown KD method"):
        build_kd_method("nope", make_model())


def test_ctc_kd_from_online_teacher(batch):
    teacher = AsrTeacher(make_model(seed=5))
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training and not teacher.model.training
    teacher.train()
    assert not teacher.model.training  # frozen teachers stay in eval mode
    student = make_model(seed=1)
    ctx = context(student, batch, teacher, {"ctc_logits"})
    loss = build_kd_method("ctc_kd", student, temperature=2.0)(ctx)["ctc_kd"]
    s = student.ctc(ctx.enc.out).detach()
    assert loss.item() == pytest.approx(hand_kl(s, ctx.teacher.ctc_logits, ctx.enc.out_lens, 2.0), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert ctx.teacher.ctc_logits.grad_fn is None
    # the inter-CTC head of the student as the KD target
    loss2 = build_kd_method("ctc_kd", student, layer=2)(ctx)["ctc_kd"]
    s2 = student.inter_ctc_head(2)(ctx.enc.layer_outputs[1]).detach()
    assert loss2.item() == pytest.approx(hand_kl(s2, ctx.teacher.ctc_logits, ctx.enc.out_lens), rel=1e-5)


def test_seq_kd_ctc_uses_teacher_nbest(batch):
    teacher = AsrTeacher(make_model(seed=5), nbest_size=3)
    student = make_model(seed=1)
    ctx = context(student, batch, teacher, {"nbest"})
    assert all(len(h) <= 3 for h in ctx.teacher.nbest)
    loss = build_kd_method("seq_kd_ctc", student)(ctx)["seq_kd_ctc"]
    lp = student.ctc(ctx.enc.out).log_softmax(-1)
    want = 0.0
    for n, (hyps, scores) in enumerate(zip(ctx.teacher.nbest, ctx.teacher.nbest_scores)):
        w = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
        for h, wi in zip(hyps, w):
            l = torch.nn.functional.ctc_loss(lp[n : n + 1, : ctx.enc.out_lens[n]].transpose(0, 1),
                                             torch.tensor([h], dtype=torch.long), ctx.enc.out_lens[n : n + 1],
                                             torch.tensor([len(h)]), reduction="sum", zero_infinity=True)
            want += float(wi) * l.item()
    assert loss.item() == pytest.approx(want, rel=1e-4)


def test_feature_and_attention_relation_methods(batch):
    teacher = AsrTeacher(make_model(seed=5, encoder={**ENC, "d_model": 24, "ffn_dim": 48}))
    student = make_model(seed=1)
    ctx = context(student, batch, teacher, {"layer_outputs", "qkv"})
    feat = build_kd_method("feature", student, pairs=[[2, 3], [-1, -1]], teacher_dim=24, kind="l2")
    assert sum(p.numel() for p in feat.parameters()) == 2 * (16 * 24 + 24)  # one projection per pair
    lf = feat(ctx)["feature"]
    assert lf.item() > 0 and torch.isfinite(lf)
    lf.backward()
    assert all(p.grad is not None for p in feat.parameters())
    ctx = context(student, batch, teacher, {"qkv"})
    la = build_kd_method("attention_relation", student, relations=["q", "v"], num_relation_heads=2)(ctx)
    assert la["attention_relation"].item() >= 0
    ctx_same = context(teacher.model, batch, teacher, {"qkv"})  # a student equal to the teacher: zero
    zero = build_kd_method("attention_relation", teacher.model)(ctx_same)["attention_relation"]
    assert zero.item() == pytest.approx(0.0, abs=1e-5)


def test_kd_loss_fn_total_is_asr_plus_scheduled_kd(batch):
    model = make_model()
    total_steps = 100
    loss_fn = build_kd_loss_fn({"methods": [{"name": "self_kd", "weight": 0.5,
                                             "schedule": {"name": "self_kd", "t": 0.3}}]},
                               model, normalize="frames", max_steps=total_steps,
                               weights={"ctc": 1.0, "inter_ctc": 1.0})
    for step, alpha in ((0, 0.0), (15, 0.5), (60, 1.0)):
        torch.manual_seed(0)
        out = loss_fn(model, batch, step)
        ctx = context(model, batch)
        kd = build_kd_method("self_kd", model)(ctx)["self_kd"]
        asr = combine_losses(ctx.losses, {"ctc": 1.0, "inter_ctc": 1.0}, step)
        norm = ctx.losses["num_frames"].float()
        assert out.loss.item() == pytest.approx(((asr + 0.5 * alpha * kd) / norm).item(), rel=1e-5)
        assert out.parts["kd_w_self_kd"].item() == pytest.approx(0.5 * alpha)
        assert out.parts["self_kd"].item() == pytest.approx((kd / norm).item(), rel=1e-5)


def test_kd_loss_fn_config_errors():
    model = make_model()
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


def test_parameterised_method_lives_in_kd_aux(batch):
    student = make_model(seed=1)
    teacher_model = make_model(seed=5, encoder={**ENC, "d_model": 24, "ffn_dim": 48})
    fn = KdLossFn([KdEntry("feature", build_kd_method("feature", student, teacher_dim=24), 1.0,
                           build_schedule(None))], AsrTeacher(teacher_model))
    assert len(student.kd_aux) == 0  # only build_kd_loss_fn registers
    import tempfile, os
    from asr_kd.training.checkpoint import save_checkpoint
    from asr_kd.training.asr_task import load_asr_model

    with tempfile.TemporaryDirectory() as d:
        ckpt = os.path.join(d, "t.pt")
        save_checkpoint(ckpt, model=teacher_model, config={"model": teacher_model.config}, rng=None)
        fn = build_kd_loss_fn({"teacher": {"type": "asr", "checkpoint": ckpt},
                               "methods": [{"name": "feature", "teacher_dim": 24}]}, student)
        assert len(student.kd_aux) == 1
        out = fn(student, batch, 0)
        assert torch.isfinite(out.loss) and "feature" in out.parts
        # a student checkpoint with KD modules still loads as a plain model
        sckpt = os.path.join(d, "s.pt")
        save_checkpoint(sckpt, model=student, config={"model": student.config}, rng=None)
        loaded, _ = load_asr_model(sckpt)
        assert len(loaded.kd_aux) == 0


def test_submodel_equals_intermediate_head(batch):
    model = make_model().eval()
    sub = model.submodel(2).eval()
    x, x_lens = batch["inputs"], batch["feature_lens"]
    with torch.no_grad():
        enc = model.encode(x, x_lens)
        want = model.inter_ctc_head(2)(enc.layer_outputs[1])
        got_enc = sub.encode(x, x_lens)
        got = sub.ctc(got_enc.out)
    assert torch.equal(got_enc.out_lens, enc.out_lens)
    valid = enc.valid_mask()
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-6, atol=1e-6)
    assert sub.encoder.num_layers == 2 and sub.enabled_heads() == ["ctc"]
    rebuilt = build_asr_model(sub.config)
    rebuilt.load_state_dict(sub.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval().ctc(rebuilt.encode(x, x_lens).out)[valid], want[valid],
                                   rtol=1e-6, atol=1e-6)
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in model.parameters())


def _ar_teacher(seed=5):
    return AsrTeacher(make_model(seed=seed, attention_decoder={"num_layers": 1, "heads": 2, "d_ff": 16,
                                                               "dropout": 0.0}), nbest_size=3)


def _nar_student(seed=1):
    return make_model(seed=seed, mask_ctc={"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0})


def _ctx_heads(student, batch, teacher, needs):
    x, x_lens, tokens = batch["inputs"], batch["feature_lens"], batch["supervisions"]["tokens"]
    losses = student(x, x_lens, tokens, return_encoder_output=True, return_head_outputs=True,
                     mask_generator=torch.Generator().manual_seed(0))
    enc, heads = losses.pop("encoder_out"), losses.pop("head_outputs")
    return KdContext(model=student, batch=batch, tokens=tokens, enc=enc, losses=losses,
                     teacher=teacher(batch, set(needs)), step=7, heads=heads)


def test_mlm_kd_is_kl_at_masked_positions_normalised_by_masks(batch):
    teacher, student = _ar_teacher(), _nar_student()
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


def test_mlm_seq_kd_weighted_masked_ce_over_nbest(batch):
    teacher, student = _ar_teacher(), _nar_student()
    teacher.nbest_method = "attention-beam"  # the AR teacher's joint CTC/attention beam search
    ctx = _ctx_heads(student, batch, teacher, {"nbest"})
    method = build_kd_method("mlm_seq_kd", student, seed=11)
    loss = method(ctx)["mlm_seq_kd"]
    # by hand, one hypothesis at a time, replaying the method's masking RNG
    from asr_kd.losses.masking import mask_tokens

    g = torch.Generator().manual_seed(11 + ctx.step)
    flat = [(n, h, float(w)) for n, (hs, sc) in enumerate(zip(ctx.teacher.nbest, ctx.teacher.nbest_scores))
            for h, w in zip(hs, torch.softmax(torch.tensor(sc, dtype=torch.float64), 0)) if len(h) > 0]
    masked = mask_tokens([h for _, h, _ in flat], student.mask_ctc.mask_id, generator=g)
    want = 0.0
    for r, (n, h, w) in enumerate(flat):
        logits = student.mask_ctc(ctx.enc.out[n : n + 1], ctx.enc.out_lens[n : n + 1],
                                  masked.ys_in[r : r + 1, : masked.ys_in.size(1)])
        lp = logits[0].detach().double().log_softmax(-1)
        pos = [j for j in range(len(h)) if masked.ys_out[r, j] != -1]
        want += w * sum(-float(lp[j, h[j]]) for j in pos) / len(pos)
    assert loss.item() == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="Mask-CTC"):
        build_kd_method("mlm_kd", make_model())
