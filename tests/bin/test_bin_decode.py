"""The decode CLI end to end on a toy recipe: checkpoint -> recogs/errs files, results.jsonl, WER."""

import ast
import json
import re

import pytest

from asr_kd.decoding.wer import compute_wer
from asr_kd.testing.recipe import TOY_INTER_CTC_MODEL, make_toy_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from asr_kd.bin import train

    root = tmp_path_factory.mktemp("recipe")
    conf = make_toy_recipe(
        root,
        model=TOY_INTER_CTC_MODEL,
    )
    exp = root / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "2"]) == 0
    return exp


def _recogs(path):
    lines = path.read_text().splitlines()
    out = {}
    for ref, hyp in zip(lines[::2], lines[1::2]):
        cut_id = ref.split(":\t")[0]
        out[cut_id] = (ast.literal_eval(ref.split("ref=")[1]), ast.literal_eval(hyp.split("hyp=")[1]))  # lists of str
    return out


def test_decode_writes_files_and_consistent_wer(trained, capsys):
    from asr_kd.bin import decode

    assert (
        decode.main(
            [
                "--exp-dir",
                str(trained),
                "--method",
                "ctc-greedy",
                "--method",
                "ctc-prefix-beam",
                "--beam",
                "3",
                "--split",
                "test",
                "--split",
                "dev",
            ]
        )
        == 0
    )
    res = trained / "decode"
    rows = [json.loads(line) for line in (res / "results.jsonl").read_text().splitlines()]
    assert [(r["split"], r["method"]) for r in rows] == [
        ("test", "ctc-greedy"),
        ("test", "ctc-prefix-beam_beam-3"),
        ("dev", "ctc-greedy"),
        ("dev", "ctc-prefix-beam_beam-3"),
    ]
    for r in rows:
        recogs = _recogs(res / f"recogs-{r['split']}-{r['method']}.txt")
        assert r["num_utts"] == len(recogs) == 2  # every cut decoded, none dropped
        wer = compute_wer([(k, ref, hyp) for k, (ref, hyp) in recogs.items()])
        assert r["wer"] == round(wer.wer, 2) and r["cer"] == round(wer.cer, 2)
        assert (res / f"errs-{r['split']}-{r['method']}.txt").read_text().startswith(f"%WER = {wer.wer:.2f}")
        assert r["rtf"] > 0
    assert "test ctc-greedy: WER" in capsys.readouterr().out
    assert (res / "wer-summary-test.txt").read_text().startswith("settings\tWER")


def test_decode_inter_ctc_layer_and_bad_method(trained):
    from asr_kd.bin import decode

    assert (
        decode.main(
            ["--exp-dir", str(trained), "--method", "ctc-greedy", "--ctc-layer", "1", "--res-dir", "dec_layer1"]
        )
        == 0
    )
    assert (trained / "dec_layer1" / "recogs-test-ctc-greedy_layer-1.txt").is_file()
    with pytest.raises(ValueError, match="transducer"):
        decode.main(["--exp-dir", str(trained), "--method", "modified-beam"])


def test_decode_checks_every_split_manifest_before_decoding(trained):
    """``--split test --split nope``: the missing second manifest is named before the first split is decoded, and
    nothing is written (not even the result folder)."""
    from asr_kd.bin import decode

    missing = trained.parent / "data" / "manifests" / "toy_cuts_nope.jsonl.gz"
    argv = ["--exp-dir", str(trained), "--split", "test", "--split", "nope", "--res-dir", "dec_missing"]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} not found") + r".*--manifest-dir/--prefix"):
        decode.main(argv)
    assert not (trained / "dec_missing").exists()
    other = trained.parent / "elsewhere"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{other / 'x_cuts_test.jsonl.gz'} not found")):
        decode.main([*argv[:2], "--manifest-dir", str(other), "--prefix", "x", "--res-dir", "dec_missing"])
    assert not (trained / "dec_missing").exists()


