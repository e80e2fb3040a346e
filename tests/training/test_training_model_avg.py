"""icefall's model_avg in the loop (training.average_period) and average.py --use-averaged-model."""

from __future__ import annotations

import pytest
import torch
from training_toy import ListBatches, TinyModel, loss_fn

from asr_kd.training import Trainer, TrainerConfig, build_optimizer, build_scheduler, seed_everything
from asr_kd.training.checkpoint import average_checkpoints_with_averaged_model


class Snapshots:
    """Float64 copies of the model's float state at the start of chosen steps (= after step s)."""

    def __init__(self, model):
        self.model, self.at = model, {}

    def on_step_start(self, progress):
        self.at[progress.step] = {
            k: v.detach().double().clone() for k, v in self.model.state_dict().items() if v.is_floating_point()
        }


def make(exp_dir, max_steps, average_period=3, ckpt_interval=0, keep_last=3, max_epochs=None):
    seed_everything(7)
    model = TinyModel()
    opt = build_optimizer(model.parameters(), {"name": "adamw", "lr": 3e-2})
    sched = build_scheduler(opt, {"name": "eden", "warmup_steps": 3, "lr_batches": 10, "lr_epochs": 2})
    cfg = TrainerConfig(
        max_steps=max_steps,
        max_epochs=max_epochs,
        log_interval=0,
        valid_interval=0,
        ckpt_interval=ckpt_interval,
        keep_last=keep_last,
        tensorboard=False,
        progress_bar=False,
        average_period=average_period,
    )
    snaps = Snapshots(model)
    t = Trainer(model, opt, loss_fn, ListBatches(), scheduler=sched, exp_dir=exp_dir, cfg=cfg, callbacks=[snaps])
    return t, snaps


def mean_of(states):
    return {k: sum(s[k] for s in states) / len(states) for k in states[0]}


def final_state(t):
    return {k: v.detach().double().clone() for k, v in t.model.state_dict().items() if v.is_floating_point()}


def test_model_avg_equals_mean_of_every_nth_model(tmp_path):
    t, snaps = make(tmp_path, max_steps=11, average_period=3)
    assert set(t.model_avg) == {"l1.weight", "l1.bias", "l2.weight", "l2.bias"}  # float entries only
    assert all(v.dtype == torch.float64 and v.device.type == "cpu" for v in t.model_avg.values())
    t.fit()
    # updates after steps 3, 6, 9: avg = mean of those models (step 10, 11 are no multiples of 3)
    expected = mean_of([snaps.at[3], snaps.at[6], snaps.at[9]])
    for k, v in expected.items():
        torch.testing.assert_close(t.model_avg[k], v, rtol=1e-12, atol=1e-14, msg=k)
    # icefall's recurrence by hand: avg_3 = m3, avg_6 = avg_3·(1-3/6) + m6·3/6, avg_9 = avg_6·(1-3/9) + m9·3/9
    a = snaps.at[3]["l2.bias"]
    a = a * 0.5 + snaps.at[6]["l2.bias"] * 0.5
    a = a * (1 - 3 / 9) + snaps.at[9]["l2.bias"] * (3 / 9)
    torch.testing.assert_close(t.model_avg["l2.bias"], a, rtol=1e-12, atol=1e-14)
    ck = torch.load(tmp_path / "checkpoint-11.pt", weights_only=True)
    for k, v in t.model_avg.items():
        assert torch.equal(ck["model_avg"][k], v), k


def test_no_model_avg_by_default(tmp_path):
    t, _ = make(tmp_path, max_steps=2, average_period=0)
    t.fit()
    assert t.model_avg is None
    assert torch.load(tmp_path / "checkpoint-2.pt", weights_only=True)["model_avg"] is None


def test_model_avg_resumes_exactly(tmp_path):
    straight, _ = make(tmp_path / "a", max_steps=14, average_period=2)
    straight.fit()
    first, _ = make(tmp_path / "b", max_steps=5, average_period=2)
    first.fit()
    second, _ = make(tmp_path / "b", max_steps=14, average_period=2)
    assert second.resume()
    second.fit()
    for k, v in straight.model_avg.items():
        assert torch.equal(v, second.model_avg[k]), k
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k


