"""The dump_teacher CLI end to end on a toy recipe: checkpoint -> manifests with offline KD targets."""

import re

import numpy as np
import pytest
import torch
from lhotse import CutSet

from asr_kd.testing import missing_audio
from asr_kd.testing.recipe import make_toy_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from asr_kd.bin import train

    root = tmp_path_factory.mktemp("recipe")
    conf = make_toy_recipe(root)
    exp = root / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "2"]) == 0
    return root, exp


def test_dump_teacher_cli(trained, tmp_path, capsys):
    from asr_kd.bin import dump_teacher
    from asr_kd.data import AsrDataset
    from asr_kd.kd.offline import NBEST, TOPK_INDICES, TOPK_VALUES, OfflineTeacher
    from asr_kd.kd.teachers import AsrTeacher

    root, exp = trained
    out = tmp_path / "kd"
    assert (
        dump_teacher.main(
            [
                "--exp-dir",
                str(exp),
                "--splits",
                "train",
                "dev",
                "--out-dir",
                str(out),
                "--topk",
                "4",
                "--nbest",
                "2",
                "--max-duration",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "train: targets for 6 of 6 cuts (0 failed)" in printed and "dev: targets for 2 of 2 cuts" in printed
    assert (out / "toy_kd_train").is_dir() and not (out / "toy_kd_train_failed.txt").exists()

    teacher = AsrTeacher.from_checkpoint(str(exp / "checkpoint-2.pt"), nbest_size=2)
    for split, n in (("train", 6), ("dev", 2)):
        src = CutSet.from_file(root / "data" / "manifests" / f"toy_cuts_{split}.jsonl.gz")
        cuts = CutSet.from_file(out / f"toy_cuts_{split}.jsonl.gz")
        assert list(cuts.ids) == list(src.ids) and len(cuts) == n
        offline = OfflineTeacher(fields=("kd_ctc_topk", "kd_nbest"))
        batch = AsrDataset(custom_fields=offline.required_custom_fields)[cuts]
        t_off = offline(batch, {"ctc_logits", "nbest"})
        t_on = teacher(batch, {"ctc_logits", "nbest"})
        values, indices = t_on.ctc_logits.log_softmax(-1).topk(4, dim=-1)
        assert torch.equal(t_off.lens, t_on.lens)
        for i, L in enumerate(t_on.lens.tolist()):
            torch.testing.assert_close(t_off.ctc_topk[0][i, :L], values[i, :L], atol=2e-2, rtol=2e-3)
            assert torch.equal(t_off.ctc_topk[1][i, :L], indices[i, :L])
        assert t_off.nbest == t_on.nbest
        np.testing.assert_allclose(np.array(t_off.nbest_scores), np.array(t_on.nbest_scores), atol=1e-3)
        assert all(c.has_custom(TOPK_VALUES) and c.has_custom(TOPK_INDICES) and c.has_custom(NBEST) for c in cuts)


def test_dump_teacher_cli_keeps_and_lists_failed_cuts(trained, tmp_path, capsys):
    from asr_kd.bin import dump_teacher

    root, exp = trained
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    cuts = list(CutSet.from_file(root / "data" / "manifests" / "toy_cuts_test.jsonl.gz"))
    # a copy of the first cut whose audio is gone (the recipe's own wavs stay intact)
    lost = tmp_path / "lost.wav"
    lost.write_bytes(open(cuts[0].recording.sources[0].source, "rb").read())
    from dataclasses import replace

    rec = replace(cuts[0].recording, sources=[replace(cuts[0].recording.sources[0], source=str(lost))])
    cuts[0] = missing_audio(replace(cuts[0], recording=rec))
    CutSet.from_cuts(cuts).to_file(manifests / "toy_cuts_test.jsonl.gz")

    out = tmp_path / "kd"
    assert (
        dump_teacher.main(
            [
                "--checkpoint",
                str(exp / "checkpoint-2.pt"),
                "--manifest-dir",
                str(manifests),
                "--splits",
                "test",
                "--out-dir",
                str(out),
                "--topk",
                "3",
            ]
        )
        == 0
    )
    assert "test: targets for 1 of 2 cuts (1 failed" in capsys.readouterr().out
    assert (out / "toy_kd_test_failed.txt").read_text() == f"{cuts[0].id}\tmissing_audio\n"
    dumped = CutSet.from_file(out / "toy_cuts_test.jsonl.gz")
    assert list(dumped.ids) == [c.id for c in cuts]
    assert [c.has_custom("kd_ctc_topk_values") for c in dumped] == [False, True]
    assert not dumped[1].has_custom("kd_nbest")


def test_dump_teacher_cli_names_a_missing_manifest_before_writing(trained, tmp_path):
    from asr_kd.bin import dump_teacher

    root, exp = trained
    out = tmp_path / "never"
    missing = root / "data" / "manifests" / "toy_cuts_nope.jsonl.gz"
    argv = ["--checkpoint", str(exp / "checkpoint-2.pt"), "--splits", "test", "nope", "--out-dir", str(out)]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} not found") + r".*--manifest-dir/--prefix"):
        dump_teacher.main(argv)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'x_cuts_train.jsonl.gz'} not found")):
        dump_teacher.main([*argv[:2], "--manifest-dir", str(tmp_path), "--prefix", "x", "--out-dir", str(out)])
    assert not out.exists()


def test_student_trains_from_the_dumped_targets(trained, tmp_path):
    """dump_teacher -> train with kd.teacher {type: offline}: train.py adds the custom fields, ctc_kd and
    seq_kd_ctc read the stored top-k and n-best."""
    import yaml

    from asr_kd.bin import dump_teacher, train

    root, exp = trained
    out = tmp_path / "kd"
    assert (
        dump_teacher.main(
            [
                "--checkpoint",
                str(exp / "checkpoint-2.pt"),
                "--splits",
                "train",
                "dev",
                "--out-dir",
                str(out),
                "--topk",
                "4",
                "--nbest",
                "2",
            ]
        )
        == 0
    )
    cfg = yaml.safe_load((root / "conf.yaml").read_text())
    cfg["data"]["manifest_dir"] = str(out)
    cfg["kd"] = {
        "teacher": {"type": "offline", "fields": ["kd_ctc_topk", "kd_nbest"]},
        "methods": [{"name": "ctc_kd", "weight": 1.0}, {"name": "seq_kd_ctc", "weight": 0.5}],
    }
    conf = tmp_path / "student.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    student = tmp_path / "student"
    assert train.main(["--config", str(conf), "--exp-dir", str(student), "--max-steps", "2"]) == 0
    log = (student / "train.log").read_text()
    import re

    assert "OfflineTeacher" in log
    for name in ("ctc_kd", "seq_kd_ctc"):  # finite KD losses at every logged step and in validation
        values = [float(v) for v in re.findall(rf" {name}=([-0-9.e+naif]+)", log)]
        assert len(values) >= 3 and all(np.isfinite(v) and v > 0 for v in values), (name, values)
    ck = torch.load(student / "checkpoint-2.pt", weights_only=True)
    assert ck["step"] == 2
