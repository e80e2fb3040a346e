"""asr_kd.bin.plot on fixture experiments: the PNG is written and the series it draws are the logged values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asr_kd.bin import plot, run_main

REPO = Path(__file__).resolve().parents[2]


def _png(path: Path) -> tuple[int, ...]:
    import matplotlib.image

    assert path.is_file()
    return matplotlib.image.imread(path).shape


def _rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _metrics_exp(root: Path) -> Path:
    """metrics.jsonl of a run resumed from step 20: the first invocation's rows 30/valid-30 were
    left in the file (e.g. a run killed before its resume could rewrite it) and are superseded."""
    t = lambda step, loss, secs, audio: dict(  # noqa: E731
        kind="train", step=step, epoch=0, train_seconds=secs, audio_seconds=audio, lr=1e-3, loss=loss
    )
    v = lambda step, loss, wer, secs, audio: dict(  # noqa: E731
        kind="valid", step=step, epoch=0, train_seconds=secs, audio_seconds=audio, lr=1e-3, loss=loss, wer=wer, cer=1.0
    )
    _rows(
        root / "metrics.jsonl",
        [
            t(10, 3.0, 60, 3600),
            t(20, 2.5, 120, 7200),
            v(20, 2.6, 90.0, 120, 7200),
            t(30, 2.2, 180, 10800),  # superseded by the resumed run
            v(30, 2.3, 80.0, 180, 10800),  # superseded
            t(30, 2.1, 190, 10800),
            v(30, 2.2, 75.0, 190, 10800),
        ],
    )
    return root


_T = "INFO [rank 0] asr_kd.training.trainer:"  # the train CLI's record prefix
_C = "INFO [rank 0] asr_kd.bin.train: config conf/x.yaml, exp dir exp/x, device cpu, world size 1"
TRAIN_LOG = "".join(
    line + "\n"
    for line in [
        f"2026-12-01 10:00:00,000 {_C}",
        f"2026-12-01 10:00:05,000 {_T} epoch 0 step 25: loss=2.185 ctc=2.185 lr=0.000347 grad_norm=0.409 bad=0",
        f"2026-12-01 10:00:15,000 {_T} epoch 0 step 50: loss=1.705 ctc=1.705 lr=0.00068 grad_norm=0.43 bad=0",
        f"2026-12-01 10:00:16,000 {_T} saved checkpoint exp/x/checkpoint-50.pt (step 50, epoch 0)",
        f"2026-12-01 10:00:20,000 {_T} step 50: validation loss=1.8 ctc=1.8",
        f"2026-12-01 10:00:25,000 {_T} epoch 0 step 75: loss=1.677 ctc=1.677 lr=0.00101 grad_norm=0.521 bad=0",
        f"2026-12-01 11:00:00,000 {_C}",
        f"2026-12-01 11:00:02,000 {_T} resumed from exp/x/ckpt-50.pt: step 50, epoch 0, 50 batches into the epoch",
        f"2026-12-01 11:00:12,000 {_T} epoch 0 step 75: loss=1.6 ctc=1.6 lr=0.00101 grad_norm=0.5 bad=0",
        f"2026-12-01 11:00:22,000 {_T} step 100: validation loss=1.5 ctc=1.5 wer=70.5 cer=30.25",
    ]
)


def test_curves_from_metrics(tmp_path):
    exp = _metrics_exp(tmp_path / "a")
    out = tmp_path / "curves.png"
    data = plot.plot_curves([("a", exp)], out, hlines=[("teacher", 27.05)])
    assert _png(out)[0] > 100
    assert data["a"]["train loss"] == ([10.0, 20.0, 30.0], [3.0, 2.5, 2.1])
    assert data["a"]["valid loss"] == ([20.0, 30.0], [2.6, 2.2])
    assert data["a"]["valid WER"] == ([20.0, 30.0], [90.0, 75.0])
    assert plot.curve_series(exp, "minutes")["valid WER"] == ([2.0, 190 / 60], [90.0, 75.0])
    assert plot.curve_series(exp, "audio-hours")["train loss"][0] == [1.0, 2.0, 3.0]


def test_curves_loss_key_picks_a_named_part(tmp_path):
    """--loss-key ctc: the loss panels show the ctc part (a KD student's total includes its KD terms)."""
    exp = tmp_path / "kd"
    _rows(
        exp / "metrics.jsonl",
        [
            dict(kind="train", step=10, epoch=0, train_seconds=1, audio_seconds=1, lr=1e-3, loss=3.5, ctc=3.0, kd=0.5),
            dict(kind="valid", step=10, epoch=0, train_seconds=1, audio_seconds=1, lr=0.1, loss=2.9, ctc=2.4, wer=90.0),
        ],
    )
    assert plot.curve_series(exp)["valid loss"] == ([10.0], [2.9])
    series = plot.curve_series(exp, loss_key="ctc")
    assert series["train loss"] == ([10.0], [3.0]) and series["valid loss"] == ([10.0], [2.4])
    assert series["valid WER"] == ([10.0], [90.0])  # the WER panel does not change
    out = tmp_path / "kd.png"
    argv = ["curves", "--exp-dir", str(exp), "--loss-key", "ctc", "--out", str(out)]
    assert run_main(lambda: plot.main(argv), "plot") == 0
    assert _png(out)[0] > 100


def test_curves_from_train_log_of_an_older_experiment(tmp_path):
    exp = tmp_path / "old"
    exp.mkdir()
    (exp / "train.log").write_text(TRAIN_LOG)
    series = plot.curve_series(exp)
    # the resumed run (from step 50) replaces the first run's step 75
    assert series["train loss"] == ([25.0, 50.0, 75.0], [2.185, 1.705, 1.6])
    assert series["valid loss"] == ([50.0, 100.0], [1.8, 1.5])
    assert series["valid WER"] == ([100.0], [70.5])
    # minutes: the first run's clock up to its last kept row (the step-50 validation, 20 s), then 10 s
    # and 20 s after the resume line
    minutes = plot.curve_series(exp, "minutes")
    assert minutes["train loss"][0] == pytest.approx([5 / 60, 15 / 60, 30 / 60])
    assert minutes["valid loss"][0] == pytest.approx([20 / 60, 40 / 60])
    out = tmp_path / "old.png"
    argv = ["curves", "--exp-dir", str(exp), "--x", "minutes", "--out", str(out)]
    assert run_main(lambda: plot.main(argv), "plot") == 0
    assert _png(out)


def test_curves_of_a_real_training_run(tmp_path):
    """A few-step run of the train CLI: the plotted validation WER is its metrics.jsonl's."""
    from asr_kd.bin import train
    from asr_kd.testing.recipe import make_toy_recipe
    from asr_kd.training.metrics import read_metrics

    conf = make_toy_recipe(tmp_path / "recipe")
    exp = tmp_path / "exp"
    argv = ["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "4", "--num-threads", "1"]
    assert train.main(argv + ["training.valid_decode=ctc-greedy"]) == 0
    rows = [r for r in read_metrics(exp / "metrics.jsonl") if r["kind"] == "valid"]
    out = tmp_path / "run.png"
    argv = ["curves", "--exp-dir", str(exp), "--label", "toy", "--hline", "teacher=50", "--out", str(out)]
    assert plot.main(argv) == 0 and _png(out)
    assert plot.curve_series(exp)["valid WER"] == ([float(r["step"]) for r in rows], [r["wer"] for r in rows])


def test_bars_pick_the_newest_row_of_the_split_and_method(tmp_path):
    res = tmp_path / "teacher" / "decode"
    _rows(
        res / "results.jsonl",
        [
            {"split": "test", "method": "modified-beam_beam-4", "wer": 30.0, "cer": 12.0},
            {"split": "dev", "method": "ctc-greedy", "wer": 40.0, "cer": 15.0},
            {"split": "test", "method": "modified-beam_beam-4", "wer": 27.05, "cer": 10.5},
            {"split": "test", "method": "ctc-greedy", "wer": 35.0, "cer": 14.0},
        ],
    )
    student = tmp_path / "student.jsonl"
    _rows(student, [{"split": "test", "method": "ctc-greedy", "wer": 60.0, "cer": 25.0}])
    out = tmp_path / "bars.png"
    specs = [f"teacher={res}:modified-beam", f"teacher greedy={res}", f"student={student}"]
    rows = plot.plot_bars(specs, out)
    assert _png(out)
    assert [(r["label"], r["method"], r["wer"], r["cer"]) for r in rows] == [
        ("teacher", "modified-beam_beam-4", 27.05, 10.5),
        ("teacher greedy", "ctc-greedy", 35.0, 14.0),
        ("student", "ctc-greedy", 60.0, 25.0),
    ]
    assert plot.bar_series([f"dev={res}"], split="dev")[0]["wer"] == 40.0


def test_wer_curve_and_its_script_wrapper(tmp_path):
    tsv = tmp_path / "wer_curve.tsv"
    tsv.write_text(
        "step\tminutes\taudio_hours\twer\tcer\n200\t1.50\t0.20\t95.00\t60.00\n400\t3.00\t0.40\t80.50\t40.00\n"
    )
    out = tmp_path / "w.png"
    data = plot.plot_wer_curve([("ctc", tsv)], out, points=["ref:1=90,3=70"], audio_hours=True)
    assert _png(out) and data["ctc"]["minutes"] == [1.5, 3.0] and data["ctc"]["wer"] == [95.0, 80.5]
    out2 = tmp_path / "w2.png"
    cmd = [sys.executable, str(REPO / "scripts" / "wer_curve.py"), "plot", "--out", str(out2), "--curve", f"{tsv}:ctc"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert _png(out2) == _png(out)[:1] + _png(out2)[1:] and _png(out2)[1] < _png(out)[1]  # one panel, not two


@pytest.mark.parametrize(
    "argv, words",
    [
        (["curves", "--exp-dir", "{tmp}/missing"], "experiment directory {tmp}/missing not found"),
        (["curves", "--exp-dir", "{tmp}/empty"], "{tmp}/empty has no metrics.jsonl and no train.log"),
        (["curves", "--exp-dir", "{tmp}/old", "--x", "audio-hours"], "has no audio_seconds for --x audio-hours"),
        (["curves", "--exp-dir", "{tmp}/old", "--hline", "teacher"], "--hline 'teacher' is not LABEL=VALUE"),
        (["bars", "--result", "t={tmp}/empty"], "{tmp}/empty/results.jsonl not found"),
        (["bars", "--result", "t={tmp}/r.jsonl:attention-beam"], "no result for split 'test' and method"),
        (["wer-curve", "--curve", "{tmp}/none.tsv"], "WER-curve table {tmp}/none.tsv not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "train.log").write_text(TRAIN_LOG)
    _rows(tmp_path / "r.jsonl", [{"split": "test", "method": "ctc-greedy", "wer": 1.0, "cer": 1.0}])
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "x.png")]
    assert run_main(lambda: plot.main(argv), "plot") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("plot: error: MetricsError: ")
    assert words.format(tmp=tmp_path) in err
    assert not (tmp_path / "x.png").exists()
