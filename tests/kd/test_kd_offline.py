"""Offline teacher targets: dump from a toy AsrModel, read back through the dataset, OfflineTeacher."""

from __future__ import annotations

import gzip
from dataclasses import replace

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.utils import fastcopy

from asr_kd.data import AsrDataConfig, AsrDataModule, AsrDataset, BadCutError
from asr_kd.decoding.search import SearchOptions, decode_nbest
from asr_kd.kd.offline import (
    NBEST,
    TOPK_INDICES,
    TOPK_VALUES,
    DumpReport,
    OfflineTeacher,
    ctc_topk,
    dump_teacher_targets,
)
from asr_kd.kd.teachers import AsrTeacher, build_teacher
from asr_kd.testing import make_cutset, missing_audio, with_text
from asr_kd.testing.recipe import TOY_MODEL

V = 40
ALL_FIELDS = (TOPK_VALUES, TOPK_INDICES, NBEST)
DURATIONS = (1.2, 0.9, 1.6, 1.1, 1.4)


@pytest.fixture(scope="module")
def model():
    from asr_kd.models.asr_model import build_asr_model

    torch.manual_seed(0)
    cfg = dict(TOY_MODEL, vocab_size=V, encoder=dict(TOY_MODEL["encoder"], input_dim=80))
    return build_asr_model(cfg).eval()


@pytest.fixture(scope="module")
def dumped(model, tmp_path_factory):
    """5 cuts dumped in batches of <= 2.5 s (top-5, 3-best), and the manifest written next to them."""
    root = tmp_path_factory.mktemp("dump")
    cuts = make_cutset(root / "audio", DURATIONS)
    report = DumpReport()
    out = dump_teacher_targets(
        AsrTeacher(model),
        cuts,
        root / "out",
        topk=5,
        nbest=3,
        max_duration=2.5,
        output_manifest=root / "out" / "cuts.jsonl.gz",
        report=report,
    )
    return cuts, out, report, root


def _direct(model, batch, k):
    """The teacher's top-k and n-best computed directly on a batch."""
    with torch.no_grad():
        enc = model.encode(batch["inputs"], batch["feature_lens"])
        lp = model.ctc(enc.out).log_softmax(-1)
        nb = decode_nbest(
            model,
            batch["inputs"],
            batch["feature_lens"],
            "ctc-prefix-beam",
            SearchOptions(beam=3),
            nbest=3,
            encoder_out=enc,
        )
    return ctc_topk(lp, k), enc.out_lens, nb


def test_ctc_topk_keeps_the_largest_and_all_when_k_ge_v():
    lp = torch.randn(2, 3, 6).log_softmax(-1)
    v, i = ctc_topk(lp, 2)
    assert v.shape == i.shape == (2, 3, 2)
    assert torch.equal(v, lp.sort(-1, descending=True).values[..., :2])
    assert torch.equal(lp.gather(-1, i), v)
    v_all, i_all = ctc_topk(lp, 10)
    assert v_all.shape == (2, 3, 6) and torch.equal(i_all.sort(-1).values, torch.arange(6).expand(2, 3, 6))
    with pytest.raises(ValueError):
        ctc_topk(lp, 0)


def test_dump_round_trip_through_the_dataset(model, dumped):
    cuts, out, report, root = dumped
    assert list(out.ids) == list(cuts.ids)  # every cut, input order
    assert report.num_cuts == report.num_done == len(DURATIONS) and report.failed == []
    assert report.audio_seconds == pytest.approx(sum(DURATIONS))
    reread = CutSet.from_file(root / "out" / "cuts.jsonl.gz")
    assert list(reread.ids) == list(cuts.ids)
    for cut in reread:
        assert cut.has_custom(TOPK_VALUES) and cut.has_custom(TOPK_INDICES)
        assert cut.custom[TOPK_VALUES].frame_shift == 0.04 and cut.custom[TOPK_VALUES].temporal_dim == 0
        assert cut.load_custom(TOPK_VALUES).dtype == np.float16
        assert cut.load_custom(TOPK_INDICES).dtype == np.int16
        assert set(cut.custom[NBEST]) == {"tokens", "scores"}

    batch = AsrDataset(custom_fields=ALL_FIELDS)[reread]
    custom = batch["custom"]
    (values, indices), lens, (nb_tokens, nb_scores) = _direct(model, batch, 5)
    N, Tp = values.shape[:2]
    assert custom[TOPK_VALUES].shape == custom[TOPK_INDICES].shape == (N, Tp, 5)
    assert custom[TOPK_VALUES].dtype == torch.float16
    assert torch.equal(custom[TOPK_VALUES + "_lens"], lens) and torch.equal(custom[TOPK_INDICES + "_lens"], lens)
    for n in range(N):
        L = int(lens[n])
        torch.testing.assert_close(custom[TOPK_VALUES][n, :L].float(), values[n, :L], atol=2e-2, rtol=2e-3)
        assert torch.equal(custom[TOPK_INDICES][n, :L].long(), indices[n, :L])
        assert (custom[TOPK_VALUES][n, L:] == 0).all()  # padding
    assert custom[NBEST] == [{"tokens": t, "scores": pytest.approx(s, abs=1e-4)} for t, s in zip(nb_tokens, nb_scores)]

    t_out = OfflineTeacher(fields=("kd_ctc_topk", "kd_nbest"))(batch, {"ctc_logits", "nbest"})
    v, i = t_out.ctc_topk
    assert v.dtype == torch.float32 and i.dtype == torch.int64 and torch.equal(t_out.lens, lens)
    assert torch.equal(v, custom[TOPK_VALUES].float()) and torch.equal(i, custom[TOPK_INDICES].long())
    assert t_out.nbest == nb_tokens
    np.testing.assert_allclose(np.array(t_out.nbest_scores), np.array(nb_scores), atol=1e-4)


