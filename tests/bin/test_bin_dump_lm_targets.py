"""The dump_mlm and dump_repr CLIs in process on a tiny BERT and a few tiny cuts: one output cut per input cut,
the stored targets equal what the library computes for the same model and text, the JSON summary,
``--max-cuts``, and a missing input manifest named before any model is loaded."""

from __future__ import annotations

import json
import re

import pytest
import torch

pytest.importorskip("transformers")

from lhotse import CutSet  # noqa: E402

from asr_kd.testing.dummies import make_cutset  # noqa: E402
from asr_kd.testing.tiny_mlm import make_tiny_mlm  # noqa: E402

SPLITS = {"train": (1.0, 1.2, 1.4), "dev": (1.1, 0.9)}  # split -> cut durations (texts: DUMMY_TEXTS in turn)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    """A 2-layer BertForMaskedLM (hidden 16) with its WordPiece tokenizer."""
    return make_tiny_mlm(tmp_path_factory.mktemp("mlm") / "bert")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """The same architecture without the MLM head (a plain encoder, as the repr teachers are)."""
    return make_tiny_mlm(tmp_path_factory.mktemp("enc") / "bert", head=False)


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    """``synth_cuts_{train,dev}.jsonl.gz`` with 3 and 2 cuts (ids ``train-0000``, ..., ``dev-0001``)."""
    root = tmp_path_factory.mktemp("manifests")
    for split, durations in SPLITS.items():
        make_cutset(root / "audio", durations, prefix=split).to_file(root / f"synth_cuts_{split}.jsonl.gz")
    return root


def _input_cuts(manifest_dir, split):
    return list(CutSet.from_file(manifest_dir / f"synth_cuts_{split}.jsonl.gz"))


def _missing_manifest_is_named_before_the_model_loads(main, tool_args, manifest_dir, tmp_path):
    """``--splits train test`` (no test manifest) with a model folder that does not exist: the error is the
    manifest's, and nothing is written."""
    out = tmp_path / "never"
    argv = [*tool_args, "--model-dir", str(tmp_path / "no_model"), "--splits", "train", "test"]
    argv += ["--manifest-dir", str(manifest_dir), "--out-dir", str(out)]
    missing = manifest_dir / "synth_cuts_test.jsonl.gz"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} not found") + r".*--manifest-dir/--prefix"):
        main(argv)
    assert not out.exists()


# ---------------------------------------------------------------------- dump_mlm


def test_dump_mlm_cli_stores_the_teachers_topk_per_cut(mlm_dir, manifest_dir, tmp_path, capsys):
    from asr_kd.bin import dump_mlm
    from asr_kd.kd.mlm import MLM_IDS, MLM_INDICES, MLM_VALUES, MLM_VOCAB, HfMlmTeacher, cut_text
    from asr_kd.kd.wordpiece import WordPieceVocab

    out = tmp_path / "kd_mlm"
    argv = ["--model-dir", str(mlm_dir), "--splits", "train", "dev", "--manifest-dir", str(manifest_dir)]
    argv += ["--out-dir", str(out), "--topk", "4", "--temperature", "2.0", "--batch-size", "2"]
    assert dump_mlm.main(argv) == 0
    printed = capsys.readouterr().out

    teacher = HfMlmTeacher(mlm_dir, temperature=2.0)  # the library, same model and temperature
    vocab = WordPieceVocab(mlm_dir)
    for split, durations in SPLITS.items():
        got = list(CutSet.from_file(out / f"synth_cuts_{split}.jsonl.gz"))
        assert [c.id for c in got] == [c.id for c in _input_cuts(manifest_dir, split)]
        for cut in got:
            text = cut_text(cut)
            ids, lp = teacher.distributions([text])
            assert cut.custom[MLM_IDS] == ids[0] == vocab.encode([text])[0][0]  # the tokenizer's pieces
            values = torch.from_numpy(cut.load_custom(MLM_VALUES)).float()
            indices = torch.from_numpy(cut.load_custom(MLM_INDICES)).long()
            want_v, want_i = lp[0].topk(4, dim=-1)
            assert values.shape == indices.shape == (len(ids[0]), 4)
            assert torch.equal(indices, want_i)
            torch.testing.assert_close(values, want_v, atol=2e-2, rtol=1e-2)  # stored as float16
            # a top-k of a (temperature-2) log-softmax: descending, ids in range, mass <= 1
            assert (values[:, :-1] >= values[:, 1:]).all() and int(indices.max()) < vocab.size
            assert (values.exp().sum(-1) <= 1.0 + 1e-3).all()
            assert cut.custom[MLM_VOCAB] == {**vocab.fingerprint(), "temperature": 2.0, "model_dir": str(mlm_dir)}
        summary = json.loads((out / f"synth_mlm_{split}.json").read_text())
        n = len(durations)
        assert (summary["split"], summary["num_cuts"], summary["num_done"], summary["skipped"]) == (split, n, n, [])
        assert (summary["topk"], summary["temperature"], summary["model_dir"]) == (4, 2.0, str(mlm_dir))
        assert summary["num_pieces"] == sum(len(c.custom[MLM_IDS]) for c in got)
        assert f"{split}: MLM targets for {n} of {n} cuts (0 skipped)" in printed
        assert (out / f"synth_mlm_{split}").exists()


