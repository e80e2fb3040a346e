"""Train the BPE model and write the lang directory (tokens, words, BPE and char lexicons).

Usage::

    python -m asr_kd.bin.prepare_lang --text data/lang/transcript_words.txt \\
        --lang-dir data/lang_bpe_500 --vocab-size 500 [--model-type unigram] [--force]

Does nothing when every output file already exists, unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asr_kd.data.tokenizer import LANG_FILES, Tokenizer, train_bpe


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, required=True, help="training transcripts, one per line")
    p.add_argument("--lang-dir", type=Path, required=True, help="output directory")
    p.add_argument("--vocab-size", type=int, required=True, help="number of pieces (specials included)")
    p.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--force", action="store_true", help="retrain even if the outputs exist")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.force and all((args.lang_dir / f).is_file() for f in LANG_FILES):
        tok = Tokenizer.from_dir(args.lang_dir)
        print(f"prepare_lang: {args.lang_dir} exists ({tok.vocab_size} tokens); skipping (use --force)")
        return 0
    tok = train_bpe(args.text, args.lang_dir, args.vocab_size, model_type=args.model_type, seed=args.seed)
    if tok.vocab_size != args.vocab_size:
        print(f"prepare_lang: WARNING: text too small for {args.vocab_size} pieces; got {tok.vocab_size}")
    print(f"prepare_lang: wrote {args.lang_dir} ({tok.vocab_size} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
