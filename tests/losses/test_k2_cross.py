"""k2 against the k2-free losses on the same inputs, values and gradients.

- CTC: ``k2.ctc_loss`` (called directly, and through ``ctc_loss(backend="k2")``) against
  ``torch.nn.functional.ctc_loss``;
- pruned RNN-T: k2's ``rnnt_loss_smoothed`` / ``get_rnnt_prune_ranges`` / ``do_rnnt_pruning`` /
  ``rnnt_loss_pruned`` against fast_rnnt's, then the ``backend="k2"`` / ``"fast_rnnt"`` choice of
  :func:`pruned_rnnt_loss` and of the model config (``model.transducer.backend``);
- full RNN-T: ``k2.rnnt_loss`` against the pure-PyTorch reference.

Every test takes the ``k2`` fixture (tests/conftest.py): skipped with the reason when k2 is not
importable, failing instead under ``ASR_KD_REQUIRE_K2=1`` (``.ci/run`` sets it when it installs k2).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from asr_kd.losses.ctc import ctc_loss
from asr_kd.losses.rnnt import (
    fast_rnnt_available,
    make_boundary,
    pruned_rnnt_loss,
    rnnt_loss_full,
    rnnt_loss_reference,
)

needs_fast_rnnt = pytest.mark.skipif(not fast_rnnt_available(), reason="fast_rnnt not importable")


# ----------------------------------------------------------------------------------------- CTC
def _ctc_batch(seed=0, n=5, t=20, v=9):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, v, generator=g) * 2.0
    lens = torch.tensor([t, t - 3, t - 7, 11, 6][:n])
    # repeats (need a blank between them), a single token, an empty target
    tokens = [[1, 2, 2, 3, 8], [4, 4, 4], [5], [], [7, 1, 7]][:n]
    return logits, lens, tokens


def _torch_ctc(logits, lens, tokens):
    lp = logits.log_softmax(-1)
    targets = torch.tensor([t for seq in tokens for t in seq], dtype=torch.int64)
    t_lens = torch.tensor([len(s) for s in tokens])
    return F.ctc_loss(lp.transpose(0, 1), targets, lens, t_lens, blank=0, reduction="none")


def _k2_ctc_direct(k2, logits, lens, tokens):
    """k2's own recipe: DenseFsaVec over segments sorted by length, ctc_graph, ctc_loss."""
    lp = logits.log_softmax(-1)
    order = torch.argsort(lens, descending=True, stable=True)
    segs = torch.stack(
        [order.to(torch.int32), torch.zeros(len(lens), dtype=torch.int32), lens[order].to(torch.int32)], dim=1
    )
    dense = k2.DenseFsaVec(lp, segs)
    graph = k2.ctc_graph([tokens[int(i)] for i in order], modified=False)
    loss_sorted = k2.ctc_loss(graph, dense, output_beam=1e10, reduction="none", use_double_scores=True)
    loss = torch.empty_like(loss_sorted)
    loss[order] = loss_sorted
    return loss


def test_k2_ctc_loss_matches_torch_values_and_gradients(k2):
    logits, lens, tokens = _ctc_batch()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ref = _torch_ctc(a, lens, tokens)
    got = _k2_ctc_direct(k2, b, lens, tokens)
    assert torch.isfinite(ref).all() and (ref > 0).all()
    torch.testing.assert_close(got.float(), ref, rtol=1e-5, atol=1e-4)
    # a weighted sum, so each utterance's gradient is checked on its own scale
    w = torch.arange(1.0, len(tokens) + 1)
    (ref * w).sum().backward()
    (got.float() * w).sum().backward()
    assert a.grad.abs().sum() > 0
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)
    # padding frames get no gradient from either
    assert a.grad[1, lens[1] :].abs().max() == 0 and b.grad[1, lens[1] :].abs().max() == 0


