"""AsrModel: every head combination, inter-CTC wiring, combine_losses, config/factory."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from asr_kd.losses.ctc import ctc_loss
from asr_kd.losses.rnnt import fast_rnnt_available, transducer_loss_scales
from asr_kd.models.asr_model import (
    AsrModel,
    AsrModelConfig,
    build_asr_model,
    combine_losses,
    default_loss_weights,
)
from asr_kd.models.encoder import Encoder, EncoderOutput

V, F_IN, D = 12, 10, 16


class TinyEncoder(Encoder):
    """Stand-in encoder: stack 2 frames (T' = T // 2), Linear, then ``num_layers`` Linear+tanh."""

    output_dim = D
    subsampling_factor = 2
    capabilities = frozenset({"chunked"})

    def __init__(self, num_layers: int = 3):
        super().__init__()
        self.inp = nn.Linear(2 * F_IN, D)
        self.layers = nn.ModuleList(nn.Linear(D, D) for _ in range(num_layers))
        self.last_chunk_size = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def subsampled_lengths(self, x_lens):
        return x_lens // 2

    def forward(self, x, x_lens, *, chunk_size=-1, left_context=-1, return_attn=False,
                return_qkv=False):
        self.last_chunk_size = (chunk_size, left_context)
        n, t, f = x.shape
        h = self.inp(x[:, : t // 2 * 2].reshape(n, t // 2, 2 * f))
        outs = []
        for layer in self.layers:
            h = torch.tanh(layer(h))
            outs.append(h)
        return EncoderOutput(out=h, out_lens=self.subsampled_lengths(x_lens), layer_outputs=outs)


HEADS = ("ctc", "inter_ctc", "transducer", "attention_decoder", "mask_ctc")
SMALL_DEC = {"num_layers": 1, "heads": 2, "d_ff": 32, "dropout": 0.0}


def _config(heads, **extra):
    cfg = {"vocab_size": V}
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


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 20, F_IN, generator=g)
    x_lens = torch.tensor([20, 16, 11])
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


@pytest.mark.parametrize("heads", COMBOS, ids=lambda c: "+".join(c))
def test_every_head_combination_forward_backward(heads):
    torch.manual_seed(0)
    model = build_asr_model(_config(heads), encoder=TinyEncoder())
    x, x_lens, tokens = _batch()
    out = model(x, x_lens, tokens, mask_generator=torch.Generator().manual_seed(0))
    expected = set().union(*(EXPECTED[h] for h in heads)) | {"num_frames", "num_tokens",
                                                              "num_utts"}
    assert set(out) == expected
    assert out["num_frames"].item() == 10 + 8 + 5
    assert out["num_tokens"].item() == 7 and out["num_utts"].item() == 3
    for k in expected & {"ctc", "inter_ctc", "simple", "pruned", "att", "mlm"}:
        assert out[k].dim() == 0 and torch.isfinite(out[k]) and out[k].item() > 0, k
    total = combine_losses(out, model.loss_weights, step=0, warm_step=10)
    total.backward()
    for name, p in model.named_parameters():
        if heads == ("inter_ctc",) and name.startswith("encoder.layers.2."):
            assert p.grad is None  # only layers 1 and 2 feed a loss
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_inter_ctc_reads_the_right_layer():
    torch.manual_seed(0)
    enc = TinyEncoder(num_layers=4)
    model = AsrModel(enc, V, inter_ctc_layers=[2])
    x, x_lens, tokens = _batch()
    out = model(x, x_lens, tokens, return_encoder_output=True)
    eo = out["encoder_out"]
    head = model.inter_ctc_head(2)
    ref = ctc_loss(head.log_probs(eo.layer_outputs[1]), eo.out_lens, tokens)
    assert out["inter_ctc_2"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out["inter_ctc"].item() == pytest.approx(ref.item(), rel=1e-6)
    for other in (0, 2, 3):
        wrong = ctc_loss(head.log_probs(eo.layer_outputs[other]), eo.out_lens, tokens)
        assert abs(wrong.item() - ref.item()) > 1e-3


def test_inter_ctc_shared_head():
    torch.manual_seed(0)
    model = build_asr_model(_config(("ctc", "inter_ctc"), inter_ctc={"layers": [1],
                                                                     "shared": True}),
                            encoder=TinyEncoder())
    assert len(model.inter_ctc) == 0 and model.inter_ctc_head(1) is model.ctc
    x, x_lens, tokens = _batch()
    out = model(x, x_lens, tokens, return_encoder_output=True)
    eo = out["encoder_out"]
    ref = ctc_loss(model.ctc.log_probs(eo.layer_outputs[0]), eo.out_lens, tokens)
    assert out["inter_ctc_1"].item() == pytest.approx(ref.item(), rel=1e-6)


def test_invalid_configs():
    with pytest.raises(ValueError, match="at least one head"):
        AsrModel(TinyEncoder(), V)
    with pytest.raises(ValueError, match="inter-CTC layer"):
        AsrModel(TinyEncoder(num_layers=3), V, inter_ctc_layers=[3])
    with pytest.raises(ValueError, match="unknown"):
        build_asr_model({"vocab_size": V, "ctc": {"dropot": 0.1}}, encoder=TinyEncoder())
    with pytest.raises(ValueError, match="unknown"):
        build_asr_model({"vocab_size": V, "ctcc": {}}, encoder=TinyEncoder())


def test_chunk_args_reach_encoder():
    enc = TinyEncoder()
    model = AsrModel(enc, V, ctc=build_asr_model(_config(("ctc",)), encoder=TinyEncoder()).ctc)
    x, x_lens, tokens = _batch()
    model(x, x_lens, tokens, chunk_size=4, left_context=2)
    assert enc.last_chunk_size == (4, 2)


def test_full_rnnt_option():
    torch.manual_seed(0)
    cfg = _config(("transducer",))
    cfg["transducer"]["loss"] = "full"
    model = build_asr_model(cfg, encoder=TinyEncoder())
    x, x_lens, tokens = _batch()
    out = model(x, x_lens, tokens)
    assert "rnnt" in out and "pruned" not in out
    combine_losses(out, model.loss_weights).backward()


def _fake_losses():
    t = torch.tensor
    return {"ctc": t(10.0), "att": t(20.0), "inter_ctc": t(12.0), "simple": t(30.0),
            "pruned": t(40.0), "mlm": t(6.0), "num_masked": t(3), "num_utts": t(4)}


def test_combine_losses_values():
    ls = _fake_losses()
    w = 0.3
    assert combine_losses(ls, {"ctc": w, "att": 1 - w}).item() == pytest.approx(
        (1 - w) * 20 + w * 10)
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
    assert default_loss_weights(["ctc", "attention_decoder"]) == pytest.approx(
        {"att": 0.7, "ctc": 0.3})
    assert default_loss_weights(["ctc", "inter_ctc"], inter_ctc_weight=0.3) == pytest.approx(
        {"ctc": 0.7, "inter_ctc": 0.3})
    assert default_loss_weights(["transducer"]) == {"transducer": 1.0}
    assert default_loss_weights(["inter_ctc"]) == {"inter_ctc": 1.0}


def test_config_roundtrip_and_weights():
    cfg = AsrModelConfig.from_dict(_config(("ctc", "attention_decoder"),
                                           weights={"ctc": 0.5, "att": 0.5}))
    model = build_asr_model(cfg, encoder=TinyEncoder())
    assert model.loss_weights == {"ctc": 0.5, "att": 0.5}
    assert AsrModelConfig.from_dict(model.config) == cfg


def test_mask_generator_makes_mlm_deterministic():
    torch.manual_seed(0)
    model = build_asr_model(_config(("mask_ctc",)), encoder=TinyEncoder()).eval()
    x, x_lens, tokens = _batch()
    a = model(x, x_lens, tokens, mask_generator=torch.Generator().manual_seed(5))
    b = model(x, x_lens, tokens, mask_generator=torch.Generator().manual_seed(5))
    assert a["mlm"].item() == b["mlm"].item() and a["num_masked"] == b["num_masked"]
    assert 3 <= a["num_masked"].item() <= 7


@pytest.mark.skipif(not fast_rnnt_available(), reason="fast_rnnt not importable")
def test_real_conformer_all_heads():
    torch.manual_seed(0)
    cfg = _config(HEADS, encoder={"type": "conformer", "input_dim": F_IN, "d_model": 16,
                                  "num_layers": 3, "num_heads": 2, "ffn_dim": 32,
                                  "conv_kernel": 3, "dropout": 0.0})
    model = build_asr_model(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, F_IN, generator=g)
    x_lens = torch.tensor([40, 31])
    tokens = [[3, 4, 5], [6, 7]]
    out = model(x, x_lens, tokens, chunk_size=4, return_encoder_output=True)
    assert out["num_frames"].item() == int(model.encoder.subsampled_lengths(x_lens).sum())
    assert len(out["encoder_out"].layer_outputs) == 3
    combine_losses(out, model.loss_weights, step=0, warm_step=100).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_loss_fn_checks_mlm_normalize_at_construction():
    from asr_kd.training.asr_task import AsrLossFn

    assert AsrLossFn(mlm_normalize="masks").mlm_normalize == "masks"
    with pytest.raises(ValueError, match="mlm_normalize"):
        AsrLossFn(mlm_normalize="tokens")
