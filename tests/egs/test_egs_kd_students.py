"""The KD runners' ``--student`` option (run_inter_aed.sh, issue 15; run_repr_kd.sh, issue 17): the Zipformer
overlay conf/students/zipformer_s.yaml laid over every row config, as each runner's plan prints it, loads with
the strict checker and builds one student per runner (same parameter count on every row, the Zipformer recipe's
optimiser and schedule) whose KD methods find their layers; exp dirs per student; unknown students refused;
the setup both runners source, local/student.sh: its documented defaults per student."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ASR = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR"
STUDENTS = ("conformer_l4", "zipformer")
KD_MODELS = "aed_final inter_aed aed_ref aed_ref_inter wp_ctc wp_inter_aed"
REPR_ROWS = "transducer last1 last3 first3 uniform3 random3 uniform3_ctx uniform3_ctx_mpnet"
#: interAED-KD decoders of each model (None: no KD method), per student
KD_KEYS = {
    "ctc": None,
    "wp_ctc": None,
    "aed_final": ["final"],
    "aed_ref": ["final"],
    "inter_aed": {"conformer_l4": ["l2", "final"], "zipformer": ["l4", "final"]},
    "aed_ref_inter": {"conformer_l4": ["l2", "final"], "zipformer": ["l4", "final"]},
    "wp_inter_aed": {"conformer_l4": ["l2", "final"], "zipformer": ["l4", "final"]},
}
STUDENT_SH = ASR / "local" / "student.sh"  # the student setup both runners source
PLAN = re.compile(r"plan \((\S+) student\): (\S+): (\S+)(?: \+ (\S+))?(?: (\S+=\S+))? -> (\S+)$")


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ASR / script), *args], capture_output=True, text=True, timeout=60)


def plan(script: str, student: str, *args: str) -> dict[str, tuple[list[Path], list[str], str]]:
    """``{row: ([config, overlay?], [override?], exp dir)}`` from the runner's plan lines (no stage runs)."""
    proc = run(script, "--student", student, "--stage", "9", "--stop-stage", "8", *args)
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        m = PLAN.search(line)
        if m:
            assert m.group(1) == student
            confs = [ASR / c for c in (m.group(3), m.group(4)) if c]
            out[m.group(2)] = (confs, [m.group(5)] if m.group(5) else [], m.group(6))
    return out