def test_ctc_backend_k2_matches_backend_torch(k2):
    logits, lens, tokens = _ctc_batch(seed=1)
    # the last utterance cannot fit its labels (3 tokens with a repeat need 4 frames, it has 2)
    lens = lens.clone()
    lens[-1] = 2
    grads, vals = {}, {}
    for backend in ("torch", "k2"):
        x = logits.clone().requires_grad_(True)
        vals[backend] = ctc_loss(x.log_softmax(-1), lens, tokens, reduction="none", backend=backend)
        vals[backend].sum().backward()
        grads[backend] = x.grad
    assert vals["torch"][-1].item() == 0.0 and vals["k2"][-1].item() == 0.0  # zero_infinity
    torch.testing.assert_close(vals["k2"], vals["torch"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grads["k2"], grads["torch"], rtol=1e-4, atol=1e-5)
    assert grads["k2"][-1].abs().max() == 0  # the infeasible utterance contributes nothing


# --------------------------------------------------------------------------------- pruned RNN-T
class _Joint(nn.Module):
    """A joiner without input projections: ``out(tanh(enc + pred))``."""

    def __init__(self, j: int, v: int):
        super().__init__()
        self.out = nn.Linear(j, v)

    def forward(self, enc, pred):
        return self.out(torch.tanh(enc + pred))


def _rnnt_inputs(seed=0, n=3, t=12, s=5, v=8, j=6):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(n, t, v, generator=g)
    lm = torch.randn(n, s + 1, v, generator=g)
    enc = torch.randn(n, t, j, generator=g)
    pred = torch.randn(n, s + 1, j, generator=g)
    targets = torch.randint(1, v, (n, s), generator=g)
    t_lens = torch.tensor([t, t - 4, 5][:n])
    s_lens = torch.tensor([s, s - 2, 1][:n])
    for i, sl in enumerate(s_lens.tolist()):
        targets[i, sl:] = 0
    return am, lm, enc, pred, targets, t_lens, s_lens


@needs_fast_rnnt
def test_k2_pruned_rnnt_functions_match_fast_rnnt(k2):
    """Step by step, k2's functions against fast_rnnt's on the same inputs: simple loss and its
    lattice gradients, the prune ranges, the pruned loss and its gradient."""
    import fast_rnnt

    am, lm, enc, pred, targets, t_lens, s_lens = _rnnt_inputs()
    boundary = make_boundary(s_lens, t_lens)
    torch.manual_seed(0)
    joint = _Joint(enc.size(-1), am.size(-1))
    res = {}
    for name, mod in (("fast_rnnt", fast_rnnt), ("k2", k2)):
        a, b = am.clone().requires_grad_(True), lm.clone().requires_grad_(True)
        simple, (px_grad, py_grad) = mod.rnnt_loss_smoothed(
            lm=b,
            am=a,
            symbols=targets,
            termination_symbol=0,
            lm_only_scale=0.25,
            am_only_scale=0.0,
            boundary=boundary,
            reduction="none",
            return_grad=True,
        )
        # cloned: fast_rnnt's backward later overwrites the px_grad / py_grad it returned (k2's does not)
        px_grad, py_grad = px_grad.clone(), py_grad.clone()
        ranges = mod.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=3)
        e, p = enc.clone().requires_grad_(True), pred.clone().requires_grad_(True)
        am_p, lm_p = mod.do_rnnt_pruning(am=e, lm=p, ranges=ranges)
        logits = joint(am_p, lm_p)
        pruned = mod.rnnt_loss_pruned(
            logits=logits, symbols=targets, ranges=ranges, termination_symbol=0, boundary=boundary, reduction="none"
        )
        (simple.sum() + 2.0 * pruned.sum()).backward()
        res[name] = dict(simple=simple, px=px_grad, py=py_grad, ranges=ranges, pruned=pruned)
        res[name].update(am=a.grad, lm=b.grad, enc=e.grad, pred=p.grad)
    ft, kk = res["fast_rnnt"], res["k2"]
    assert torch.equal(kk["ranges"], ft["ranges"])
    assert (ft["simple"] > 0).all() and (ft["pruned"] > 0).all()
    for key in ("simple", "px", "py", "pruned", "am", "lm", "enc", "pred"):
        torch.testing.assert_close(kk[key], ft[key], rtol=1e-5, atol=1e-5, msg=key)
    assert ft["enc"].abs().sum() > 0 and ft["am"].abs().sum() > 0


@needs_fast_rnnt
@pytest.mark.parametrize("prune_range", [2, 4, 6])
def test_pruned_rnnt_loss_backend_k2_matches_fast_rnnt(k2, prune_range):
    am, lm, enc, pred, targets, t_lens, s_lens = _rnnt_inputs(seed=prune_range)
    torch.manual_seed(1)
    joint = _Joint(enc.size(-1), am.size(-1))
    out = {}
    for backend in ("fast_rnnt", "k2"):
        xs = [x.clone().requires_grad_(True) for x in (am, lm, enc, pred)]
        joint.zero_grad()
        simple, pruned = pruned_rnnt_loss(
            *xs[:2], *xs[2:], joint, targets, t_lens, s_lens, prune_range=prune_range, reduction="none", backend=backend
        )
        (0.5 * simple.sum() + pruned.sum()).backward()
        out[backend] = [simple, pruned] + [x.grad for x in xs] + [p.grad.clone() for p in joint.parameters()]
    for i, (got, ref) in enumerate(zip(out["k2"], out["fast_rnnt"], strict=True)):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"item {i}")


