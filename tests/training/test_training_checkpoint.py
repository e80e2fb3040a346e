from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from training_toy import TinyModel

from asr_kd.training import build_optimizer, build_scheduler
from asr_kd.training import checkpoint as ck


def _save(path, model, step=0, epoch=0, **kw):
    return ck.save_checkpoint(path, model=model, step=step, epoch=epoch, **kw)


def test_roundtrip_weights_only(tmp_path):
    torch.manual_seed(0)
    model = TinyModel()
    opt = build_optimizer(model.parameters(), {"lr": 1e-2})
    sched = build_scheduler(opt, {"name": "noam", "warmup_steps": 2})
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    p = _save(
        tmp_path / "c.pt",
        model,
        step=5,
        epoch=1,
        optimizer=opt,
        scheduler=sched,
        sampler={"epoch": 1, "batches_consumed": 3, "state": None},
        config={"model": {"d": 4}, "path": tmp_path, "t": (1, 2)},
        meta={"note": "x"},
    )
    raw = torch.load(p, weights_only=True)  # must not raise
    assert set(raw) == set(ck.CHECKPOINT_KEYS)
    assert raw["config"] == {"model": {"d": 4}, "path": str(tmp_path), "t": [1, 2]}
    assert raw["meta"]["note"] == "x" and isinstance(raw["meta"]["torch_version"], str)

    model2 = TinyModel()
    opt2 = build_optimizer(model2.parameters(), {"lr": 1e-2})
    sched2 = build_scheduler(opt2, {"name": "noam", "warmup_steps": 2})
    out = ck.load_checkpoint(p, model=model2, optimizer=opt2, scheduler=sched2)
    assert out["step"] == 5 and out["sampler"]["batches_consumed"] == 3
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_ddp_prefix_is_stripped(tmp_path):
    model = TinyModel()
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    p = _save(tmp_path / "c.pt", sd)
    m2 = TinyModel()
    ck.load_checkpoint(p, model=m2)
    assert torch.equal(m2.l1.weight, model.l1.weight)


def test_non_plain_values_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="meta"):
        _save(tmp_path / "c.pt", TinyModel(), meta={"bad": np.float64(1.0)})
    with pytest.raises(TypeError, match="sampler"):
        _save(tmp_path / "c.pt", TinyModel(), sampler={"obj": object()})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "c.pt"
    ck.atomic_save({"a": 1}, p)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(OSError):
        ck.atomic_save({"a": 2}, p)
    monkeypatch.undo()
    assert torch.load(p, weights_only=True) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["c.pt"]


def test_rng_state_roundtrip():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.randn()  # leaves a cached gaussian in some numpy versions
    state = ck.get_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    ck.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def test_find_latest_and_cleanup(tmp_path):
    assert ck.find_latest(tmp_path) is None
    assert ck.find_latest(tmp_path / "missing") is None
    m = TinyModel()
    for s in (3, 6, 9, 12):
        _save(tmp_path / f"checkpoint-{s}.pt", m, step=s)
    _save(tmp_path / "epoch-1.pt", m, step=10, epoch=1)
    assert ck.find_latest(tmp_path).name == "checkpoint-12.pt"
    _save(tmp_path / "epoch-2.pt", m, step=12, epoch=2)  # tie: the epoch file is the later state
    assert ck.find_latest(tmp_path).name == "epoch-2.pt"
    (tmp_path / "notes.txt").write_text("x")
    removed = ck.remove_old_checkpoints(tmp_path, keep_last=2, keep_last_epochs=1)
    assert sorted(p.name for p in removed) == ["checkpoint-3.pt", "checkpoint-6.pt", "epoch-1.pt"]
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-9.pt", "checkpoint-12.pt", "epoch-2.pt"]


def test_average_checkpoints(tmp_path):
    paths = []
    models = []
    for i in range(3):
        torch.manual_seed(i)
        m = TinyModel()
        m.num_updates.fill_(10 * (i + 1))
        models.append(m)
        paths.append(_save(tmp_path / f"epoch-{i + 1}.pt", m, epoch=i + 1))
    avg = ck.average_checkpoints(paths)
    expected = (models[0].l1.weight + models[1].l1.weight + models[2].l1.weight) / 3
    torch.testing.assert_close(avg["l1.weight"], expected, rtol=0, atol=1e-7)
    assert avg["l1.weight"].dtype == torch.float32
    assert avg["num_updates"].item() == 30  # integer buffer: from the last checkpoint
    with pytest.raises(ValueError):
        ck.average_checkpoints([])


def test_average_cli(tmp_path):
    from asr_kd.bin import average

    for i in range(1, 5):
        torch.manual_seed(i)
        _save(tmp_path / f"epoch-{i}.pt", TinyModel(), step=10 * i, epoch=i, config={"k": i})
        _save(tmp_path / f"checkpoint-{10 * i}.pt", TinyModel(), step=10 * i, epoch=i)
    assert average.main(["--exp-dir", str(tmp_path), "--epoch", "4", "--avg", "2"]) == 0
    out = tmp_path / "epoch-4-avg-2.pt"
    ck_ = torch.load(out, weights_only=True)
    ref = ck.average_checkpoints([tmp_path / "epoch-3.pt", tmp_path / "epoch-4.pt"])
    assert torch.equal(ck_["model"]["l2.bias"], ref["l2.bias"])
    assert ck_["config"] == {"k": 4} and ck_["meta"]["averaged_from"] == ["epoch-3.pt", "epoch-4.pt"]
    # the last 3 periodic checkpoints, explicit output name
    assert average.main(["--exp-dir", str(tmp_path), "--avg", "3", "--out", str(tmp_path / "a.pt")]) == 0
    got = torch.load(tmp_path / "a.pt", weights_only=True)["meta"]["averaged_from"]
    assert got == ["checkpoint-20.pt", "checkpoint-30.pt", "checkpoint-40.pt"]
    assert average.main(["--exp-dir", str(tmp_path), "--iter", "30", "--avg", "2"]) == 0
    got = torch.load(tmp_path / "iter-30-avg-2.pt", weights_only=True)["meta"]["averaged_from"]
    assert got == ["checkpoint-20.pt", "checkpoint-30.pt"]
    # explicit paths
    assert (
        average.main(
            [
                "--checkpoints",
                str(tmp_path / "epoch-1.pt"),
                str(tmp_path / "epoch-2.pt"),
                "--out",
                str(tmp_path / "b.pt"),
            ]
        )
        == 0
    )
    with pytest.raises(SystemExit):
        average.main(["--exp-dir", str(tmp_path), "--epoch", "9", "--avg", "2"])


def test_config_none_values_survive_the_round_trip(tmp_path):
    """``attention_decoder: null`` (no such head) must not come back as an empty section ({}), which
    build_asr_model would turn into a default decoder."""
    from asr_kd.training.checkpoint import save_checkpoint

    cfg = {"model": {"ctc": {}, "attention_decoder": None, "weights": {"att": 0.0}}, "paths": ("a", "b")}
    p = save_checkpoint(tmp_path / "c.pt", model={}, config=cfg, rng=None)
    back = torch.load(p, weights_only=True)["config"]
    assert back == {"model": {"ctc": {}, "attention_decoder": None, "weights": {"att": 0.0}}, "paths": ["a", "b"]}
    assert (
        torch.load(save_checkpoint(tmp_path / "d.pt", model={}, config=None, rng=None), weights_only=True)["config"]
        == {}
    )
