"""Streaming transducer decoding: per-chunk compute latency and RTF, chunk by chunk with caches
(:mod:`asr_kd.decoding.streaming`), on a trained causal model or a random preset.

Each utterance (or each group of ``--streams`` utterances, decoded as parallel streams) is fed one chunk
of features per call (``4 * chunk_size`` input frames, the last call flushing the rest); every call's
wall time (encoder + search) is recorded. Reported per (chunk size, search): the chunk's audio length,
per-chunk latency mean / p50 / p95 (ms; a call's time divided by the chunks it emitted), the compute RTF
(total time / audio seconds), and, with ``--check``, whether the tokens equal simulated streaming (the
chunk-masked full forward, then the offline search). With ``--cuts`` also WER / CER.

Usage::

    # a random causal Zipformer "s" transducer (BPE 128), 20 random 5-second utterances, 1 thread
    nice -n 19 .venv/bin/python benchmarks/bench_streaming.py --preset s --chunk-size 4 --chunk-size 8 \\
        --left-context 4 --search greedy --search modified-beam
    # a trained causal model on the test cuts
    nice -n 19 .venv/bin/python benchmarks/bench_streaming.py --model egs/synth/ASR/exp/<streaming row> \\
        --cuts egs/synth/ASR/data/fbank/synth_cuts_test.jsonl.gz --chunk-size 4 --left-context 4 --check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

from asr_kd.decoding.streaming import ChunkStats, check_streaming, simulate_streaming, stream_decode  # noqa: E402


def _model(args):
    """``(model, tokenizer or None, data config)``: the checkpoint / bundle, or a random causal preset."""
    if args.model is not None:
        from asr_kd.data.tokenizer import Tokenizer
        from asr_kd.training.asr_task import load_asr_model
        from asr_kd.training.checkpoint import find_latest

        path = args.model
        if path.is_dir() and not (path / "model.pt").is_file():
            avg = path / "averaged.pt"
            path = avg if avg.is_file() else find_latest(path)
        model, config = load_asr_model(path)
        lang = args.lang_dir or (
            args.model if (args.model / "bpe.model").is_file() else Path(config["data"]["lang_dir"])
        )
        if not (lang / "bpe.model").is_file():
            sys.exit(
                f"bench_streaming.py: no bpe.model in the lang dir {lang} (the model's data.lang_dir, relative to the "
                "directory the model was trained from, e.g. egs/synth/ASR): run from there or pass --lang-dir"
            )
        return model.eval(), Tokenizer.from_dir(lang), config.get("data") or {}
    from asr_kd.models.asr_model import build_asr_model

    torch.manual_seed(0)
    enc = {"type": args.encoder, "preset": args.preset, "input_dim": 80, "causal": True}
    model = build_asr_model({"vocab_size": args.vocab_size, "encoder": enc, "transducer": {}})
    return model.eval(), None, {}


def _utterances(args, data_cfg):
    """``[(cut_id, text or None, features (T, F))]``."""
    if args.cuts is None:
        g = torch.Generator().manual_seed(1)
        frames = int(args.seconds * 100)
        return [(f"rand-{i}", None, torch.randn(frames, 80, generator=g)) for i in range(args.num)]
    from lhotse import CutSet

    from asr_kd.bin.decode import decoding_data_module

    cuts = CutSet.from_file(args.cuts)
    if args.num:
        cuts = cuts.subset(first=args.num)
    utts = []
    for b in decoding_data_module(data_cfg, 100.0).test_dataloader(cuts):
        for i, (cid, text) in enumerate(zip(b["supervisions"]["cut_id"], b["supervisions"]["text"])):
            utts.append((cid, text, b["inputs"][i, : int(b["feature_lens"][i])]))
    return utts


def _pad(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([f.size(0) for f in feats])
    x = torch.zeros(len(feats), int(lens.max()), feats[0].size(1))
    for i, f in enumerate(feats):
        x[i, : f.size(0)] = f
    return x, lens


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="checkpoint, exp dir or bundle of a causal transducer")
    p.add_argument("--preset", default="s", help="without --model: a random causal preset of --encoder [s]")
    p.add_argument("--encoder", default="zipformer", choices=["zipformer", "conformer"])
    p.add_argument("--vocab-size", type=int, default=128, help="random model's vocabulary [128]")
    p.add_argument("--lang-dir", type=Path, default=None, help="with --model: override its data.lang_dir")
    p.add_argument("--cuts", type=Path, default=None, help="test cuts (default: random features)")
    p.add_argument("--num", type=int, default=20, help="utterances (random: how many; cuts: the first N) [20]")
    p.add_argument("--seconds", type=float, default=5.0, help="random utterances' length [5]")
    p.add_argument("--chunk-size", type=int, action="append", help="repeatable, encoder frames [4]")
    p.add_argument("--left-context", type=int, default=4, help="chunks [4 = 640 ms with 160 ms chunks]")
    p.add_argument("--search", action="append", choices=["greedy", "modified-beam"], help="repeatable [greedy]")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--streams", type=int, default=1, help="utterances decoded as parallel streams [1]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--check", action="store_true", help="compare the tokens with simulated streaming")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, data_cfg = _model(args)
    chunks, searches = args.chunk_size or [4], args.search or ["greedy"]
    for c in chunks:  # bad settings fail before any timing
        try:
            check_streaming(model.encoder, c, args.left_context, who="bench_streaming")
        except ValueError as e:  # MissingCapabilityError too
            print(f"error: {e}", file=sys.stderr)
            return 2
    utts = _utterances(args, data_cfg)
    audio = sum(f.size(0) for _, _, f in utts) / 100.0
    params = sum(q.numel() for q in model.parameters()) / 1e6
    print(f"machine: {machine_description(args.threads)}")
    print(f"model: {args.model or f'random causal {args.encoder} {args.preset!r}'} ({params:.2f}M parameters)")
    print(f"{len(utts)} utterances, {audio:.1f} s of audio, {args.streams} stream(s) per decoder", flush=True)
    ms_per_frame = 1000 * model.encoder.subsampling_factor // 100
    rows = []
    for c in chunks:
        for search in searches:
            opts = {"beam": args.beam} if search == "modified-beam" else {}
            stats, same, results = ChunkStats(), True, []
            # warm-up: one utterance (first-call allocations)
            x, lens = _pad([utts[0][2]])
            stream_decode(model.encoder, model.transducer, x, lens, chunk_size=c, left_context=args.left_context,
                          search=search, **opts)  # fmt: skip
            wall = 0.0
            for g in range(0, len(utts), args.streams):
                group = utts[g : g + args.streams]
                x, lens = _pad([f for _, _, f in group])
                kw = dict(chunk_size=c, left_context=args.left_context, search=search, **opts)
                t0 = time.perf_counter()
                hyps = stream_decode(model.encoder, model.transducer, x, lens, stats=stats, **kw)
                wall += time.perf_counter() - t0
                best = [h if search == "greedy" else h.best for h in hyps]
                if args.check:
                    ref = simulate_streaming(model.encoder, model.transducer, x, lens, **kw)
                    same &= best == [h if search == "greedy" else h.best for h in ref]
                if tok is not None:
                    for (cid, text, _), b in zip(group, best):
                        results.append((cid, (text or "").split(), tok.decode(b).split()))
            s = stats.summary()
            row = {
                "chunk_size": c,
                "chunk_ms": c * ms_per_frame,
                "left_context": args.left_context,
                "search": search,
                "streams": args.streams,
                "threads": args.threads,
                "chunk_latency_ms_mean": s.get("chunk_ms_mean"),
                "chunk_latency_ms_p50": s.get("chunk_ms_p50"),
                "chunk_latency_ms_p95": s.get("chunk_ms_p95"),
                "num_chunks": s["num_chunks"],
                "rtf": round(s["compute_s"] / audio, 5),
                "wall_rtf": round(wall / audio, 5),
            }
            if args.check:
                row["same_as_simulated"] = same
            if results and any(r[1] for r in results):
                from asr_kd.decoding.wer import compute_wer

                wer = compute_wer(results)
                row["wer"], row["cer"] = round(wer.wer, 2), round(wer.cer, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| chunk (ms) | left (chunks) | search | streams | latency/chunk mean (ms) | p50 | p95 | RTF |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['chunk_ms']} | {r['left_context']} | {r['search']} | {r['streams']} | "
            f"{r['chunk_latency_ms_mean']:.2f} | {r['chunk_latency_ms_p50']:.2f} | "
            f"{r['chunk_latency_ms_p95']:.2f} | {r['rtf']:.4f} |"
        )
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
