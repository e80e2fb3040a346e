"""Pretrained-model bundles end to end on a toy recipe: export (fp16, card, test features), decode from the
bundle, the KD teacher from the bundle, re-export, and the errors of broken bundles."""

import json
import re
import shutil

import pytest
import torch
import yaml

from asr_kd.testing.recipe import TOY_INTER_CTC_MODEL, make_toy_recipe

MODEL = TOY_INTER_CTC_MODEL


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step toy Conformer-CTC run, decoded on test and dev (results.jsonl for the card).

    The learning rate is tiny: a few steps at the default rate already make the model emit only blanks
    and word boundaries on the toy audio (empty hypotheses), which would make the decode comparisons
    vacuous."""
    from asr_kd.bin import decode, train

    root = tmp_path_factory.mktemp("recipe")
    conf = make_toy_recipe(root, model=MODEL)
    exp = root / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "2", "optim.lr=1e-5"]) == 0
    assert (
        decode.main(
            ["--exp-dir", str(exp), "--checkpoint", str(exp / "checkpoint-2.pt"), "--split", "test", "--split", "dev"]
        )
        == 0
    )
    return exp


@pytest.fixture(scope="module")
def bundle(trained):
    from asr_kd.bin import export

    out = trained.parent / "pretrained" / "toy_ctc"
    assert (
        export.main(
            [
                "--checkpoint",
                str(trained / "checkpoint-2.pt"),
                "--bundle",
                str(out),
                "--fp16",
                "--num-test-features",
                "4",
                "--split",
                "test",
            ]
        )
        == 0
    )
    return out


def _copy(bundle, tmp_path):
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def _fp16_rounded(src, dst):
    """The source checkpoint with its floating-point weights rounded to fp16 (and back to fp32)."""
    from asr_kd.training.checkpoint import save_checkpoint

    ck = torch.load(src, map_location="cpu", weights_only=True)
    sd = {k: v.half().float() if v.is_floating_point() else v for k, v in ck["model"].items()}
    return save_checkpoint(dst, model=sd, step=ck["step"], config=ck["config"], rng=None)


def test_bundle_files_fp16_weights_and_card(bundle, trained):
    from asr_kd.bin.export import TO_FILL, read_transcripts

    names = {p.name for p in bundle.iterdir()}
    assert {
        "model.pt",
        "config.yaml",
        "README.md",
        "bpe.model",
        "tokens.txt",
        "words.txt",
        "lexicon.txt",
        "test_features",
    } <= names
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    ck = torch.load(bundle / "model.pt", map_location="cpu", weights_only=True)
    floats = [v for v in ck["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    src = torch.load(trained / "checkpoint-2.pt", map_location="cpu", weights_only=True)
    for k, v in ck["model"].items():
        assert torch.equal(v, src["model"][k].to(v.dtype)), k
    assert ck["step"] == 2 and ck["optimizer"] is None and ck["config"]["data"]["lang_dir"] == "."
    assert ck["meta"]["bundle"]["test_method"] == "ctc-greedy"
    assert (bundle / "model.pt").stat().st_size < 25e6
    # config.yaml: the source run's resolved config; model.pt rebuilds the same model
    assert yaml.safe_load((bundle / "config.yaml").read_text())["model"] == src["config"]["model"]
    # test features: the toy test split has 2 cuts, all bundled; (T, F) fp32 tensors
    header, rows = read_transcripts(bundle / "test_features" / "transcripts.txt")
    assert header["method"] == "ctc-greedy" and header["split"] == "test" and len(rows) == 2
    for r in rows:
        feats = torch.load(bundle / "test_features" / r["file"], weights_only=True)
        assert feats.dtype == torch.float32 and feats.dim() == 2 and feats.size(1) == 80
        assert r["ref"]
    # the card: measured numbers, results of this checkpoint, marked fields for the rest
    card = (bundle / "README.md").read_text()
    from asr_kd.training.asr_task import load_asr_model

    model, _ = load_asr_model(bundle)
    n = sum(p.numel() for p in model.parameters())
    assert f"{n:,}" in card and "| training steps | 2 (epoch" in card and "fp16" in card
    res = [json.loads(line) for line in (trained / "decode" / "results.jsonl").read_text().splitlines()]
    test_row = next(r for r in res if r["split"] == "test")
    assert f"| test | ctc-greedy | {test_row['wer']} | {test_row['cer']} |" in card
    assert "| dev | ctc-greedy |" in card
    assert TO_FILL in card and "python -m asr_kd.bin.train --config" in card
    for r in rows:
        assert f"| {r['file']} | {r['cut_id']} | {r['ref']} | {r['hyp']} |" in card


def test_decode_from_bundle_matches_fp16_rounded_source(bundle, trained, tmp_path):
    from asr_kd.bin import decode

    rounded = tmp_path / "rounded"
    _fp16_rounded(trained / "checkpoint-2.pt", rounded / "averaged.pt")
    assert (
        decode.main(["--exp-dir", str(rounded), "--method", "ctc-greedy", "--method", "ctc-hlg", "--split", "test"])
        == 0
    )
    res = tmp_path / "bundle_decode"
    assert (
        decode.main(
            [
                "--exp-dir",
                str(bundle),
                "--method",
                "ctc-greedy",
                "--method",
                "ctc-hlg",
                "--split",
                "test",
                "--res-dir",
                str(res),
            ]
        )
        == 0
    )
    assert not (bundle / "decode").exists()  # an absolute --res-dir keeps the bundle clean
    for suffix in ("ctc-greedy", "ctc-hlg_noG"):  # ctc-hlg: words.txt / lexicon.txt from the bundle
        want = (rounded / "decode" / f"recogs-test-{suffix}.txt").read_text()
        assert (res / f"recogs-test-{suffix}.txt").read_text() == want
    assert "hyp=['" in (res / "recogs-test-ctc-greedy.txt").read_text()  # not only empty hypotheses
    row = json.loads((res / "results.jsonl").read_text().splitlines()[0])
    assert row["checkpoint"] == str(bundle) and row["num_utts"] == 2


def test_check_bundle_reproduces_recorded_hypotheses(bundle, tmp_path):
    from asr_kd.testing.bundle import check_bundle, find_bundles

    assert find_bundles(bundle.parent) == [bundle]
    hyps, recorded = check_bundle(bundle)
    assert len(hyps) == 2 and hyps == recorded and any(hyps)
    # a changed recording is caught
    bad = _copy(bundle, tmp_path)
    t = bad / "test_features" / "transcripts.txt"
    t.write_text(t.read_text().rstrip("\n") + " EXTRA\n")
    hyps, recorded = check_bundle(bad)
    assert hyps != recorded


def test_kd_teacher_loads_from_bundle(bundle, trained, tmp_path):
    from asr_kd.kd.teachers import AsrTeacher, build_teacher
    from asr_kd.training.asr_task import load_asr_model

    teacher = build_teacher({"type": "asr", "checkpoint": str(bundle), "nbest_size": 2})
    assert isinstance(teacher, AsrTeacher)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in teacher.parameters())
    ref, _ = load_asr_model(_fp16_rounded(trained / "checkpoint-2.pt", tmp_path / "r.pt"))
    x, x_lens = torch.randn(2, 60, 80), torch.tensor([60, 41])
    out = teacher({"inputs": x, "feature_lens": x_lens, "supervisions": {}}, {"ctc_logits"})
    with torch.no_grad():
        want = ref.ctc(ref.encode(x, x_lens).out)
    torch.testing.assert_close(out.ctc_logits, want)
    # the bundle's model.pt alone names the bundle too
    teacher2 = build_teacher({"type": "asr", "checkpoint": str(bundle / "model.pt")})
    torch.testing.assert_close(teacher2({"inputs": x, "feature_lens": x_lens}, {"ctc_logits"}).ctc_logits, want)


def test_kd_training_with_the_bundle_as_teacher(bundle, trained, tmp_path):
    from asr_kd.bin import train

    conf = str(trained.parent / "conf.yaml")
    kd = [
        f"kd.teacher={{type: asr, checkpoint: {bundle}}}",
        "kd.methods=[{name: ctc_kd}]",
        "model.encoder.num_layers=1",
        "model.inter_ctc=null",
    ]
    assert train.main(["--config", conf, "--exp-dir", str(tmp_path / "student"), "--max-steps", "1", *kd]) == 0
    log = (tmp_path / "student" / "train.log").read_text()
    assert "kd teacher: AsrTeacher (online)" in log and "ctc_kd=" in log


def test_reexport_refuse_overwrite_force_and_sub_model(bundle, trained, tmp_path):
    from asr_kd.bin import export
    from asr_kd.testing.bundle import check_bundle

    again = tmp_path / "again"
    assert export.main(["--checkpoint", str(bundle), "--bundle", str(again), "--fp16"]) == 0
    a = torch.load(bundle / "model.pt", weights_only=True)
    b = torch.load(again / "model.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["step"] == 2 and b["meta"]["train"] == a["meta"]["train"]
    assert (again / "config.yaml").read_text() == (bundle / "config.yaml").read_text()
    assert (again / "test_features" / "transcripts.txt").read_text() == (
        bundle / "test_features" / "transcripts.txt"
    ).read_text()
    card = (again / "README.md").read_text()
    assert "| training steps | 2 (epoch" in card and "| test | ctc-greedy |" in card  # results kept

    with pytest.raises(SystemExit, match="exists: pass --force"):
        export.main(["--checkpoint", str(trained / "checkpoint-2.pt"), "--bundle", str(again)])
    assert (
        export.main(
            [
                "--checkpoint",
                str(trained / "checkpoint-2.pt"),
                "--bundle",
                str(again),
                "--force",
                "--sub-model-layer",
                "1",
                "--num-test-features",
                "1",
                "--split",
                "dev",
            ]
        )
        == 0
    )
    ck = torch.load(again / "model.pt", weights_only=True)
    assert ck["config"]["model"]["encoder"]["num_layers"] == 1
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())  # no --fp16
    hyps, recorded = check_bundle(again)
    assert len(hyps) == 1 and hyps == recorded
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # the plain --out export is unchanged: a checkpoint file, step 0
    out = tmp_path / "exported.pt"
    assert export.main(["--checkpoint", str(trained / "checkpoint-2.pt"), "--out", str(out)]) == 0
    ck = torch.load(out, weights_only=True)
    assert ck["step"] == 0 and "bundle" not in ck["meta"] and ck["config"]["data"]["lang_dir"] != "."


def test_export_refuses_a_lang_dir_of_another_vocabulary(trained, tmp_path):
    from asr_kd.bin import export
    from asr_kd.data.tokenizer import train_bpe
    from asr_kd.testing import DUMMY_TEXTS

    (tmp_path / "t.txt").write_text("\n".join(DUMMY_TEXTS) + "\n")
    train_bpe(tmp_path / "t.txt", tmp_path / "lang34", vocab_size=34)
    with pytest.raises(SystemExit, match=r"lang34/bpe.model: \d+ pieces, but the model outputs"):
        export.main(
            [
                "--checkpoint",
                str(trained / "checkpoint-2.pt"),
                "--bundle",
                str(tmp_path / "b"),
                "--lang-dir",
                str(tmp_path / "lang34"),
            ]
        )
    assert not (tmp_path / "b").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("missing", ["tokens.txt", "bpe.model", "config.yaml", "words.txt", "model.pt"])
def test_bundle_with_a_missing_file(bundle, tmp_path, missing):
    from asr_kd.bin import decode
    from asr_kd.training.asr_task import BundleError, load_asr_model

    bad = _copy(bundle, tmp_path)
    (bad / missing).unlink()
    with pytest.raises(BundleError, match=re.escape(f"{bad / missing}: missing")):
        load_asr_model(bad)
    with pytest.raises(BundleError, match=re.escape(f"{bad / missing}: missing")):
        decode.main(["--exp-dir", str(bad), "--res-dir", str(tmp_path / "dec")])


def test_bundle_with_missing_test_features(bundle, tmp_path):
    from asr_kd.testing.bundle import check_bundle
    from asr_kd.training.asr_task import BundleError

    bad = _copy(bundle, tmp_path)
    (bad / "test_features" / "utt-1.pt").unlink()
    with pytest.raises(BundleError, match=r"test_features/utt-1.pt: missing"):
        check_bundle(bad)


def test_bundle_with_a_truncated_model(bundle, tmp_path):
    from asr_kd.kd.teachers import build_teacher
    from asr_kd.training.asr_task import BundleError, load_asr_model

    bad = _copy(bundle, tmp_path)
    data = (bad / "model.pt").read_bytes()
    (bad / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=re.escape(f"{bad / 'model.pt'}: cannot be read, the file is truncated")):
        load_asr_model(bad)
    with pytest.raises(BundleError, match="model.pt: cannot be read"):
        build_teacher({"type": "asr", "checkpoint": str(bad)})


def test_bundle_with_a_tokenizer_of_another_vocabulary(bundle, tmp_path):
    from asr_kd.data.tokenizer import train_bpe
    from asr_kd.testing import DUMMY_TEXTS
    from asr_kd.training.asr_task import BundleError, load_asr_model

    bad = _copy(bundle, tmp_path)
    (tmp_path / "t.txt").write_text("\n".join(DUMMY_TEXTS) + "\n")
    other = train_bpe(tmp_path / "t.txt", tmp_path / "lang34", vocab_size=34)
    shutil.copyfile(tmp_path / "lang34" / "bpe.model", bad / "bpe.model")
    msg = re.escape(f"{bad / 'bpe.model'}: the tokenizer has {other.vocab_size} pieces ") + r"but the model outputs \d+"
    with pytest.raises(BundleError, match=msg):
        load_asr_model(bad)
    # a tokens.txt of another size, and a same-size but different file, are caught too
    bad2 = _copy(bundle, tmp_path / "x")
    shutil.copyfile(tmp_path / "lang34" / "tokens.txt", bad2 / "tokens.txt")
    with pytest.raises(BundleError, match=re.escape(f"{bad2 / 'tokens.txt'}: {other.vocab_size} tokens")):
        load_asr_model(bad2)
    bad3 = _copy(bundle, tmp_path / "y")
    with open(bad3 / "lexicon.txt", "a") as f:
        f.write("ZZZ \u2581Z Z Z\n")
    with pytest.raises(BundleError, match=re.escape(f"{bad3 / 'lexicon.txt'}: differs")):
        load_asr_model(bad3)


def test_transducer_bundle_uses_transducer_greedy(trained, tmp_path):
    """A (random-init) transducer model: the bundle's test features are decoded by transducer greedy."""
    from asr_kd.bin import export
    from asr_kd.bin.train import resolve_model_config
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.testing.bundle import check_bundle
    from asr_kd.training.checkpoint import save_checkpoint

    cfg = torch.load(trained / "checkpoint-2.pt", weights_only=True)["config"]
    tok = Tokenizer.from_dir(cfg["data"]["lang_dir"])
    m = resolve_model_config(
        {"encoder": dict(MODEL["encoder"], num_layers=1), "transducer": {"d_pred": 16, "d_joint": 16}}, tok, 80
    )
    torch.manual_seed(0)
    model = build_asr_model(m)
    cfg = dict(cfg, model=m)
    save_checkpoint(tmp_path / "exp" / "checkpoint-1.pt", model=model, step=1, config=cfg, rng=None)
    out = tmp_path / "rnnt"
    assert (
        export.main(
            [
                "--checkpoint",
                str(tmp_path / "exp" / "checkpoint-1.pt"),
                "--bundle",
                str(out),
                "--fp16",
                "--num-test-features",
                "2",
            ]
        )
        == 0
    )
    assert "# method: transducer-greedy" in (out / "test_features" / "transcripts.txt").read_text()
    hyps, recorded = check_bundle(out)
    assert len(hyps) == 2 and hyps == recorded
    assert "[TO FILL: dev/test WER and CER" in (out / "README.md").read_text()  # no results.jsonl