def student_params(model) -> int:
    """Parameters of the student itself (the training-only ``kd_aux`` modules left out)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("kd_aux."))


def test_help_documents_the_option_and_unknown_students_are_refused():
    for script in ("run_inter_aed.sh", "run_repr_kd.sh"):
        proc = run(script, "--help")
        assert proc.returncode == 0 and "--student S" in proc.stdout and "zipformer" in proc.stdout
        assert "[conformer_l4]" in proc.stdout
        bad = run(script, "--student", "zipformer_xl")
        assert bad.returncode != 0
        assert f"{script}: unknown --student 'zipformer_xl' (conformer_l4, zipformer)" in bad.stderr
        assert "plan" not in bad.stdout  # refused before anything is planned or run


def test_exp_dirs_differ_per_student():
    for script, extra, prefix in (
        ("run_inter_aed.sh", ("--models", KD_MODELS), "exp/kd/"),
        ("run_repr_kd.sh", ("--rows", REPR_ROWS), "exp/repr/"),
    ):
        conf = plan(script, "conformer_l4", "--steps", "77", *extra)
        zf = plan(script, "zipformer", "--steps", "77", *extra)
        assert sorted(conf) == sorted(zf) and len(conf) == len(extra[1].split()) + (script == "run_inter_aed.sh")
        for row in conf:
            name = "ctc_l4" if row == "ctc" else row
            assert conf[row][2] == f"{prefix}{name}_s77"  # the default student's dirs are unchanged
            assert zf[row][2] == f"{prefix}zf_{row}_s77"
            assert conf[row][0][0] == zf[row][0][0] and len(conf[row][0]) == 1
            assert zf[row][0][1] == ASR / "conf" / "students" / "zipformer_s.yaml"
        assert not set(c[2] for c in conf.values()) & set(z[2] for z in zf.values())
    text = (ASR / "run_inter_aed.sh").read_text()
    # the labels and report experiment say which student (the rows' label suffix: local/student.sh)
    assert 'base_label="CTC alone (Zipformer s)"' in text and 'suffix=" (Zipformer s)"' in STUDENT_SH.read_text()
    assert "experiment=inter_aed_kd_zipformer_s" in text and 'base_label="CTC alone (4 layers)"' in text
    text = (ASR / "run_repr_kd.sh").read_text()
    assert 'base_label="transducer alone (Zipformer s)"' in text and "experiment=lm_repr_transfer_zipformer_s" in text


AVERAGE = re.compile(r"plan \((\S+) student\): average: --avg (\d+)( --use-averaged-model)?$")


@pytest.mark.parametrize("script", ["run_inter_aed.sh", "run_repr_kd.sh"])
def test_averaging_per_student_fits_the_kept_checkpoints(script):
    """Conformer rows average the last 3 checkpoints' weights; Zipformer rows take model_avg over 5 checkpoint
    intervals (--use-averaged-model reads --avg + 1 files, so the overlay must keep at least that many)."""
    from asr_kd.training.config import load_config

    def average(*args):
        proc = run(script, "--stage", "9", "--stop-stage", "8", *args)
        assert proc.returncode == 0, proc.stderr
        found = [AVERAGE.search(line) for line in proc.stdout.splitlines()]
        (m,) = [m for m in found if m]
        return int(m.group(2)), bool(m.group(3))

    assert average("--student", "conformer_l4") == (3, False)
    assert average("--student", "zipformer") == (5, True)
    assert average("--student", "zipformer", "--avg", "2") == (2, True)
    keep = load_config(str(ASR / "conf" / "students" / "zipformer_s.yaml"))["training"]["keep_last"]
    assert keep >= 5 + 1


#: a toy runner: the helper sourced after its options, then what it set (one name=value line each), its plan line
TOY_RUNNER = r"""set -euo pipefail
student={student}; steps=77; avg={avg}
source {helper}
log() {{ echo "log: $*"; }}
for v in student_conf tag suffix avg; do printf '%s=%s\n' "$v" "${{!v}}"; done
printf 'student_args=%s\nsched=%s\navg_args=%s\n' "${{student_args[*]}}" "${{sched[*]}}" "${{avg_args[*]}}"
printf 'left=%s\n' "$(compgen -v _st_ || true)"
student_plan_average
"""
#: what local/student.sh sets per student (--steps 77, no --avg), as its header documents it
STUDENT_DEFAULTS = {
    "conformer_l4": {
        "student_conf": "",
        "tag": "",
        "suffix": "",
        "avg": "3",
        "student_args": "",
        "sched": "scheduler.total_steps=77",
        "avg_args": "",
    },
    "zipformer": {
        "student_conf": "conf/students/zipformer_s.yaml",
        "tag": "zf_",
        "suffix": " (Zipformer s)",
        "avg": "5",
        "student_args": "--config conf/students/zipformer_s.yaml",
        "sched": "",
        "avg_args": "--use-averaged-model",
    },
}


def student_setup(tmp_path: Path, student: str, avg: str = "") -> subprocess.CompletedProcess:
    """Source local/student.sh from a toy runner (--student S --steps 77 --avg A) and print what it set."""
    script = tmp_path / "toy.sh"
    q = shlex.quote
    script.write_text(TOY_RUNNER.format(student=q(student), avg=q(avg), helper=q(str(STUDENT_SH))))
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("student", STUDENTS)
def test_student_helper_sets_the_documented_defaults(tmp_path, student):
    expected = STUDENT_DEFAULTS[student]
    proc = student_setup(tmp_path, student)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    got = dict(line.split("=", 1) for line in lines if not line.startswith("log: "))
    assert got.pop("left") == ""  # no helper-internal names left behind
    assert got == expected
    avg = f"--avg {expected['avg']}" + (" --use-averaged-model" if expected["avg_args"] else "")
    assert lines[-1] == f"log: plan ({student} student): average: {avg}"
    # an explicit --avg is kept; the rest is the student's
    proc = student_setup(tmp_path, student, avg="2")
    assert proc.returncode == 0, proc.stderr
    assert "avg=2" in proc.stdout.splitlines() and proc.stdout.splitlines()[-1].startswith(
        f"log: plan ({student} student): average: --avg 2"
    )
    header = STUDENT_SH.read_text().split("\n\n")[0]  # the documented names
    for name in (*expected, "student_plan_average"):
        assert f"#   {name} " in header


@pytest.mark.parametrize("student", ["zipformer_xl", "", "Zipformer"])
def test_student_helper_refuses_an_unknown_student(tmp_path, student):
    proc = student_setup(tmp_path, student)
    assert proc.returncode == 1 and proc.stdout == ""  # nothing after the source line runs
    assert proc.stderr == f"toy.sh: unknown --student '{student}' (conformer_l4, zipformer)\n"


def test_runners_source_the_student_helper():
    for script in ("run_inter_aed.sh", "run_repr_kd.sh"):
        text = (ASR / script).read_text()
        assert 'source "$(dirname "${BASH_SOURCE[0]}")/local/student.sh"' in text
        assert "student_plan_average" in text
        # the shared setup is not repeated in the runner
        assert "unknown --student '" not in text and "avg_args=(" not in text and "student_args=(" not in text


def test_overlay_is_the_zipformer_recipe():
    from asr_kd.training.config import load_config
    from asr_kd.training.optim import unused_options

    overlay = ASR / "conf" / "students" / "zipformer_s.yaml"
    for row, recipe in (
        ("kd/inter_aed_kd_l4.yaml", "zipformer_ctc_s.yaml"),
        ("repr/transducer_l4.yaml", "zipformer_transducer_s.yaml"),
    ):
        cfg = load_config([ASR / "conf" / row, overlay])
        ref = load_config(ASR / "conf" / recipe)
        assert cfg["model"]["encoder"] == ref["model"]["encoder"]
        for section in ("optim", "scheduler"):  # the recipe's, without the keys its schedule / optimiser ignore
            used = {k: v for k, v in ref[section].items() if k not in unused_options(section, ref[section])}
            if section == "scheduler":
                used.pop("warmup_steps")  # Eden reads warmup_batches when it is set
            assert cfg[section] == used
        assert (
            cfg["training"]["grad_clip"] is None
            and cfg["training"]["average_period"] == ref["training"]["average_period"]
        )
        row_cfg = load_config(ASR / "conf" / row)
        for section in ("data", "loss", "kd"):
            assert cfg.get(section) == row_cfg.get(section)
        assert {k: v for k, v in cfg["model"].items() if k != "encoder"} == {
            k: v for k, v in row_cfg["model"].items() if k != "encoder"
        }


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    pytest.importorskip("transformers")
    from asr_kd.testing.dummies import DUMMY_TEXTS
    from asr_kd.testing.tiny_mlm import make_tiny_mlm

    d = tmp_path_factory.mktemp("mlm")
    text = d / "train.txt"
    text.write_text("\n".join(DUMMY_TEXTS) + "\n")
    return make_tiny_mlm(d / "mlm"), text


@pytest.mark.parametrize("student", STUDENTS)
def test_inter_aed_rows_build_one_student_and_find_their_layers(student, tiny_mlm):
    import torch

    from asr_kd.bin.train import config_schema
    from asr_kd.kd import build_kd_loss_fn
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.training.config import load_config, validate_config

    torch.set_num_threads(1)
    mlm, text = tiny_mlm
    rows = plan("run_inter_aed.sh", student, "--models", KD_MODELS)
    assert sorted(rows) == sorted(KD_KEYS)
    params = {}
    for row, (confs, overrides, _) in rows.items():
        cfg = load_config(confs, overrides)
        validate_config(cfg, config_schema())
        assert cfg["model"]["encoder"]["type"] == ("zipformer" if student == "zipformer" else "conformer")
        assert cfg["optim"]["name"] == ("scaled_adam" if student == "zipformer" else "adamw")
        model = build_asr_model(dict(cfg["model"], vocab_size=128))  # wp rows: their lang dir's V in a run
        params[row] = student_params(model)
        keys = KD_KEYS[row]
        methods = (cfg.get("kd") or {}).get("methods") or []
        assert bool(methods) == (keys is not None)
        if not methods:
            continue
        keys = keys[student] if isinstance(keys, dict) else keys
        method = dict(methods[0], tokenizer_dir=str(mlm), restrict_to=str(text))
        loss_fn = build_kd_loss_fn(dict(cfg["kd"], methods=[method]), model, "cpu", max_steps=10)
        m = loss_fn.entries[0].method
        assert m.keys == keys
        x, lens = torch.randn(2, 120, 80), torch.tensor([120, 90])
        with torch.no_grad():
            enc = model.encoder(x, lens)
            for key in keys:  # each decoder reads its layer, brought to the output rate, at that layer's width
                memory = enc.out if key == "final" else enc.layer(int(key[1:]))
                assert memory.shape[:2] == enc.out.shape[:2]
                logits = m.decoders[key](memory, enc.out_lens, torch.zeros(2, 3, dtype=torch.long))
                assert logits.shape == (2, 3, m.output_size)
        if student == "zipformer" and "l4" in keys:  # the middle layer: end of the 12.5 Hz stack
            info = model.encoder.layer_info
            assert len(info) == 8 and info[3].dim == 144 and info[3].subsampling == 2 * model.encoder.subsampling_factor
    ref = load_config(ASR / "conf" / ("zipformer_ctc_s.yaml" if student == "zipformer" else "kd/ctc_l4.yaml"))
    expected = student_params(build_asr_model(dict(ref["model"], vocab_size=128)))  # the recipe's CTC model
    assert set(params.values()) == {expected}, params


#: repr row -> {teacher: mapped layers of a 6-layer MiniLM / 12-layer MPNet}: the same for both students
REPR_LAYERS = {
    "transducer": {},
    "last1": {"minilm": [6]},
    "last3": {"minilm": [4, 5, 6]},
    "first3": {"minilm": [1, 2, 3]},
    "uniform3": {"minilm": [2, 4, 6]},
    "random3": {"minilm": [1, 4, 6]},
    "uniform3_ctx": {"minilm_ctx": [2, 4, 6]},
    "uniform3_ctx_mpnet": {"minilm_ctx": [2, 4, 6], "mpnet_ctx": [4, 8, 12]},
}


@pytest.mark.parametrize("student", STUDENTS)
def test_repr_rows_build_one_student_and_their_regression_networks(student, tiny_berts):
    import torch

    from asr_kd.bin.train import config_schema
    from asr_kd.kd import build_kd_loss_fn
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.models.heads.transducer import prepend_blank
    from asr_kd.training.config import load_config, validate_config

    torch.set_num_threads(1)
    dirs, lang = tiny_berts
    rows = plan("run_repr_kd.sh", student, "--rows", REPR_ROWS)
    rows["uniform3_ctx_mpnet384"] = plan(
        "run_repr_kd.sh", student, "--rows", "uniform3_ctx_mpnet", "--mpnet-proj", "384"
    )["uniform3_ctx_mpnet"]
    assert rows["uniform3_ctx_mpnet384"][0][0].name == "transducer_uniform3_ctx_mpnet384.yaml"
    params = {}
    for row, (confs, overrides, _) in rows.items():
        cfg = load_config(confs, overrides)
        validate_config(cfg, config_schema())
        assert cfg["model"]["encoder"]["type"] == ("zipformer" if student == "zipformer" else "conformer")
        assert cfg["scheduler"]["name"] == ("eden" if student == "zipformer" else "cosine")
        model = build_asr_model(dict(cfg["model"], vocab_size=40))
        params[row] = student_params(model)
        layers = REPR_LAYERS[row.replace("384", "")]
        if not layers:
            assert not (cfg.get("kd") or {}).get("methods")
            continue
        method = dict(cfg["kd"]["methods"][0], lang_dir=str(lang))
        method["teachers"] = [
            dict(t, model_dir=str(dirs[12 if t["name"].startswith("mpnet") else 6])) for t in method["teachers"]
        ]
        loss_fn = build_kd_loss_fn(dict(cfg["kd"], methods=[method]), model, "cpu", max_steps=10)
        m = loss_fn.entries[0].method
        assert {s.name: s.layers for s in m.specs} == layers
        assert sorted(m.regressors) == sorted(f"{n}_l{k}" for n, ks in layers.items() for k in ks)
        if row == "uniform3":  # the student states read this student's encoder output
            with torch.no_grad():
                enc = model.encoder(torch.randn(2, 120, 80), torch.tensor([120, 90]))
                ys = torch.tensor([[3, 4, 5], [6, 7, 0]])
                pred = model.transducer.predictor(prepend_blank(ys, model.blank_id))[:, 1:]
                states = m.states(pred, enc.out, enc.out_lens)
            assert enc.out.shape[-1] == model.encoder.output_dim == (160 if student == "zipformer" else 144)
            assert states.shape == (2, 3, method["d_state"])
    ref = load_config(
        ASR / "conf" / ("zipformer_transducer_s.yaml" if student == "zipformer" else "repr/transducer_l4.yaml")
    )
    expected = student_params(build_asr_model(dict(ref["model"], vocab_size=40)))  # the recipe's transducer
    assert set(params.values()) == {expected}, params


def test_train_cli_lays_the_overlay_over_the_config(tmp_path):
    """``asr_kd.bin.train --config ROW --config OVERLAY``: two steps of the toy recipe with the real overlay; the
    recorded config is the composed one (a Zipformer encoder without the Conformer's keys, ScaledAdam, Eden)."""
    import torch
    import yaml

    from asr_kd.bin import train as train_cli
    from asr_kd.testing.recipe import make_toy_recipe
    from asr_kd.training.config import load_config

    torch.set_num_threads(1)
    conf = make_toy_recipe(tmp_path)
    overlay = ASR / "conf" / "students" / "zipformer_s.yaml"
    exp = tmp_path / "exp"
    rc = train_cli.main(["--config", str(conf), "--config", str(overlay), "--exp-dir", str(exp), "--max-steps", "2"])
    assert rc in (0, None)
    recorded = yaml.safe_load((exp / "config.yaml").read_text())
    composed = load_config([conf, overlay])
    own = yaml.safe_load(overlay.read_text())["model"]["encoder"]
    assert composed["model"]["encoder"] == own  # the toy Conformer's d_model, num_layers, ... are gone
    assert {k: v for k, v in recorded["model"]["encoder"].items() if k != "input_dim"} == own  # + the fbank dim
    assert recorded["optim"] == composed["optim"] and recorded["optim"]["name"] == "scaled_adam"
    assert recorded["scheduler"]["name"] == "eden" and "warmup_steps" not in recorded["scheduler"]
    assert (exp / "checkpoint-2.pt").is_file()
    log = (exp / "train.log").read_text()
    assert f"config {conf} + {overlay}" in log
