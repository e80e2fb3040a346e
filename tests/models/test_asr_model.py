"""AsrModel on every encoder type (asr_kd.testing.encoders): every head combination, inter-CTC wiring
on multi-rate layers, sub-models, combine_losses, config/factory."""

from __future__ import annotations

import itertools

import pytest
import torch

from asr_kd.losses.ctc import ctc_loss
from asr_kd.losses.rnnt import fast_rnnt_available, transducer_loss_scales
from asr_kd.models.asr_model import (
    AsrModel,
    AsrModelConfig,
    build_asr_model,
    combine_losses,
    default_loss_weights,
)
from asr_kd.models.encoder import build_encoder, list_encoders
from asr_kd.testing.encoders import (
    TINY_ENCODERS,
    layer_at_output_rate_reference,
    tiny_encoder_config,
    tiny_encoder_types,
)

V, F_IN = 12, 10

HEADS = ("ctc", "inter_ctc", "transducer", "attention_decoder", "mask_ctc")
SMALL_DEC = {"num_layers": 1, "heads": 2, "d_ff": 32, "dropout": 0.0}


def _encoder_cfg(encoder_type, **overrides):
    return tiny_encoder_config(encoder_type, F_IN, **overrides)


def _config(heads, encoder_type, **extra):
    cfg = {"vocab_size": V, "encoder": _encoder_cfg(encoder_type)}
    if "ctc" in heads:
        cfg["ctc"] = {}
    if "inter_ctc" in heads:
        cfg["inter_ctc"] = {"layers": [1, 2]}
    if "transducer" in heads:
        cfg["transducer"] = {"d_pred": 8, "d_joint": 8, "prune_range": 3}
    if "attention_decoder" in heads:
        cfg["attention_decoder"] = dict(SMALL_DEC)
    if "mask_ctc" in heads:
        cfg["mask_ctc"] = dict(SMALL_DEC)
    cfg.update(extra)
    return cfg


def _model(heads, encoder_type, seed=0, **extra):
    torch.manual_seed(seed)
    return build_asr_model(_config(heads, encoder_type, **extra))


