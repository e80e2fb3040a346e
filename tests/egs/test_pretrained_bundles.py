"""Regression test of the committed pretrained-model bundles (egs/synth/ASR/pretrained/<name>/): each loads
with the standard tools, fits the size limit, has a filled model card, and still decodes its bundled test
features to the hypotheses recorded when it was exported."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_kd.testing.bundle import check_bundle, find_bundles

PRETRAINED = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR" / "pretrained"
BUNDLES = find_bundles(PRETRAINED)
MAX_MB = 25


@pytest.fixture(params=BUNDLES or [None], ids=[b.name for b in BUNDLES] or ["no-bundle"])
def bundle(request):
    if request.param is None:
        pytest.skip(
            f"no pretrained bundle committed under {PRETRAINED} (a directory with model.pt, "
            "written by `python -m asr_kd.bin.export --bundle`)"
        )
    return request.param


def test_bundle_decodes_its_test_features_as_recorded(bundle):
    hyps, recorded = check_bundle(bundle)
    assert len(hyps) >= 1
    assert hyps == recorded, f"{bundle}: the bundled model no longer decodes its test_features as recorded"


def test_bundle_size_and_weights_only_load(bundle):
    import torch

    model_pt = bundle / "model.pt"
    assert model_pt.stat().st_size <= MAX_MB * 1e6, f"{model_pt}: over {MAX_MB} MB"
    ckpt = torch.load(model_pt, map_location="cpu", weights_only=True)
    assert "model" in ckpt["config"] and ckpt["meta"]["bundle"]["files"]


def test_bundle_card(bundle):
    card = (bundle / "README.md").read_text(encoding="utf-8")
    assert card.startswith(f"# {bundle.name}")
    for section in ("## Data", "## Results", "## Reproduce", "## Test features"):
        assert section in card, f"{bundle / 'README.md'}: no {section!r} section"
