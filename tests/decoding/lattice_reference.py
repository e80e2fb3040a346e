"""Direct-call references of the CTC lattice methods (asr_kd.decoding.lattice_methods) for the every-method
tests: the lattice functions called by hand on a lang dir with one word per token."""

from __future__ import annotations

from pathlib import Path

LATTICE_METHODS = (
    "1best",
    "ctc-decoding",
    "nbest",
    "nbest-rescoring",
    "whole-lattice-rescoring",
    "attention-decoder-rescoring-with-ngram",
)


def write_word_lm(lang_dir: Path, vocab_size: int) -> Path:
    """Add G's symbols to words.txt (``w1 .. w<V-1>``) and write ``words_2gram.arpa`` (the rescoring LM)."""
    from asr_kd.lm.ngram import train_ngram, write_arpa

    V = vocab_size
    (lang_dir / "words.txt").write_text((lang_dir / "words.txt").read_text() + f"#0 {V}\n<s> {V + 1}\n</s> {V + 2}\n")
    text = ["w1 w2 w3", "w2 w3", "w5 w1 w2", "w4", "w3 w3 w1"]
    text += [" ".join(f"w{i}" for i in range(j, V, 3)) for j in range(1, 4)]
    write_arpa(train_ngram(text, 2, unk=None), lang_dir / "words_2gram.arpa")
    return lang_dir / "words_2gram.arpa"


def lattice_method_reference(method, model, enc, lens, lp, lang_dir):
    """The best hypotheses of ``method`` (defaults of SearchOptions, ``rescore_arpa`` =
    ``words_2gram.arpa``; one word per token, so word ids are token spellings; the n-best sampled:
    100 paths, scale 0.5, seed 0)."""
    from asr_kd.decoding.attention import attention_rescoring
    from asr_kd.decoding.common import NBest, best_paths
    from asr_kd.decoding.lattice import (
        NgramScorer,
        kaldi_get_lattice,
        lattice_nbest_sampled,
        rescore_nbest,
        whole_lattice_rescore,
    )
    from asr_kd.decoding.wfst import build_hlg, build_hlg_from_lang_dir, wfst_decode

    if method == "ctc-decoding":
        return best_paths(wfst_decode(build_hlg(lp.size(-1)), lp, lens, beam=16.0))
    graph, _ = build_hlg_from_lang_dir(lang_dir)  # HL, undeterminised: the same best paths
    if method == "1best":
        return best_paths(wfst_decode(graph, lp, lens, beam=16.0))
    lats = kaldi_get_lattice(graph, lp, lens, beam=16.0, lattice_beam=8.0)
    scorer = NgramScorer.from_arpa(lang_dir / "words_2gram.arpa", lang_dir / "words.txt")
    if method == "whole-lattice-rescoring":
        return best_paths([whole_lattice_rescore(lat, scorer) for lat in lats])
    nbests = [lattice_nbest_sampled(lat, 100, nbest_scale=0.5, seed=0) for lat in lats]
    if method == "nbest":
        return best_paths(nbests)
    rescored = [rescore_nbest(nb, scorer) for nb in nbests]
    if method == "nbest-rescoring":
        return best_paths(rescored)
    assert method == "attention-decoder-rescoring-with-ngram"
    # attention + (acoustic + rescoring LM): attention_rescoring with that sum as its "ctc" score, weight 1
    first_pass = [NBest(nb.tokens, nb.scores, {"ctc": nb.scores}) for nb in rescored]
    return best_paths(
        attention_rescoring(
            model.attention_decoder, enc, lens, first_pass, ctc_weight=1.0, sos=model.sos_id, eos=model.eos_id
        )
    )
