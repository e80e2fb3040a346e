"""The train_lm and compile_hlg CLIs, and egs/synth/ASR/local/prepare_lm.sh on a tiny lang dir."""

import json
import subprocess
from pathlib import Path

import pytest

from asr_kd.bin import compile_hlg, train_lm
from asr_kd.lm.arpa import read_arpa
from asr_kd.testing import DUMMY_TEXTS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "egs" / "synth" / "ASR" / "local" / "prepare_lm.sh"


@pytest.fixture(scope="module")
def lang_dir(tmp_path_factory):
    from asr_kd.data.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("lang")
    text = d / "transcript_words.txt"
    text.write_text("\n".join(DUMMY_TEXTS * 3) + "\n")
    train_bpe(text, d, vocab_size=40)
    return d


def test_train_lm_cli(lang_dir, tmp_path, capsys):
    out = tmp_path / "G_3gram.arpa"
    dev = tmp_path / "dev.txt"
    dev.write_text(DUMMY_TEXTS[0] + "\nUNSEEN WORDS HERE\n")
    argv = ["--text", str(lang_dir / "transcript_words.txt"), "--order", "3", "--out", str(out), "--dev-text", str(dev)]
    assert train_lm.main(argv) == 0
    printed = capsys.readouterr().out
    lm = read_arpa(out, unk="<UNK>")
    assert lm.order == 3 and ("<UNK>",) in lm.probs[0]
    words = {w for s in DUMMY_TEXTS for w in s.split()}
    assert set(lm.vocab) == words | {"</s>", "<UNK>"}
    ppl = lm.perplexity(DUMMY_TEXTS * 3)
    assert f"perplexity on {lang_dir / 'transcript_words.txt'}: {ppl:.2f}" in printed
    assert f"perplexity on {dev}:" in printed and "12 words, OOV 3 = 25.0 %, scored as <UNK>" in printed
    assert train_lm.main(["--text", str(tmp_path / "missing.txt"), "--order", "2", "--out", str(out)]) == 2


def test_compile_hlg_cli_caches_and_names_bad_input(lang_dir, tmp_path, capsys):
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldilm")
    arpa = tmp_path / "G_2gram.arpa"
    assert train_lm.main(["--text", str(lang_dir / "transcript_words.txt"), "--order", "2", "--out", str(arpa)]) == 0
    capsys.readouterr()
    assert compile_hlg.main(["--lang-dir", str(lang_dir), "--arpa", str(arpa)]) == 0
    first = json.loads(capsys.readouterr().out.split("compile_hlg: ", 1)[1])
    assert first["kind"] == "HLG" and not first["cached"] and first["states"] > 0 and first["file_mib"] > 0
    assert Path(first["graph"]) == lang_dir / "HLG_G_2gram.fst"
    meta = json.loads((lang_dir / "HLG_G_2gram.json").read_text())
    assert meta["states"] == first["states"] and meta["build_seconds"] >= 0
    assert compile_hlg.main(["--lang-dir", str(lang_dir), "--arpa", str(arpa)]) == 0
    assert json.loads(capsys.readouterr().out.split("compile_hlg: ", 1)[1])["cached"]
    bad = tmp_path / "bad.arpa"
    lines = arpa.read_text().splitlines()
    lines[7] = lines[7].replace("\t", " x ", 1) + " y"
    bad.write_text("\n".join(lines) + "\n")
    assert compile_hlg.main(["--lang-dir", str(lang_dir), "--arpa", str(bad)]) == 1
    assert f"{bad}:8: " in capsys.readouterr().err
    argv = ["--lang-dir", str(lang_dir), "--arpa", str(arpa), "--lm-scale", "0.7", "--max-mem-gb", "1e-9"]
    assert compile_hlg.main(argv) == 1  # not cached: a build, refused
    assert "would not fit in memory" in capsys.readouterr().err


