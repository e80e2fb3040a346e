"""Estimate an interpolated modified Kneser-Ney n-gram LM and write it as ARPA.

Usage::

    python -m asr_kd.bin.train_lm --text data/lang_bpe_500/transcript_words.txt --order 3 \\
        --out data/lang_bpe_500/G_3gram.arpa [--unk '<UNK>'] [--dev-text dev.txt]
    # a token-level LM (words = BPE pieces) for transducer shallow fusion (decode --method modified-beam-lm)
    python -m asr_kd.bin.train_lm --text data/lang_bpe_500/transcript_words.txt --order 5 \
        --bpe-model data/lang_bpe_500/bpe.model --out data/lang_bpe_500/tokens_5gram.arpa

One sentence per line (words split on whitespace). The unknown word (``--unk``, default
``<UNK>``, the ``words.txt`` symbol of :func:`asr_kd.data.tokenizer.train_bpe`; ``--unk ''``
for a closed vocabulary) gets the uniform share of the unigram mass. With ``--bpe-model`` every
sentence (and the ``--dev-text``) is first split into that model's pieces: the LM's words are tokens.
The ARPA file is read back by the validating reader and the training (and ``--dev-text``)
perplexities are printed.
See :mod:`asr_kd.lm.ngram` for the estimator.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from asr_kd.lm.arpa import read_arpa
from asr_kd.lm.ngram import train_ngram, write_arpa


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, required=True, help="training sentences, one per line")
    p.add_argument("--order", type=int, required=True, help="n-gram order (2-4 in the recipes)")
    p.add_argument("--out", type=Path, required=True, help="ARPA file to write")
    p.add_argument("--unk", default="<UNK>", help="unknown-word symbol ('' for none) [<UNK>]")
    p.add_argument("--dev-text", type=Path, default=None, help="also print the perplexity of these sentences")
    p.add_argument("--bpe-model", type=Path, default=None, help="train on the pieces of this BPE model (a token LM)")
    return p


def _read(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [" ".join(line.split()) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.text.is_file():
        print(f"train_lm: {args.text} not found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    sentences = _read(args.text)
    pieces = None
    if args.bpe_model is not None:
        from asr_kd.data.tokenizer import Tokenizer  # noqa: PLC0415

        tok = Tokenizer(args.bpe_model)

        def pieces(lines):
            return [" ".join(tok.encode_as_pieces(s)) for s in lines]

        sentences = pieces(sentences)
    model = train_ngram(sentences, args.order, unk=args.unk or None)
    write_arpa(model, args.out)
    secs = time.perf_counter() - t0
    lm = read_arpa(args.out, unk=args.unk or None)
    counts = " ".join(f"{n + 1}-grams={c}" for n, c in enumerate(lm.counts()))
    ds = " ".join(f"{n + 1}:" + ",".join(f"{d:.3f}" for d in dn) for n, dn in enumerate(model.discounts))
    print(f"train_lm: wrote {args.out} (order {args.order}, {counts}) in {secs:.1f}s; discounts D1,D2,D3+ {ds}")
    print(f"train_lm: perplexity on {args.text}: {lm.perplexity(sentences):.2f}")
    if args.dev_text is not None:
        dev = _read(args.dev_text)
        if pieces is not None:
            dev = pieces(dev)
        vocab = set(lm.vocab)
        words = [w for s in dev for w in s.split()]
        oov = sum(w not in vocab for w in words)
        print(
            f"train_lm: perplexity on {args.dev_text}: {lm.perplexity(dev):.2f} "
            f"({len(dev)} sentences, {len(words)} words, OOV {oov} = {100 * oov / max(len(words), 1):.1f} %, "
            f"scored as {args.unk or 'an error'})"
        )
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "train_lm"))
