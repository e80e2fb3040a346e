"""Search time of transducer modified beam search on a trained model: predictor cache on/off, token n-gram
shallow fusion at several LM scales.

The test cuts are encoded once; then each configuration runs ``modified_beam_search`` over the same
encoder outputs, so the times are the search alone (the encoder is the same for all). Reported per
configuration: search seconds (the fastest of ``--repeat`` runs), search RTF (search seconds / audio
seconds), predictor calls and rows computed, WER and CER of the best hypotheses, and whether the
hypotheses equal the uncached search's.

Usage::

    nice -n 19 .venv/bin/python benchmarks/bench_transducer_beam.py \\
        --model egs/synth/ASR/pretrained/zipformer_transducer_s \\
        --cuts egs/synth/ASR/data/fbank/synth_cuts_test.jsonl.gz \\
        --lm-arpa egs/synth/ASR/data/lang_bpe_128_lm/tokens_5gram.arpa --lm-scale 0.2 --lm-scale 0.3 --lm-scale 0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_kd.bin.decode import decoding_data_module  # noqa: E402
from asr_kd.data.tokenizer import Tokenizer  # noqa: E402
from asr_kd.decoding.lm_fusion import TokenNgramLm  # noqa: E402
from asr_kd.decoding.transducer import modified_beam_search  # noqa: E402
from asr_kd.decoding.wer import compute_wer  # noqa: E402
from asr_kd.training.asr_task import load_asr_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a bundle dir or checkpoint with a transducer head")
    p.add_argument("--cuts", type=Path, required=True)
    p.add_argument("--num", type=int, default=None, help="first N cuts (default: all)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lm-arpa", type=Path, default=None, help="token-level ARPA (train_lm --bpe-model)")
    p.add_argument("--lm-scale", type=float, action="append", default=[])
    p.add_argument("--blank-penalty", type=float, default=0.0)
    p.add_argument("--max-duration", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="time each configuration this many times, keep the fastest")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from lhotse import CutSet

    model, config = load_asr_model(args.model)
    model.eval()
    lang = args.model if args.model.is_dir() else Path(config["data"]["lang_dir"])
    tok = Tokenizer.from_dir(lang)
    cuts = CutSet.from_file(args.cuts)
    if args.num:
        cuts = cuts.subset(first=args.num)
    dm = decoding_data_module(config.get("data"), args.max_duration)
    batches, audio, t0 = [], 0.0, time.perf_counter()
    with torch.no_grad():
        for b in dm.test_dataloader(cuts):
            enc = model.encode(b["inputs"], b["feature_lens"])
            batches.append((enc.out, enc.out_lens, b["supervisions"]["cut_id"], b["supervisions"]["text"]))
            audio += sum(c.duration for c in b["cuts"])
    enc_s = time.perf_counter() - t0
    print(f"{len(cuts)} cuts, {audio:.0f} s of audio; features + encoder {enc_s:.1f} s (RTF {enc_s / audio:.4f})")
    t = model.transducer
    lm = TokenNgramLm.from_files(args.lm_arpa, lang / "tokens.txt") if args.lm_arpa else None
    configs = [("no cache", dict(cache=False)), ("cache", dict(cache=True))]
    configs += [(f"cache + LM {s:g}", dict(cache=True, lm=lm, lm_scale=s)) for s in args.lm_scale if lm]
    rows, ref_hyps = [], None
    for name, kw in configs:
        secs = float("inf")
        for _ in range(args.repeat):
            stats, results, hyps = {}, [], []
            if kw.get("lm") is not None:
                kw["lm"].clear_cache()  # each run computes its own LM rows
            t0 = time.perf_counter()
            for enc, lens, ids, texts in batches:
                res = modified_beam_search(
                    t.predictor, t.joiner, enc, lens, args.beam, blank_penalty=args.blank_penalty, stats=stats, **kw
                )
                for cid, ref, r in zip(ids, texts, res):
                    hyps.append(r.best)
                    results.append((cid, ref.split(), tok.decode(r.best).split()))
            secs = min(secs, time.perf_counter() - t0)
        wer = compute_wer(results)
        ref_hyps = ref_hyps if ref_hyps is not None else hyps
        row = {
            "config": name,
            "search_s": round(secs, 2),
            "search_rtf": round(secs / audio, 5),
            "predictor_calls": stats["predictor_calls"],
            "predictor_rows": stats["predictor_rows"],
            "wer": round(wer.wer, 2),
            "cer": round(wer.cer, 2),
            "same_hyps_as_uncached": hyps == ref_hyps,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
