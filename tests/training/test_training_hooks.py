"""Step-start hooks: callbacks, the model's on_train_step_start, TrainProgress and audio_seconds."""

from __future__ import annotations

import random

import pytest
import torch
from training_toy import ListBatches, TinyModel, loss_fn, num_frames

from asr_kd.training import Trainer, TrainerConfig, TrainProgress, batch_audio_seconds, build_optimizer, seed_everything


class Recorder:
    def __init__(self, events=None):
        self.seen: list[TrainProgress] = []
        self.events = events if events is not None else []

    def on_step_start(self, progress):
        self.seen.append(progress)
        self.events.append(("callback", progress.step))

    def on_step_end(self, progress):
        self.events.append(("end", progress.step))


class ScheduledModel(TinyModel):
    """A TinyModel whose hidden layer has a Zipformer-like schedule hook; forward logs its calls."""

    def __init__(self, events):
        super().__init__(dropout=0.0)
        self.events = events
        self.l1.on_train_step_start = self._hook  # a submodule hook
        self.hook_progress: list[TrainProgress] = []

    def _hook(self, progress):
        self.hook_progress.append(progress)
        self.events.append(("module", progress.step))

    def on_train_step_start(self, progress):  # the model's own hook
        self.events.append(("model", progress.step))

    def forward(self, x):
        self.events.append(("forward", None))
        return super().forward(x)


def expected_durations(n_batches, loader):
    """Seconds of audio of the loader's batches, epoch after epoch (10 ms frames)."""
    out = []
    epoch = 0
    while len(out) < n_batches:
        loader.set_epoch(epoch)
        out += [float(b["feature_lens"].sum()) * 0.01 for b in loader]
        epoch += 1
    return out[:n_batches]


def make(tmp_path, max_steps, events=None, **cfg):
    seed_everything(0)
    events = [] if events is None else events
    model = ScheduledModel(events)
    opt = build_optimizer(model.parameters(), {"lr": 1e-2})
    conf = dict(
        max_steps=max_steps,
        max_epochs=None,
        log_interval=0,
        valid_interval=0,
        ckpt_interval=0,
        tensorboard=False,
        progress_bar=False,
    )
    conf.update(cfg)
    rec = Recorder(events)
    t = Trainer(
        model,
        opt,
        loss_fn,
        ListBatches(n=20, batch_size=4),
        exp_dir=tmp_path,
        cfg=TrainerConfig(**conf),
        callbacks=[rec],
    )
    return t, rec, model


def test_batch_audio_seconds():
    assert batch_audio_seconds({"feature_lens": torch.tensor([100, 250])}) == pytest.approx(3.5)
    assert batch_audio_seconds({"feature_lens": torch.tensor([100])}, frame_shift=0.02) == pytest.approx(2.0)

    class Cut:
        def __init__(self, d):
            self.duration = d

    assert batch_audio_seconds({"cuts": [Cut(1.25), Cut(2.0)]}) == pytest.approx(3.25)
    assert batch_audio_seconds({"supervisions": {"num_frames": torch.tensor([300, 200])}}) == pytest.approx(5.0)
    assert batch_audio_seconds({"x": torch.zeros(2, 4)}) == 0.0 and batch_audio_seconds([1, 2]) == 0.0


def test_hooks_run_before_each_forward_with_the_right_progress(tmp_path):
    t, rec, model = make(tmp_path, max_steps=8)
    t.fit()
    durations = expected_durations(8, ListBatches(n=20, batch_size=4))  # 5 batches per epoch
    assert [p.step for p in rec.seen] == list(range(8))
    assert [p.epoch for p in rec.seen] == [0] * 5 + [1] * 3
    assert [p.batch_duration for p in rec.seen] == pytest.approx(durations)
    cumulative = [sum(durations[:i]) for i in range(8)]
    assert [p.audio_seconds for p in rec.seen] == pytest.approx(cumulative)
    assert t.audio_seconds == pytest.approx(sum(durations))
    assert model.hook_progress == rec.seen  # the submodule gets the same objects
    # per step: callback, model, submodule hooks, then the forward, then the step-end hook
    first = rec.events[: rec.events.index(("end", 0)) + 1]
    assert first == [("callback", 0), ("model", 0), ("module", 0), ("forward", None), ("end", 0)]
    # a toy cut's duration: 100..149 frames
    ids = [f"utt-{i:03d}" for i in range(20)]
    random.Random(0).shuffle(ids)
    assert rec.seen[0].batch_duration == pytest.approx(sum(num_frames(i) for i in ids[:4]) * 0.01)


def test_skipped_batches_count_their_audio(tmp_path):
    t, rec, _ = make(tmp_path, max_steps=3)
    batch = next(iter(ListBatches(n=20, batch_size=4)))
    dur = float(batch["feature_lens"].sum()) * 0.01
    t.loss_fn = lambda m, b, s: m(b["x"]).sum() * float("nan")
    assert t.train_step(batch) is None
    assert t.audio_seconds == pytest.approx(dur) and rec.seen[-1].audio_seconds == 0.0
    empty = {k: v[:0] for k, v in batch.items()}
    t.loss_fn = loss_fn
    assert t.train_step(empty) is None and rec.seen[-1].batch_duration == 0.0
    assert t.audio_seconds == pytest.approx(dur)


def test_audio_seconds_resume_exactly(tmp_path):
    straight, rec_a, _ = make(tmp_path / "a", max_steps=12)
    straight.fit()
    first, _, _ = make(tmp_path / "b", max_steps=7)
    first.fit()
    ck = torch.load(tmp_path / "b" / "checkpoint-7.pt", weights_only=True)
    assert ck["meta"]["audio_seconds"] == first.audio_seconds > 0
    second, rec_b, _ = make(tmp_path / "b", max_steps=12)
    assert second.resume() and second.audio_seconds == first.audio_seconds
    res = second.fit()
    assert [p.step for p in rec_b.seen] == list(range(7, 12))
    assert rec_b.seen == rec_a.seen[7:]  # bitwise the same floats
    assert res["audio_seconds"] == straight.audio_seconds


def test_add_callback_and_plain_function_loss():
    seed_everything(0)
    model = TinyModel(dropout=0.0)
    t = Trainer(
        model,
        build_optimizer(model.parameters(), {"lr": 1e-2}),
        loss_fn,
        ListBatches(n=8, batch_size=4),
        cfg=TrainerConfig(
            max_steps=2,
            max_epochs=None,
            log_interval=0,
            valid_interval=0,
            ckpt_interval=0,
            tensorboard=False,
            progress_bar=False,
        ),
        batch_duration_fn=lambda b: float(len(b["y"])),
    )
    rec = Recorder()
    t.add_callback(rec)
    t.fit()
    assert [(p.step, p.audio_seconds, p.batch_duration) for p in rec.seen] == [(0, 0.0, 4.0), (1, 4.0, 4.0)]
