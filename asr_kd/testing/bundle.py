"""Regression check of a pretrained-model bundle (``asr_kd.bin.export --bundle``).

Usage::

    from asr_kd.testing.bundle import check_bundle, find_bundles

    for bundle in find_bundles("egs/synth/ASR/pretrained"):
        hyps, recorded = check_bundle(bundle)
        assert hyps == recorded

:func:`check_bundle` loads the bundle as the standard tools do (``load_asr_model``: the bundle's files
are checked, fp16 weights go into an fp32 model), decodes every ``test_features/utt-<i>.pt`` (loaded
with ``weights_only=True``) one utterance at a time with the greedy method recorded in
``transcripts.txt`` (CTC greedy, or transducer greedy for a transducer), and returns the new
hypotheses beside the recorded ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["check_bundle", "find_bundles"]


def find_bundles(root: str | Path) -> list[Path]:
    """The bundle directories (those with a ``model.pt``) directly under ``root``, sorted by name."""
    from asr_kd.training.asr_task import BUNDLE_MODEL

    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / BUNDLE_MODEL).is_file())


def check_bundle(bundle_dir: str | Path) -> tuple[list[str], list[str]]:
    """``(hyps, recorded)``: greedy hypotheses of the bundle's test features now, and those recorded
    in ``test_features/transcripts.txt`` when it was exported, in the order of that file (each a
    space-joined word string).

    Raises:
        asr_kd.training.asr_task.BundleError: a missing or broken bundle file, a missing or unreadable
            test-feature file, or a ``transcripts.txt`` without rows (each message names the file).
    """
    from asr_kd.bin.export import TEST_FEATURES, TRANSCRIPTS, decode_features, greedy_method, read_transcripts
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.training.asr_task import BundleError, load_asr_model

    bundle_dir = Path(bundle_dir)
    model, config = load_asr_model(bundle_dir)
    transcripts = bundle_dir / TEST_FEATURES / TRANSCRIPTS
    if not transcripts.is_file():
        raise BundleError(f"{transcripts}: missing from the bundle {bundle_dir} (export it with --num-test-features)")
    try:
        header, rows = read_transcripts(transcripts)
    except ValueError as e:
        raise BundleError(str(e)) from e
    if not rows:
        raise BundleError(f"{transcripts}: no test utterances")
    features = []
    for row in rows:
        path = bundle_dir / TEST_FEATURES / row["file"]
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle {bundle_dir} (listed in {transcripts})")
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BundleError(f"{path}: cannot be read ({type(e).__name__}: {e})") from e
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
            raise BundleError(
                f"{path}: expected a (T, F) tensor, got "
                f"{tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__}"
            )
        features.append(feats)
    method = header.get("method") or greedy_method(model)
    tokenizer = Tokenizer.from_dir(config["data"]["lang_dir"])
    hyps = decode_features(model, features, tokenizer, method)
    return hyps, [row["hyp"] for row in rows]
