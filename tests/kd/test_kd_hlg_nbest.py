"""HLG lattice n-bests as sequence-level KD targets: an AsrTeacher with nbest_method="nbest" gives the
decode_nbest word sequences spelled in model tokens, and the sequence-KD CTC loss on them is the weighted
sum of the students' CTC losses on each hypothesis; the lattice state spells words with the lang dir's BPE."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from asr_kd.decoding.search import SearchOptions, decode_nbest  # noqa: E402
from asr_kd.kd.teachers import AsrTeacher  # noqa: E402
from asr_kd.lm.ngram import train_ngram, write_arpa  # noqa: E402
from asr_kd.losses.kd import nbest_weights, sequence_kd_ctc  # noqa: E402
from asr_kd.models.asr_model import build_asr_model  # noqa: E402
from tests.decoding.decoding_bruteforce import ENCODER, SpreadCtc  # noqa: E402

V = 8


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    d = tmp_path_factory.mktemp("lang")
    (d / "tokens.txt").write_text("<blk> 0\n" + "".join(f"t{i} {i}\n" for i in range(1, V)))
    words = "".join(f"w{i} {i}\n" for i in range(1, V))
    (d / "words.txt").write_text(f"<eps> 0\n{words}#0 {V}\n<s> {V + 1}\n</s> {V + 2}\n")
    # two-token spellings too: a word sequence is not its token sequence
    (d / "lexicon.txt").write_text("".join(f"w{i} t{i} t{1 + i % (V - 1)}\n" for i in range(1, V)))
    write_arpa(train_ngram(["w1 w2 w3", "w4 w5", "w6 w7 w1", "w2 w2"], 2, unk=None), d / "G.arpa")
    return d


def test_teacher_hlg_nbest_is_a_sequence_kd_target(lang):
    torch.manual_seed(0)
    model = build_asr_model({"vocab_size": V, "encoder": ENCODER, "ctc": {}}).eval()
    model.ctc = SpreadCtc(model.ctc)
    g = torch.Generator().manual_seed(3)
    x, x_lens = torch.randn(2, 48, 20, generator=g), torch.tensor([48, 40])
    opts = {"lang_dir": lang, "arpa": lang / "G.arpa", "search_beam": 30.0, "lattice_beam": 30.0}
    teacher = AsrTeacher(model, nbest_method="nbest", nbest_size=4, nbest_options=opts)
    out = teacher({"inputs": x, "feature_lens": x_lens}, {"nbest"})
    # the exact 4 best (decoding's default n-best is sampled; a teacher's is the K best)
    want = decode_nbest(model, x, x_lens, "nbest", SearchOptions(num_paths=4, nbest_mode="exact", **opts), nbest=4)
    assert (out.nbest, out.nbest_scores) == want
    assert all(1 <= len(h) <= 4 for h in out.nbest) and any(len(h) > 1 for h in out.nbest)
    # every hypothesis is its words' lexicon spellings (w<i> = t<i> t<1 + i % 7>), concatenated
    from asr_kd.decoding.search import get_decoding_method, prepare_decoding

    dec = prepare_decoding(model, "nbest", SearchOptions(num_paths=4, nbest_mode="exact", **opts))
    words = dec.search(model.encode(x, x_lens))
    for hyps, res in zip(out.nbest, words, strict=True):
        assert hyps == [[t for i in ws for t in (i, 1 + i % (V - 1))] for ws in res.tokens]
    assert get_decoding_method("nbest").output == "words"
    # the sequence-level KD loss on them: sum_i w_i CTC(student, y_i)
    student = torch.randn(2, int(out.lens.max()), V, generator=g).log_softmax(-1)
    loss = sequence_kd_ctc(student, out.lens, out.nbest, out.nbest_scores, reduction="sum")
    ref = 0.0
    for n, (hyps, w) in enumerate(zip(out.nbest, nbest_weights(out.nbest_scores, 1.0))):
        for h, wi in zip(hyps, w):
            ctc = F.ctc_loss(
                student[n : n + 1, : out.lens[n]].transpose(0, 1),
                torch.tensor([h]),
                out.lens[n : n + 1],
                torch.tensor([len(h)]),
                reduction="sum",
            )
            ref += float(wi) * float(ctc)
    assert math.isfinite(ref) and float(loss) == pytest.approx(ref, rel=1e-5)


LANG_BPE = Path(__file__).resolve().parents[2] / "egs/synth/ASR/data/lang_bpe_128_lm"


@pytest.mark.skipif(not (LANG_BPE / "bpe.model").is_file(), reason="no default-corpus lang dir on this machine")
def test_words_are_spelled_with_the_lang_dirs_bpe():
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.decoding.lattice_methods import LatticeState
    from asr_kd.lm.lang import read_lexicon_entries, read_symbols

    tok = Tokenizer.from_dir(LANG_BPE)
    words, tokens = read_symbols(LANG_BPE / "words.txt"), read_symbols(LANG_BPE / "tokens.txt")
    entries = read_lexicon_entries(LANG_BPE / "lexicon.txt")[:200:7]
    spellings = {words[e.word]: [tokens[u] for u in e.units] for e in entries}
    state = LatticeState(None, {i: w for w, i in words.items()}, spellings=spellings, tokenizer=tok)
    assert entries[0].word == "<UNK>"  # not spelled by the BPE: its lexicon entry
    ids = [words[e.word] for e in entries]
    want = spellings[ids[0]] + tok.encode(" ".join(e.word for e in entries[1:]))
    assert state.words_to_tokens(ids) == want
    # the lexicon was spelled by that BPE: the same tokens without it
    assert LatticeState(None, state.id_to_word, spellings=spellings).words_to_tokens(ids) == state.words_to_tokens(ids)
