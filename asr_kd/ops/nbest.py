"""The n-best result object returned by the searches of :mod:`asr_kd.ops` and :mod:`asr_kd.decoding`.

A leaf module (dataclasses only): the ops define the result type, the decoders reuse it
(``asr_kd.decoding.common`` re-exports :class:`NBest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["NBest"]


@dataclass
class NBest:
    """The n-best list of one utterance, best first.

    Attributes:
        tokens: K token-id sequences (no blank, sos or eos).
        scores: K ranking scores (log domain), ``scores[0]`` is the largest.
        components: optional per-hypothesis parts of the score by name (e.g. ``"ctc"``,
            ``"att"``, ``"bias"``), each a list of K floats aligned with ``tokens``.
    """

    tokens: list[list[int]]
    scores: list[float]
    components: dict[str, list[float]] = field(default_factory=dict)

    @property
    def best(self) -> list[int]:
        """The best hypothesis (empty list when the n-best list is empty)."""
        return list(self.tokens[0]) if self.tokens else []

    def __len__(self) -> int:
        return len(self.tokens)