def test_k2_full_rnnt_loss_matches_reference(k2):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 6, 5, 7, generator=g)
    targets = torch.randint(1, 7, (3, 4), generator=g)
    t_lens, s_lens = torch.tensor([6, 4, 2]), torch.tensor([4, 2, 1])
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    ref = rnnt_loss_reference(a.double(), targets, t_lens, s_lens, reduction="none")
    got = rnnt_loss_full(b, targets, t_lens, s_lens, reduction="none", backend="k2")
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    ref.sum().backward()
    got.sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)


def test_unknown_or_missing_rnnt_backend_is_named():
    am, lm, enc, pred, targets, t_lens, s_lens = _rnnt_inputs()
    joint = _Joint(enc.size(-1), am.size(-1))
    with pytest.raises(ValueError, match="nope"):
        pruned_rnnt_loss(am, lm, enc, pred, joint, targets, t_lens, s_lens, backend="nope")


# ------------------------------------------------------------------------------ model config
@needs_fast_rnnt
@pytest.mark.parametrize("loss", ["pruned", "full"])
def test_model_transducer_backend_from_config(k2, loss):
    """``model.transducer.backend: k2`` gives the losses and gradients of the default fast_rnnt model."""
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.testing.encoders import tiny_encoder_config, tiny_encoder_types

    v, f_in = 12, 10
    enc_cfg = tiny_encoder_config(tiny_encoder_types()[0], f_in)
    g = torch.Generator().manual_seed(0)
    x, x_lens, tokens = torch.randn(3, 64, f_in, generator=g), torch.tensor([64, 48, 30]), [[3, 4, 5, 6], [7, 2], [9]]
    out, grads = {}, {}
    for backend in ("fast_rnnt", "k2"):
        torch.manual_seed(0)
        cfg = {"d_pred": 8, "d_joint": 8, "prune_range": 3, "loss": loss, "backend": backend}
        model = build_asr_model({"vocab_size": v, "encoder": enc_cfg, "transducer": cfg}).eval()
        assert model.transducer_backend == backend
        losses = model(x, x_lens, tokens)
        keys = ("simple", "pruned") if loss == "pruned" else ("rnnt",)
        sum(losses[k] for k in keys).backward()
        out[backend] = torch.stack([losses[k].detach() for k in keys])
        grads[backend] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(out["k2"], out["fast_rnnt"], rtol=1e-5, atol=1e-4)
    assert set(grads["k2"]) == set(grads["fast_rnnt"]) and grads["k2"]
    for name, ref in grads["fast_rnnt"].items():
        torch.testing.assert_close(grads["k2"][name], ref, rtol=1e-4, atol=1e-5, msg=name)


def test_model_rejects_unknown_transducer_backend():
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.testing.encoders import tiny_encoder_config, tiny_encoder_types

    enc_cfg = tiny_encoder_config(tiny_encoder_types()[0], 10)
    with pytest.raises(ValueError, match="warp"):
        build_asr_model({"vocab_size": 12, "encoder": enc_cfg, "transducer": {"backend": "warp"}})


def test_backend_k2_really_dispatches_to_k2(monkeypatch):
    """With k2 made unimportable, ``backend="k2"`` fails naming k2 (so the tests above did run k2),
    while the fast_rnnt backend is untouched."""
    import sys

    monkeypatch.setitem(sys.modules, "k2", None)  # `import k2` now raises ImportError
    am, lm, enc, pred, targets, t_lens, s_lens = _rnnt_inputs()
    joint = _Joint(enc.size(-1), am.size(-1))
    with pytest.raises(RuntimeError, match="'k2' was requested but is not importable"):
        pruned_rnnt_loss(am, lm, enc, pred, joint, targets, t_lens, s_lens, backend="k2")
    logits = torch.randn(1, 3, 2, 4)
    with pytest.raises(RuntimeError, match="'k2'"):
        rnnt_loss_full(logits, targets[:1, :1], torch.tensor([3]), torch.tensor([1]), backend="k2")
    if fast_rnnt_available():
        simple, pruned = pruned_rnnt_loss(am, lm, enc, pred, joint, targets, t_lens, s_lens, backend="fast_rnnt")
        assert torch.isfinite(simple) and torch.isfinite(pruned)


def test_require_k2_skips_or_fails(monkeypatch):
    """Without k2 the k2 tests skip with the reason; under ASR_KD_REQUIRE_K2=1 (CI with the wheel) they fail."""
    import sys

    from asr_kd.testing.optional import require_k2

    monkeypatch.setitem(sys.modules, "k2", None)
    monkeypatch.delenv("ASR_KD_REQUIRE_K2", raising=False)
    with pytest.raises(pytest.skip.Exception, match="k2 not importable"):
        require_k2()
    monkeypatch.setenv("ASR_KD_REQUIRE_K2", "1")
    with pytest.raises(pytest.fail.Exception, match="ASR_KD_REQUIRE_K2=1 but k2 not importable"):
        require_k2()
