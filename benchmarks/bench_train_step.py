#!/usr/bin/env python
"""Training-step speed on CPU: fp32 vs bf16 autocast vs ``torch.compile``, and the data pipeline's share.

For each config, the model is built exactly as ``asr_kd.bin.train`` builds it, and real batches are drawn
from the config's training DataLoader (pre-computed fbank, bucketing sampler, SpecAugment). Then:

- ``data``: seconds per batch spent waiting for the DataLoader (its worker count as configured);
- per variant (``fp32``, ``bf16`` autocast, ``compile`` = ``torch.compile`` (inductor) in fp32,
  ``compile+bf16``): forward + backward + optimiser step on the same cached batches, median seconds per
  step after warm-up steps (compilation happens there), and audio seconds per second.

Usage (from the repository root; the data comes from egs/synth/ASR)::

    cd egs/synth/ASR
    python ../../benchmarks/bench_train_step.py --config conf/zipformer_ctc_s.yaml \
        --config conf/conformer_ctc_s_60min.yaml --threads 2 --steps 8

Ratios between variants of one run are what to read: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402


def build(config: str):
    from asr_kd.bin.train import build_data, resolve_model_config
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.training.asr_task import AsrLossFn
    from asr_kd.training.config import load_config
    from asr_kd.training.optim import build_optimizer

    cfg = load_config(config, [])
    data_cfg = dict(cfg.get("data") or {})
    tokenizer = Tokenizer.from_dir(data_cfg.get("lang_dir", "data/lang_bpe_500"))
    cfg["model"] = resolve_model_config(cfg.get("model") or {}, tokenizer, int(data_cfg.get("num_mel_bins", 80)))
    torch.manual_seed(0)
    model = build_asr_model(cfg["model"])
    train_dl, _, _ = build_data(data_cfg, tokenizer, model.encoder, 0)
    opt = build_optimizer(list(model.named_parameters()), cfg.get("optim") or {})
    loss_fn = AsrLossFn(**{k: v for k, v in (cfg.get("loss") or {}).items()})
    return model, train_dl, opt, loss_fn


def time_data(dl, n: int) -> tuple[float, list]:
    it = iter(dl)
    batches, waits = [], []
    next(it)  # worker start-up
    for _ in range(n):
        t = time.perf_counter()
        b = next(it)
        waits.append(time.perf_counter() - t)
        batches.append(b)
    return statistics.median(waits), batches


def time_variant(model, opt, loss_fn, batches, *, bf16: bool, compiled: bool, warmup: int) -> tuple[float, float]:
    m = torch.compile(model) if compiled else model
    m.train()
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    times, audio = [], []
    for i, batch in enumerate(batches):
        t = time.perf_counter()
        with ctx():
            out = loss_fn(m, batch, i)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        if i >= warmup:
            times.append(dt)
            audio.append(float(batch["feature_lens"].sum()) * 0.01)
    med = statistics.median(times)
    return med, statistics.median(audio) / med


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (after warm-up)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", default="fp32,bf16,compile,compile+bf16")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine_description(args.threads)}")
    print("| config | params | variant | s/step (median) | audio s/s | vs fp32 | data wait s/batch | data share |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for config in args.config:
        model, dl, opt, loss_fn = build(config)
        n_params = sum(q.numel() for q in model.parameters())
        wait, batches = time_data(dl, args.warmup + args.steps)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        base = None
        for variant in args.variants.split(","):
            model.load_state_dict(state)
            med, aps = time_variant(
                model, opt, loss_fn, batches, bf16="bf16" in variant, compiled="compile" in variant, warmup=args.warmup
            )
            base = base or med
            print(
                f"| {Path(config).name} | {n_params / 1e6:.2f}M | {variant} | {med:.3f} | {aps:.1f} | "
                f"{base / med:.2f}x | {wait:.3f} | {wait / (wait + med):.1%} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
