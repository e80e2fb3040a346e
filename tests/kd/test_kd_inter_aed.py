"""interAED-KD: the masked-LM teacher (batched masked distributions, no-head error, [UNK] counts, offline
dump + vocabulary fingerprint), the WordPiece round trip, the top-k KL, and the auxiliary decoders
through the CLIs (train 3 steps, average, export, decode)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from asr_kd.testing.dummies import DUMMY_TEXTS  # noqa: E402
from asr_kd.testing.tiny_mlm import make_tiny_mlm  # noqa: E402


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return make_tiny_mlm(tmp_path_factory.mktemp("mlm") / "bert")


@pytest.mark.parametrize("temperature,max_copies", [(1.0, 256), (2.0, 5)])
def test_batched_masked_distributions_equal_per_position_reference(mlm_dir, temperature, max_copies):
    from asr_kd.kd.mlm import load_masked_lm, masked_log_probs
    from asr_kd.kd.wordpiece import WordPieceVocab

    model = load_masked_lm(mlm_dir)
    vocab = WordPieceVocab(mlm_dir)
    texts = [DUMMY_TEXTS[6], "A STITCH", DUMMY_TEXTS[0]]
    ids = [i for i, _ in vocab.encode(texts)]
    got = masked_log_probs(
        model,
        ids,
        cls_id=vocab.cls_id,
        sep_id=vocab.sep_id,
        mask_id=vocab.mask_id,
        pad_id=vocab.pad_id,
        temperature=temperature,
        max_copies=max_copies,
    )
    assert [g.shape for g in got] == [(len(s), vocab.size) for s in ids]
    with torch.no_grad():
        for s, g in zip(ids, got):
            for j in range(len(s)):  # one sentence, one masked position, no padding, the full model
                x = torch.tensor([[vocab.cls_id, *s, vocab.sep_id]])
                x[0, j + 1] = vocab.mask_id
                want = (model(input_ids=x).logits[0, j + 1] / temperature).log_softmax(-1)
                torch.testing.assert_close(g[j], want, atol=1e-5, rtol=1e-5)


def test_no_mlm_head_is_a_clear_error(tmp_path):
    from asr_kd.kd.mlm import MlmHeadMissingError
    from asr_kd.kd.teachers import build_teacher

    enc = make_tiny_mlm(tmp_path / "encoder_only", head=False)
    with pytest.raises(MlmHeadMissingError, match=r"no masked-LM head.*asr_kd\.bin\.train_mlm --base"):
        build_teacher({"type": "hf_mlm", "model_dir": str(enc)})
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_teacher({"type": "hf_mlm", "model_dir": str(tmp_path)})


def test_wordpiece_round_trip_and_unk_count(mlm_dir):
    from asr_kd.kd.wordpiece import WordPieceVocab

    vocab = WordPieceVocab(mlm_dir)
    enc = vocab.encode(list(DUMMY_TEXTS))
    for text, (ids, words) in zip(DUMMY_TEXTS, enc):
        assert vocab.unk_id not in ids
        assert vocab.decode(ids, words) == text.lower()
    # DIDN'T is one word of several pieces, rejoined by its word index
    ids, words = vocab.encode(["THEY DIDN'T"])[0]
    assert len(ids) > 2 and words[0] == 0 and set(words[1:]) == {1}

    report = vocab.count_unk(["THE FOX ATE 42 FIGS", "THE FOX", "ÆON 42"])
    # digits and Æ are not in the tiny vocabulary: "42" twice and "æon" once become [UNK]
    assert (report.num_sentences, report.num_words) == (3, 9)
    assert (report.unk_words, report.unk_sentences) == (3, 2)
    assert report.examples == {"42": 2, "æon": 1}
    assert report.unk_pieces >= 3 and "[UNK]: 3 of 9 words" in report.summary()


def test_topk_kl_equals_hand_computed_value_and_no_teacher_gradient():
    from asr_kd.kd.inter_aed import topk_kl

    z = torch.tensor([[[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.0, 0.0]]], requires_grad=True)  # (1, 2, 4)
    values = torch.tensor([[[-0.2, -1.5], [-0.1, float("-inf")]]], requires_grad=True)  # top-2, one dropped
    indices = torch.tensor([[[3, 0], [2, 1]]])
    weights = torch.tensor([[True, True]])
    tau = 2.0
    loss = topk_kl(z, values, indices, weights, tau)

    def softmax(xs):
        m = max(xs)
        e = [math.exp(x - m) for x in xs]
        return [v / sum(e) for v in e]

    want = 0.0
    for pos, kept in ((0, [(3, -0.2), (0, -1.5)]), (1, [(2, -0.1)])):
        p = softmax([v / tau for v in z[0, pos].tolist()])
        q = softmax([v for _, v in kept])
        want += sum(qi * (math.log(qi) - math.log(p[c])) for qi, (c, _) in zip(q, kept))
    want *= tau**2
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    assert values.grad is None and z.grad is not None and z.grad.abs().sum() > 0
    # a zero-weight position counts nothing; a position with no kept entry (restricted vocabulary) neither
    assert topk_kl(z, values, indices, torch.tensor([[False, False]]), tau).item() == 0.0
    z2 = z.detach().clone().requires_grad_(True)
    none_kept = torch.tensor([[[-0.2, -1.5], [float("-inf"), float("-inf")]]])
    only_first = topk_kl(z2, none_kept, indices, weights, tau)
    assert only_first.item() == pytest.approx(topk_kl(z, values, indices, torch.tensor([[True, False]]), tau).item())
    only_first.backward()
    assert torch.isfinite(z2.grad).all() and z2.grad[0, 1].abs().sum() == 0


@pytest.mark.parametrize("kind,layers", [("conformer", [1, "final"]), ("zipformer", [1, 4, "final"])])
def test_online_teacher_gets_no_gradient_and_restricted_vocab_renormalises(mlm_dir, tmp_path, kind, layers):
    from asr_kd.kd.inter_aed import InterAedKd, topk_kl
    from asr_kd.kd.methods import KdContext
    from asr_kd.kd.teachers import build_teacher
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.testing.encoders import tiny_encoder_config

    teacher = build_teacher({"type": "hf_mlm", "model_dir": str(mlm_dir), "temperature": 1.0})
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(DUMMY_TEXTS[:3]) + "\n")
    # Zipformer layers 1 and 4 run at 2x and 8x subsampling with their own dims: brought to the output rate
    model = build_asr_model({"encoder": tiny_encoder_config(kind, 80), "ctc": {}, "vocab_size": 20})
    method = InterAedKd(
        model, layers=layers, tokenizer_dir=mlm_dir, restrict_to=text, d_model=16, d_ff=32, dropout=0.0, kl_weight=0.5
    )
    method.check_teacher(teacher)
    assert method.output_size < method.vocab.size
    batch = {"inputs": torch.randn(2, 80, 80), "supervisions": {"text": [DUMMY_TEXTS[0], DUMMY_TEXTS[5]]}}
    t_out = teacher(batch, {"mlm_topk"})
    values, indices = t_out.extra["mlm_topk"]
    assert not values.requires_grad and values.shape[-1] == method.vocab.size  # topk None: full distribution
    enc = model.encode(batch["inputs"], torch.tensor([80, 60]))
    ctx = KdContext(model=model, batch=batch, tokens=[[1], [1]], enc=enc, losses={}, teacher=t_out, step=0)
    losses = method(ctx)
    keys = [f"l{k}" if k != "final" else k for k in layers]
    assert set(losses) == {f"aed_{t}_{k}" for t in ("ce", "kl") for k in keys}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in method.decoders.parameters() if p.requires_grad)
    # the restricted teacher is the full one renormalised over the kept pieces
    sv, si = method.sub.topk(values, indices)
    keep = torch.isfinite(sv)
    q = sv.log_softmax(-1).exp()
    full = values.exp()
    ratio = (full * keep) / (full * keep).sum(-1, keepdim=True)
    torch.testing.assert_close(q[keep], ratio[keep], atol=1e-5, rtol=1e-4)
    assert topk_kl(torch.zeros(2, values.size(1), method.output_size), sv, si, torch.ones(2, values.size(1)), 1.0) > 0
    # the final decoder's terms from its logits: teacher row j (piece j masked) is the target of output
    # position j, which predicts piece j after [CLS] + pieces < j; the last position predicts [SEP], CE only
    from asr_kd.models.heads.attention_decoder import add_sos_eos

    ids = t_out.extra["mlm_ids"]
    ys = [method.sub.tokens(r) for r in ids]
    ys_in, ys_out = add_sos_eos(ys, method.sos, method.eos)
    assert ys_in[0, 0] == method.sub.full_to_sub[method.vocab.cls_id] and ys_out[0, len(ids[0])] == method.eos
    with torch.no_grad():
        logits = method.decoders["final"](enc.out, enc.out_lens, ys_in)
        lmax = values.size(1)
        w = torch.arange(lmax)[None, :] < torch.tensor([len(r) for r in ids])[:, None]
        kl = topk_kl(logits[:, :lmax], sv, si, w, 1.0)
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ys_out.flatten(), ignore_index=-1, reduction="sum")
    torch.testing.assert_close(losses["aed_kl_final"].detach(), 0.5 * kl)
    torch.testing.assert_close(losses["aed_ce_final"].detach(), ce)


def test_dump_targets_fingerprint_and_mismatch_refused(mlm_dir, tmp_path, caplog):
    from asr_kd.data.tokenizer import VocabMismatchError
    from asr_kd.kd.mlm import MLM_IDS, MLM_VALUES, MLM_VOCAB, HfMlmTeacher, check_mlm_targets, dump_mlm_targets
    from asr_kd.kd.wordpiece import WordPieceVocab
    from asr_kd.testing.dummies import make_cutset

    cuts = make_cutset(tmp_path / "audio", [1.0, 1.2, 1.4], prefix="tr")
    teacher = HfMlmTeacher(mlm_dir)
    out = dump_mlm_targets(teacher, cuts, tmp_path / "kd", topk=4, batch_size=2)
    for cut in out:
        ids, lp = teacher.distributions([cut.supervisions[0].text])
        assert cut.custom[MLM_IDS] == ids[0]
        stored = torch.from_numpy(cut.load_custom(MLM_VALUES)).float()
        torch.testing.assert_close(stored, lp[0].topk(4, -1).values, atol=2e-2, rtol=1e-2)  # float16
        assert cut.custom[MLM_VOCAB]["size"] == teacher.vocab.size
    assert check_mlm_targets(out, WordPieceVocab(mlm_dir).fingerprint()) is True
    with caplog.at_level("WARNING", logger="asr_kd.kd.mlm"):
        check_mlm_targets(out, WordPieceVocab(mlm_dir).fingerprint(), temperature=2.0)
    assert "dumped at temperature 1.0" in caplog.text
    other = make_tiny_mlm(tmp_path / "other", extra_pieces=["zebra"])
    with pytest.raises(VocabMismatchError, match="vocabulary mismatch"):
        check_mlm_targets(out, WordPieceVocab(other).fingerprint(), manifest="m.jsonl.gz")


@pytest.fixture(scope="module")
def kd_recipe(tmp_path_factory, mlm_dir):
    """A toy recipe (2-layer Conformer-CTC) with the tiny MLM's targets dumped for train and dev."""
    from lhotse import CutSet

    from asr_kd.kd.mlm import HfMlmTeacher, dump_mlm_targets
    from asr_kd.testing.recipe import TOY_MODEL, make_toy_recipe

    root = tmp_path_factory.mktemp("aed_recipe")
    conf = make_toy_recipe(root, model={"encoder": {**TOY_MODEL["encoder"], "num_layers": 2}, "ctc": {}})
    teacher = HfMlmTeacher(mlm_dir)
    for split in ("train", "dev"):
        cuts = CutSet.from_file(root / "data" / "manifests" / f"toy_cuts_{split}.jsonl.gz")
        dump_mlm_targets(
            teacher,
            cuts,
            root / "data" / "kd_mlm",
            topk=8,
            storage_name=f"toy_mlm_{split}",
            output_manifest=root / "data" / "kd_mlm" / f"toy_cuts_{split}.jsonl.gz",
        )
    import shutil

    shutil.copy(root / "data" / "manifests" / "toy_cuts_test.jsonl.gz", root / "data" / "kd_mlm")
    return root, conf


