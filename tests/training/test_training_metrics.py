"""metrics.jsonl of the train CLI: rows per log interval and validation, one run after a resume, the
train.log parser for older experiments, and the in-loop validation WER (training.valid_decode)."""

from __future__ import annotations

import json

import pytest

from asr_kd.testing.recipe import make_toy_recipe
from asr_kd.training.metrics import (
    METRICS_FILE,
    MetricsError,
    append_metrics,
    parse_train_log,
    read_metrics,
    truncate_metrics,
)

#: fields that must be equal between an uninterrupted and a resumed run (train_seconds is wall time)
SAME = ("kind", "step", "epoch", "audio_seconds", "lr", "loss", "ctc", "grad_norm", "wer", "cer")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    make_toy_recipe(root)
    return root


def _train(recipe, exp, *args):
    from asr_kd.bin import train

    argv = ["--config", str(recipe / "conf.yaml"), "--exp-dir", str(exp), "--num-threads", "1"]
    assert train.main(argv + list(args)) == 0


def _same(rows):
    return [{k: r.get(k) for k in SAME} for r in rows]


@pytest.fixture(scope="module")
def runs(recipe, tmp_path_factory):
    """exp ``a``: 4 steps in one go; exp ``b``: 4 steps, then resumed from step 2 up to step 4 again."""
    root = tmp_path_factory.mktemp("runs")
    for name in ("a", "b"):
        _train(recipe, root / name, "--max-steps", "4", "training.valid_decode=ctc-greedy")
    _train(
        recipe,
        root / "b",
        "--max-steps",
        "4",
        "--resume-from",
        str(root / "b" / "checkpoint-2.pt"),
        "training.valid_decode=ctc-greedy",
    )
    return root


def test_rows_per_interval_and_validation(runs):
    rows = read_metrics(runs / "a" / METRICS_FILE)
    train = [r for r in rows if r["kind"] == "train"]
    valid = [r for r in rows if r["kind"] == "valid"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # log_interval 1
    assert [r["step"] for r in valid] == [2, 4]  # valid_interval 2 (the epoch-end one at 2 supersedes)
    for r in rows:
        assert {"epoch", "train_seconds", "audio_seconds", "lr", "loss", "ctc"} <= set(r)
        assert r["loss"] == pytest.approx(r["ctc"])  # a CTC-only model: loss = its one part
    for r in valid:
        assert set(r) >= {"wer", "cer"}
    assert [r["audio_seconds"] for r in train] == sorted(r["audio_seconds"] for r in train)
    assert train[-1]["audio_seconds"] > 0 and train[-1]["train_seconds"] > 0


def test_resumed_run_describes_one_run(runs):
    raw = [json.loads(x) for x in (runs / "b" / METRICS_FILE).read_text().splitlines()]
    # the first invocation wrote steps 3 and 4; the resume from step 2 dropped them before redoing them
    assert [r["step"] for r in raw if r["kind"] == "train"] == [1, 2, 3, 4]
    assert _same(read_metrics(runs / "b" / METRICS_FILE)) == _same(read_metrics(runs / "a" / METRICS_FILE))


@pytest.mark.parametrize("exp", ["a", "b"])
def test_train_log_parser_gives_the_metrics_rows(runs, exp):
    """The fallback for experiments without metrics.jsonl reads the same rows from train.log
    (values as the log formats them), across a resume too."""
    rows = read_metrics(runs / exp / METRICS_FILE)
    parsed = parse_train_log(runs / exp / "train.log")
    assert [(r["kind"], r["step"], r["epoch"]) for r in parsed] == [(r["kind"], r["step"], r["epoch"]) for r in rows]
    for p, r in zip(parsed, rows):
        logged = {k: f"{r[k]:.4g}" for k in ("loss", "ctc", "wer", "cer") if k in r}  # the log's formats
        if r["kind"] == "train":
            logged.update({k: f"{r[k]:.3g}" for k in ("lr", "grad_norm")})
        assert {k: p[k] for k in logged} == {k: float(v) for k, v in logged.items()}
        assert "audio_seconds" not in p and p["train_seconds"] >= 0
    assert [p["train_seconds"] for p in parsed] == sorted(p["train_seconds"] for p in parsed)


def test_valid_wer_equals_the_decode_cli(runs, tmp_path):
    """The WER logged at step 4 is what asr_kd.bin.decode gives for checkpoint-4.pt on the same dev cuts."""
    from asr_kd.bin import decode

    valid = [r for r in read_metrics(runs / "a" / METRICS_FILE) if r["kind"] == "valid"]
    by_step = {r["step"]: r for r in valid}
    for step in (2, 4):
        res = tmp_path / f"dec{step}"
        ckpt = runs / "a" / f"checkpoint-{step}.pt"
        argv = ["--exp-dir", str(runs / "a"), "--checkpoint", str(ckpt), "--split", "dev", "--res-dir", str(res)]
        assert decode.main(argv + ["--method", "ctc-greedy", "--num-threads", "1"]) == 0
        row = json.loads((res / "results.jsonl").read_text().splitlines()[-1])
        assert round(by_step[step]["wer"], 2) == row["wer"] and round(by_step[step]["cer"], 2) == row["cer"]
    # not a trivial agreement: the step-2 model inserts words (WER above 100 %), the step-4 one differs
    assert by_step[2]["wer"] > 100 and by_step[2]["wer"] != by_step[4]["wer"]


def test_tensorboard_gets_valid_wer(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs / "a" / "tensorboard"))
    acc.Reload()
    wer = {e.step: e.value for e in acc.Scalars("valid/wer")}
    valid = {r["step"]: r["wer"] for r in read_metrics(runs / "a" / METRICS_FILE) if r["kind"] == "valid"}
    assert wer == pytest.approx(valid) and "valid/cer" in acc.Tags()["scalars"]


def test_train_log_says_where_tensorboard_is(runs):
    log = (runs / "a" / "train.log").read_text()
    assert log.count(f"tensorboard --logdir {runs / 'a' / 'tensorboard'}") == 1


@pytest.mark.parametrize(
    "value, words",
    [("nope", "not a decoding method"), ("transducer-greedy", "transducer head"), ("3", "must be a string")],
)
def test_valid_decode_is_checked(recipe, tmp_path, value, words):
    from asr_kd.training.config import ConfigError

    with pytest.raises(ConfigError, match=words) as e:
        _train(recipe, tmp_path / "exp", "--max-steps", "1", f"training.valid_decode={value}")
    assert "training.valid_decode" in str(e.value)
    assert not list((tmp_path / "exp").glob("*.pt"))


def test_truncate_and_read_edge_cases(tmp_path):
    path = tmp_path / METRICS_FILE
    for step in (1, 2, 3):
        append_metrics(path, {"kind": "train", "step": step, "loss": float("nan") if step == 2 else 1.0})
    with open(path, "a") as f:
        f.write('{"kind": "train", "st')  # killed during a write
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert read_metrics(path)[1]["loss"] is None  # NaN is written as null
    assert truncate_metrics(path, 2) == 2  # step 3 and the torn line
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    path.write_text('{"kind": "train", "step": 1}\nnot json\n{"kind": "train", "step": 2}\n')
    with pytest.raises(MetricsError, match=r"metrics.jsonl:2"):
        read_metrics(path)
