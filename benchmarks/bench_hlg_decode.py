"""Decoding speed of the cached graphs (HL, HLG, HLG with LG's epsilons kept) on synthetic CTC posteriors.

No model is involved: each test transcript is turned into a CTC-like posteriorgram (every BPE token of
it on 1-2 frames, 0-2 blank frames between tokens, Gaussian logit noise, and with probability
``--sub`` a token replaced by a random one, a crude "acoustic error"), then decoded by
``wfst_decode`` on each graph with one thread. Reported per graph: build/load time, states, arcs,
RTF (decode seconds / audio seconds, 40 ms per frame, i.e. 10 ms frames subsampled 4x) and the WER of
the 1-best against the transcript (greedy CTC on the same posteriors for comparison). The WERs
only show the graphs' effect on these synthetic errors; they are not model results.

Usage::

    .venv/bin/python benchmarks/bench_hlg_decode.py --lang-dir egs/synth/ASR/data/lang_bpe_128_lm \\
        --arpa egs/synth/ASR/data/lang_bpe_128_lm/G_3gram.arpa \\
        --text egs/synth/ASR/data/lang_bpe_128_lm/transcript_words_test.txt --num 100
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_kd.data.tokenizer import Tokenizer  # noqa: E402
from asr_kd.decoding.ctc import ctc_greedy_search  # noqa: E402
from asr_kd.decoding.hlg import get_hlg  # noqa: E402
from asr_kd.decoding.wer import compute_wer  # noqa: E402
from asr_kd.decoding.wfst import wfst_decode  # noqa: E402

FRAME_SECONDS = 0.04


def word_error_rate(refs, hyps) -> float:
    return compute_wer([(str(i), r, h) for i, (r, h) in enumerate(zip(refs, hyps))], compute_cer=False).wer


def posteriors(tokens: list[int], V: int, rng: random.Random, sub: float, noise: float, peak: float):
    frames = []
    for t in tokens:
        if rng.random() < sub:
            t = rng.randrange(3, V)
        frames += [t] * rng.randint(1, 2) + [0] * rng.randint(0, 2)
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    logits = noise * torch.randn(len(frames), V, generator=g)
    logits[torch.arange(len(frames)), torch.tensor(frames)] += peak
    return logits.log_softmax(-1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--arpa", type=Path, required=True)
    p.add_argument("--text", type=Path, required=True, help="reference sentences, one per line")
    p.add_argument("--num", type=int, default=100)
    p.add_argument("--sub", type=float, default=0.1, help="token substitution probability")
    p.add_argument("--noise", type=float, default=0.7)
    p.add_argument("--peak", type=float, default=4.0)
    p.add_argument("--beam", type=float, default=16.0)
    p.add_argument("--lm-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tok = Tokenizer.from_dir(args.lang_dir)
    sents = [" ".join(s.split()) for s in args.text.read_text().splitlines() if s.strip()][: args.num]
    rng = random.Random(args.seed)
    lps = [posteriors(tok.encode(s), tok.vocab_size, rng, args.sub, args.noise, args.peak) for s in sents]
    audio = sum(lp.size(0) for lp in lps) * FRAME_SECONDS
    refs = [s.split() for s in sents]
    greedy = [tok.decode(ctc_greedy_search(lp[None], torch.tensor([lp.size(0)]))[0]).split() for lp in lps]
    g_wer = word_error_rate(refs, greedy)
    print(f"{len(sents)} sentences, {audio:.0f} s of synthetic audio; greedy CTC WER {g_wer:.2f} %")
    print("| graph | build or load (s) | states | arcs | file (MiB) | RTF | WER (%) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, arpa, remove_eps in (
        ("HL", None, True),
        ("HLG", args.arpa, True),
        ("HLG, epsilons kept", args.arpa, False),
    ):
        t0 = time.perf_counter()
        graph, id_to_word, info = get_hlg(args.lang_dir, arpa, lm_scale=args.lm_scale, remove_epsilon=remove_eps)
        prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        hyps = []
        for lp in lps:
            res = wfst_decode(graph, lp[None], torch.tensor([lp.size(0)]), beam=args.beam)[0]
            hyps.append([id_to_word[i] for i in res.tokens[0]] if res.tokens else [])
        secs = time.perf_counter() - t0
        mib = f"{info.file_bytes / 2**20:.1f}" if info.file_bytes else "-"
        how = f"{prep:.1f} ({'loaded' if info.cached else 'built'})"
        wer = word_error_rate(refs, hyps)
        print(f"| {name} | {how} | {info.states} | {info.arcs} | {mib} | {secs / audio:.4f} | {wer:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
