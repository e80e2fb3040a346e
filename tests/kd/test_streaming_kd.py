"""streaming_kd (auxiliary non-streaming branch, arXiv 2308.16415) and transducer_kd: the branch's LSTM is
causal and its Transformer layer is not; APC targets and masking; the feature, relation and APC losses
against hand computations; Viterbi alignments against brute force; start-up errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from asr_kd.kd.methods import KdContext, build_kd_method
from asr_kd.kd.streaming_kd import AuxBranch, StreamingKd, apc_l1, chunk_from_ms, layer_pairs
from asr_kd.kd.teachers import AsrTeacher
from asr_kd.kd.transducer_kd import alignment_mask, best_alignment
from asr_kd.losses.kd import attention_relation_kl
from asr_kd.models.asr_model import build_asr_model
from asr_kd.testing.encoders import tiny_encoder_config

F = 16


def _model(causal: bool, seed: int = 0):
    torch.manual_seed(seed)
    cfg = {
        "vocab_size": 20,
        "encoder": tiny_encoder_config("zipformer", F, causal=causal),
        "transducer": {"d_pred": 16, "d_joint": 16},
        "ctc": {},
    }
    return build_asr_model(cfg).eval()


@pytest.fixture(scope="module")
def pair():
    return _model(True, 0), AsrTeacher(_model(False, 1))


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 120, F, generator=g), torch.tensor([120, 90]), [[3, 4, 5], [6, 7]]


def _run(method, student, teacher, chunk=4):
    x, xl, tokens = _batch()
    t_out = teacher({"inputs": x, "feature_lens": xl}, set(method.needs_teacher))
    kw = {"return_qkv": True} if "qkv" in method.needs_student else None
    losses = student(x, xl, tokens, chunk_size=chunk, left_context=2, return_encoder_output=True, encoder_kwargs=kw)
    enc = losses.pop("encoder_out")
    ctx = KdContext(model=student, batch={}, tokens=tokens, enc=enc, losses=losses, teacher=t_out, step=0)
    return method(ctx), enc, t_out


# ---------------------------------------------------------------------------- the branch
def test_lstm_sees_only_the_past_and_the_transformer_the_whole_utterance():
    torch.manual_seed(0)
    br = AuxBranch(12, 10, d_model=16, heads=2, d_ff=32, lstm_dim=8).eval()
    h = torch.randn(2, 15, 12)
    lens = torch.tensor([15, 15])
    h2 = h.clone()
    h2[:, 9:] += torch.randn(2, 6, 12)  # perturb the future of frame 8
    with torch.no_grad():
        a, b = br(h, lens), br(h2, lens)
    torch.testing.assert_close(a["apc"][:, :9], b["apc"][:, :9], rtol=0, atol=0)
    assert (a["apc"][:, 9:] - b["apc"][:, 9:]).abs().max() > 1e-4
    # the non-streaming layer: every frame's output depends on the future
    assert (a["feature"][:, :9] - b["feature"][:, :9]).abs().amax(dim=-1).min() > 1e-6
    # padding keys are masked: garbage after lens changes nothing before it
    h3 = h.clone()
    h3[1, 11:] = 1e3
    with torch.no_grad():
        c = br(h3, torch.tensor([15, 11]))
        d = br(h, torch.tensor([15, 11]))
    torch.testing.assert_close(c["feature"][1, :11], d["feature"][1, :11])


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_apc_target_is_teacher_frame_t_plus_n_and_end_padding_masked(shift):
    g = torch.Generator().manual_seed(shift)
    n, t, d = 2, 9, 5
    target = torch.randn(n, t, d, generator=g)
    lens = torch.tensor([9, 6])
    # a perfect predictor of t + N: zero loss, whatever sits in the frames that have no target
    pred = torch.full((n, t, d), float("nan"))
    for b in range(n):
        for i in range(int(lens[b]) - shift):
            pred[b, i] = target[b, i + shift]
    assert float(apc_l1(pred, target, lens, shift)) == 0.0
    # any prediction: the hand-computed sum of mean |p_t - y_{t+N}| over t < len - N
    pred = torch.randn(n, t, d, generator=g)
    want = sum(
        (pred[b, i] - target[b, i + shift]).abs().mean().item() for b in range(n) for i in range(int(lens[b]) - shift)
    )
    assert float(apc_l1(pred, target, lens, shift)) == pytest.approx(want, rel=1e-5)
    # a predictor of frame t (no shift) is not a perfect APC predictor
    assert float(apc_l1(target, target, lens, shift)) > 0.1


def _relation_kl_loops(s, t, lens, hr):
    """KL(R_t || R_s) summed over relation heads and valid rows, by explicit loops (float64 python)."""
    n, big_t, ds = s.shape
    total = 0.0
    for b in range(n):
        valid = int(lens[b])
        for r in range(hr):

            def rel(a, r=r, b=b, valid=valid):
                dr = a.shape[-1] // hr
                vecs = [[float(a[b, i, r * dr + j]) for j in range(dr)] for i in range(valid)]
                out = []
                for i in range(valid):
                    sc = [sum(x * y for x, y in zip(vecs[i], vecs[j])) / math.sqrt(dr) for j in range(valid)]
                    m = max(sc)
                    z = sum(math.exp(v - m) for v in sc)
                    out.append([math.exp(v - m) / z for v in sc])
                return out

            rs, rt = rel(s), rel(t)
            for i in range(valid):
                total += sum(p * (math.log(p) - math.log(q)) for p, q in zip(rt[i], rs[i]))
    return total


def test_relation_kl_hand_computed_tiny():
    s = torch.tensor([[[1.0, 0.0, 0.5, -1.0], [0.0, 1.0, 1.0, 0.0], [2.0, 2.0, 0.0, 0.0]]])
    t = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [9.0, 9.0]]])  # frame 2 is padding (lens 2)
    lens = torch.tensor([2])
    # by hand, Hr = 1, valid frames 0 and 1:
    # student scores /2: [[1.25, 0], [0, 2]] * ... -> s0.s0 = 2.25, s0.s1 = 0.5, s1.s1 = 2; / sqrt(4) = 2
    rs = [[math.exp(1.125) / (math.exp(1.125) + math.exp(0.25)), None], [None, None]]
    rs[0][1] = 1 - rs[0][0]
    rs[1][0] = math.exp(0.25) / (math.exp(0.25) + math.exp(1.0))
    rs[1][1] = 1 - rs[1][0]
    # teacher: t0.t0 = 1, t0.t1 = 1, t1.t1 = 2, / sqrt(2)
    rt0 = [0.5, 0.5]
    rt1 = [
        math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + math.exp(2 / math.sqrt(2))),
    ]
    rt1.append(1 - rt1[0])
    want = sum(p * math.log(p / q) for p, q in zip(rt0, rs[0])) + sum(p * math.log(p / q) for p, q in zip(rt1, rs[1]))
    got = attention_relation_kl(s, t, lens, num_relation_heads=1, reduction="sum")
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(_relation_kl_loops(s, t, lens, 1), rel=1e-9)
    # two relation heads
    got2 = attention_relation_kl(s, t, lens, num_relation_heads=2, reduction="sum")
    assert float(got2) == pytest.approx(_relation_kl_loops(s, t, lens, 2), rel=1e-6)


def test_method_relation_term_equals_loops_over_branch_and_teacher_qkv(pair):
    from asr_kd.kd.streaming_kd import qkv_at_rate

    student, teacher = pair
    m = build_kd_method(
        "streaming_kd",
        student,
        layers=[[2, 3]],
        l1_weight=0,
        cosine_weight=0,
        relation_weight=1.0,
        relations=["q", "v"],
        num_relation_heads=2,
        d_model=8,
        heads=2,
        d_ff=16,
        lstm_dim=0,
    )
    m.check_teacher(teacher)
    out, enc, t_out = _run(m, student, teacher)
    assert set(out) == {"skd_rel"}
    lens = torch.minimum(enc.out_lens, t_out.lens)
    h = enc.layer(2)
    with torch.no_grad():
        _, (q, k, v) = m.branches[0].transformer(m.branches[0].in_proj(h), lens)
    rate = t_out.layer_info[2].subsampling  # teacher layer 3 runs at 4: the output rate, no resampling
    assert rate == 4
    tq, tk, tv = qkv_at_rate(t_out.qkv[2], rate, 4, h.size(1), t_out.layer_lens[2])
    torch.testing.assert_close(tq, t_out.qkv[2][0][:, :, : h.size(1)])

    def flat(x):
        return x.transpose(1, 2).reshape(x.size(0), x.size(2), -1).double()

    want = _relation_kl_loops(flat(q), flat(tq), lens, 2) + _relation_kl_loops(flat(v), flat(tv), lens, 2)
    # in float64 the library's relation KL equals the loops to rounding
    exact = sum(
        float(attention_relation_kl(a.double(), b.double(), lens, num_relation_heads=2)) for a, b in ((q, tq), (v, tv))
    )
    assert exact == pytest.approx(want, rel=1e-9)
    # near-uniform relations: a small KL summed in float32 from p (log p - log q) terms, hence rel 2e-3
    assert float(out["skd_rel"].detach()) == pytest.approx(want, rel=2e-3)


def test_feature_terms_direct_mode_hand_computed(pair):
    student, teacher = pair
    # student layer 2 (dim 24) <- teacher layer 2 (dim 24): identity projection, plain features
    m = build_kd_method("streaming_kd", student, layers=[2], mode="direct", l1_weight=2.0, cosine_weight=0.5)
    m.check_teacher(teacher)
    assert not any(True for _ in m.parameters())
    out, enc, t_out = _run(m, student, teacher)
    s, t = enc.layer(2).double(), t_out.layer_outputs[1].double()
    lens = torch.minimum(enc.out_lens, t_out.lens)
    l1 = cos = 0.0
    for b in range(2):
        for i in range(int(lens[b])):
            l1 += (s[b, i] - t[b, i]).abs().mean().item()
            cos += 1 - (s[b, i] @ t[b, i]).item() / (s[b, i].norm() * t[b, i].norm()).item()
    assert float(out["skd_l1"]) == pytest.approx(2.0 * l1, rel=1e-5)
    assert float(out["skd_cos"]) == pytest.approx(0.5 * cos, rel=1e-4)


def test_all_terms_have_gradients_in_both_modes(pair):
    student, teacher = pair
    for mode in ("branch", "direct"):
        m = build_kd_method(
            "streaming_kd",
            student,
            layers=[1, [4, 4], -1],
            mode=mode,
            relation_weight=1.0,
            apc_weight=1.0,
            apc_shift=2,
            d_model=8,
            heads=2,
            d_ff=16,
            lstm_dim=8,
        )
        m.check_teacher(teacher)
        student.zero_grad()
        out, _, _ = _run(m, student, teacher)
        assert set(out) == {"skd_l1", "skd_cos", "skd_rel", "skd_apc"}
        assert all(torch.isfinite(v) and float(v) > 0 for v in out.values())
        sum(out.values()).backward()
        grads = [p.grad for p in student.encoder.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0
        if mode == "branch":
            assert all(p.grad is not None for p in m.parameters())


# ---------------------------------------------------------------------------- start-up errors
def test_bad_input_errors(pair):
    student, teacher = pair
    with pytest.raises(ValueError, match="needs teacher layer 9, but the teacher has 5 layers"):
        layer_pairs([1, [2, 9]], 5, 5)
    m = build_kd_method("streaming_kd", student, layers=[[5, 7]])
    with pytest.raises(ValueError, match="teacher has 5 layers"):
        m.check_teacher(teacher)
    with pytest.raises(ValueError, match="student layer 6 out of range"):
        build_kd_method("streaming_kd", student, layers=[6])
    with pytest.raises(ValueError, match="same output frame rate"):
        build_kd_method("streaming_kd", student, layers=[1]).bind_teacher(5, teacher.model.encoder.layer_info, 6)
    with pytest.raises(ValueError, match="cannot be brought to the common rate"):
        from asr_kd.models.encoder.base import LayerInfo

        build_kd_method("streaming_kd", student, layers=[1]).bind_teacher(1, [LayerInfo(8, 6)], 4)
    with pytest.raises(ValueError, match="not causal"):
        build_kd_method("streaming_kd", teacher.model, layers=[1])
    with pytest.raises(ValueError, match="online ASR teacher"):
        build_kd_method("streaming_kd", student, layers=[1]).check_teacher(object())
    enc = student.encoder  # tiny Zipformer: slowest stack 4 -> chunks of multiples of 2 output frames (80 ms)
    assert chunk_from_ms(enc, 160, 640) == (4, 4)
    assert chunk_from_ms(enc, 80, -1) == (2, -1)
    with pytest.raises(ValueError, match="output frames are 40 ms"):
        chunk_from_ms(enc, 100, 400)
    with pytest.raises(ValueError, match="must be a multiple of 2"):
        chunk_from_ms(enc, 40, 400)
    with pytest.raises(ValueError, match="not a whole number of 160 ms chunks"):
        chunk_from_ms(enc, 160, 600)
    with pytest.raises(ValueError, match="transducer head"):
        ctc_only = {"vocab_size": 20, "encoder": tiny_encoder_config("zipformer", F, causal=True), "ctc": {}}
        build_kd_method("transducer_kd", build_asr_model(ctc_only))


# ---------------------------------------------------------------------------- transducer_kd
def _brute_best(blank, label, t_n, s_n):
    """The best alignment by enumerating where the S labels go among the T rows."""
    best, best_nodes = -math.inf, None
    for rows in itertools.combinations_with_replacement(range(t_n), s_n):
        score, nodes, u = 0.0, [], 0
        for t in range(t_n):
            while u < s_n and rows[u] == t:
                nodes.append((t, u))
                score += label[t][u]
                u += 1
            nodes.append((t, u))
            score += blank[t][u]
        if score > best:
            best, best_nodes = score, nodes
    return best_nodes


def test_viterbi_alignment_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    n, t_max, s_max = 3, 5, 3
    blank = torch.randn(n, t_max, s_max + 1, generator=g)
    label = torch.randn(n, t_max, s_max + 1, generator=g)
    t_lens, s_lens = torch.tensor([5, 3, 4]), torch.tensor([3, 2, 0])
    start, end = best_alignment(blank, label, t_lens, s_lens)
    mask = alignment_mask(start, end, t_lens, s_max + 1)
    for b in range(n):
        want = _brute_best(blank[b].tolist(), label[b].tolist(), int(t_lens[b]), int(s_lens[b]))
        got = sorted((int(t), int(u)) for t, u in mask[b].nonzero().tolist())
        assert got == sorted(want)
        assert int(mask[b].sum()) == int(t_lens[b] + s_lens[b])


def test_transducer_kd_equals_kl_on_brute_force_path(pair):
    student, teacher = pair
    m = build_kd_method("transducer_kd", student, temperature=2.0)
    m.check_teacher(teacher)
    out, enc, t_out = _run(m, student, teacher, chunk=-1)
    x, xl, tokens = _batch()
    t_enc = t_out.extra["encoder_out"]
    lens = torch.minimum(enc.out_lens, t_out.lens)
    want = 0.0
    with torch.no_grad():
        for b, y in enumerate(tokens):
            tb = torch.tensor([y])
            t_lp = teacher.model.transducer.full_logits(t_enc[b : b + 1], tb)[0].log_softmax(-1)  # (T, U, V)
            s_lg = student.transducer.full_logits(enc.out[b : b + 1], tb)[0]
            tn = int(lens[b])
            blank = t_lp[:tn, :, 0].tolist()
            label = [[float(t_lp[t, u, y[u]]) if u < len(y) else 0.0 for u in range(len(y) + 1)] for t in range(tn)]
            t_full = teacher.model.transducer.full_logits(t_enc[b : b + 1], tb)[0]
            for t, u in _brute_best(blank, label, tn, len(y)):
                p = (t_full[t, u] / 2.0).log_softmax(-1)
                q = (s_lg[t, u] / 2.0).log_softmax(-1)
                want += float((p.exp() * (p - q)).sum())
    assert float(out["transducer_kd"]) == pytest.approx(4.0 * want, rel=1e-4)
    out["transducer_kd"].backward()
    assert student.transducer.joiner.output.weight.grad.abs().sum() > 0


def test_streaming_kd_rejects_all_zero_weights(pair):
    student, _ = pair
    with pytest.raises(ValueError, match="every term weight is 0"):
        StreamingKd(student, l1_weight=0, cosine_weight=0)