def _batch(seed=0):
    """3 utterances of 64 / 48 / 30 frames (~15 / 11 / 6 encoder frames) with 4 / 2 / 1 tokens."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 64, F_IN, generator=g)
    x_lens = torch.tensor([64, 48, 30])
    tokens = [[3, 4, 5, 6], [7, 2], [9]]
    return x, x_lens, tokens


EXPECTED = {
    "ctc": {"ctc"},
    "inter_ctc": {"inter_ctc", "inter_ctc_1", "inter_ctc_2"},
    "transducer": {"simple", "pruned"},
    "attention_decoder": {"att"},
    "mask_ctc": {"mlm", "num_masked"},
}
COMBOS = [c for r in range(1, len(HEADS) + 1) for c in itertools.combinations(HEADS, r)]
if not fast_rnnt_available():
    COMBOS = [c for c in COMBOS if "transducer" not in c]


def test_every_registered_encoder_has_a_tiny_config():
    assert tiny_encoder_types() == list_encoders() and set(TINY_ENCODERS) == set(list_encoders())


@pytest.mark.parametrize("heads", COMBOS, ids=lambda c: "+".join(c))
def test_every_head_combination_forward_backward(heads, encoder_type):
    model = _model(heads, encoder_type)
    x, x_lens, tokens = _batch()
    out = model(x, x_lens, tokens, mask_generator=torch.Generator().manual_seed(0))
    expected = set().union(*(EXPECTED[h] for h in heads)) | {"num_frames", "num_tokens", "num_utts"}
    assert set(out) == expected
    assert out["num_frames"].item() == int(model.encoder.subsampled_lengths(x_lens).sum())
    assert out["num_tokens"].item() == 7 and out["num_utts"].item() == 3
    for k in expected & {"ctc", "inter_ctc", "simple", "pruned", "att", "mlm"}:
        assert out[k].dim() == 0 and torch.isfinite(out[k]) and out[k].item() > 0, k
    total = combine_losses(out, model.loss_weights, step=0, warm_step=10)
    total.backward()
    got = {name for name, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if name in got:
            assert torch.isfinite(p.grad).all(), name
    if heads == ("inter_ctc",):
        # only layers 1 and 2 feed a loss: exactly the parameters the 2-layer sub-model trains
        sub = model.submodel(2)
        sub_out = sub(x, x_lens, tokens)
        sub_out["ctc"].backward()
        want = {"encoder." + n for n, p in sub.encoder.named_parameters() if p.grad is not None}
        want |= {n for n, _ in model.named_parameters() if n.startswith("inter_ctc.")}
        assert got == want
        assert any(n.startswith("encoder.") for n, _ in model.named_parameters() if n not in got)
    else:
        assert got == {name for name, _ in model.named_parameters()}


def test_inter_ctc_reads_its_layer_at_the_output_rate(encoder_type):
    """Every layer below the last gets an inter-CTC head on its frames brought to the output rate:
    multi-rate layers averaged (faster) or repeated (slower) over their own valid frames."""
    torch.manual_seed(0)
    enc = build_encoder(_encoder_cfg(encoder_type))
    layers = list(range(1, enc.num_layers))
    model = AsrModel(enc, V, inter_ctc_layers=layers).eval()
    x, x_lens, tokens = _batch()
    with torch.no_grad():
        out = model(x, x_lens, tokens, return_encoder_output=True)
    eo = out["encoder_out"]
    info, rate = enc.layer_info, enc.subsampling_factor
    refs = {}
    for k in layers:
        lens_k = eo.layer_lens[k - 1] if eo.layer_lens is not None else eo.out_lens
        h = layer_at_output_rate_reference(
            eo.layer_outputs[k - 1], lens_k, info[k - 1].subsampling, rate, eo.out.size(1)
        )
        head = model.inter_ctc_head(k)
        assert head.output.in_features == info[k - 1].dim
        refs[k] = ctc_loss(head.log_probs(h), eo.out_lens, tokens)
        assert out[f"inter_ctc_{k}"].item() == pytest.approx(refs[k].item(), rel=1e-5), k
        for other in layers:
            if other != k:  # another layer's frames (cut / padded to this head's dim) give another loss
                wrong = ctc_loss(head.log_probs(eo.layer(other, dim=info[k - 1].dim)), eo.out_lens, tokens)
                assert abs(wrong.item() - refs[k].item()) > 1e-3
    assert out["inter_ctc"].item() == pytest.approx(sum(r.item() for r in refs.values()) / len(layers), rel=1e-5)
    if encoder_type == "zipformer":  # the tiny Zipformer really is multi-rate and multi-dim
        assert {li.subsampling for li in info} == {2, 4, 8} and len({li.dim for li in info}) > 1


def test_inter_ctc_shared_head(encoder_type):
    """A shared head (the final CTC head) works on layers at the output dim and is refused on others."""
    enc_cfg = _encoder_cfg(encoder_type)
    info = build_encoder(enc_cfg).layer_info
    out_dim = build_encoder(enc_cfg).output_dim
    x, x_lens, tokens = _batch()
    for k in range(1, len(info)):
        cfg = _config(("ctc", "inter_ctc"), encoder_type, inter_ctc={"layers": [k], "shared": True})
        if info[k - 1].dim != out_dim:
            with pytest.raises(ValueError, match=f"inter_ctc.shared needs layer {k} at the output dim {out_dim}"):
                build_asr_model(cfg)
            continue
        torch.manual_seed(0)
        model = build_asr_model(cfg).eval()
        assert len(model.inter_ctc) == 0 and model.inter_ctc_head(k) is model.ctc
        with torch.no_grad():
            out = model(x, x_lens, tokens, return_encoder_output=True)
        eo = out["encoder_out"]
        ref = ctc_loss(model.ctc.log_probs(eo.layer(k)), eo.out_lens, tokens)
        assert out[f"inter_ctc_{k}"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert any(li.dim == out_dim for li in info[:-1])  # each tiny encoder has a shareable layer


def test_invalid_configs(encoder_type):
    enc = build_encoder(_encoder_cfg(encoder_type))
    with pytest.raises(ValueError, match="at least one head"):
        AsrModel(enc, V)
    with pytest.raises(ValueError, match=rf"inter-CTC layer {enc.num_layers} must be in \[1, {enc.num_layers - 1}\]"):
        AsrModel(enc, V, inter_ctc_layers=[enc.num_layers])
    with pytest.raises(ValueError, match="unknown keys \\['dropot'\\] in 'ctc' config"):
        build_asr_model({"vocab_size": V, "ctc": {"dropot": 0.1}}, encoder=enc)
    with pytest.raises(ValueError, match="unknown model config keys \\['ctcc'\\]"):
        build_asr_model({"vocab_size": V, "ctcc": {}}, encoder=enc)


def test_chunk_args_reach_encoder(encoder_type):
    model = _model(("ctc",), encoder_type)
    seen = []
    model.encoder.register_forward_pre_hook(
        lambda m, a, kw: seen.append((kw["chunk_size"], kw["left_context"])), with_kwargs=True
    )
    x, x_lens, tokens = _batch()
    model(x, x_lens, tokens, chunk_size=4, left_context=2)
    assert seen == [(4, 2)]


def test_full_rnnt_option(encoder_type):
    cfg = _config(("transducer",), encoder_type)
    cfg["transducer"]["loss"] = "full"
    torch.manual_seed(0)
    model = build_asr_model(cfg).eval()
    x, x_lens, tokens = _batch()
    out = model(x, x_lens, tokens, return_encoder_output=True)
    assert "rnnt" in out and "pruned" not in out
    # the full RNN-T loss is the head's full_loss on the encoder output
    eo = out["encoder_out"]
    targets = torch.zeros(3, 4, dtype=torch.long)
    for n, t in enumerate(tokens):
        targets[n, : len(t)] = torch.tensor(t)
    ref = model.transducer.full_loss(eo.out, eo.out_lens, targets, torch.tensor([4, 2, 1]))
    assert out["rnnt"].item() == pytest.approx(ref.item(), rel=1e-5)
    combine_losses(out, model.loss_weights).backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None}
    assert unused == {f"transducer.{m}.{w}" for m in ("simple_am_proj", "simple_lm_proj") for w in ("weight", "bias")}


def _fake_losses():
    t = torch.tensor
    return {
        "ctc": t(10.0),
        "att": t(20.0),
        "inter_ctc": t(12.0),
        "simple": t(30.0),
        "pruned": t(40.0),
        "mlm": t(6.0),
        "num_masked": t(3),
        "num_utts": t(4),
    }


def test_combine_losses_values():
    ls = _fake_losses()
    w = 0.3
    assert combine_losses(ls, {"ctc": w, "att": 1 - w}).item() == pytest.approx((1 - w) * 20 + w * 10)
    for step in (0, 5, 10, 20):
        s, p = transducer_loss_scales(step, 10, 0.5)
        got = combine_losses(ls, {"transducer": 1.0, "ctc": 0.2}, step, warm_step=10)
        assert got.item() == pytest.approx(s * 30 + p * 40 + 0.2 * 10)
    assert combine_losses(ls, {"mlm": 1.0}).item() == pytest.approx(6.0)  # ESPnet: summed over masks
    assert combine_losses(ls, {"mlm": 1.0}, mlm_normalize="masks").item() == pytest.approx(6.0 / 3 * 4)
    with pytest.raises(ValueError, match="mlm_normalize"):
        combine_losses(ls, {"mlm": 1.0}, mlm_normalize="tokens")
    with pytest.raises(KeyError):
        combine_losses({"ctc": torch.tensor(1.0)}, {"att": 1.0})


def test_default_loss_weights():
    assert default_loss_weights(["ctc"]) == {"ctc": 1.0}
    assert default_loss_weights(["ctc", "attention_decoder"]) == pytest.approx({"att": 0.7, "ctc": 0.3})
    assert default_loss_weights(["ctc", "inter_ctc"], inter_ctc_weight=0.3) == pytest.approx(
        {"ctc": 0.7, "inter_ctc": 0.3}
    )
    assert default_loss_weights(["transducer"]) == {"transducer": 1.0}
    assert default_loss_weights(["inter_ctc"]) == {"inter_ctc": 1.0}


def test_config_roundtrip_and_weights(encoder_type):
    cfg = AsrModelConfig.from_dict(
        _config(("ctc", "attention_decoder"), encoder_type, weights={"ctc": 0.5, "att": 0.5})
    )
    model = build_asr_model(cfg)
    assert model.loss_weights == {"ctc": 0.5, "att": 0.5}
    assert AsrModelConfig.from_dict(model.config) == cfg
    rebuilt = build_asr_model(model.config)
    rebuilt.load_state_dict(model.state_dict())
    x, x_lens, tokens = _batch()
    with torch.no_grad():
        a = model.eval()(x, x_lens, tokens)
        b = rebuilt.eval()(x, x_lens, tokens)
    assert a["ctc"].item() == b["ctc"].item() and a["att"].item() == b["att"].item()


def test_mask_generator_makes_mlm_deterministic(encoder_type):
    model = _model(("mask_ctc",), encoder_type).eval()
    x, x_lens, tokens = _batch()
    a = model(x, x_lens, tokens, mask_generator=torch.Generator().manual_seed(5))
    b = model(x, x_lens, tokens, mask_generator=torch.Generator().manual_seed(5))
    assert a["mlm"].item() == b["mlm"].item() and a["num_masked"] == b["num_masked"]
    assert 3 <= a["num_masked"].item() <= 7


@pytest.mark.skipif(not fast_rnnt_available(), reason="fast_rnnt not importable")
def test_all_heads_with_chunks(encoder_type):
    model = _model(HEADS, encoder_type)
    x, x_lens, tokens = _batch()
    out = model(x, x_lens, tokens, chunk_size=4, return_encoder_output=True)
    assert out["num_frames"].item() == int(model.encoder.subsampled_lengths(x_lens).sum())
    assert len(out["encoder_out"].layer_outputs) == model.encoder.num_layers
    combine_losses(out, model.loss_weights, step=0, warm_step=100).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_submodel_equals_the_intermediate_head(encoder_type):
    """``submodel(k)`` (the truncated encoder + layer k's head) reproduces the inter-CTC head of layer k,
    and its config rebuilds it."""
    model = _model(("ctc", "inter_ctc"), encoder_type, inter_ctc={"layers": [1, 2]}).eval()
    x, x_lens, tokens = _batch()
    with torch.no_grad():
        enc = model.encode(x, x_lens)
        for k in (1, 2):
            sub = model.submodel(k).eval()
            assert sub.encoder.num_layers == k and sub.enabled_heads() == ["ctc"]
            assert sub.encoder.output_dim == model.encoder.layer_info[k - 1].dim
            want = model.inter_ctc_head(k)(enc.layer(k))
            got_enc = sub.encode(x, x_lens)
            assert torch.equal(got_enc.out_lens, enc.out_lens)
            valid = enc.valid_mask()
            torch.testing.assert_close(sub.ctc(got_enc.out)[valid], want[valid], rtol=1e-5, atol=1e-5)
            rebuilt = build_asr_model(sub.config)
            rebuilt.load_state_dict(sub.state_dict())
            torch.testing.assert_close(
                rebuilt.eval().ctc(rebuilt.encode(x, x_lens).out)[valid], want[valid], rtol=1e-5, atol=1e-5
            )
            assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in model.parameters())


def test_loss_fn_checks_mlm_normalize_at_construction():
    from asr_kd.training.asr_task import AsrLossFn

    assert AsrLossFn(mlm_normalize="masks").mlm_normalize == "masks"
    with pytest.raises(ValueError, match="mlm_normalize"):
        AsrLossFn(mlm_normalize="tokens")
