"""The KD experiment runners of egs/synth/ASR: usage, argument checks and stage planning (no training)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ASR = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ASR / script), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", ["run_kd.sh", "run_ar_nar.sh"])
def test_help_prints_the_header(script):
    proc = run(script, "--help")
    assert proc.returncode == 0
    assert "Usage" in proc.stdout and "Stages:" in proc.stdout
    assert "set -euo" not in proc.stdout


@pytest.mark.parametrize(
    "script,args,msg",
    [
        ("run_kd.sh", ["no_such_method"], "unknown method"),
        ("run_kd.sh", ["self_kd", "--bogus"], "unknown option"),
        ("run_ar_nar.sh", ["l"], "size must be m or xs"),
        ("run_ar_nar.sh", ["m", "--steps", "300", "--stage2-from", "300"], "0 < --stage2-from < --steps"),
        ("run_ar_nar.sh", ["xs", "--bogus"], "unknown option"),
        ("run_ar_nar.sh", ["m", "--teacher", "exp/none/missing.pt", "--stage", "1"], "teacher checkpoint"),
    ],
)
def test_bad_arguments_fail_with_a_message(script, args, msg):
    proc = run(script, *args)
    assert proc.returncode != 0
    assert msg in proc.stderr


def test_every_run_kd_method_has_a_config():
    text = (ASR / "run_kd.sh").read_text()
    confs = [line.split("conf=")[1].split(";")[0] for line in text.splitlines() if " conf=conf/kd/" in line]
    assert len(confs) >= 7
    for c in confs:
        assert (ASR / c).is_file(), c


@pytest.mark.parametrize("size", ["m", "xs"])
def test_ar_nar_configs_exist_and_stage2_fine_tunes(size):
    import yaml

    for suffix in ("", "_fkd", "_fskd"):
        assert (ASR / "conf" / "ar_nar" / f"nar_{size}{suffix}.yaml").is_file()
    fskd = yaml.safe_load((ASR / "conf" / "ar_nar" / f"nar_{size}_fskd.yaml").read_text())
    names = {m["name"]: m["weight"] for m in fskd["kd"]["methods"]}
    # the paper's stage 2: beta_F = beta_S = 1, gamma_enc = 0.5, gamma_dec = 0.5
    assert names == {"ctc_kd": 0.5, "seq_kd_ctc": 0.5, "mlm_kd": 0.5, "mlm_seq_kd": 0.5}
    assert fskd["kd"]["teacher"]["nbest_size"] == 10
    assert "init_from" in fskd["training"]
    fkd = yaml.safe_load((ASR / "conf" / "ar_nar" / f"nar_{size}_fkd.yaml").read_text())
    assert {m["name"]: m["weight"] for m in fkd["kd"]["methods"]} == {"ctc_kd": 0.5, "mlm_kd": 0.3}