def test_averaged_source_without_test_features(trained, tmp_path):
    """An averaged model: the card names the averaged files and takes the training time from them;
    ``--num-test-features 0`` bundles no features (check_bundle then names the missing file)."""
    from asr_kd.bin import average, export
    from asr_kd.testing.bundle import check_bundle
    from asr_kd.training.asr_task import BundleError, load_asr_model

    avg = tmp_path / "averaged.pt"
    assert average.main(["--checkpoints", str(trained / "checkpoint-2.pt"), "--out", str(avg)]) == 0
    out = tmp_path / "avg_bundle"
    assert export.main(["--checkpoint", str(avg), "--bundle", str(out), "--num-test-features", "0"]) == 0
    assert not (out / "test_features").exists()
    card = (out / "README.md").read_text()
    assert "| averaging | checkpoint-2.pt |" in card
    assert f"python -m asr_kd.bin.average --checkpoints exp/{out.name}/checkpoint-2.pt --out" in card
    train_seconds = torch.load(trained / "checkpoint-2.pt", weights_only=True)["meta"]["train_seconds"]
    assert f"| training time | {train_seconds / 60:.2f} min" in card
    assert "[TO FILL: dev/test WER and CER" in card  # results.jsonl rows are of checkpoint-2.pt, not this file
    load_asr_model(out)
    with pytest.raises(BundleError, match=re.escape(f"{out / 'test_features' / 'transcripts.txt'}: missing")):
        check_bundle(out)


def test_fp16_keeps_tensors_that_would_overflow():
    from asr_kd.bin.export import _to_fp16

    state = {
        "w": torch.randn(3),
        "big": torch.tensor([1e6, 1.0]),
        "n": torch.tensor(3),
        "inf": torch.tensor([float("inf")]),
    }
    out, kept = _to_fp16(state)
    assert kept == ["big"] and out["big"].dtype == torch.float32
    assert out["w"].dtype == torch.float16 and out["n"].dtype == torch.int64 and out["inf"].dtype == torch.float16