def _aed(mlm_dir, root, **kw):
    opts = {
        "layers": [1, "final"],
        "tokenizer_dir": str(mlm_dir),
        "restrict_to": str(root / "text.txt"),
        "d_model": 16,
        "d_ff": 32,
        "heads": 2,
        **kw,
    }
    return "kd.methods=[{name: inter_aed_kd, " + ", ".join(f"{k}: {v}" for k, v in opts.items()) + "}]"


def test_inter_aed_train_average_export_decode(kd_recipe, mlm_dir, tmp_path):
    from asr_kd.bin import average, decode, export, train
    from asr_kd.training.asr_task import load_asr_model

    root, conf = kd_recipe
    exp = tmp_path / "inter"
    args = ["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "3"]
    kd = [f"data.manifest_dir={root / 'data' / 'kd_mlm'}", "kd.teacher={type: offline_mlm}", _aed(mlm_dir, root)]
    assert train.main(args + kd) == 0
    log = (exp / "train.log").read_text()
    for part in ("aed_ce_l1=", "aed_kl_l1=", "aed_ce_final=", "aed_kl_final=", "OfflineMlmTeacher (offline)"):
        assert part in log
    ck = torch.load(exp / "checkpoint-3.pt", weights_only=True)
    assert any(k.startswith("kd_aux.") for k in ck["model"])

    assert (
        average.main(
            [
                "--checkpoints",
                str(exp / "checkpoint-2.pt"),
                str(exp / "checkpoint-3.pt"),
                "--out",
                str(exp / "averaged.pt"),
            ]
        )
        == 0
    )
    avg = torch.load(exp / "averaged.pt", weights_only=True)
    assert avg["model"] and not any(k.startswith("kd_aux.") for k in avg["model"])
    assert export.main(["--checkpoint", str(exp / "checkpoint-3.pt"), "--out", str(exp / "exported.pt")]) == 0
    exported = torch.load(exp / "exported.pt", weights_only=True)
    assert not any("kd_aux" in k for k in exported["model"])
    full, _ = load_asr_model(exp / "checkpoint-3.pt")
    small, _ = load_asr_model(exp / "exported.pt")
    for k, v in small.state_dict().items():
        torch.testing.assert_close(v, full.state_dict()[k])
    for name, ckpt in (("dec_full", exp / "checkpoint-3.pt"), ("dec_export", exp / "exported.pt")):
        assert (
            decode.main(["--exp-dir", str(exp), "--checkpoint", str(ckpt), "--res-dir", name, "--method", "ctc-greedy"])
            == 0
        )
    a = (exp / "dec_full" / "recogs-test-ctc-greedy.txt").read_text()
    assert a and a == (exp / "dec_export" / "recogs-test-ctc-greedy.txt").read_text()


def test_reference_only_control_and_vocab_mismatch_at_start_up(kd_recipe, mlm_dir, tmp_path):
    from asr_kd.bin import train
    from asr_kd.data.tokenizer import VocabMismatchError

    root, conf = kd_recipe
    exp = tmp_path / "ref_only"
    args = ["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "2"]
    assert train.main(args + [_aed(mlm_dir, root, layers="[final]", teacher="none")]) == 0
    log = (exp / "train.log").read_text()
    assert "aed_ce_final=" in log and "aed_kl_" not in log

    # the online teacher through the CLI (no dump): KL terms logged
    online = tmp_path / "online"
    hf = [f"kd.teacher={{type: hf_mlm, model_dir: {mlm_dir}, temperature: 2.0}}", _aed(mlm_dir, root, temperature=2.0)]
    assert train.main(["--config", str(conf), "--exp-dir", str(online), "--max-steps", "2", *hf]) == 0
    log = (online / "train.log").read_text()
    assert "HfMlmTeacher (online)" in log and "aed_kl_l1=" in log

    other = make_tiny_mlm(tmp_path / "other", extra_pieces=["zebra"])
    bad = [
        "--config",
        str(conf),
        "--exp-dir",
        str(tmp_path / "bad"),
        "--max-steps",
        "1",
        f"data.manifest_dir={root / 'data' / 'kd_mlm'}",
        "kd.teacher={type: offline_mlm}",
        _aed(other, root),
    ]
    with pytest.raises(VocabMismatchError, match="vocabulary mismatch"):
        train.main(bad)
    assert not list((tmp_path / "bad").glob("checkpoint-*.pt"))
    with pytest.raises(ValueError, match="needs kd.teacher"):
        train.main(bad[:6] + ["kd.teacher={type: self}", _aed(mlm_dir, root)])
    # an online teacher of another vocabulary: refused before training too
    with pytest.raises(VocabMismatchError, match="hf_mlm teacher"):
        train.main(bad[:6] + [f"kd.teacher={{type: hf_mlm, model_dir: {other}}}", _aed(mlm_dir, root)])
    assert not list((tmp_path / "bad").glob("checkpoint-*.pt"))


def test_train_mlm_cli_makes_a_teacher_folder_with_metrics(tmp_path):
    import json

    from asr_kd.bin import train_mlm
    from asr_kd.kd.teachers import build_teacher
    from asr_kd.kd.wordpiece import WordPieceVocab

    base = make_tiny_mlm(tmp_path / "encoder_only", head=False)
    train_text, dev_text = tmp_path / "train.txt", tmp_path / "dev.txt"
    train_text.write_text("\n".join(DUMMY_TEXTS) + "\n")
    dev_text.write_text("THE QUICK BROWN FOX\nA STITCH IN 42 TIME\n")
    out = tmp_path / "mlm"
    args = ["--base", str(base), "--out", str(out), "--train-text", str(train_text), "--dev-text", str(dev_text)]
    assert train_mlm.main([*args, "--steps", "3", "--batch-size", "4", "--warmup", "1"]) == 0
    metrics = json.loads((out / "mlm_metrics.json").read_text())
    assert metrics["had_mlm_head"] is False and metrics["steps"] == 3
    assert metrics["unk_dev"]["unk_words"] == 1 and metrics["unk_dev"]["unk_examples"] == {"42": 1}
    assert metrics["unk_train"]["unk_words"] == 0
    assert 0.0 <= metrics["dev"]["masked_token_accuracy"] <= 1.0 and metrics["dev"]["pseudo_perplexity"] > 1.0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    teacher = build_teacher({"type": "hf_mlm", "model_dir": str(out)})  # a standard folder with an MLM head
    assert teacher.vocab.fingerprint() == WordPieceVocab(base).fingerprint()  # the base model's vocabulary