def test_topk_ge_vocab_keeps_the_full_distribution(model, tmp_path):
    cuts = make_cutset(tmp_path / "audio", (1.0,))
    out = dump_teacher_targets(model, cuts, tmp_path / "out", topk=100)  # a bare AsrModel is accepted
    batch = AsrDataset(custom_fields=(TOPK_VALUES, TOPK_INDICES))[out]
    (values, indices), lens, _ = _direct(model, batch, V)
    stored = batch["custom"][TOPK_VALUES]
    assert stored.shape == (1, int(lens[0]), V) and NBEST not in out[0].custom
    probs = stored[0].float().exp().sum(-1)
    torch.testing.assert_close(probs, torch.ones_like(probs), atol=1e-2, rtol=0)
    assert torch.equal(batch["custom"][TOPK_INDICES].long(), indices)


def test_failed_cuts_are_kept_counted_and_named(model, tmp_path, caplog):
    cuts = list(make_cutset(tmp_path / "audio", (1.0, 1.2, 1.1)))
    cuts[0] = missing_audio(cuts[0])
    cuts[2] = with_text(cuts[2], "  ")
    report = DumpReport()
    out = dump_teacher_targets(model, CutSet.from_cuts(cuts), tmp_path / "out", topk=3, report=report)
    assert list(out.ids) == [c.id for c in cuts]
    assert report.num_cuts == 3 and report.num_done == 1
    assert dict(report.failed) == {cuts[0].id: "missing_audio", cuts[2].id: "empty_text"}
    assert [c.has_custom(TOPK_VALUES) for c in out] == [False, True, False]
    assert cuts[0].id in caplog.text

    # training on such a manifest: the cut without targets is bad input, named with the field
    good_text = CutSet.from_cuts([out[1], with_text(make_cutset(tmp_path / "a2", (1.0,))[0], "A B")])
    with pytest.raises(BadCutError, match=r"cut-0000'.*missing_custom.*kd_ctc_topk_values"):
        AsrDataset(custom_fields=(TOPK_VALUES,))[good_text]
    ds = AsrDataset(custom_fields=(TOPK_VALUES,), on_error="skip")
    batch = ds[good_text]
    assert batch["supervisions"]["cut_id"] == [out[1].id]
    assert batch["skipped"] == [{"cut_id": "cut-0000", "reason": "missing_custom"}]
    assert batch["custom"][TOPK_VALUES].shape[0] == 1


def test_teacher_errors_are_isolated_per_cut(model, tmp_path):
    class Flaky(AsrTeacher):
        def forward(self, batch, needs):
            if "cut-0001" in batch["supervisions"]["cut_id"]:
                raise RuntimeError("boom")
            return super().forward(batch, needs)

    cuts = make_cutset(tmp_path / "audio", (1.0, 1.2, 1.1))
    report = DumpReport()
    out = dump_teacher_targets(Flaky(model), cuts, tmp_path / "out", topk=3, max_duration=100, report=report)
    assert report.num_done == 2 and report.failed == [("cut-0001", "teacher_error: RuntimeError: boom")]
    assert [c.has_custom(TOPK_VALUES) for c in out] == [True, False, True]


def test_unreadable_array_and_empty_batch(dumped, tmp_path):
    _, out, _, root = dumped
    cut = out[0]
    ta = cut.custom[TOPK_VALUES]
    moved = replace(ta, array=replace(ta.array, storage_path=str(tmp_path / "nowhere")))
    bad = fastcopy(cut, custom=dict(cut.custom, **{TOPK_VALUES: moved}))
    with pytest.raises(BadCutError, match=f"{cut.id}'.*bad_custom.*{TOPK_VALUES}"):
        AsrDataset(custom_fields=(TOPK_VALUES,))[CutSet.from_cuts([bad])]
    batch = AsrDataset(custom_fields=(TOPK_VALUES, NBEST), on_error="skip")[CutSet.from_cuts([bad])]
    assert batch["inputs"].size(0) == 0
    assert batch["custom"][TOPK_VALUES] == [] and batch["custom"][TOPK_VALUES + "_lens"].numel() == 0