def test_prepare_lm_recipe(lang_dir, tmp_path):
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldilm")
    out = tmp_path / "lang_lm"
    before = {p.name: p.stat().st_mtime_ns for p in lang_dir.iterdir()}
    cmd = [
        "bash",
        str(SCRIPT),
        "--lang-dir",
        str(lang_dir),
        "--out-dir",
        str(out),
        "--orders",
        "2 3",
        "--hlg-order",
        "2",
        "--token-orders",
        "3",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for f in (
        "lexicon_disambig.txt", "tokens_disambig.txt", "L_disambig.fst", "lexicon_char_disambig.txt",
        "G_2gram.arpa", "G_3gram.arpa", "G_2gram.fst.txt", "G_3gram.fst.txt", "HL.fst", "HLG_G_2gram.fst",
    ):  # fmt: skip
        assert (out / f).is_file(), f
    assert read_arpa(out / "G_3gram.arpa", unk="<UNK>").order == 3
    tok_lm = read_arpa(out / "tokens_3gram.arpa", unk="<UNK>")
    pieces = {line.split()[0] for line in (out / "tokens.txt").read_text().splitlines()}
    assert tok_lm.order == 3 and set(tok_lm.vocab) - {"</s>", "<UNK>"} <= pieces
    # kaldilm's G text: arcs "src dst ilabel olabel cost" with #0 (backoff) on the input side
    wid = dict(line.split() for line in (out / "words.txt").read_text().splitlines())
    arcs = [line.split() for line in (out / "G_3gram.fst.txt").read_text().splitlines() if len(line.split()) == 5]
    assert arcs and any(a[2] == wid["#0"] for a in arcs)
    # the source lang dir is untouched
    assert {p.name: p.stat().st_mtime_ns for p in lang_dir.iterdir()} == before
    # a second run reuses everything
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "G_3gram.arpa is up to date" in again.stdout
    assert "tokens_3gram.arpa is up to date" in again.stdout
    assert '"cached": true' in again.stdout


def test_prepare_sh_stage_6(lang_dir, tmp_path):
    """prepare.sh --stage 6 --stop-stage 6 runs local/prepare_lm.sh on $data/lang_bpe_<V>."""
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldilm")
    import shutil

    data = tmp_path / "data"
    lang = data / "lang_bpe_40"
    shutil.copytree(lang_dir, lang)
    for p in lang.glob("HL*"):
        p.unlink()
    proc = subprocess.run(
        ["bash", str(REPO / "egs/synth/ASR/prepare.sh"), "--stage", "6", "--stop-stage", "6", "--vocab-size", "40",
         "--data-dir", str(data), "--lm-orders", "2 3", "--token-lm-orders", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stage 6 done" in proc.stdout
    for f in ("G_2gram.arpa", "G_3gram.arpa", "G_3gram.fst.txt", "HL.fst", "HLG_G_2gram.fst", "HLG_G_2gram.json",
              "tokens_2gram.arpa"):  # fmt: skip
        assert (lang / f).is_file(), f


def test_train_lm_on_bpe_pieces(lang_dir, tmp_path, capsys):
    from asr_kd.data.tokenizer import Tokenizer

    out = tmp_path / "tokens_3gram.arpa"
    text = lang_dir / "transcript_words.txt"
    argv = ["--text", str(text), "--order", "3", "--bpe-model", str(lang_dir / "bpe.model"), "--out", str(out)]
    assert train_lm.main(argv) == 0
    tok = Tokenizer(lang_dir / "bpe.model")
    sents = [" ".join(tok.encode_as_pieces(s)) for s in DUMMY_TEXTS * 3]
    lm = read_arpa(out, unk="<UNK>")
    assert set(lm.vocab) == {p for s in sents for p in s.split()} | {"</s>", "<UNK>"}
    assert any(p.startswith("\u2581") for p in lm.vocab)  # word-initial pieces
    assert f"perplexity on {text}: {lm.perplexity(sents):.2f}" in capsys.readouterr().out