def test_dump_mlm_cli_max_cuts_and_missing_manifest(mlm_dir, manifest_dir, tmp_path):
    from asr_kd.bin import dump_mlm
    from asr_kd.kd.mlm import MLM_IDS

    out = tmp_path / "kd_mlm"
    argv = ["--model-dir", str(mlm_dir), "--splits", "train", "--manifest-dir", str(manifest_dir)]
    assert dump_mlm.main([*argv, "--out-dir", str(out), "--max-cuts", "2", "--topk", "3"]) == 0
    got = list(CutSet.from_file(out / "synth_cuts_train.jsonl.gz"))
    assert [c.id for c in got] == ["train-0000", "train-0001"]  # the first two, in manifest order
    assert all(MLM_IDS in c.custom for c in got)
    summary = json.loads((out / "synth_mlm_train.json").read_text())
    assert (summary["num_cuts"], summary["num_done"]) == (2, 2)

    _missing_manifest_is_named_before_the_model_loads(dump_mlm.main, [], manifest_dir, tmp_path)


# ---------------------------------------------------------------------- dump_repr


def test_dump_repr_cli_stores_the_chosen_layers_per_cut_and_chains(bert_dir, manifest_dir, tmp_path, capsys):
    from asr_kd.bin import dump_repr
    from asr_kd.kd.mlm import cut_text
    from asr_kd.kd.repr import ReprEncoder, encode_batch, repr_fields

    out = tmp_path / "kd_repr"
    argv = ["--name", "tiny", "--model-dir", str(bert_dir), "--layers", "2", "1", "--splits", "train", "dev"]
    assert dump_repr.main([*argv, "--manifest-dir", str(manifest_dir), "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out

    enc = ReprEncoder(bert_dir, layers=[2, 1])  # the library, same model and layers
    arr_f, ids_f, info_f = repr_fields("tiny")
    for split, durations in SPLITS.items():
        got = list(CutSet.from_file(out / f"synth_cuts_{split}.jsonl.gz"))
        assert [c.id for c in got] == [c.id for c in _input_cuts(manifest_dir, split)]
        total = 0
        for cut in got:
            ids = cut.custom[ids_f]
            assert ids == enc.vocab.encode([cut_text(cut)])[0][0]  # the tokenizer's pieces
            a = cut.load_custom(arr_f)
            assert a.dtype.name == "float16" and a.shape == (len(ids), 1, 2, 16)  # (L, variants, layers, D)
            want = encode_batch(enc, [ids])[0]
            torch.testing.assert_close(torch.from_numpy(a[:, 0]).float(), want, atol=2e-3, rtol=2e-3)
            assert cut.custom[info_f]["layers"] == [2, 1] and cut.custom[info_f]["dim"] == 16
            total += a.nbytes
        summary = json.loads((out / f"synth_repr_tiny_{split}.json").read_text())
        n = len(durations)
        assert (summary["split"], summary["name"], summary["num_cuts"], summary["num_done"]) == (split, "tiny", n, n)
        assert (summary["layers"], summary["dim"], summary["context_tokens"], summary["variants"]) == ([2, 1], 16, 0, 1)
        assert summary["array_bytes"] == total and summary["skipped"] == 0
        assert f"{split}: tiny representations of {n} of {n} cuts (0 skipped), layers [2, 1] x D 16" in printed

    # a second model into the same manifests (--manifest-dir = --out-dir): the first one's fields are kept
    argv = ["--name", "second", "--model-dir", str(bert_dir), "--layers", "1", "--splits", "train"]
    assert dump_repr.main([*argv, "--manifest-dir", str(out), "--out-dir", str(out)]) == 0
    arr2, ids2, _ = repr_fields("second")
    for cut in CutSet.from_file(out / "synth_cuts_train.jsonl.gz"):
        assert cut.custom[ids2] == cut.custom[ids_f]
        a1, a2 = cut.load_custom(arr_f), cut.load_custom(arr2)
        assert a2.shape == (len(cut.custom[ids2]), 1, 1, 16) and (a2[:, :, 0] == a1[:, :, 1]).all()  # layer 1


def test_dump_repr_cli_max_cuts_and_missing_manifest(bert_dir, manifest_dir, tmp_path):
    from asr_kd.bin import dump_repr
    from asr_kd.kd.repr import repr_fields

    out = tmp_path / "kd_repr"
    argv = ["--name", "x", "--model-dir", str(bert_dir), "--splits", "dev", "--manifest-dir", str(manifest_dir)]
    assert dump_repr.main([*argv, "--out-dir", str(out), "--max-cuts", "1"]) == 0
    got = list(CutSet.from_file(out / "synth_cuts_dev.jsonl.gz"))
    assert [c.id for c in got] == ["dev-0000"]
    assert repr_fields("x")[0] in got[0].custom
    summary = json.loads((out / "synth_repr_x_dev.json").read_text())
    assert (summary["num_cuts"], summary["num_done"]) == (1, 1)

    _missing_manifest_is_named_before_the_model_loads(dump_repr.main, ["--name", "x"], manifest_dir, tmp_path)
