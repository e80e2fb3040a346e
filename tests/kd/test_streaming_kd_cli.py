"""streaming_kd and transducer_kd through asr_kd.bin.train on the toy recipe: a full-context transducer
teacher, a causal chunk-trained student with the auxiliary branch; the branch is in the training
checkpoints and absent from averaged and exported models; bad mappings fail at start-up."""

from __future__ import annotations

import pytest
import torch

from asr_kd.testing.encoders import tiny_encoder_config
from asr_kd.testing.recipe import make_toy_recipe


def _model(causal: bool) -> dict:
    return {
        "encoder": tiny_encoder_config("zipformer", 80, causal=causal),
        "transducer": {"d_pred": 16, "d_joint": 16},
        "ctc": {},
        "weights": {"transducer": 0.9, "ctc": 0.1},
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from asr_kd.bin import train

    root = tmp_path_factory.mktemp("skd_recipe")
    conf = make_toy_recipe(root, model=_model(False))
    exp = root / "teacher"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "1"]) == 0
    return root, exp / "checkpoint-1.pt"


STUDENT = [
    "model.encoder.causal=true",
    "training.chunk={chunk_size: 4, left_context: 2}",
]


def test_streaming_kd_trains_and_exports_without_branch(teacher, tmp_path):
    from asr_kd.bin import average, export, train
    from asr_kd.training.asr_task import load_asr_model

    root, ckpt = teacher
    conf = str(root / "conf.yaml")
    exp = tmp_path / "student"
    kd = [
        f"kd.teacher={{type: asr, checkpoint: {ckpt}}}",
        "kd.methods=[{name: streaming_kd, layers: [2, [4, 4]], relation_weight: 1.0, apc_weight: 1.0, apc_shift: 2,"
        " d_model: 16, heads: 2, d_ff: 32, lstm_dim: 16}, {name: transducer_kd, weight: 0.5}]",
    ]
    assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "3", *STUDENT, *kd]) == 0
    log = (exp / "train.log").read_text()
    for part in ("skd_l1=", "skd_cos=", "skd_rel=", "skd_apc=", "transducer_kd=", "kd_w_streaming_kd="):
        assert part in log
    # killed and resumed: the branch (built from the teacher's dims at start-up) is restored with the rest
    assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "4", *STUDENT, *kd]) == 0
    assert "resumed from" in (exp / "train.log").read_text()
    state = torch.load(exp / "checkpoint-3.pt", weights_only=True)["model"]
    aux = [k for k in state if k.startswith("kd_aux.")]
    assert any(".transformer." in k for k in aux) and any(".lstm." in k for k in aux)

    avg = tmp_path / "avg.pt"
    ckpts = [str(exp / "checkpoint-2.pt"), str(exp / "checkpoint-3.pt")]
    assert average.main(["--checkpoints", *ckpts, "--out", str(avg)]) == 0
    out = tmp_path / "exported.pt"
    assert export.main(["--checkpoint", str(avg), "--out", str(out)]) == 0
    for path in (avg, out):
        assert not [k for k in torch.load(path, weights_only=True)["model"] if "kd_aux" in k]
    model, cfg = load_asr_model(out)
    assert model.encoder.causal and len(model.kd_aux) == 0
    # the exported student is the trained one, minus the branch
    want = {k: v for k, v in load_asr_model(avg)[0].state_dict().items()}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, want[k])


def test_bad_mapping_and_full_context_student_fail_at_startup(teacher, tmp_path):
    from asr_kd.bin import train

    root, ckpt = teacher
    conf = str(root / "conf.yaml")
    t = f"kd.teacher={{type: asr, checkpoint: {ckpt}}}"
    with pytest.raises((ValueError, SystemExit), match="teacher has 5 layers"):
        train.main(
            ["--config", conf, "--exp-dir", str(tmp_path / "a"), "--max-steps", "1", *STUDENT, t,
             "kd.methods=[{name: streaming_kd, layers: [[2, 8]]}]"]
        )  # fmt: skip
    with pytest.raises((ValueError, SystemExit), match="not causal"):
        train.main(
            ["--config", conf, "--exp-dir", str(tmp_path / "b"), "--max-steps", "1", t,
             "kd.methods=[{name: streaming_kd, layers: [2]}]"]
        )  # fmt: skip
    with pytest.raises((ValueError, SystemExit), match="chunk"):
        train.main(
            ["--config", conf, "--exp-dir", str(tmp_path / "c"), "--max-steps", "1", "model.encoder.causal=true",
             "training.chunk={chunk_size: 3}", t, "kd.methods=[{name: streaming_kd, layers: [2]}]"]
        )  # fmt: skip