def test_resume_without_model_avg_restarts_it_from_the_weights(tmp_path, caplog):
    first, _ = make(tmp_path, max_steps=4, average_period=0)
    first.fit()
    second, _ = make(tmp_path, max_steps=6, average_period=2)
    assert second.resume()
    assert "no model_avg" in caplog.text
    for k, v in second.model_avg.items():
        assert torch.equal(v, second.model.state_dict()[k].double()), k


def test_average_cli_use_averaged_model_iter(tmp_path):
    from asr_kd.bin import average

    t, snaps = make(tmp_path, max_steps=12, average_period=3, ckpt_interval=3, keep_last=0)
    t.fit()
    snaps.at[12] = final_state(t)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == [
        "checkpoint-12.pt",
        "checkpoint-3.pt",
        "checkpoint-6.pt",
        "checkpoint-9.pt",
    ]
    out = tmp_path / "avg.pt"
    # --avg 2: checkpoint-6 and checkpoint-12 -> the mean of the models at steps 9 and 12
    assert (
        average.main(
            ["--exp-dir", str(tmp_path), "--iter", "12", "--avg", "2", "--use-averaged-model", "--out", str(out)]
        )
        == 0
    )
    ck = torch.load(out, weights_only=True)
    assert ck["meta"]["use_averaged_model"] and ck["meta"]["averaged_from"] == ["checkpoint-6.pt", "checkpoint-12.pt"]
    expected = mean_of([snaps.at[9], snaps.at[12]])
    for k, v in expected.items():
        torch.testing.assert_close(ck["model"][k], v.float(), rtol=1e-6, atol=1e-7, msg=k)
    assert torch.equal(ck["model"]["num_updates"], t.model.state_dict()["num_updates"])  # int buffer: last file
    # default name: iter-12-avg-2-use-averaged-model.pt
    assert average.main(["--exp-dir", str(tmp_path), "--iter", "12", "--avg", "3", "--use-averaged-model"]) == 0
    ck = torch.load(tmp_path / "iter-12-avg-3-use-averaged-model.pt", weights_only=True)
    for k, v in mean_of([snaps.at[s] for s in (6, 9, 12)]).items():
        torch.testing.assert_close(ck["model"][k], v.float(), rtol=1e-6, atol=1e-7, msg=k)
    with pytest.raises(SystemExit):  # 4 files: --avg 4 needs 5
        average.main(["--exp-dir", str(tmp_path), "--avg", "4", "--use-averaged-model"])


def test_average_cli_use_averaged_model_epochs(tmp_path):
    from asr_kd.bin import average

    t, snaps = make(tmp_path, max_steps=None, max_epochs=2, average_period=5)  # 10 batches per epoch
    t.fit()
    snaps.at[20] = final_state(t)
    # --epoch 2 --avg 1: from epoch-1.pt (step 10) to epoch-2.pt (step 20) -> models at 15 and 20
    assert average.main(["--exp-dir", str(tmp_path), "--epoch", "2", "--avg", "1", "--use-averaged-model"]) == 0
    ck = torch.load(tmp_path / "epoch-2-avg-1-use-averaged-model.pt", weights_only=True)
    for k, v in mean_of([snaps.at[15], snaps.at[20]]).items():
        torch.testing.assert_close(ck["model"][k], v.float(), rtol=1e-6, atol=1e-7, msg=k)
    # --avg 2 reaches back to the start of training: every 5th model
    sd = average_checkpoints_with_averaged_model(None, tmp_path / "epoch-2.pt")
    assert average.main(["--exp-dir", str(tmp_path), "--epoch", "2", "--avg", "2", "--use-averaged-model"]) == 0
    ck = torch.load(tmp_path / "epoch-2-avg-2-use-averaged-model.pt", weights_only=True)
    for k, v in mean_of([snaps.at[s] for s in (5, 10, 15, 20)]).items():
        torch.testing.assert_close(ck["model"][k], v.float(), rtol=1e-6, atol=1e-7, msg=k)
        assert torch.equal(sd[k], ck["model"][k])
    with pytest.raises(ValueError, match="comes after|must come after"):
        average_checkpoints_with_averaged_model(tmp_path / "epoch-2.pt", tmp_path / "epoch-1.pt")