def test_decode_ctc_hlg_outputs_lexicon_words(trained):
    """ctc-hlg: WFST decoding with the lang dir's lexicon (HL); every output word is in words.txt and the
    hypotheses equal a direct wfst_decode of the model's CTC log-probs."""
    import torch

    from asr_kd.bin import decode
    from asr_kd.data.tokenizer import read_symbol_table
    from asr_kd.decoding.wfst import build_hlg_from_lang_dir, wfst_decode
    from asr_kd.training.asr_task import load_asr_model

    assert decode.main(["--exp-dir", str(trained), "--method", "ctc-hlg", "--res-dir", "dec_hlg"]) == 0
    res = trained / "dec_hlg"
    row = json.loads((res / "results.jsonl").read_text().splitlines()[-1])
    assert row["method"] == "ctc-hlg_noG" and row["num_utts"] == 2
    model, config = load_asr_model(trained / "checkpoint-2.pt")
    lang = config["data"]["lang_dir"]
    words = read_symbol_table(f"{lang}/words.txt")
    recogs = _recogs(res / "recogs-test-ctc-hlg_noG.txt")
    assert all(w in words for _, hyp in recogs.values() for w in hyp)
    # the same search by hand on one utterance
    from lhotse import CutSet

    from asr_kd.data.features import make_fbank

    cuts = CutSet.from_file(f"{config['data']['manifest_dir']}/toy_cuts_test.jsonl.gz")
    cut = next(iter(cuts))
    feats = torch.from_numpy(make_fbank(80).extract(cut.load_audio(), cut.sampling_rate)).float()
    graph, id_to_word = build_hlg_from_lang_dir(lang)
    with torch.no_grad():
        enc = model.encode(feats.unsqueeze(0), torch.tensor([feats.size(0)]))
        lp = model.ctc(enc.out).log_softmax(-1)
    best = wfst_decode(graph, lp, enc.out_lens)[0].best
    assert recogs[cut.id][1] == [id_to_word[i] for i in best]


def test_decode_on_error_skip_lists_and_scores_skipped_cuts_as_deletions(trained, tmp_path, capsys):
    """A corrupt wav in the test split: --on-error raise (default) stops naming it; --on-error skip
    decodes the rest, lists the cut in the errs file and scores its reference words as deletions."""
    from lhotse import CutSet

    from asr_kd.bin import decode
    from asr_kd.data.validation import BadCutError
    from asr_kd.testing import garbage_audio, make_cut
    from asr_kd.training.asr_task import load_asr_model

    _, config = load_asr_model(trained / "checkpoint-2.pt")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    good = CutSet.from_file(f"{config['data']['manifest_dir']}/toy_cuts_test.jsonl.gz")
    bad = garbage_audio(make_cut(tmp_path / "audio", "te-bad-wav", duration=1.5, text="A STITCH IN TIME"))
    CutSet.from_cuts([*good, bad]).to_file(manifests / "bad_cuts_test.jsonl.gz")
    common = ["--exp-dir", str(trained), "--manifest-dir", str(manifests), "--prefix", "bad"]
    with pytest.raises(BadCutError, match="te-bad-wav.*corrupt_audio"):
        decode.main([*common, "--res-dir", str(tmp_path / "raise")])

    res = tmp_path / "skip"
    assert decode.main([*common, "--res-dir", str(res), "--on-error", "skip"]) == 0
    row = json.loads((res / "results.jsonl").read_text().splitlines()[-1])
    assert row["num_utts"] == 3 and row["num_skipped"] == 1 and row["skipped_as"] == "deletions"
    errs = (res / "errs-test-ctc-greedy.txt").read_text()
    assert "SKIPPED CUTS: 1 cuts could not be decoded, scored as deletions" in errs
    assert "te-bad-wav   corrupt_audio" in errs
    assert "te-bad-wav:\t(A->*) (STITCH->*) (IN->*) (TIME->*)" in errs
    recogs = _recogs(res / "recogs-test-ctc-greedy.txt")
    assert recogs["te-bad-wav"] == (["A", "STITCH", "IN", "TIME"], [])
    wer = compute_wer([(k, ref, hyp) for k, (ref, hyp) in recogs.items()])
    assert row["wer"] == round(wer.wer, 2) and wer.num_ref_words == row["num_words"]
    assert wer.dels >= 4
    assert "1 skipped cuts scored as deletions" in capsys.readouterr().out


