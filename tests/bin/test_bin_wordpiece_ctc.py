"""A CTC student in WordPiece units end to end on the toy recipe: prepare_lang --token-type wordpiece, train a
few steps (the output layer follows the lang dir's units), decode with ctc-greedy and ctc-hlg; the hypotheses
are the model's greedy WordPiece ids put back into words by the lang dir's tokenizer."""

from __future__ import annotations

import ast
import json

import pytest
import torch
import yaml

pytest.importorskip("transformers")


def _recogs(path):
    lines = path.read_text().splitlines()
    return {
        ref.split(":\t")[0]: (ast.literal_eval(ref.split("ref=")[1]), ast.literal_eval(hyp.split("hyp=")[1]))
        for ref, hyp in zip(lines[::2], lines[1::2])
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from asr_kd.bin import prepare_lang, train
    from asr_kd.testing.recipe import TOY_MODEL, make_toy_recipe
    from asr_kd.testing.tiny_mlm import make_tiny_mlm

    root = tmp_path_factory.mktemp("wp_recipe")
    conf = make_toy_recipe(root, model=TOY_MODEL)
    mlm = make_tiny_mlm(root / "mlm", extra_pieces=["##ck", "##ly", "jump", "quick"])
    lang = root / "data" / "lang_wp"
    argv = ["--token-type", "wordpiece", "--tokenizer-dir", str(mlm), "--text", str(root / "text.txt")]
    assert prepare_lang.main([*argv, "--lang-dir", str(lang)]) == 0
    cfg = yaml.safe_load(conf.read_text())
    cfg["data"]["lang_dir"] = str(lang)
    conf.write_text(yaml.safe_dump(cfg))
    exp = root / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "4"]) == 0
    return exp, lang, mlm


def test_model_vocab_follows_the_wordpiece_lang_dir(trained):
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.training.asr_task import load_asr_model

    exp, lang, mlm = trained
    tok = Tokenizer.from_dir(lang)
    assert type(tok).__name__ == "WordPieceTokenizer"
    model, config = load_asr_model(exp / "checkpoint-4.pt")
    assert config["data"]["lang_dir"] == str(lang)
    out = model.ctc(torch.zeros(1, 3, 32))
    assert out.shape == (1, 3, tok.vocab_size)
    pieces = (mlm / "vocab.txt").read_text().split()
    assert tok.vocab_size < 3 + len(pieces)  # restricted to the units of the text, not the whole vocabulary


def test_decode_greedy_and_hlg_in_wordpiece_units(trained):
    from lhotse import CutSet

    from asr_kd.bin import decode
    from asr_kd.data.features import make_fbank
    from asr_kd.data.tokenizer import Tokenizer, read_symbol_table
    from asr_kd.training.asr_task import load_asr_model

    exp, lang, _ = trained
    argv = ["--exp-dir", str(exp), "--method", "ctc-greedy", "--method", "ctc-hlg", "--res-dir", "dec"]
    assert decode.main(argv) == 0
    rows = [json.loads(line) for line in (exp / "dec" / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["ctc-greedy", "ctc-hlg_noG"] and all(r["num_utts"] == 2 for r in rows)
    greedy = _recogs(exp / "dec" / "recogs-test-ctc-greedy.txt")
    hlg = _recogs(exp / "dec" / "recogs-test-ctc-hlg_noG.txt")
    words = read_symbol_table(lang / "words.txt")
    assert all(w in words for _, hyp in hlg.values() for w in hyp)
    # greedy by hand: argmax, collapse repeats, drop blanks, then the tokenizer's decode
    model, config = load_asr_model(exp / "checkpoint-4.pt")
    tok = Tokenizer.from_dir(lang)
    cuts = CutSet.from_file(f"{config['data']['manifest_dir']}/toy_cuts_test.jsonl.gz")
    for cut in cuts:
        feats = torch.from_numpy(make_fbank(80).extract(cut.load_audio(), cut.sampling_rate)).float()
        with torch.no_grad():
            enc = model.encode(feats.unsqueeze(0), torch.tensor([feats.size(0)]))
            best = model.ctc(enc.out)[0, : int(enc.out_lens[0])].argmax(-1)
        ids = [int(i) for i in torch.unique_consecutive(best) if int(i) != tok.blank_id]
        ref, hyp = greedy[cut.id]
        assert hyp == tok.decode(ids).split()
        assert ref == cut.supervisions[0].text.split()
        assert tok.decode(tok.encode(cut.supervisions[0].text)) == cut.supervisions[0].text  # exact round trip


def test_aux_decoders_and_ctc_share_the_wordpiece_units(trained, tmp_path):
    """A few steps of CTC in WordPiece units + an auxiliary attention decoder (interAED's, on the reference)
    predicting units of the same tokenizer; the decoder is training-only, decoding stays CTC greedy."""
    from asr_kd.bin import decode, train
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.training.asr_task import load_asr_model

    exp, lang, mlm = trained
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    text = tmp_path / "train.txt"
    text.write_text((lang / "transcript_words.txt").read_text())
    method = {"name": "inter_aed_kd", "weight": 0.3, "layers": ["final"], "teacher": "none"}
    method.update(tokenizer_dir=str(mlm), restrict_to=str(text), d_model=16, num_layers=1, heads=2, d_ff=32)
    cfg["kd"] = {"methods": [method]}
    cfg.pop("exp_dir", None)
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(out), "--max-steps", "2"]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [m for m in metrics if m["kind"] == "train"]
    assert rows and all(abs(m["loss"] - (m["ctc"] + 0.3 * m["aed_ce_final"])) < 1e-4 for m in rows)  # CTC + 0.3 CE
    ckpt = torch.load(out / "checkpoint-2.pt", map_location="cpu", weights_only=False)
    assert any(k.startswith("kd_aux.") for k in ckpt["model"])
    source = json.loads((lang / "wordpiece.json").read_text())["source"]
    from asr_kd.kd.wordpiece import WordPieceVocab

    assert {k: source[k] for k in ("size", "sha256")} == WordPieceVocab(mlm).fingerprint()
    model, _ = load_asr_model(out / "checkpoint-2.pt")
    assert not any(k.startswith("kd_aux.") for k in model.state_dict())  # dropped for decoding
    assert model.ctc(torch.zeros(1, 2, 32)).shape[-1] == Tokenizer.from_dir(lang).vocab_size
    assert decode.main(["--exp-dir", str(out), "--method", "ctc-greedy"]) == 0
    assert (out / "decode" / "recogs-test-ctc-greedy.txt").is_file()
