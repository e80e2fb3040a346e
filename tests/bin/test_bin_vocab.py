"""A lang dir whose vocabulary is not the model's is refused at load time, naming both sizes (or the
first differing piece) and both lang dirs: in decode, export, the KD teachers and dump_teacher."""

from __future__ import annotations

import pytest
import torch

from asr_kd.data.tokenizer import Tokenizer, VocabMismatchError, check_vocab, train_bpe
from asr_kd.testing import DUMMY_TEXTS
from asr_kd.testing.recipe import make_toy_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step toy model (V = 40) and two foreign lang dirs: 34 pieces, and 40 other pieces."""
    from asr_kd.bin import train

    root = tmp_path_factory.mktemp("recipe")
    conf = make_toy_recipe(root)
    exp = root / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "2"]) == 0
    text = root / "other.txt"
    text.write_text("\n".join(DUMMY_TEXTS[::-1]) + "\n")
    train_bpe(text, root / "lang34", vocab_size=34)
    lowered = root / "lowered.txt"  # the same alphabet size, other pieces
    lowered.write_text("\n".join(t.lower() for t in DUMMY_TEXTS * 4) + "\n")
    other = train_bpe(lowered, root / "lang40", vocab_size=40)
    assert other.vocab_size == 40
    return root, exp


def test_train_stores_the_lang_dir_pieces_and_average_keeps_them(trained):
    from asr_kd.bin import average

    root, exp = trained
    tokens = Tokenizer.from_dir(root / "data" / "lang").tokens()
    ck = torch.load(exp / "checkpoint-2.pt", weights_only=True)
    assert ck["meta"]["tokens"] == tokens and len(tokens) == 40
    assert average.main(["--exp-dir", str(exp), "--avg", "1", "--out", str(root / "avg.pt")]) == 0
    assert torch.load(root / "avg.pt", weights_only=True)["meta"]["tokens"] == tokens


def test_decode_refuses_a_lang_dir_of_another_vocabulary(trained):
    from asr_kd.bin import decode

    root, exp = trained
    args = ["--exp-dir", str(exp), "--checkpoint", str(exp / "checkpoint-2.pt")]
    with pytest.raises(VocabMismatchError, match=r"lang34 has 34 BPE pieces but the model .*outputs 40 tokens") as e:
        decode.main([*args, "--lang-dir", str(root / "lang34")])
    assert str(root / "data" / "lang") in str(e.value)  # the lang dir it was trained with
    with pytest.raises(VocabMismatchError, match=r"both have 40 pieces, but they differ \(first at id \d+"):
        decode.main([*args, "--lang-dir", str(root / "lang40")])
    assert not (exp / "decode").exists()  # refused before anything was decoded or written


def test_export_refuses_same_size_other_pieces(trained, tmp_path):
    from asr_kd.bin import export

    root, exp = trained
    args = ["--checkpoint", str(exp / "checkpoint-2.pt"), "--bundle", str(tmp_path / "b")]
    with pytest.raises(SystemExit, match=r"lang40 and the model .* both have 40 pieces, but they differ"):
        export.main([*args, "--lang-dir", str(root / "lang40")])
    assert not (tmp_path / "b").exists()


def test_dump_teacher_refuses_a_lang_dir_of_another_vocabulary(trained, tmp_path):
    from asr_kd.bin import dump_teacher

    root, exp = trained
    args = ["--checkpoint", str(exp / "checkpoint-2.pt"), "--splits", "dev", "--out-dir", str(tmp_path / "kd")]
    with pytest.raises(VocabMismatchError, match=r"lang34 has 34 BPE pieces but the model .*outputs 40"):
        dump_teacher.main([*args, "--lang-dir", str(root / "lang34")])
    with pytest.raises(VocabMismatchError, match="both have 40 pieces, but they differ"):
        dump_teacher.main([*args, "--lang-dir", str(root / "lang40")])
    assert dump_teacher.main(args) == 0  # the teacher's own lang dir (from its config)


def test_kd_teacher_of_another_vocabulary_is_refused(trained):
    from asr_kd.kd import build_kd_loss_fn
    from asr_kd.models.asr_model import build_asr_model

    root, exp = trained
    cfg = torch.load(exp / "checkpoint-2.pt", weights_only=True)["config"]["model"]
    kd = {"teacher": {"type": "asr", "checkpoint": str(exp / "checkpoint-2.pt")}, "methods": [{"name": "ctc_kd"}]}
    student34 = build_asr_model(dict(cfg, vocab_size=34))
    with pytest.raises(VocabMismatchError, match=r"teacher .*checkpoint-2.pt outputs 40 tokens but the student .* 34"):
        build_kd_loss_fn(kd, student34, tokenizer=Tokenizer.from_dir(root / "lang34"), lang_dir=root / "lang34")
    student40 = build_asr_model(cfg)
    with pytest.raises(VocabMismatchError, match=r"lang40 and .*checkpoint-2.pt \(the KD teacher\) both have 40"):
        build_kd_loss_fn(kd, student40, tokenizer=Tokenizer.from_dir(root / "lang40"), lang_dir=root / "lang40")
    # the student's own lang dir: accepted
    build_kd_loss_fn(kd, student40, tokenizer=Tokenizer.from_dir(root / "data" / "lang"), lang_dir="lang")


def test_check_vocab_without_stored_tokens_compares_sizes_only(trained):
    root, _ = trained
    tok = Tokenizer.from_dir(root / "lang40")
    check_vocab(tok, 40)  # nothing else known: accepted
    with pytest.raises(VocabMismatchError, match="has 40 BPE pieces but the model m.pt outputs 64 tokens"):
        check_vocab(tok, 64, lang_dir=root / "lang40", model="m.pt")


def test_offline_targets_of_another_vocabulary_are_refused_at_start_up(trained, tmp_path):
    """dump_teacher records the teacher's vocabulary (``kd_vocab``: V and the sha256 of its pieces) in
    the dumped cuts; a student whose lang dir differs (34 pieces, or 40 other ones) stops at start-up,
    before any step; the student with the teacher's lang dir trains."""
    import yaml

    from asr_kd.bin import dump_teacher, train
    from asr_kd.data.tokenizer import tokens_digest
    from asr_kd.kd.offline import VOCAB

    root, exp = trained
    out = tmp_path / "kd"
    args = ["--checkpoint", str(exp / "checkpoint-2.pt"), "--splits", "train", "dev", "--out-dir", str(out)]
    assert dump_teacher.main([*args, "--topk", "4"]) == 0
    from lhotse import CutSet

    first = next(iter(CutSet.from_file(out / "toy_cuts_train.jsonl.gz")))
    digest = tokens_digest(Tokenizer.from_dir(root / "data" / "lang").tokens())
    assert first.custom[VOCAB] == {"size": 40, "tokens_sha256": digest}

    cfg = yaml.safe_load((root / "conf.yaml").read_text())
    cfg["data"]["manifest_dir"] = str(out)
    cfg["kd"] = {"teacher": {"type": "offline", "fields": ["kd_ctc_topk"]}, "methods": [{"name": "ctc_kd"}]}
    for lang, match in (
        ("lang34", r"teacher with 40 tokens, but the student's lang dir .*lang34 has 34 BPE pieces"),
        ("lang40", r"teacher with 40 tokens, the same number as the student's lang dir .*lang40, but other pieces"),
    ):
        conf = tmp_path / f"student_{lang}.yaml"
        conf.write_text(yaml.safe_dump(dict(cfg, data=dict(cfg["data"], lang_dir=str(root / lang)))))
        student = tmp_path / f"student_{lang}"
        with pytest.raises(VocabMismatchError, match=match):
            train.main(["--config", str(conf), "--exp-dir", str(student), "--max-steps", "1"])
        assert not list(student.glob("*.pt"))
    conf = tmp_path / "student.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(conf), "--exp-dir", str(tmp_path / "student"), "--max-steps", "1"]) == 0