def test_decode_nbest_rescoring_scores_several_lm_scales_in_one_pass(trained, tmp_path):
    """--rescore-lm-scale twice: nbest-rescoring decodes once and writes one result per scale, each equal to
    a run with that scale alone; whole-lattice-rescoring runs once per scale."""
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldi_decoder")
    pytest.importorskip("kaldilm")
    import shutil

    from asr_kd.bin import decode
    from asr_kd.data.tokenizer import read_symbol_table
    from asr_kd.lm.ngram import train_ngram, write_arpa
    from asr_kd.training.asr_task import load_asr_model

    _, config = load_asr_model(trained / "checkpoint-2.pt")
    lang = tmp_path / "lang"
    shutil.copytree(config["data"]["lang_dir"], lang)
    words = read_symbol_table(lang / "words.txt")
    top = max(words.values())
    extra = [s for s in ("#0", "<s>", "</s>") if s not in words]
    with open(lang / "words.txt", "a") as f:
        f.writelines(f"{s} {top + 1 + i}\n" for i, s in enumerate(extra))
    vocab = [w for w in words if w not in ("<eps>", "<UNK>") and not w.startswith("#") and w not in ("<s>", "</s>")]
    text = [" ".join(vocab[i : i + 3]) for i in range(0, len(vocab), 2)]
    write_arpa(train_ngram(text, 2, unk=None), tmp_path / "lm.arpa")
    common = ["--exp-dir", str(trained), "--lang-dir", str(lang), "--rescore-arpa", str(tmp_path / "lm.arpa")]
    common += ["--search-beam", "6", "--lattice-beam", "3"]  # the 2-step model's flat posteriors: small lattices
    argv = common + ["--method", "nbest-rescoring", "--method", "whole-lattice-rescoring", "--res-dir", "multi"]
    assert decode.main(argv + ["--rescore-lm-scale", "0.5", "--rescore-lm-scale", "2"]) == 0
    rows = [json.loads(line) for line in (trained / "multi" / "results.jsonl").read_text().splitlines()]
    names = [r["method"] for r in rows]
    assert names == [
        "nbest-rescoring_noG_lm_lms-0.5_sampled-100_ns-0.5",
        "nbest-rescoring_noG_lm_lms-2_sampled-100_ns-0.5",
        "whole-lattice-rescoring_noG_lm_lms-0.5",
        "whole-lattice-rescoring_noG_lm_lms-2",
    ]
    for scale in ("0.5", "2"):
        single = common + ["--method", "nbest-rescoring", "--rescore-lm-scale", scale, "--res-dir", f"one_{scale}"]
        assert decode.main(single) == 0
        name = f"recogs-test-nbest-rescoring_noG_lm_lms-{scale}_sampled-100_ns-0.5.txt"
        assert _recogs(trained / "multi" / name) == _recogs(trained / f"one_{scale}" / name)


def test_search_options_are_built_from_one_table():
    """decode's SearchOptions come from SEARCH_FLAGS: without flags, the dataclass defaults (the method's beam);
    each flag set alone changes its field only; --beam, --no-decoder-cache and --rescore-lm-scale convert."""
    from dataclasses import fields, replace
    from pathlib import Path

    from asr_kd.bin import decode
    from asr_kd.decoding.search import SearchOptions, get_decoding_method

    lang = Path("lang")
    parser = decode.get_parser()
    none = parser.parse_args(["--exp-dir", "e"])
    for method in ("ctc-greedy", "modified-beam", "nbest-rescoring"):
        beam = get_decoding_method(method).default_beam
        assert decode.search_options(none, method, lang) == SearchOptions(beam=beam, lang_dir=lang)
    base = SearchOptions(beam=10, lang_dir=lang)
    defaults = {f.name: f.default for f in fields(SearchOptions)}
    assert set(decode.SEARCH_FLAGS) <= set(defaults)
    for name, kwargs in decode.SEARCH_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kwargs.get("action") == "store_true":
            argv, value = [flag], True
        elif "choices" in kwargs:
            value = next(c for c in kwargs["choices"] if c != defaults[name])
            argv = [flag, value]
        else:
            value = kwargs["type"]("3")
            assert value != defaults[name], name
            argv = [flag, "3"]
        got = decode.search_options(parser.parse_args(["--exp-dir", "e", *argv]), "ctc-greedy", lang)
        assert got == replace(base, **{name: value}), name
    special = parser.parse_args(
        ["--exp-dir", "e", "--beam", "3", "--no-decoder-cache", "--rescore-lm-scale", "0.5", "--rescore-lm-scale", "2"]
    )
    got = decode.search_options(special, "ctc-greedy", lang)
    assert got == replace(base, beam=3, decoder_cache=False, rescore_lm_scale=0.5)
