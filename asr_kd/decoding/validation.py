"""WER of the validation set during training (``training.valid_decode``).

Usage::

    from asr_kd.decoding.validation import ValidationDecoder

    decoder = ValidationDecoder("ctc-greedy", tokenizer)
    decoder.check(model)                                   # ValueError naming a missing head
    trainer = Trainer(..., valid_dl=valid_dl, valid_decoder=decoder)

The trainer calls ``decoder(model, batch)`` for every validation batch (model in eval mode, batch of
:mod:`asr_kd.data.dataset`: ``inputs`` (N, T, F), ``feature_lens`` (N,), ``supervisions.text`` /
``cut_id``) and gets N results ``(cut_id, ref words, hyp words)``; after the last batch
``decoder.score(results)`` gives ``{"wer", "cer"}`` (percent, :func:`asr_kd.decoding.wer.compute_wer`).
Decoding goes through the decoding registry (:func:`asr_kd.decoding.search.prepare_decoding`) with
the method's default options, exactly as ``asr_kd.bin.decode --method <name>`` with no further
options, so the WER logged during training is the one the decode CLI gives for the same checkpoint
and cuts. Cuts the dataset skipped (``batch["skipped"]``) are not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asr_kd.decoding.search import PreparedDecoding, SearchOptions, get_decoding_method, prepare_decoding
from asr_kd.decoding.wer import compute_wer

__all__ = ["ValidationDecoder"]

Result = tuple[str, list[str], list[str]]


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)  # DDP


class ValidationDecoder:
    """Decodes validation batches with a registered method; see the module docstring.

    Args:
        method: a registered decoding method (``ctc-greedy``, ``transducer-greedy``, ...).
        tokenizer: the experiment's :class:`~asr_kd.data.tokenizer.Tokenizer` (token ids -> words).
        lang_dir: the lang dir, for methods that read it (``ctc-hlg``).
    """

    def __init__(self, method: str, tokenizer: Any, lang_dir: str | Path | None = None):
        m = get_decoding_method(method)  # ValueError listing the registered names
        self.method = method
        self.tokenizer = tokenizer
        self.opts = SearchOptions(beam=m.default_beam, lang_dir=lang_dir)
        self._prepared: PreparedDecoding | None = None

    def check(self, model: Any) -> None:
        """Raise ``ValueError`` naming the missing head when ``model`` cannot run the method."""
        get_decoding_method(self.method).check(_unwrap(model), self.opts)

    def _decoder(self, model: Any) -> PreparedDecoding:
        model = _unwrap(model)
        if self._prepared is None or self._prepared.model is not model:
            self._prepared = prepare_decoding(model, self.method, self.opts)
        return self._prepared

    def __call__(self, model: Any, batch: Any) -> list[Result]:
        x, x_lens = batch["inputs"], batch["feature_lens"]
        if x.shape[0] == 0:
            return []
        decoder = self._decoder(model)
        words = decoder.words(decoder.decode(x, x_lens), self.tokenizer)
        sup = batch["supervisions"]
        return [(str(c), ref.split(), list(hyp)) for c, ref, hyp in zip(sup["cut_id"], sup["text"], words)]

    @staticmethod
    def score(results: Sequence[Result]) -> dict[str, float]:
        """``{"wer", "cer"}`` in percent over ``results`` (empty when there are none)."""
        if not results:
            return {}
        wer = compute_wer(results)
        return {"wer": float(wer.wer), "cer": float(wer.cer)}
