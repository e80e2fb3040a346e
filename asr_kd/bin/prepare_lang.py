"""Train the BPE model and write the lang directory (tokens, words, BPE and char lexicons),
then the files WFST graphs need (icefall's layout, :mod:`asr_kd.lm.lang`).

Usage::

    python -m asr_kd.bin.prepare_lang --text data/lang/transcript_words.txt \\
        --lang-dir data/lang_bpe_500 --vocab-size 500 [--model-type unigram] [--force]
    # a character lang dir (tokens = characters; asr_kd.lm.char_lang)
    python -m asr_kd.bin.prepare_lang --token-type char --text data/lang_bpe_500/transcript_words.txt \\
        --lang-dir data/lang_char
    # a WordPiece lang dir in a BERT tokenizer's units (asr_kd.lm.wordpiece_lang; CTC in the MLM's units)
    python -m asr_kd.bin.prepare_lang --token-type wordpiece --tokenizer-dir exp/mlm_minilm \\
        --text data/text/train.txt --lang-dir data/lang_wp
    # a teacher's BPE model instead of a new one (KD on token distributions needs the same vocabulary)
    python -m asr_kd.bin.prepare_lang --text data_small/lang_bpe_128/transcript_words.txt \\
        --lang-dir data_small/lang_bpe_128 --vocab-size 128 --bpe-model pretrained/zipformer_transducer_s/bpe.model

Writes ``bpe.model``, ``tokens.txt``, ``words.txt`` (``<eps>``, ``<UNK>``, the words, ``#0``,
``<s>``, ``</s>``), ``lexicon.txt``, ``lexicon_char.txt``; then ``lexicon_disambig.txt``,
``lexicon_char_disambig.txt`` (``#1``, ``#2``... on ambiguous spellings), ``tokens_disambig.txt``
(``tokens.txt`` plus ``#0..#K``) and ``L_disambig.fst`` (kaldifst). The BPE step does nothing when
its files exist (unless ``--force``); with ``--bpe-model`` the given model is copied instead of
training one (skipped when the lang dir holds that same model); the disambiguation files are
rewritten when missing or older than ``lexicon.txt``. A lexicon word missing from ``words.txt`` or a token missing from
``tokens.txt`` is an error naming the file and line.

With ``--token-type char`` the lang dir's tokens are the characters of the text (``<blk>``,
``<sos/eos>``, ``<unk>``, then the characters; no ``bpe.model``), ``lexicon.txt`` spells each word
in characters, and the same disambiguation files follow (:mod:`asr_kd.lm.char_lang`). It is
rewritten when ``tokens.txt`` is missing or older than ``--text``, or with ``--force``.

With ``--token-type wordpiece --tokenizer-dir DIR`` (a local Hugging Face fast WordPiece tokenizer, e.g. the
MLM teacher's folder) the tokens are that tokenizer's units that the text needs (``<blk>``, ``<sos/eos>``,
``<unk>``, then the units in the source's id order), with ``wordpiece.json``, a lexicon of WordPiece spellings
and the same disambiguation files (:mod:`asr_kd.lm.wordpiece_lang`); the words without a spelling are
reported, counted. It is rewritten when its files are missing or older than ``--text``, when the tokenizer's
vocabulary differs from the one recorded in ``wordpiece.json``, or with ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asr_kd.bin._common import refuse
from asr_kd.data.tokenizer import BPE_MODEL, LANG_FILES, Tokenizer, install_bpe, train_bpe
from asr_kd.lm.lang import DISAMBIG_FILES, LangError, write_disambig_files


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, required=True, help="training transcripts, one per line")
    p.add_argument("--lang-dir", type=Path, required=True, help="output directory")
    p.add_argument(
        "--token-type",
        choices=("bpe", "char", "wordpiece"),
        default="bpe",
        help="BPE pieces, characters or a BERT tokenizer's WordPiece units [bpe]",
    )
    p.add_argument(
        "--tokenizer-dir",
        type=Path,
        default=None,
        help="with --token-type wordpiece: a local Hugging Face fast WordPiece tokenizer folder (required)",
    )
    p.add_argument(
        "--restore-case",
        choices=("auto", "upper", "none"),
        default="auto",
        help="with --token-type wordpiece: the case decoding restores (auto: upper for an upper-case text read "
        "by an uncased tokenizer) [auto]",
    )
    p.add_argument("--vocab-size", type=int, help="number of BPE pieces, specials included (required for bpe)")
    p.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--force", action="store_true", help="retrain even if the outputs exist")
    p.add_argument(
        "--bpe-model",
        type=Path,
        default=None,
        help="install this SentencePiece model (e.g. a teacher bundle's bpe.model) instead of training one; "
        "its size must equal --vocab-size",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.token_type == "char":
        return char_lang(args.text, args.lang_dir, force=args.force)
    if args.token_type == "wordpiece":
        if args.tokenizer_dir is None:
            parser.error("--tokenizer-dir is required with --token-type wordpiece")
        return wordpiece_lang(
            args.tokenizer_dir, args.text, args.lang_dir, restore_case=args.restore_case, force=args.force
        )
    if args.vocab_size is None:
        parser.error("--vocab-size is required with --token-type bpe")
    exists = all((args.lang_dir / f).is_file() for f in LANG_FILES)
    if args.bpe_model is not None and exists:  # installed already only if it is the same model
        exists = args.bpe_model.is_file() and (args.lang_dir / BPE_MODEL).read_bytes() == args.bpe_model.read_bytes()
    if not args.force and exists:
        tok = Tokenizer.from_dir(args.lang_dir)
        print(f"prepare_lang: {args.lang_dir} exists ({tok.vocab_size} tokens); skipping the BPE model (use --force)")
    elif args.bpe_model is not None:
        tok = install_bpe(args.bpe_model, args.text, args.lang_dir, args.vocab_size)
        print(f"prepare_lang: wrote {args.lang_dir} ({tok.vocab_size} tokens) with the BPE model {args.bpe_model}")
    else:
        tok = train_bpe(args.text, args.lang_dir, args.vocab_size, model_type=args.model_type, seed=args.seed)
        if tok.vocab_size != args.vocab_size:
            print(f"prepare_lang: WARNING: text too small for {args.vocab_size} pieces; got {tok.vocab_size}")
        print(f"prepare_lang: wrote {args.lang_dir} ({tok.vocab_size} tokens)")
    return write_disambig(args.lang_dir, force=args.force)


def _all_newer(outs: list[Path], src: Path) -> bool:
    """Every file of ``outs`` exists and is not older than ``src``."""
    return all(o.is_file() and o.stat().st_mtime_ns >= src.stat().st_mtime_ns for o in outs)


def char_lang(text: Path, lang_dir: Path, *, force: bool = False) -> int:
    """Write the char lang dir unless its tokens.txt and disambiguation files are newer than ``text``."""
    from asr_kd.lm.char_lang import write_char_lang_dir  # noqa: PLC0415

    outs = [lang_dir / f for f in ("tokens.txt", "words.txt", "lexicon.txt", *DISAMBIG_FILES)]
    fresh = text.is_file() and _all_newer(outs, text)
    if not force and fresh:
        print(f"prepare_lang: {lang_dir} (characters) is newer than {text}; skipping (use --force)")
        return 0
    try:
        info = write_char_lang_dir(text, lang_dir)
    except LangError as e:
        return refuse("prepare_lang", e)
    print(
        f"prepare_lang: wrote the char lang dir {lang_dir} ({info['tokens']} tokens, {info['words']} words, "
        f"#1..#{info['max_disambig']})"
    )
    return 0


def wordpiece_lang(
    tokenizer_dir: Path, text: Path, lang_dir: Path, *, restore_case: str = "auto", force: bool = False
) -> int:
    """Write the WordPiece lang dir unless its files are newer than ``text`` and were made from the same
    vocabulary as ``tokenizer_dir``'s."""
    import json  # noqa: PLC0415

    from asr_kd.data.wordpiece_tokenizer import WORDPIECE_JSON  # noqa: PLC0415
    from asr_kd.lm.wordpiece_lang import load_wordpiece_source, write_wordpiece_lang_dir  # noqa: PLC0415

    try:
        src = load_wordpiece_source(tokenizer_dir)
    except (FileNotFoundError, ValueError) as e:
        return refuse("prepare_lang", f"--tokenizer-dir {tokenizer_dir}: {e}")
    outs = [lang_dir / f for f in ("tokens.txt", WORDPIECE_JSON, "words.txt", "lexicon.txt", *DISAMBIG_FILES)]
    if not force and text.is_file() and _all_newer(outs, text):
        config = json.loads((lang_dir / WORDPIECE_JSON).read_text(encoding="utf-8"))
        recorded, fp = config.get("source", {}), src.fingerprint()
        same_case = restore_case == "auto" or config.get("restore_case") == restore_case
        if recorded.get("sha256") == fp["sha256"] and recorded.get("size") == fp["size"] and same_case:
            print(f"prepare_lang: {lang_dir} (WordPiece) is newer than {text}; skipping (use --force)")
            return 0
    if not text.is_file():
        return refuse("prepare_lang", f"--text {text}: not found")
    try:
        info = write_wordpiece_lang_dir(tokenizer_dir, text, lang_dir, restore_case=restore_case)
    except (LangError, ValueError) as e:
        return refuse("prepare_lang", e)
    print(
        f"prepare_lang: wrote the WordPiece lang dir {lang_dir} ({info['tokens']} tokens: {info['units']} of "
        f"{info['source_size']} units of {tokenizer_dir}; {info['words']} words, #1..#{info['max_disambig']}; "
        f"restore_case {info['restore_case']})"
    )
    if info["unknown_words"]:
        top = ", ".join(f"{w} x{c}" for w, c in list(info["unknown"].items())[:10])
        print(
            f"prepare_lang: {info['unknown_words']} words ({info['unknown_occurrences']} of "
            f"{info['word_occurrences']} occurrences) have no WordPiece spelling (utterances with them are "
            f"dropped by the dataset check): {top}"
        )
    return 0


def write_disambig(lang_dir: Path, *, force: bool = False) -> int:
    """Write the disambiguation files unless they exist and are newer than lexicon.txt."""
    lex = lang_dir / "lexicon.txt"
    outs = [lang_dir / f for f in DISAMBIG_FILES]
    if not force and _all_newer(outs, lex):
        print(f"prepare_lang: {lang_dir} has {', '.join(DISAMBIG_FILES)}; skipping")
        return 0
    try:
        info = write_disambig_files(lang_dir)
    except LangError as e:
        return refuse("prepare_lang", e)
    print(f"prepare_lang: wrote {', '.join(DISAMBIG_FILES)} in {lang_dir} (#1..#{info['max_disambig']})")
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "prepare_lang"))
