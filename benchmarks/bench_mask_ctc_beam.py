"""Mask-CTC beam search (Algorithm 1 of Gong et al. 2022): native search step vs the PyTorch one.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mask_ctc_beam.py        # all 4 cases
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mask_ctc_beam.py --V 500 --layers 2 --repeats 3

Case ("realistic"): a randomly initialised ``MaskCtcDecoder(V, d_model=144, num_layers=1|2,
heads=4, d_ff=576)`` (the Mask-CTC decoder of ``conformer_hybrid_s.yaml``), V = 128 and 500,
N = 16 utterances with T' uniform in [60, 120] encoder frames (random (N, T', 144) memory) and
synthetic CTC posteriors whose greedy output has T' // 3 tokens, 5..20 of them below the
confidence threshold (masked); ``mask_ctc_beam_search(beam=10, K=2, p_thr=0.99)``, float32,
1 torch thread (``--threads``).

Reported per case:

- profile (one search per backend, timers around the calls): the decoder forward, the
  ``log_softmax`` + banned tokens of ``_mlm_log_probs``, the search step (the bookkeeping:
  ``asr_kd.ops.mask_ctc_beam_step``, i.e. top-B fill sets + candidates + merge + prune), the rest
  (CTC greedy + masks, gathers of the decoder inputs, n-best lists);
- end to end: median wall time of ``--repeats`` searches per backend (interleaved, after a
  warm-up), per utterance, and the ratio of the median process CPU times (steadier than wall
  time on a shared machine: 1 thread, so CPU time is the search's own work); native and python
  results are checked to be identical first;
- steps alone: the arguments of the search's step calls (one per MLM iteration) are recorded
  and replayed on each backend, median over repeats (the bookkeeping without the decoder's noise);
- peak memory: in a fresh subprocess per (case, backend), ``VmHWM - VmRSS`` around one search
  (peak counter reset through ``/proc/self/clear_refs``, ``MALLOC_MMAP_THRESHOLD_=65536`` so
  that freed buffers leave RSS), and the tracemalloc peak of Python-level allocations (torch
  tensor storage is not seen by tracemalloc).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import torch
from machine import machine_description, reset_peak_rss, status_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import asr_kd.decoding.mask_ctc as mc  # noqa: E402
import asr_kd.ops.mask_ctc_beam as mcb  # noqa: E402
from asr_kd.models.heads import MaskCtcDecoder  # noqa: E402
from asr_kd.ops import native_available  # noqa: E402

D_MODEL = 144


def make_case(N: int, V: int, seed: int = 0, tmin: int = 60, tmax: int = 120, mmin: int = 5, mmax: int = 20):
    """CTC log-probs (N, T', V) whose greedy output has T'//3 tokens, 5..20 below p_thr=0.99;
    encoder memory (N, T', 144); lengths (N,)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(tmin, tmax + 1, (N,), generator=g)
    T = int(lens.max())
    probs = torch.full((N, T, V), 1e-6)
    for n in range(N):
        Tn = int(lens[n])
        U = Tn // 3
        M = int(torch.randint(mmin, min(mmax, U) + 1, (1,), generator=g))
        toks = torch.randint(1, V, (U,), generator=g)
        masked = torch.zeros(U, dtype=torch.bool)
        masked[torch.randperm(U, generator=g)[:M]] = True
        conf = torch.where(masked, 0.3 + 0.6 * torch.rand(U, generator=g), torch.full((U,), 0.999))
        for t in range(Tn):  # token, blank, blank, token, ...
            u, r = divmod(t, 3)
            tok, p = (int(toks[u]), float(conf[u])) if r == 0 and u < U else (0, 0.999)
            probs[n, t] = (1 - p) / (V - 1)
            probs[n, t, tok] = p
    memory = torch.randn(N, T, D_MODEL, generator=g)
    return probs.log(), lens, memory


def make_decoder(V: int, layers: int) -> MaskCtcDecoder:
    torch.manual_seed(0)
    return MaskCtcDecoder(V, D_MODEL, num_layers=layers, heads=4, d_ff=576, dropout=0.0).eval()


def search(dec, case, backend, beam, K):
    lp, lens, memory = case
    return mc.mask_ctc_beam_search(
        lp, lens, dec, memory, lens, beam=beam, K=K, p_thr=0.99, mask_id=dec.mask_id, backend=backend
    )


class _TimedDecoder(torch.nn.Module):
    def __init__(self, dec, acc):
        super().__init__()
        self.dec, self.acc, self.mask_id = dec, acc, dec.mask_id

    def forward(self, *args):
        t0 = time.perf_counter()
        out = self.dec(*args)
        self.acc["decoder forward"] += time.perf_counter() - t0
        return out


def profile(dec, case, backend, beam, K) -> dict:
    """Seconds per part of one search (after a warm-up)."""
    acc: dict = collections.defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            acc[name] += time.perf_counter() - t0
            return out

        return wrapper

    saved = mc._mlm_log_probs, mcb.mask_ctc_beam_step
    mc._mlm_log_probs = timed("mlm", mc._mlm_log_probs)
    mcb.mask_ctc_beam_step = timed("search step", mcb.mask_ctc_beam_step)
    try:
        tdec = _TimedDecoder(dec, acc)
        search(tdec, case, backend, beam, K)
        acc.clear()
        t0 = time.perf_counter()
        search(tdec, case, backend, beam, K)
        total = time.perf_counter() - t0
    finally:
        mc._mlm_log_probs, mcb.mask_ctc_beam_step = saved
    return {
        "total": total,
        "decoder forward": acc["decoder forward"],
        "log_softmax + ban": acc["mlm"] - acc["decoder forward"],
        "search step": acc["search step"],
        "other": total - acc["mlm"] - acc["search step"],
    }


def capture_steps(dec, case, beam, K) -> list:
    """The arguments of every search-step call of one search."""
    calls, real = [], mcb.mask_ctc_beam_step

    def spy(*a, **kw):
        calls.append((a, kw))
        return real(*a, **kw)

    mcb.mask_ctc_beam_step = spy
    try:
        search(dec, case, "python", beam, K)
    finally:
        mcb.mask_ctc_beam_step = real
    return calls


def time_steps(calls, backend: str, repeats: int) -> float:
    """Median over ``repeats`` of the time of all the search's step calls (seconds)."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for a, kw in calls:
            mcb.mask_ctc_beam_step(*a, **{**kw, "backend": backend})
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def memory_child(args, V: int, layers: int, backend: str) -> None:
    """Runs in a subprocess: prints JSON {"rss_extra_bytes", "tracemalloc_peak_bytes"}."""
    torch.set_num_threads(args.threads)
    dec = make_decoder(V, layers)
    case = make_case(args.N, V, args.seed)
    search(dec, make_case(2, V, args.seed + 1), backend, args.beam, args.K)  # warm-up
    before = reset_peak_rss()
    search(dec, case, backend, args.beam, args.K)
    peak = status_kib("VmHWM")
    tracemalloc.start()
    search(dec, case, backend, args.beam, args.K)
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"rss_extra_bytes": (peak - before) * 1024, "tracemalloc_peak_bytes": tm_peak}))


def measure_memory(args, V: int, layers: int, backend: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_child",
        str(V),
        str(layers),
        backend,
        "--N",
        str(args.N),
        "--beam",
        str(args.beam),
        "--K",
        str(args.K),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--V", type=int, nargs="+", default=[128, 500])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--K", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="searches per backend (median)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--_child", nargs=3, metavar=("V", "LAYERS", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        memory_child(args, int(args._child[0]), int(args._child[1]), args._child[2])
        return
    if not native_available():
        sys.exit("asr_kd._C is not built")
    torch.set_num_threads(args.threads)

    print(
        f"## mask_ctc_beam_search, N = {args.N}, T' in [60, 120], 5-20 masks per utterance, "
        f"beam = {args.beam}, K = {args.K}, d_model = {D_MODEL}, torch threads = {args.threads}\n"
    )
    lp, lens, _ = make_case(args.N, args.V[0], args.seed)
    toks, confs = mc.ctc_greedy_with_confidence(lp, lens)
    masks = [sum(c < 0.99 for c in cs) for cs in confs]
    print(f"Machine: {machine_description()}\n")
    print(
        f"Utterances: T' = {lens.tolist()}, {sum(map(len, toks))} CTC tokens, masks per utterance "
        f"{masks} ({sum(masks)} in all)\n"
    )
    rows_prof, rows_time = [], []
    for V in args.V:
        for layers in args.layers:
            dec = make_decoder(V, layers)
            case = make_case(args.N, V, args.seed)
            ref, nat = (search(dec, case, b, args.beam, args.K) for b in ("python", "native"))
            for a, b in zip(ref, nat):
                assert a.tokens == b.tokens and a.scores == b.scores, "backends differ"
            for backend in ("python", "native"):
                p = profile(dec, case, backend, args.beam, args.K)
                rows_prof.append((V, layers, backend, p))
            times = {"python": [], "native": []}
            cpu = {"python": [], "native": []}
            for _ in range(args.repeats):  # interleaved: both backends see the same load
                for backend in ("python", "native"):
                    t0, c0 = time.perf_counter(), time.process_time()
                    search(dec, case, backend, args.beam, args.K)
                    times[backend].append(time.perf_counter() - t0)
                    cpu[backend].append(time.process_time() - c0)
            calls = capture_steps(dec, case, args.beam, args.K)
            steps = {b: time_steps(calls, b, 2 * args.repeats + 1) for b in ("python", "native")}
            mem = {}
            if not args.no_memory:
                mem = {b: measure_memory(args, V, layers, b) for b in ("python", "native")}
            rows_time.append(
                (
                    V,
                    layers,
                    {b: statistics.median(t) for b, t in times.items()},
                    mem,
                    steps,
                    {b: statistics.median(t) for b, t in cpu.items()},
                )
            )
            print(f"[V={V} layers={layers} done, load {os.getloadavg()[0]:.1f}]", file=sys.stderr, flush=True)

    print("Profile (one search, ms per utterance and share of the search):\n")
    print("| V | layers | backend | total | decoder forward | log_softmax + ban | search step (bookkeeping) | other |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for V, layers, backend, p in rows_prof:
        tot = p["total"]
        cells = " | ".join(
            f"{1e3 * p[c] / args.N:.1f} ({100 * p[c] / tot:.1f} %)"
            for c in ("decoder forward", "log_softmax + ban", "search step", "other")
        )
        print(f"| {V} | {layers} | {backend} | {1e3 * tot / args.N:.1f} | {cells} |")
    print(
        f"\nEnd to end (median of {args.repeats} searches, ms per utterance; identical n-best "
        "lists; steps alone = the recorded step calls of one search replayed):\n"
    )
    head = (
        "| V | layers | python wall (ms/utt) | native wall (ms/utt) | speed-up wall | "
        "speed-up CPU time | steps alone: python / native (ms/utt) | step speed-up |"
    )
    sep = "|---:|---:|---:|---:|---:|---:|---:|---:|"
    if not args.no_memory:
        head += " peak RSS extra python / native (MiB) | tracemalloc peak python / native (KiB) |"
        sep += "---:|---:|"
    print(head)
    print(sep)
    for V, layers, t, mem, st, c in rows_time:
        line = (
            f"| {V} | {layers} | {1e3 * t['python'] / args.N:.1f} | "
            f"{1e3 * t['native'] / args.N:.1f} | {t['python'] / t['native']:.2f}x | "
            f"{c['python'] / c['native']:.2f}x | "
            f"{1e3 * st['python'] / args.N:.2f} / {1e3 * st['native'] / args.N:.2f} | "
            f"{st['python'] / st['native']:.0f}x |"
        )
        if mem:
            mib = [mem[b]["rss_extra_bytes"] / 2**20 for b in ("python", "native")]
            kib = [mem[b]["tracemalloc_peak_bytes"] / 2**10 for b in ("python", "native")]
            line += f" {mib[0]:.1f} / {mib[1]:.1f} | {kib[0]:.0f} / {kib[1]:.0f} |"
        print(line)
    exe = sys.executable
    if exe.startswith(os.getcwd()):
        exe = os.path.relpath(exe, os.getcwd())
    print(f"\nCommand: {' '.join([exe] + sys.argv)}  (load average at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
