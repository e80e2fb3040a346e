"""Attention beam search (``asr_kd.decoding.attention_beam_search``) driven by an AttentionDecoder.

    .venv/bin/python benchmarks/bench_attention_beam.py                      # defaults below, 1 thread
    .venv/bin/python benchmarks/bench_attention_beam.py --save /tmp/hyps.json
    PYTHONPATH=/tmp/asr_kd_old .venv/bin/python benchmarks/bench_attention_beam.py   # another checkout

Randomly initialised ``AttentionDecoder(V=500, d_model=144, num_layers=2, heads=4, d_ff=576)``
(the decoder of ``egs/synth/ASR/conf/conformer_hybrid_s.yaml``), float32, eval mode; N = 8 random
encoder outputs ``randn`` with T' drawn uniformly from 60..150 (seeded, padded to the longest),
beam 10, attention only (no CTC), default ``max_len`` (= T' per utterance). Time = median wall
time of one batched ``attention_beam_search`` call after a warm-up, divided by N. Modes:

- ``default``: the decoder as the search drives it (with ``precompute_memory`` when the checkout
  has it: cross-attention keys/values computed once per batch and read once per utterance for its
  W hypotheses; self-attention keys/values cached per layer);
- ``tensor-memory``: the search sees only ``forward_one_step`` (memory passed as a tensor; in this
  checkout the cross-attention K/V then ride in the cache and are reordered with it);

``--save`` writes the n-best tokens and scores to compare checkouts (``--compare`` another file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from machine import machine_description

from asr_kd.decoding import attention_beam_search
from asr_kd.models.heads import AttentionDecoder


class TensorMemoryOnly:
    """Hides ``precompute_memory``: the search passes the memory tensor to every step."""

    def __init__(self, dec):
        self.dec = dec

    def forward_one_step(self, memory, memory_mask, ys, cache):
        return self.dec.forward_one_step(memory, memory_mask, ys, cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--N", type=int, default=8)
    ap.add_argument("--tmin", type=int, default=60)
    ap.add_argument("--tmax", type=int, default=150)
    ap.add_argument("--vocab", type=int, default=500)
    ap.add_argument("--d-model", type=int, default=144)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-ff", type=int, default=576)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--max-len", type=int, default=None, help="default: T' per utterance")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["default", "tensor-memory"], choices=["default", "tensor-memory"])
    ap.add_argument("--save", help="write the n-best lists of the first mode (json)")
    ap.add_argument("--compare", help="check the n-best lists against a --save file")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dec = AttentionDecoder(args.vocab, args.d_model, args.layers, args.heads, d_ff=args.d_ff, dropout=0.0).eval()
    g = torch.Generator().manual_seed(1)
    lens = torch.randint(args.tmin, args.tmax + 1, (args.N,), generator=g)
    enc = torch.randn(args.N, int(lens.max()), args.d_model, generator=g)
    sos = eos = args.vocab - 1

    import asr_kd

    print(f"asr_kd from {os.path.dirname(asr_kd.__file__)}; {machine_description()}")
    print(
        f"N={args.N}, T'={lens.tolist()}, V={args.vocab}, D={args.d_model}, layers={args.layers}, "
        f"d_ff={args.d_ff}, beam={args.beam}, max_len={args.max_len or 'T'}"
    )
    results = {}
    for mode in args.modes:
        d = dec if mode == "default" else TensorMemoryOnly(dec)

        def run():
            return attention_beam_search(
                d, enc, lens, beam=args.beam, sos=sos, eos=eos, max_len=args.max_len, blank_id=0
            )

        with torch.no_grad():
            res = run()  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
        results[mode] = res
        med = statistics.median(times)
        print(
            f"{mode:>14}: {med / args.N:.3f} s/utt (median of {args.repeats}: "
            f"{', '.join(f'{t:.2f}' for t in times)} s per batch); "
            f"best hyp lengths {[len(r.best) for r in res]}"
        )
    first = results[args.modes[0]]
    for mode, res in results.items():
        assert [r.tokens for r in res] == [r.tokens for r in first], f"{mode} differs"
    dump = [{"tokens": r.tokens, "scores": r.scores} for r in first]
    if args.save:
        with open(args.save, "w") as f:
            json.dump(dump, f)
    if args.compare:
        with open(args.compare) as f:
            other = json.load(f)
        same_tokens = all(a["tokens"] == b["tokens"] for a, b in zip(dump, other))
        diff = max(abs(x - y) for a, b in zip(dump, other) for x, y in zip(a["scores"], b["scores"]))
        print(f"vs {args.compare}: same n-best tokens: {same_tokens}; max |score diff| {diff:.2e}")


if __name__ == "__main__":
    main()
