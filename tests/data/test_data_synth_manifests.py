"""Integration: the DataLoader reads the manifests of ``egs/synth/ASR/prepare.sh --size tiny``.

Skipped when the corpus has not been prepared (run ``bash egs/synth/ASR/prepare.sh --size tiny``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import CutSet

from asr_kd.data import AsrDataConfig, AsrDataModule, CutFilter, filter_cuts, validate_cuts
from asr_kd.data.features import num_frames

DATA = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR" / "data"
DEV = DATA / "manifests" / "synth_cuts_dev.jsonl.gz"
LANG = DATA / "lang_bpe_500"

pytestmark = [
    pytest.mark.skipif(
        not (DEV.is_file() and (LANG / "bpe.model").is_file()),
        reason="synthetic corpus not prepared (bash egs/synth/ASR/prepare.sh --size tiny)",
    ),
    pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler"),
]


def test_dataloader_reads_the_synth_manifests():
    from asr_kd.data.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(LANG)
    cuts = validate_cuts(CutSet.from_file(DEV), tok, on_error="raise", audio="decode")
    cut_filter = CutFilter(min_duration=0.3, max_duration=30.0, tokenizer=tok)
    cuts = filter_cuts(cuts, cut_filter)
    stats = cut_filter.stats
    assert len(cuts) == stats.kept > 0 and stats.num_seen == stats.kept + stats.num_dropped

    dm = AsrDataModule(AsrDataConfig(max_duration=30.0, num_workers=0), tokenizer=tok)
    by_id = {c.id: c for c in cuts}
    seen = []
    for batch in dm.valid_dataloader(cuts):
        x, lens, sup = batch["inputs"], batch["feature_lens"], batch["supervisions"]
        assert x.shape == (len(sup["cut_id"]), int(lens.max()), 80)
        for i, cut_id in enumerate(sup["cut_id"]):
            assert lens[i] == num_frames(by_id[cut_id].duration)
            assert tok.decode(sup["tokens"][i]) == sup["text"][i]
        assert batch["skipped"] == []
        seen.extend(sup["cut_id"])
    assert sorted(seen) == sorted(by_id)
