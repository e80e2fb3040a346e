"""lm_repr_transfer through the CLIs on a toy transducer: dump two teachers of different depth (one with
context), train 3 steps with the method, average (the regression networks dropped), decode; the start-up
errors (dim that does not match R, missing layers, no transducer, wrong teacher)."""

from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("transformers")

from asr_kd.testing.recipe import TOY_MODEL, make_toy_recipe  # noqa: E402

TOY_TRANSDUCER = {"encoder": {**TOY_MODEL["encoder"]}, "transducer": {"d_pred": 16, "d_joint": 16}}


def _deeper_bert(src, dst, layers=4):
    """The tiny BERT's tokenizer with a ``layers``-layer random encoder (hidden 8): a second teacher of
    another depth and dim."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig.from_pretrained(src)
    cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size = layers, 8, 16
    torch.manual_seed(3)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(dst)
    for f in src.iterdir():
        if f.name.startswith(("vocab", "tokenizer", "special")):
            shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from lhotse import CutSet

    from asr_kd.corpus.documents import add_documents
    from asr_kd.kd.repr import ReprEncoder, dump_representations
    from asr_kd.testing.dummies import DUMMY_TEXTS
    from asr_kd.testing.tiny_mlm import make_tiny_mlm

    root = tmp_path_factory.mktemp("repr_recipe")
    conf = make_toy_recipe(root, model=TOY_TRANSDUCER)
    small = make_tiny_mlm(root / "bert2", head=False)
    deep = _deeper_bert(small, root / "bert4")
    docs = {t: (f"doc{i // 3}", i % 3) for i, t in enumerate(DUMMY_TEXTS)}  # documents of 3 sentences
    out = root / "data" / "kd_repr"
    for split in ("train", "dev", "test"):
        path = root / "data" / "manifests" / f"toy_cuts_{split}.jsonl.gz"
        add_documents(path, docs)
        cuts = CutSet.from_file(path)
        if split == "test":
            cuts.to_file(out / path.name)
            continue
        cuts = dump_representations(ReprEncoder(small), cuts, out, name="a", storage_name=f"a_{split}")
        dump_representations(
            ReprEncoder(deep, layers=[2, 4]),
            cuts,
            out,
            name="b",
            context_tokens=60,
            variants=2,
            storage_name=f"b_{split}",
            output_manifest=out / path.name,
        )
    return root, conf, small, deep


def _method(root, teachers, **kw):
    opts = {"lang_dir": str(root / "data" / "lang"), "d_state": 16, "d_hidden": 16, "att_heads": 2, **kw}
    t = ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in x.items()) + "}" for x in teachers)
    body = ", ".join(f"{k}: {v}" for k, v in opts.items())
    return f"kd.methods=[{{name: lm_repr_transfer, weight: 0.5, teachers: [{t}], {body}}}]"


def test_train_average_decode_with_two_teachers(recipe, tmp_path):
    from asr_kd.bin import average, decode, export, train
    from asr_kd.training.asr_task import load_asr_model

    root, conf, small, deep = recipe
    exp = tmp_path / "exp"
    kd = [
        f"data.manifest_dir={root / 'data' / 'kd_repr'}",
        "kd.teacher={type: offline_repr, models: [a, b]}",
        _method(
            root,
            [
                {"name": "a", "model_dir": small, "mapping": "uniform", "heads": 2},
                {"name": "b", "model_dir": deep, "mapping": "uniform", "heads": 2},
            ],
        ),
    ]
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "3", *kd]) == 0
    log = (exp / "train.log").read_text()
    for part in ("repr_a_l1=", "repr_a_l2=", "repr_b_l2=", "repr_b_l4=", "OfflineReprTeacher (offline)", "pruned="):
        assert part in log, part
    ck = torch.load(exp / "checkpoint-3.pt", weights_only=True)
    aux = [k for k in ck["model"] if k.startswith("kd_aux.")]
    assert any(".regressors.b_l4." in k for k in aux) and any(".states." in k for k in aux)
    ck2 = torch.load(exp / "checkpoint-2.pt", weights_only=True)
    moved = [k for k in ck["model"] if "transducer.predictor" in k and not torch.equal(ck["model"][k], ck2["model"][k])]
    assert moved  # the predictor is trained (by the transducer loss and the regression)
    args = ["--checkpoints", str(exp / "checkpoint-2.pt"), str(exp / "checkpoint-3.pt"), "--out", str(exp / "avg.pt")]
    assert average.main(args) == 0
    avg = torch.load(exp / "avg.pt", weights_only=True)
    assert avg["model"] and not any(k.startswith("kd_aux.") for k in avg["model"])
    dec = ["--exp-dir", str(exp), "--method", "transducer-greedy"]
    assert decode.main([*dec, "--checkpoint", str(exp / "avg.pt"), "--res-dir", "dec_avg"]) == 0
    assert export.main(["--checkpoint", str(exp / "checkpoint-3.pt"), "--out", str(exp / "exported.pt")]) == 0
    exported = torch.load(exp / "exported.pt", weights_only=True)
    assert not any("kd_aux" in k for k in exported["model"])
    full, _ = load_asr_model(exp / "checkpoint-3.pt")
    small_model, _ = load_asr_model(exp / "exported.pt")
    assert not any(k.startswith("kd_aux.") for k in full.state_dict())  # loading for decoding drops R too
    for k, v in small_model.state_dict().items():
        torch.testing.assert_close(v, full.state_dict()[k])
    for name, ck in (("dec_full", "checkpoint-3.pt"), ("dec_export", "exported.pt")):
        assert decode.main([*dec, "--checkpoint", str(exp / ck), "--res-dir", name]) == 0
    a = (exp / "dec_full" / "recogs-test-transducer-greedy.txt").read_text()
    assert a and a == (exp / "dec_export" / "recogs-test-transducer-greedy.txt").read_text()


def test_regression_gradient_reaches_the_predictor_and_encoder(recipe):
    """The method's loss alone, on one batch: R, the attention, the predictor and the encoder get gradients."""
    from lhotse import CutSet

    from asr_kd.data.dataset import AsrDataset
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.kd.methods import KdContext, build_kd_method
    from asr_kd.kd.repr import OfflineReprTeacher
    from asr_kd.models.asr_model import build_asr_model

    root, _, small, _ = recipe
    tok = Tokenizer.from_dir(root / "data" / "lang")
    model = build_asr_model({"vocab_size": tok.vocab_size, **TOY_TRANSDUCER})
    m = build_kd_method(
        "lm_repr_transfer",
        model,
        teachers=[{"name": "a", "model_dir": str(small), "mapping": "last", "heads": 1}],
        lang_dir=str(root / "data" / "lang"),
        d_state=16,
        d_hidden=16,
        att_heads=2,
        loss="mse",
    )
    teacher = OfflineReprTeacher(["a"])
    ds = AsrDataset(tokenizer=tok, custom_fields=teacher.required_custom_fields)
    batch = ds[CutSet.from_file(root / "data" / "kd_repr" / "toy_cuts_train.jsonl.gz").subset(first=3)]
    losses = model(batch["inputs"], batch["feature_lens"], batch["supervisions"]["tokens"], return_encoder_output=True)
    ctx = KdContext(model, batch, batch["supervisions"]["tokens"], losses["encoder_out"], losses, teacher(batch), 0)
    out = m(ctx)
    assert list(out) == ["repr_a_l2"] and out["repr_a_l2"].item() > 0
    out["repr_a_l2"].backward()
    for name in ("transducer.predictor.embedding.weight",):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.encoder.named_parameters())
    assert m.regressors["a_l2"][0].weight.grad.abs().sum() > 0


