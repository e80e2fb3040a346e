#!/usr/bin/env python3
"""Why does Mask-CTC decoding fail? Two numbers per checkpoint (docs/RESULTS.md, issue 5).

1. The MLM's cross entropy per masked token, with ESPnet-style random masks (seeded) on the first
   ``--num-cuts`` cuts of ``--split``, next to the unigram entropy of those cuts' tokens: an MLM at
   the unigram entropy has not learned to use its context or the acoustics yet.
2. The share of CTC-greedy tokens whose confidence (peak posterior over the token's frames, as in
   Mask-CTC's easy-first decoding) is below ``--p-thr``: these are the tokens easy-first masks.

Usage (from egs/synth/ASR, where the checkpoints' relative data paths resolve)::

    python ../../../scripts/mask_ctc_diagnostics.py exp/ar_nar/nar_m_s900/averaged.pt \\
        exp/ar_nar/nar_m_fkd_s900/averaged.pt --split dev --num-cuts 200
"""

from __future__ import annotations

import argparse
import collections
import math
from pathlib import Path

import torch


def load_cuts(manifest_dir: str, prefix: str, split: str, n: int) -> list:
    from lhotse import load_manifest_lazy

    cuts = []
    for c in load_manifest_lazy(Path(manifest_dir) / f"{prefix}_cuts_{split}.jsonl.gz"):
        cuts.append(c)
        if len(cuts) == n:
            break
    return cuts


def batches(cuts: list, size: int):
    for i in range(0, len(cuts), size):
        cs = cuts[i : i + size]
        feats = [torch.from_numpy(c.load_features()) for c in cs]
        lens = torch.tensor([f.shape[0] for f in feats])
        yield i, cs, torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--num-cuts", type=int, default=200)
    ap.add_argument("--p-thr", type=float, default=0.99)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.decoding.mask_ctc import ctc_greedy_with_confidence
    from asr_kd.decoding.search import SearchOptions, ctc_log_probs
    from asr_kd.training.asr_task import load_asr_model

    for ck in args.checkpoints:
        model, cfg = load_asr_model(ck)
        data = cfg["data"]
        tok = Tokenizer.from_dir(data["lang_dir"])
        cuts = load_cuts(data["manifest_dir"], data.get("prefix", "synth"), args.split, args.num_cuts)
        tokens = [tok.encode(c.supervisions[0].text) for c in cuts]
        counts = collections.Counter(t for seq in tokens for t in seq)
        total = sum(counts.values())
        unigram = -sum(c / total * math.log(c / total) for c in counts.values())
        mlm = masks = 0.0
        confs: list[float] = []
        for i, _, x, lens in batches(cuts, args.batch):
            with torch.no_grad():
                if model.mask_ctc is not None:
                    gen = torch.Generator().manual_seed(args.seed + i)
                    out = model(x, lens, tokens[i : i + args.batch], mask_generator=gen)
                    mlm += float(out["mlm"])
                    masks += int(out["num_masked"])
                enc = model.encode(x, lens)
                _, per_utt = ctc_greedy_with_confidence(
                    ctc_log_probs(model, enc, SearchOptions()), enc.out_lens, model.blank_id
                )
                confs += [c for utt in per_utt for c in utt]
        low = sum(c < args.p_thr for c in confs)
        mlm_txt = f"MLM CE {mlm / masks:.3f} nats/masked token" if masks else "no MLM head"
        print(
            f"{ck}: {mlm_txt} (unigram entropy {unigram:.3f}, {int(masks)} masks); "
            f"{100 * low / max(len(confs), 1):.1f} % of {len(confs)} CTC tokens below p_thr {args.p_thr}"
        )


if __name__ == "__main__":
    main()