def test_datamodule_custom_fields_reach_train_and_valid_batches(dumped):
    _, out, _, _ = dumped
    dm = AsrDataModule(
        AsrDataConfig(
            max_duration=3.0,
            num_buckets=1,
            num_workers=0,
            spec_augment=False,
            drop_last=False,
            custom_fields=ALL_FIELDS,
        )
    )
    for loader in (dm.train_dataloader(out), dm.valid_dataloader(out)):
        seen = []
        for batch in loader:
            c = batch["custom"]
            n = len(batch["supervisions"]["cut_id"])
            assert c[TOPK_VALUES].shape[0] == n and len(c[NBEST]) == n
            by_id = {cut.id: cut for cut in out}
            for row, cut_id in enumerate(batch["supervisions"]["cut_id"]):  # rows in batch order
                ref = by_id[cut_id].load_custom(TOPK_VALUES)
                assert int(c[TOPK_VALUES + "_lens"][row]) == ref.shape[0]
                assert np.array_equal(c[TOPK_VALUES][row, : ref.shape[0]].numpy(), ref)
                assert c[NBEST][row] == by_id[cut_id].custom[NBEST]
            seen += batch["supervisions"]["cut_id"]
        assert sorted(seen) == sorted(out.ids)
    assert "custom" not in next(iter(AsrDataModule(AsrDataConfig(num_workers=0)).valid_dataloader(out)))


def test_offline_teacher_config_and_errors():
    t = build_teacher({"type": "offline", "fields": ["kd_ctc_topk", "kd_nbest"]})
    assert isinstance(t, OfflineTeacher) and not t.online and list(t.parameters()) == []
    assert t.required_custom_fields == [TOPK_VALUES, TOPK_INDICES, NBEST]
    assert OfflineTeacher().required_custom_fields == [TOPK_VALUES, TOPK_INDICES]
    assert OfflineTeacher("kd_nbest").required_custom_fields == [NBEST]
    with pytest.raises(ValueError, match="kd_ctc_topk"):
        OfflineTeacher(fields=("ctc_logits",))
    with pytest.raises(KeyError, match="data.custom_fields"):
        t({"inputs": torch.zeros(1, 5, 80), "supervisions": {}}, {"ctc_logits"})


def test_dump_from_precomputed_features(model, tmp_path):
    from lhotse import LilcomChunkyWriter
    from lhotse.dataset.input_strategies import PrecomputedFeatures

    from asr_kd.data import make_fbank

    cuts = make_cutset(tmp_path / "audio", (1.0, 1.3)).compute_and_store_features(
        make_fbank(), tmp_path / "feats", storage_type=LilcomChunkyWriter, progress_bar=False
    )
    report = DumpReport()
    out = dump_teacher_targets(
        model,
        cuts,
        tmp_path / "out",
        topk=3,
        report=report,
        data_config=AsrDataConfig(on_the_fly_feats=False, num_workers=0),
    )
    assert report.num_done == 2 and all(c.has_features for c in out)
    batch = AsrDataset(PrecomputedFeatures(), custom_fields=(TOPK_VALUES, TOPK_INDICES))[out]
    (values, indices), lens, _ = _direct(model, batch, 3)
    assert torch.equal(batch["custom"][TOPK_VALUES + "_lens"], lens)
    for n, L in enumerate(lens.tolist()):
        torch.testing.assert_close(batch["custom"][TOPK_VALUES][n, :L].float(), values[n, :L], atol=2e-2, rtol=2e-3)


def test_dumped_targets_need_no_pickle(dumped):
    """The offline targets are numeric arrays in HDF5 / .npy storage (read without pickle) and JSON
    n-best lists: never Lhotse's pickled ``memory_raw`` arrays (README: manifests are trusted input)."""
    import json

    from lhotse.array import Array, TemporalArray

    _, out, _, root = dumped
    raw = [json.loads(line) for line in gzip.open(root / "out" / "cuts.jsonl.gz", "rt")]
    assert raw and all(TOPK_VALUES in c["custom"] for c in raw)
    for c in raw:
        for name in (TOPK_VALUES, TOPK_INDICES):
            storage = c["custom"][name]["array"]["storage_type"]
            assert storage in ("numpy_hdf5", "numpy_files"), storage
        assert isinstance(c["custom"][NBEST], dict) and set(c["custom"][NBEST]) == {"tokens", "scores"}
    for cut in out:
        for name in (TOPK_VALUES, TOPK_INDICES):
            manifest = cut.custom[name]
            assert isinstance(manifest, (Array, TemporalArray))
            arr = cut.load_custom(name)
            assert arr.dtype.kind in "fi"  # numbers, not objects
    if raw[0]["custom"][TOPK_VALUES]["array"]["storage_type"] == "numpy_hdf5":
        import h5py

        path = raw[0]["custom"][TOPK_VALUES]["array"]["storage_path"]
        with h5py.File(path, "r") as f:
            kinds = set()
            f.visititems(lambda _, obj: kinds.add(obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None)
        assert kinds <= set("fi"), kinds
