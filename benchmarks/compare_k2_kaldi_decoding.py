"""k2 against kaldi-decoder: 1-best words of a trained CTC model on a whole test set, same graph, same log-probs.

    .venv/bin/python benchmarks/compare_k2_kaldi_decoding.py \\
        --checkpoint egs/synth/ASR/exp/conformer_ctc_s_60min/averaged.pt \\
        --lang-dir egs/synth/ASR/data/lang_bpe_500 --lm-text egs/synth/ASR/data/text/train.txt --lm-order 3

The CTC log-probs of each test batch are computed once; the same kaldifst graph (``HL = H o det(L)``,
or ``HLG = H o det(L o G)`` with ``--arpa`` / ``--lm-text``, from :func:`asr_kd.decoding.hlg.get_hlg`)
is decoded by :func:`asr_kd.decoding.wfst.wfst_decode` (kaldi-decoder ``FasterDecoder``) and, converted
by :func:`asr_kd.decoding.k2_graph.k2_graph_from_kaldifst`, by :func:`asr_kd.decoding.k2_graph.k2_one_best`
(``k2.intersect_dense_pruned`` + ``shortest_path``). Prints (and writes as JSON with ``--out``): cuts,
cuts whose words differ, the largest total-score difference where the words agree, each decoder's
WER and decode time (RTF), graph build time and size; each difference is listed with both scores
(a better k2 score means kaldi-decoder's beam pruned the better path, and vice versa; equal scores
mean a tie between word sequences).

The graph is cached in ``--cache-dir`` (default: a temporary directory), never in the lang dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint / averaged.pt / bundle dir")
    p.add_argument("--lang-dir", type=Path, required=True, help="tokens.txt, words.txt, lexicon.txt")
    p.add_argument("--cuts", type=Path, default=None, help="test cuts (default: <manifest_dir>/synth_cuts_test)")
    p.add_argument("--arpa", type=Path, default=None, help="ARPA LM for G")
    p.add_argument("--lm-text", type=Path, default=None, help="train a --lm-order Kneser-Ney LM on this text")
    p.add_argument("--lm-order", type=int, default=3)
    p.add_argument("--lm-scale", type=float, default=1.0)
    p.add_argument("--search-beam", type=float, default=16.0, help="kaldi-decoder beam / k2 search_beam")
    p.add_argument("--output-beam", type=float, default=8.0, help="k2 output_beam")
    p.add_argument("--max-active", type=int, default=10000)
    p.add_argument("--max-cuts", type=int, default=None)
    p.add_argument("--max-duration", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from lhotse import CutSet

    from asr_kd.bin.decode import decoding_data_module
    from asr_kd.decoding.hlg import get_hlg
    from asr_kd.decoding.k2_graph import k2_graph_from_kaldifst, k2_one_best
    from asr_kd.decoding.wer import compute_wer
    from asr_kd.decoding.wfst import wfst_decode
    from asr_kd.training.asr_task import load_asr_model

    model, config = load_asr_model(args.checkpoint, device=torch.device("cpu"))
    model.eval()
    data_cfg = dict(config.get("data") or {})
    cuts_path = args.cuts or Path(data_cfg.get("manifest_dir", "data/manifests")) / "synth_cuts_test.jsonl.gz"
    cuts = CutSet.from_file(cuts_path).to_eager()
    if args.max_cuts:
        cuts = cuts.subset(first=args.max_cuts)
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="k2_vs_kaldi_"))
    arpa = args.arpa
    if arpa is None and args.lm_text is not None:
        from asr_kd.lm.ngram import train_ngram, write_arpa

        arpa = cache_dir / f"lm_{args.lm_order}gram.arpa"
        lines = [s for s in Path(args.lm_text).read_text(encoding="utf-8").splitlines() if s.strip()]
        write_arpa(train_ngram(lines, args.lm_order), arpa)
    t0 = time.perf_counter()
    graph, id_to_word, info = get_hlg(args.lang_dir, arpa, lm_scale=args.lm_scale, cache_dir=cache_dir)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    kgraph = k2_graph_from_kaldifst(graph)
    t_convert = time.perf_counter() - t0

    dm = decoding_data_module(data_cfg, args.max_duration)
    rows, secs, audio = [], {"kaldi": 0.0, "k2": 0.0}, 0.0
    with torch.no_grad():
        for batch in dm.test_dataloader(cuts):
            x, x_lens = batch["inputs"], batch["feature_lens"]
            if x.shape[0] == 0:
                continue
            enc = model.encode(x, x_lens)
            lp, lens = model.ctc(enc.out).log_softmax(-1), enc.out_lens
            audio += sum(c.duration for c in batch["cuts"])
            t0 = time.perf_counter()
            ka = wfst_decode(graph, lp, lens, beam=args.search_beam, max_active=args.max_active)
            secs["kaldi"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            kb = k2_one_best(
                kgraph,
                lp,
                lens,
                search_beam=args.search_beam,
                output_beam=args.output_beam,
                max_active_states=args.max_active,
            )
            secs["k2"] += time.perf_counter() - t0
            sup = batch["supervisions"]
            for cut_id, ref, a, b in zip(sup["cut_id"], sup["text"], ka, kb, strict=True):
                rows.append((cut_id, ref.split(), a, b))

    def words(r):
        return [id_to_word[i] for i in r.best] if r.tokens else []

    diffs, max_same_diff = [], 0.0
    for cut_id, _, a, b in rows:
        sa = a.scores[0] if a.scores else float("-inf")
        sb = b.scores[0] if b.scores else float("-inf")
        if words(a) != words(b):
            diffs.append(
                {
                    "cut": cut_id,
                    "kaldi": " ".join(words(a)),
                    "k2": " ".join(words(b)),
                    "kaldi_score": sa,
                    "k2_score": sb,
                }
            )
        elif a.scores and b.scores:
            max_same_diff = max(max_same_diff, abs(sa - sb))
    wer = {
        "kaldi": compute_wer([(c, ref, words(a)) for c, ref, a, _ in rows]).wer,
        "k2": compute_wer([(c, ref, words(b)) for c, ref, _, b in rows]).wer,
    }
    summary = {
        "checkpoint": str(args.checkpoint),
        "graph": info.kind,
        "graph_states": info.states,
        "graph_arcs": info.arcs,
        "graph_build_s": round(t_build, 2),
        "k2_convert_s": round(t_convert, 2),
        "k2_graph_arcs": int(kgraph.num_arcs),
        "lm": str(arpa) if arpa else None,
        "lm_scale": args.lm_scale,
        "search_beam": args.search_beam,
        "cuts": len(rows),
        "cuts_with_different_words": len(diffs),
        "max_abs_score_diff_same_words": max_same_diff,
        "wer": {k: round(v, 2) for k, v in wer.items()},
        "rtf": {k: round(v / max(audio, 1e-9), 5) for k, v in secs.items()},
        "threads": args.threads,
        "differences": diffs,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
