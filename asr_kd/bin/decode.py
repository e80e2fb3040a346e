"""Decode a test split with a trained model; write icefall-style recogs/errs files, print WER, CER, RTF.

Usage::

    cd egs/synth/ASR
    python -m asr_kd.bin.decode --exp-dir exp/conformer_ctc_xs --method ctc-greedy --split test
    python -m asr_kd.bin.decode --exp-dir exp/conformer_ctc_s --checkpoint exp/conformer_ctc_s/averaged.pt \\
        --method ctc-prefix-beam --beam 10 --split dev --split test
    # several methods in one run (the encoder output is recomputed per method: RTFs stay comparable)
    python -m asr_kd.bin.decode --exp-dir exp/aed --method attention-beam --method attention-rescoring
    # the self-KD sub-model: CTC greedy from the inter-CTC head at layer 6
    python -m asr_kd.bin.decode --exp-dir exp/self_kd --method ctc-greedy --ctc-layer 6
    # transducer modified beam search with a BPE-token 5-gram (shallow fusion)
    python -m asr_kd.bin.decode --exp-dir pretrained/zipformer_transducer_s --method modified-beam-lm \\
        --lm-arpa data/lang_bpe_128_lm/tokens_5gram.arpa --lm-scale 0.5 --res-dir $PWD/decode_lm
    # CTC HLG lattices (icefall's methods): 1best on the 3-gram HLG, n-best and whole-lattice rescoring with
    # the 4-gram (several --rescore-lm-scale values: nbest-rescoring scores them all in one pass)
    python -m asr_kd.bin.decode --exp-dir exp/zipformer_ctc_s --lang-dir data/lang_bpe_128_lm \
        --arpa data/lang_bpe_128_lm/G_3gram.arpa --keep-epsilon --method 1best --method nbest-rescoring \
        --method whole-lattice-rescoring --rescore-arpa data/lang_bpe_128_lm/G_4gram.arpa \
        --rescore-lm-scale 0.5 --rescore-lm-scale 1.0 --blank-penalty 0.5
    # the same n-best rescoring on the exact 10-best instead of icefall's sampled n-best (100 paths, scale 0.5)
    python -m asr_kd.bin.decode --exp-dir exp/zipformer_ctc_s --lang-dir data/lang_bpe_128_lm \
        --arpa data/lang_bpe_128_lm/G_3gram.arpa --keep-epsilon --method nbest-rescoring \
        --rescore-arpa data/lang_bpe_128_lm/G_4gram.arpa --nbest-mode exact --num-paths 10
    # true streaming (chunk by chunk with caches) of a causal transducer: 160 ms chunks, 640 ms left context
    python -m asr_kd.bin.decode --exp-dir exp/streaming_student --method streaming-greedy \
        --method streaming-modified-beam --chunk-size 4 --left-context 4

Data settings (manifest dir, prefix, lang dir, fbank bins) come from the config stored in the
checkpoint unless given here. The lang dir must be the model's: its BPE size must equal the model's
output size, and its pieces the ones the checkpoint stores (``meta["tokens"]``, written by the train
CLI); otherwise decoding stops at once with an error naming both sizes and both lang dirs.
``--exp-dir`` may be a pretrained-model bundle (``--exp-dir pretrained/<name>``, see
``asr_kd.bin.export``): the model and the lang dir are the bundle's; pass an absolute ``--res-dir``
to keep the results out of the bundle. Results go to ``<exp-dir>/<res-dir>``:
``recogs-<split>-<suffix>.txt``, ``errs-<split>-<suffix>.txt`` and ``wer-summary-<split>.txt``, where
``<suffix>`` names the method and its options (e.g. ``ctc-prefix-beam_beam-10``). A JSON line per
(split, method) with WER, CER, insertion+deletion rate and RTF is appended to
``<res-dir>/results.jsonl`` (the experiment runners read it).

Bad test cuts (unreadable audio, an empty transcript; ``asr_kd.data.validation``): with
``--on-error raise`` (default) decoding stops at the first one with an error naming it; with
``--on-error skip`` (``data.on_error: skip`` of training) the cut is skipped and scored **as
deletions**: it stays in the WER with an empty hypothesis, so each of its reference words is a deleted
word (WER is never flattered by skipping). Skipped cuts are listed in a ``SKIPPED CUTS:`` section of
the errs file, counted in the printed summary line and in ``results.jsonl`` (``num_skipped``,
``skipped_as: deletions``).

Log lines are appended to ``<res-dir>/decode.log`` as well. In a terminal a progress bar (cuts decoded)
is drawn and the console shows only warnings; under ``CI=true``, ``ASR_KD_PROGRESS=0`` or without a
terminal there is no bar and the console shows the INFO lines (:mod:`asr_kd.utils.progress`).

RTF = decoding wall time (features, encoder and search; data loading excluded) / audio seconds.

Streaming methods (``streaming-greedy``, ``streaming-modified-beam``, :mod:`asr_kd.decoding.streaming`)
feed each batch's features chunk by chunk (``--feed-frames`` per call, default one chunk: 4 x
``--chunk-size``) through the causal encoder's caches and a search state carried across chunks; their
``results.jsonl`` rows add the per-chunk compute latency (``chunk_ms_mean`` / ``_p50`` / ``_p95``, a
batch of streams per call) and ``compute_rtf``. At start-up they refuse an encoder that cannot stream
(``causal: false``) or a chunk size / left context its subsampling cannot use, and measure on the first
utterances of the first split how far streaming is from full-context decoding: a WARNING with that
mismatch when the checkpoint's config shows no chunked training (``training.chunk``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from asr_kd.bin._common import cut_manifests
from asr_kd.decoding.lattice_methods import NBEST_MODES
from asr_kd.decoding.search import (
    PreparedDecoding,
    SearchOptions,
    get_decoding_method,
    list_decoding_methods,
    prepare_decoding,
)
from asr_kd.decoding.wer import measure_rtf, result_path, write_errs, write_recogs, write_wer_summary
from asr_kd.training.asr_task import BUNDLE_MODEL, load_asr_model
from asr_kd.training.checkpoint import find_latest
from asr_kd.utils import progress

log = logging.getLogger("asr_kd.bin.decode")


#: The :class:`~asr_kd.decoding.search.SearchOptions` fields set straight from the flag of the same name
#: (``--num-paths`` -> ``num_paths``), with their ``add_argument`` keywords; each flag's default is the field's.
#: The parser (:func:`add_search_flags`) and the options (:func:`search_options`) are both built from it.
SEARCH_FLAGS: dict[str, dict] = {
    "arpa": dict(
        type=Path,
        help="ctc-hlg: ARPA LM for G (default: HL, no LM); HLG = H o det(L o G) is built once and cached in the "
        "lang dir (asr_kd.bin.compile_hlg builds it ahead)",
    ),
    "keep_epsilon": dict(
        action="store_true",
        help="ctc-hlg: keep LG's eps:eps arcs (G's backoffs): a far smaller graph than icefall's epsilon-free one",
    ),
    "ctc_topo": dict(
        choices=("standard", "modified", "auto"),
        help="ctc-hlg, lattice methods, ctc-decoding: H's CTC topology; modified has O(V) arcs and also reads a run "
        "'a a' as two tokens; auto = modified above 1000 tokens (asr_kd.decoding.wfst.build_ctc_topo) [%(default)s]",
    ),
    "lm_scale": dict(type=float, help="ctc-hlg: G weight scale; modified-beam-lm: the token LM's weight"),
    "lm_arpa": dict(
        type=Path,
        help="modified-beam-lm: token-level ARPA for shallow fusion (its words are the model's tokens: "
        "asr_kd.bin.train_lm --bpe-model, local/prepare_lm.sh --token-orders)",
    ),
    "blank_penalty": dict(
        type=float,
        help="subtracted from the blank logit (transducer methods) or the blank log-prob (CTC methods) [%(default)s]",
    ),
    "rescore_arpa": dict(
        type=Path,
        help="nbest-rescoring, whole-lattice-rescoring, attention-decoder-rescoring-with-ngram: the higher-order "
        "word LM (e.g. G_4gram.arpa of the lang dir)",
    ),
    "num_paths": dict(
        type=int,
        help="lattice n-best methods: paths of the n-best (sampled: the best + num-paths - 1 draws; exact: the "
        "num-paths best distinct word sequences) [%(default)s, icefall's]",
    ),
    "nbest_mode": dict(
        choices=NBEST_MODES,
        help="lattice n-best methods: icefall's sampled n-best (draws from the lattice posterior, deduplicated by "
        "words, the 1-best always kept) or the exact n-best [%(default)s]",
    ),
    "nbest_scale": dict(
        type=float,
        help="sampled n-best: scale of the lattice scores before drawing (< 1: flatter, more distinct paths) "
        "[%(default)s]",
    ),
    "nbest_seed": dict(
        type=int,
        help="sampled n-best on kaldi-decoder lattices: seed of the draws (k2's random_paths is deterministic) "
        "[%(default)s]",
    ),
    "lattice_beam": dict(type=float, help="lattice pruning beam of the lattice methods [%(default)s]"),
    "attention_scale": dict(type=float, help="attention-decoder-rescoring-with-ngram [%(default)s]"),
    "lattice_backend": dict(
        choices=["auto", "kaldi", "k2"],
        help="lattice methods: kaldi-decoder lattices (whole-lattice rescoring by OpenFst compose) or k2's "
        "(get_lattice; k2.compose) [%(default)s; auto: k2 when it imports]",
    ),
    "chunk_size": dict(
        type=int,
        help="streaming-*: encoder frames per chunk (4 = 160 ms at 25 Hz; the encoder's subsampling must allow it)",
    ),
    "left_context": dict(type=int, help="streaming-*: visible chunks to the left [%(default)s: all]"),
    "feed_frames": dict(type=int, help="streaming-*: feature frames per call [one chunk's: 4 x chunk]"),
    "search_beam": dict(type=float, help="ctc-hlg: decoder beam (cost units)"),
    "acoustic_scale": dict(type=float, help="ctc-hlg: scale of the CTC log-probs"),
    "ctc_weight": dict(type=float),
    "ctc_layer": dict(type=int, help="decode CTC methods from this inter-CTC layer"),
    "p_thr": dict(type=float, help="mask-ctc confidence threshold"),
    "iterations": dict(
        type=int,
        help="mask-ctc / mask-ctc-beam K: masks filled per iteration with --mask-schedule paper "
        "(ceil(N/K) iterations), the number of iterations with espnet [%(default)s]",
    ),
    "mask_schedule": dict(
        choices=["paper", "espnet"],
        help="Mask-CTC fill schedule (asr_kd.decoding.mask_ctc.mask_fill_schedule) [%(default)s]",
    ),
    "max_sym_per_frame": dict(type=int),
    "length_penalty": dict(type=float),
}


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """The search-option flags: one per :data:`SEARCH_FLAGS` entry (default: the ``SearchOptions`` field's),
    and those :func:`search_options` converts (``--beam``, ``--no-decoder-cache``, ``--rescore-lm-scale``)."""
    defaults = {f.name: f.default for f in fields(SearchOptions)}
    g = p.add_argument_group("search options (asr_kd.decoding.search.SearchOptions)")
    for name, kwargs in SEARCH_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), default=defaults[name], **kwargs)
    g.add_argument("--beam", type=int, default=None, help="beam size [10; 4 for modified-beam]")
    g.add_argument(
        "--no-decoder-cache",
        action="store_true",
        help="modified-beam*: recompute the predictor output per hypothesis and frame (same results; for timing)",
    )
    g.add_argument(
        "--rescore-lm-scale",
        type=float,
        action="append",
        help="repeatable [1.0]: weight of the rescoring LM; nbest-rescoring scores every value in one pass, "
        "the other methods decode once per value",
    )


def search_options(args: argparse.Namespace, method: str, lang_dir: Path) -> SearchOptions:
    """The :class:`SearchOptions` of ``method`` from the parsed flags: the :data:`SEARCH_FLAGS` fields as
    given, the beam (the method's default when ``--beam`` is not given), the decoder cache, the first
    ``--rescore-lm-scale`` (:func:`method_variants` runs the others) and the lang dir."""
    return SearchOptions(
        **{name: getattr(args, name) for name in SEARCH_FLAGS},
        beam=args.beam or get_decoding_method(method).default_beam,
        decoder_cache=not args.no_decoder_cache,
        rescore_lm_scale=(args.rescore_lm_scale or [1.0])[0],
        lang_dir=lang_dir,
    )


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, help="default: <exp-dir>/averaged.pt if present, else the latest")
    p.add_argument(
        "--method",
        action="append",
        choices=list_decoding_methods(),
        help="repeatable [ctc-greedy] (asr_kd.decoding.search registry); ctc-hlg = WFST decoding "
        "of the CTC output with the lang dir's lexicon (HL) and, with --arpa, an n-gram LM (HLG)",
    )
    p.add_argument("--split", action="append", help="repeatable [test]")
    p.add_argument("--max-duration", type=float, default=100.0, help="seconds of audio per batch")
    p.add_argument("--manifest-dir", type=Path, help="override the checkpoint config's data.manifest_dir")
    p.add_argument("--prefix", help="override data.prefix")
    p.add_argument("--lang-dir", type=Path, help="override data.lang_dir")
    p.add_argument("--res-dir", default="decode", help="relative to --exp-dir")
    p.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="a bad test cut: stop with an error naming it, or skip it and score it as deletions [raise]",
    )
    add_search_flags(p)
    return p


def resolve_checkpoint(exp_dir: Path, checkpoint: Path | None) -> Path:
    """The model to decode: ``checkpoint`` (a file or a bundle directory), else ``<exp-dir>/averaged.pt``,
    else ``exp_dir`` itself when it is a pretrained-model bundle (``asr_kd.bin.export --bundle``: its
    ``model.pt`` and lang files are read by ``load_asr_model``), else the latest checkpoint."""
    if checkpoint is not None:
        if not (checkpoint.is_file() or checkpoint.is_dir()):
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
        return checkpoint
    avg = exp_dir / "averaged.pt"
    if avg.is_file():
        return avg
    if (exp_dir / BUNDLE_MODEL).is_file() or (exp_dir / "bpe.model").is_file():
        return exp_dir  # a bundle (an exp dir has no bpe.model); load_asr_model names a missing model.pt
    latest = find_latest(exp_dir)
    if latest is None:
        raise FileNotFoundError(f"no averaged.pt or checkpoint in {exp_dir}: train first")
    return latest


def method_suffix(method: str, opts: SearchOptions) -> str:
    """Result-file suffix of ``method`` with ``opts`` (e.g. ``ctc-prefix-beam_beam-10``)."""
    return get_decoding_method(method).suffix(opts)


def decoding_data_module(data_cfg, max_duration: float):
    """The test-time ``AsrDataModule`` of a model's ``data`` config section (fbank bins and backend of
    training, no shuffling, no workers): shared by this CLI and the benchmarks."""
    from asr_kd.data import AsrDataConfig, AsrDataModule

    data_cfg = dict(data_cfg or {})
    return AsrDataModule(
        AsrDataConfig(
            max_duration=max_duration,
            num_workers=0,
            shuffle=False,
            num_mel_bins=int(data_cfg.get("num_mel_bins", 80)),
            fbank_backend=data_cfg.get("fbank_backend", "auto"),
        ),
        tokenizer=None,
    )


def decode_split(
    decoder: PreparedDecoding,
    loader,
    tokenizer,
    device: torch.device,
    refs: dict[str, list[str]],
    bar=None,
    lm_scales: list[float] | None = None,
):
    """Returns ``(results [(cut_id, ref, hyp)], skipped [(cut_id, reason)], decode_seconds, audio_seconds)``.

    A cut the loader skipped (``batch["skipped"]``, ``--on-error skip``) is in ``results`` with its
    reference from ``refs`` (cut id -> words) and an empty hypothesis: scored as deletions. ``bar``: a
    progress bar advanced by the cuts of each batch. ``lm_scales`` (``nbest-rescoring``): one search per
    batch, the best of each n-best for every rescoring LM scale
    (:func:`asr_kd.decoding.lattice.best_for_lm_scales`); ``results`` is then ``{lm_scale: results}``."""
    from asr_kd.decoding.lattice import best_for_lm_scales

    keys = [float(v) for v in lm_scales] if lm_scales else [None]
    results: dict = {k: [] for k in keys}
    skipped, seconds, audio = [], 0.0, 0.0
    for batch in loader:
        if bar is not None:
            bar.update(len(batch["supervisions"]["cut_id"]) + len(batch.get("skipped") or ()))
        for item in batch.get("skipped") or ():
            skipped.append((item["cut_id"], item["reason"]))
            for k in keys:
                results[k].append((item["cut_id"], refs.get(item["cut_id"], []), []))
        sup = batch["supervisions"]
        x, x_lens = batch["inputs"].to(device), batch["feature_lens"].to(device)
        if x.shape[0] == 0:
            continue
        t0 = time.perf_counter()
        if lm_scales:
            with torch.no_grad():  # as in decoder.decode: the encoder builds no autograd graph
                enc_out = decoder.model.encode(x, x_lens)
            best = best_for_lm_scales(decoder.search(enc_out), keys)
            words = {k: decoder.words(best[k], tokenizer) for k in keys}
        else:
            words = {None: decoder.words(decoder.decode(x, x_lens), tokenizer)}
        seconds += time.perf_counter() - t0
        audio += sum(c.duration for c in batch["cuts"])
        for k in keys:
            for cut_id, ref, hyp in zip(sup["cut_id"], sup["text"], words[k]):
                results[k].append((cut_id, ref.split(), hyp))
    return (results if lm_scales else results[None]), skipped, seconds, audio


def reference_words(cuts) -> dict[str, list[str]]:
    """``{cut_id: reference words}`` of a test CutSet (``[]`` for a cut without supervision)."""
    from asr_kd.data.validation import BadCutError, cut_text

    refs = {}
    for cut in cuts:
        try:
            refs[cut.id] = cut_text(cut).split()
        except BadCutError:
            refs[cut.id] = []
    return refs


def method_variants(methods: list[str], args, lang_dir: Path):
    """``(method, SearchOptions, lm_scales)`` per decoding run: one per method, and per ``--rescore-lm-scale``
    for the methods that use the rescoring LM (``nbest-rescoring``: one run scoring all of them,
    ``lm_scales`` set)."""
    scales = args.rescore_lm_scale or [1.0]
    for method in methods:
        m = get_decoding_method(method)
        opts = search_options(args, method, lang_dir)
        if not (getattr(m, "uses_rescore_lm", False) and args.rescore_arpa is not None):
            yield method, opts, None
        elif getattr(m, "lm_scales_in_one_pass", False):
            yield method, opts, scales
        else:
            for s in scales:
                yield method, replace(opts, rescore_lm_scale=s), None


def record_results(
    res_dir: Path, split: str, suffix: str, results, skipped, rtf, audio, ckpt, skipping: bool, extra=None
):
    """Write the recogs / errs files and the ``results.jsonl`` row of one decoding run, print its summary
    line; returns the WER. ``extra``: more fields of the row (the streaming methods' chunk latency)."""
    write_recogs(result_path(res_dir, "recogs", split, suffix), results)
    wer = write_errs(result_path(res_dir, "errs", split, suffix), results, skipped=skipped)
    row = {
        "split": split,
        "method": suffix,
        "checkpoint": str(ckpt),
        "wer": round(wer.wer, 2),
        "cer": round(wer.cer, 2),
        "ins_del": round(100.0 * (wer.ins + wer.dels) / max(wer.num_ref_words, 1), 2),
        "num_utts": len(results),
        "num_skipped": len(skipped),
        "skipped_as": "deletions",
        "num_words": wer.num_ref_words,
        "rtf": round(rtf, 5),
        "audio_hours": round(audio / 3600, 3),
        "threads": torch.get_num_threads(),
        **(extra or {}),
    }
    with open(res_dir / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(
        f"{split} {suffix}: WER {wer.wer:.2f}% CER {wer.cer:.2f}% "
        f"(ins {wer.ins} del {wer.dels} sub {wer.subs} / {wer.num_ref_words} words, "
        f"{len(results)} utts"
        + (f", {len(skipped)} skipped cuts scored as deletions" if skipping else "")
        + f") RTF {rtf:.4f}"
        + (
            f"; per chunk {extra['chunk_ms_mean']:.1f} ms mean, {extra['chunk_ms_p50']:.1f} p50, "
            f"{extra['chunk_ms_p95']:.1f} p95 ({extra['num_chunks']} chunks, "
            f"~{extra['streams_mean']:g} streams per call)"
            if extra and "chunk_ms_mean" in extra
            else ""
        ),
        flush=True,
    )
    return wer.wer


def check_streaming_mismatch(decoder: PreparedDecoding, config, loader, device: torch.device, num_utts: int = 4):
    """Streaming methods: measure on the first ``num_utts`` utterances of ``loader`` how far streaming is
    from full-context decoding, and log it (a WARNING for a model the config shows not trained with chunks;
    :func:`asr_kd.decoding.streaming.warn_if_not_trained_for_streaming`)."""
    from asr_kd.decoding.streaming import warn_if_not_trained_for_streaming

    for batch in loader:
        x, x_lens = batch["inputs"][:num_utts].to(device), batch["feature_lens"][:num_utts].to(device)
        if x.shape[0] == 0:
            continue
        opts = decoder.opts
        warn_if_not_trained_for_streaming(
            decoder.model,
            config,
            x,
            x_lens,
            chunk_size=opts.chunk_size,
            left_context=opts.left_context,
            who=f"decoding method {decoder.name!r}",
        )
        return


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    bar_on = progress.progress_enabled()
    progress.basic_logging(bar_on=bar_on)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    from lhotse import CutSet

    from asr_kd.data.tokenizer import Tokenizer, check_vocab

    methods = args.method or ["ctc-greedy"]
    splits = args.split or ["test"]
    ckpt = resolve_checkpoint(args.exp_dir, args.checkpoint)
    device = torch.device(args.device)
    model, config = load_asr_model(ckpt, device=device)
    data_cfg = dict(config.get("data") or {})
    manifest_dir = Path(args.manifest_dir or data_cfg.get("manifest_dir", "data/manifests"))
    prefix = args.prefix or data_cfg.get("prefix", "synth")
    paths = cut_manifests(manifest_dir, prefix, splits)  # all of them before anything is decoded or written
    lang_dir = Path(args.lang_dir or data_cfg.get("lang_dir", "data/lang_bpe_500"))
    tokenizer = Tokenizer.from_dir(lang_dir)
    check_vocab(  # a lang dir of another vocabulary would decode garbage (or IndexError): refuse it
        tokenizer,
        int(model.vocab_size),
        getattr(model, "trained_tokens", None),
        lang_dir=lang_dir,
        model=ckpt,
        model_lang_dir=data_cfg.get("lang_dir"),
    )
    dm = decoding_data_module(data_cfg, args.max_duration)
    res_dir = args.exp_dir / args.res_dir
    res_dir.mkdir(parents=True, exist_ok=True)
    progress.add_log_file(res_dir / "decode.log")
    log.info(
        "model %s (%.2fM params), methods %s, splits %s",
        ckpt,
        sum(p.numel() for p in model.parameters()) / 1e6,
        methods,
        splits,
    )

    for split, path in paths.items():
        cuts = CutSet.from_file(path)
        refs = reference_words(cuts) if args.on_error == "skip" else {}
        summary = {}
        for method, opts, lm_scales in method_variants(methods, args, lang_dir):
            t0 = time.perf_counter()
            decoder = prepare_decoding(model, method, opts)  # checks the heads; builds e.g. HLG once
            if decoder.method.from_features and split == splits[0]:  # streaming: what it costs vs full context
                check_streaming_mismatch(decoder, config, dm.test_dataloader(cuts, on_error=args.on_error), device)
            if decoder.state is not None:
                log.info("prepared %s in %.1f s", method, time.perf_counter() - t0)
                info = getattr(decoder.state, "info", None)
                if info is not None:  # ctc-hlg: the graph's size and where it came from
                    log.info(
                        "%s graph %s: %d states, %d arcs, %s",
                        method, info.path, info.states, info.arcs,
                        "loaded from the cache" if info.cached else f"built in {info.build_seconds:.1f} s",
                    )  # fmt: skip
            suffix = method_suffix(method, opts)
            loader = dm.test_dataloader(cuts, on_error=args.on_error)
            desc = f"decode {split} {suffix}"
            with progress.progress_bar(total=len(cuts), desc=desc, unit="cut", enabled=bar_on) as bar:
                results, skipped, seconds, audio = decode_split(
                    decoder, loader, tokenizer, device, refs, bar=bar, lm_scales=lm_scales
                )
            per_suffix = (
                {method_suffix(method, replace(opts, rescore_lm_scale=s)): r for s, r in results.items()}
                if lm_scales
                else {suffix: results}
            )
            rtf = measure_rtf(seconds, audio) if audio > 0 else float("nan")
            summarize = getattr(decoder.state, "summary", None) if decoder.method.from_features else None
            extra = summarize() if summarize is not None else None  # streaming: per-chunk latency
            for suffix, results in per_suffix.items():
                summary[suffix] = record_results(
                    res_dir, split, suffix, results, skipped, rtf, audio, ckpt, args.on_error == "skip", extra
                )
        write_wer_summary(res_dir / f"wer-summary-{split}.txt", summary)
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "decode"))