def test_start_up_errors(recipe, tmp_path):
    from asr_kd.bin import train

    root, conf, small, deep = recipe

    def base(name):
        return [
            "--config",
            str(conf),
            "--max-steps",
            "1",
            "--exp-dir",
            str(tmp_path / name),
            f"data.manifest_dir={root / 'data' / 'kd_repr'}",
        ]

    teacher = "kd.teacher={type: offline_repr, models: [a, b]}"
    # a representation dim that does not match R
    bad_dim = _method(root, [{"name": "b", "model_dir": deep, "mapping": "uniform", "heads": 2, "proj_dim": 5}])
    with pytest.raises(
        ValueError, match=r"representation dim 8 .* does not match the regression networks' output dim 5"
    ):
        train.main([*base("e1"), teacher, bad_dim])
    # layers the dump did not store (b has 2 and 4)
    first = _method(root, [{"name": "b", "model_dir": deep, "mapping": "first", "heads": 2}])
    with pytest.raises(ValueError, match=r"stores layers \[2, 4\].*needs \[1, 2\] \(missing \[1\]\)"):
        train.main([*base("e2"), teacher, first])
    # a teacher name the offline teacher does not read
    other = _method(root, [{"name": "c", "model_dir": deep, "mapping": "last", "heads": 1}])
    with pytest.raises(ValueError, match=r"teachers \['c'\] are not in kd.teacher.models"):
        train.main([*base("e3"), teacher, other])
    # a CTC student has no predictor states
    ctc_only = ["model.transducer=null", "model.ctc={}"]
    ok = _method(root, [{"name": "a", "model_dir": small, "mapping": "last", "heads": 1}])
    with pytest.raises(ValueError, match="needs a transducer student"):
        train.main([*base("e4"), teacher, ok, *ctc_only])
    # a teacher folder without hidden states
    empty = tmp_path / "onnx_only"
    empty.mkdir()
    (empty / "model.onnx").write_bytes(b"\x00")
    no_hidden = _method(root, [{"name": "a", "model_dir": empty, "mapping": "last", "heads": 1}])
    with pytest.raises(ValueError, match="no config.json"):
        train.main([*base("e5"), teacher, no_hidden])
