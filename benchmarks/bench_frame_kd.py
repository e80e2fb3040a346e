#!/usr/bin/env python
"""Benchmark of the fused frame-level KD loss: native ``asr_kd._C`` vs the PyTorch reference.

For each teacher form (dense logits, top-k log-probs) and backend, measures

- time: forward + backward of ``frame_kd_loss(..., reduction="mean")``, median of ``--repeats``
  runs after one warm-up, in this process;
- peak extra memory: in a fresh subprocess per (variant, backend), run with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that every large buffer is its own mmap, returned to the
  system when freed (without it glibc's dynamic threshold keeps freed 32 MB buffers resident and
  later allocations reuse them unseen): the inputs are allocated, free memory is trimmed, the
  peak-RSS counter is reset to the current RSS (``/proc/self/clear_refs`` = 5), one forward +
  backward runs, and the extra is ``VmHWM - RSS before``. It includes the (N, T, V) student
  gradient, which both backends must produce (30.5 MiB at the default shape).

Prints a markdown table with the machine description. Usage::

    .venv/bin/python benchmarks/bench_frame_kd.py                 # (N, T, V) = (32, 500, 500), k = 50
    .venv/bin/python benchmarks/bench_frame_kd.py --N 8 --T 200 --V 5000 --k 100 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from machine import machine_description, reset_peak_rss, status_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from asr_kd.ops import frame_kd_loss, native_available  # noqa: E402

VARIANTS = ("dense", "topk")
BACKENDS = ("native", "torch")


def make_inputs(args, variant: str):
    """Student (N, T, V) leaf requiring grad and the teacher in the variant's form."""
    g = torch.Generator().manual_seed(0)
    student = (2.0 * torch.randn(args.N, args.T, args.V, generator=g)).requires_grad_()
    teacher = 2.0 * torch.randn(args.N, args.T, args.V, generator=g)
    if variant == "topk":
        values, indices = teacher.log_softmax(-1).topk(args.k, dim=-1)
        del teacher
        return student, (values.contiguous(), indices.contiguous()), "topk"
    return student, teacher, "logits"


def step(student, teacher, teacher_type, backend, temperature):
    loss = frame_kd_loss(
        student, teacher, teacher_type=teacher_type, temperature=temperature, reduction="mean", backend=backend
    )
    loss.backward()
    student.grad = None
    return loss.detach()


def time_variant(args, variant: str, backend: str) -> float:
    student, teacher, tt = make_inputs(args, variant)
    step(student, teacher, tt, backend, args.temperature)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step(student, teacher, tt, backend, args.temperature)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_memory_child(args, variant: str, backend: str) -> None:
    """Runs in a subprocess: prints JSON {"extra_bytes": ...}."""
    torch.set_num_threads(args.threads)
    # warm up on a tiny problem: loads kernels, autograd engine, thread pool
    small = argparse.Namespace(**{**vars(args), "N": 2, "T": 3, "V": max(args.k, 8)})
    s, t, tt = make_inputs(small, variant)
    step(s, t, tt, backend, args.temperature)
    student, teacher, tt = make_inputs(args, variant)
    before = reset_peak_rss()
    loss = frame_kd_loss(
        student, teacher, teacher_type=tt, temperature=args.temperature, reduction="mean", backend=backend
    )
    loss.backward()
    peak = status_kib("VmHWM")
    print(json.dumps({"extra_bytes": (peak - before) * 1024, "loss": loss.item()}))


def measure_memory(args, variant: str, backend: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_child",
        variant,
        backend,
        "--N",
        str(args.N),
        "--T",
        str(args.T),
        "--V",
        str(args.V),
        "--k",
        str(args.k),
        "--threads",
        str(args.threads),
        "--temperature",
        str(args.temperature),
    ]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--T", type=int, default=500)
    ap.add_argument("--V", type=int, default=500)
    ap.add_argument("--k", type=int, default=50, help="kept teacher entries of the top-k variant")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--_child", nargs=2, metavar=("VARIANT", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._child:
        measure_memory_child(args, *args._child)
        return
    if not native_available():
        sys.exit("asr_kd._C is not built: pip install --no-build-isolation -e .")
    torch.set_num_threads(args.threads)

    print(
        f"## frame_kd_loss fwd+bwd, (N, T, V) = ({args.N}, {args.T}, {args.V}), "
        f"top-k k = {args.k}, tau = {args.temperature}, float32, reduction=mean\n"
    )
    print(f"Machine: {machine_description(args.threads)}\n")
    print("| teacher | backend | fwd+bwd median (ms) | speed-up vs torch | peak extra memory (MiB) | memory vs torch |")
    print("|---|---|---:|---:|---:|---:|")
    for variant in args.variants:
        res = {}
        for backend in BACKENDS:
            t = time_variant(args, variant, backend)
            mem = None if args.no_memory else measure_memory(args, variant, backend)
            res[backend] = (t, mem)
        if res["native"][1] is not None:
            a, b = res["native"][1]["loss"], res["torch"][1]["loss"]
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"native loss {a} != reference {b}"
        t_ref, m_ref = res["torch"]
        for backend in BACKENDS:
            t, m = res[backend]
            mem = "-" if m is None else f"{m['extra_bytes'] / 2**20:.1f}"
            ratio = "-" if m is None else f"{m['extra_bytes'] / max(m_ref['extra_bytes'], 1):.2f}x"
            label = f"{variant} (k={args.k})" if variant == "topk" else "dense logits"
            print(f"| {label} | {backend} | {1e3 * t:.1f} | {t_ref / t:.2f}x | {mem} | {ratio} |")
    exe = os.path.relpath(sys.executable, os.getcwd()) if sys.executable.startswith(os.getcwd()) else sys.executable
    print(f"\nCommand: {' '.join([exe] + sys.argv)}")


if __name__ == "__main__":
    main()
