"""KD through the command-line tools on the toy recipe: train a teacher, train self-KD and conventional-KD
students (train.py's ``kd`` section), export the self-KD sub-model, decode it, append a report row."""

from __future__ import annotations

import json

import pytest
import torch

from asr_kd.testing.recipe import TOY_MODEL, make_toy_recipe

ENC2 = {**TOY_MODEL["encoder"], "num_layers": 2}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_recipe")
    make_toy_recipe(root, model={"encoder": ENC2, "ctc": {}, "inter_ctc": {"layers": [1]}})
    return root


def test_self_kd_train_export_decode_report(recipe, tmp_path):
    from asr_kd.bin import decode, export, kd_report, train
    from asr_kd.training.asr_task import load_asr_model

    conf = str(recipe / "conf.yaml")
    exp = tmp_path / "selfkd"
    kd = [
        "kd.methods=[{name: self_kd, layer: 1, schedule: {name: self_kd, t: 0.3}}]",
        "model.weights={ctc: 1.0, inter_ctc: 1.0}",
    ]
    assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "3", *kd]) == 0
    log = (exp / "train.log").read_text()
    assert "kd method self_kd" in log and "self_kd=" in log and "kd_w_self_kd=" in log
    ck = torch.load(exp / "checkpoint-3.pt", weights_only=True)
    assert ck["config"]["kd"]["methods"][0]["name"] == "self_kd"
    # killed and resumed: the KD run continues like any other
    assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "4", *kd]) == 0
    assert "resumed from" in (exp / "train.log").read_text()

    sub = tmp_path / "sub1.pt"
    assert export.main(["--checkpoint", str(exp / "checkpoint-4.pt"), "--sub-model-layer", "1", "--out", str(sub)]) == 0
    sub_model, cfg = load_asr_model(sub)
    full, _ = load_asr_model(exp / "checkpoint-4.pt")
    assert sub_model.encoder.num_layers == 1 and "kd" not in cfg
    x = torch.randn(2, 60, 80)
    x_lens = torch.tensor([60, 45])
    with torch.no_grad():
        enc = full.encode(x, x_lens)
        want = full.inter_ctc_head(1)(enc.layer_outputs[0])
        got = sub_model.ctc(sub_model.encode(x, x_lens).out)
    valid = enc.valid_mask()
    torch.testing.assert_close(got[valid], want[valid])
    with pytest.raises(SystemExit, match="no inter-CTC head"):
        export.main(
            ["--checkpoint", str(exp / "checkpoint-4.pt"), "--sub-model-layer", "2", "--out", str(tmp_path / "bad.pt")]
        )

    # the sub-model decodes on its own; the same hypotheses as the full model's inter-CTC layer
    assert (
        decode.main(["--exp-dir", str(exp), "--checkpoint", str(sub), "--res-dir", "dec_sub", "--method", "ctc-greedy"])
        == 0
    )
    assert (
        decode.main(
            [
                "--exp-dir",
                str(exp),
                "--checkpoint",
                str(exp / "checkpoint-4.pt"),
                "--res-dir",
                "dec_l1",
                "--method",
                "ctc-greedy",
                "--ctc-layer",
                "1",
            ]
        )
        == 0
    )
    a = (exp / "dec_sub" / "recogs-test-ctc-greedy.txt").read_text()
    b = (
        (exp / "dec_l1" / "recogs-test-ctc-greedy_ctc-layer-1.txt").read_text()
        if (exp / "dec_l1" / "recogs-test-ctc-greedy_ctc-layer-1.txt").is_file()
        else None
    )
    if b is not None:
        assert a == b

    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n")
    assert (
        kd_report.main(
            [
                "--out",
                str(md),
                "--experiment",
                "self_kd",
                "--steps",
                "4",
                "--entry",
                f"full={exp / 'dec_l1'}",
                "--entry",
                f"sub={exp / 'dec_sub'}",
                "--baseline",
                "full",
            ]
        )
        == 0
    )
    text = md.read_text()
    assert text.startswith("# Results\n") and "## KD experiment log" in text
    rows = [l for l in text.splitlines() if l.startswith("| 20")]
    assert len(rows) == 2 and "| sub |" in rows[1] and "| self_kd |" in rows[0]
    wer_sub = json.loads((exp / "dec_sub" / "results.jsonl").read_text().splitlines()[-1])["wer"]
    assert f"| {wer_sub:.2f} |" in rows[1]
    # a second report appends rows under the same heading; --plot draws the entries' bars
    png = tmp_path / "bars.png"
    argv = ["--out", str(md), "--experiment", "again", "--steps", "4", "--entry", f"sub={exp / 'dec_sub'}"]
    kd_report.main(argv + ["--plot", str(png)])
    assert md.read_text().count("## KD experiment log") == 1
    from asr_kd.bin.plot import bar_series

    assert png.is_file() and bar_series([f"sub={exp / 'dec_sub'}:ctc-greedy"])[0]["wer"] == wer_sub


def test_conventional_kd_from_teacher_checkpoint(recipe, tmp_path):
    from asr_kd.bin import train

    conf = str(recipe / "conf.yaml")
    teacher_dir = tmp_path / "teacher"
    assert train.main(["--config", conf, "--exp-dir", str(teacher_dir), "--max-steps", "2"]) == 0
    teacher = teacher_dir / "checkpoint-2.pt"
    student = tmp_path / "student"
    kd = [
        f"kd.teacher={{type: asr, checkpoint: {teacher}}}",
        "kd.methods=[{name: ctc_kd, blank_mask: true}]",
        "model.encoder.num_layers=1",
        "model.inter_ctc=null",
    ]
    assert train.main(["--config", conf, "--exp-dir", str(student), "--max-steps", "2", *kd]) == 0
    log = (student / "train.log").read_text()
    assert "kd teacher: AsrTeacher (online)" in log and "ctc_kd=" in log
    # the teacher file is untouched by the student's training
    assert torch.load(teacher, weights_only=True)["step"] == 2


def test_init_from_starts_a_new_run_from_weights(recipe, tmp_path):
    """training.init_from: stage 2 of a KD recipe starts from stage 1's weights (not its optimiser/step)."""
    from asr_kd.bin import train

    conf = str(recipe / "conf.yaml")
    first = tmp_path / "stage1"
    assert train.main(["--config", conf, "--exp-dir", str(first), "--max-steps", "2"]) == 0
    w1 = torch.load(first / "checkpoint-2.pt", weights_only=True)["model"]
    second = tmp_path / "stage2"
    assert (
        train.main(
            [
                "--config",
                conf,
                "--exp-dir",
                str(second),
                "--max-steps",
                "1",
                "optim.lr=0.0",
                f"training.init_from={first / 'checkpoint-2.pt'}",
            ]
        )
        == 0
    )
    ck = torch.load(second / "checkpoint-1.pt", weights_only=True)
    assert ck["step"] == 1  # a new run: its own step count
    for k, v in w1.items():  # lr 0: the weights are exactly stage 1's
        assert torch.equal(ck["model"][k], v), k
    assert "initialised the model from" in (second / "train.log").read_text()
