"""CTC prefix beam search: native op (asr_kd._C) vs the Python reference.

    .venv/bin/python benchmarks/bench_ctc_prefix_beam.py                 # 1 and 2 torch threads
    .venv/bin/python benchmarks/bench_ctc_prefix_beam.py --threads 2 --N 16 --T 300

Random log-probs ``log_softmax(3 * randn(N, T, V))`` (float32), beam 10, all lengths T. Knob sets:
no pruning, ``top_k`` and ``prune_threshold``. Time = median wall time of one call of
``asr_kd.ops.ctc_prefix_beam_search(..., backend=...)`` (including the conversion to ``NBest``)
after a warm-up. Every native result is checked against the reference's before timing. Prints a
markdown table and the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from machine import machine_description

from asr_kd.ops import ctc_prefix_beam_search, native_available

KNOBS = {
    "none": {},
    "top_k=20": {"top_k": 20},
    "prune_threshold=8": {"prune_threshold": 8.0},
}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=8)
    ap.add_argument("--T", type=int, default=200)
    ap.add_argument("--V", type=int, default=500)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--knobs", nargs="+", default=list(KNOBS), choices=list(KNOBS))
    ap.add_argument("--repeats", type=int, default=7, help="native runs (median)")
    ap.add_argument("--ref-repeats", type=int, default=3, help="reference runs (median)")
    args = ap.parse_args()
    if not native_available():
        sys.exit("asr_kd._C is not built")

    g = torch.Generator().manual_seed(0)
    lp = (3.0 * torch.randn(args.N, args.T, args.V, generator=g)).log_softmax(-1)
    lens = torch.full((args.N,), args.T, dtype=torch.long)

    print(f"## ctc_prefix_beam_search, (N, T, V) = ({args.N}, {args.T}, {args.V}), beam = {args.beam}, float32\n")
    print(f"Machine: {machine_description()}\n")
    print("| torch threads | pruning | native median (ms) | python median (ms) | speed-up |")
    print("|---:|---|---:|---:|---:|")
    old = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name in args.knobs:
                kw = KNOBS[name]

                def run(backend):
                    return ctc_prefix_beam_search(lp, lens, args.beam, backend=backend, **kw)

                ref, nat = run("python"), run("native")
                for a, b in zip(nat, ref):
                    assert a.tokens == b.tokens, "native and reference hypotheses differ"
                    assert max(abs(x - y) for x, y in zip(a.scores, b.scores)) < 1e-6
                t_nat = median_time(lambda: run("native"), args.repeats)
                t_ref = median_time(lambda: run("python"), args.ref_repeats)
                print(
                    f"| {threads} | {name} | {1e3 * t_nat:.1f} | {1e3 * t_ref:.0f} | {t_ref / t_nat:.0f}x |", flush=True
                )
    finally:
        torch.set_num_threads(old)
    exe = sys.executable
    if exe.startswith(os.getcwd()):
        exe = os.path.relpath(exe, os.getcwd())
    print(f"\nCommand: {' '.join([exe] + sys.argv)}")


if __name__ == "__main__":
    main()
