"""Stateful queries of an ARPA back-off model (``kenlm.Model``'s ``BaseScore`` / ``full_scores`` semantics).

A *state* is a history tuple of words: the longest suffix of the words seen so far (at most
N - 1 of them) that is a listed n-gram, so equal states give equal scores for every next word.
:meth:`NgramQuery.score` returns the log10 probability of a word after a state and the next
state; the decoders keep one state per hypothesis (:mod:`asr_kd.decoding.lm_fusion`).

Why the state can be trimmed: a history ``u`` that is not a listed n-gram has no backoff weight
and no listed continuation ``u w`` (the ARPA reader refuses an n-gram whose history is not
listed), so backing off through it costs nothing. Scores are those of :meth:`ArpaLM.logprob`:
out-of-vocabulary words (in the history too) are the unknown word when the model lists one;
without one, an OOV word is a unigram of log10 probability :data:`OOV_LOG10` (kenlm's substitute
for a missing ``<unk>``, reached after backing off the whole history) and resets the state.

Usage::

    q = NgramQuery.from_arpa("G_3gram.arpa")
    state = q.begin_state()  # ("<s>",)
    for w in "THE CAT </s>".split():
        logp10, state = q.score(state, w)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asr_kd.lm.arpa import BOS, EOS, ArpaLM, read_arpa

__all__ = ["NgramQuery", "OOV_LOG10", "UNK_SYMBOLS"]

#: log10 probability of an out-of-vocabulary word when the model has no unknown word (kenlm's)
OOV_LOG10 = -100.0
#: unknown-word symbols looked for by :meth:`NgramQuery.from_arpa` (kenlm's, then words.txt's)
UNK_SYMBOLS = ("<unk>", "<UNK>")

State = tuple[str, ...]


class NgramQuery:
    """Scores of an :class:`~asr_kd.lm.arpa.ArpaLM` word by word, with a history-tuple state.

    Args:
        lm: the model.
        unk: the unknown-word symbol (None: the model's ``lm.unk`` when it lists it, else none).

    Scores are memoised per (state, word).
    """

    def __init__(self, lm: ArpaLM, *, unk: str | None = None):
        self.lm = lm
        self.order = lm.order
        unk = unk if unk is not None else lm.unk
        self.unk = unk if unk is not None and (unk,) in lm.probs[0] else None
        self._memo: dict[tuple[State, str], tuple[float, State, int]] = {}

    @classmethod
    def from_arpa(cls, path: str | Path, *, unk: str | None = None) -> NgramQuery:
        """Read an ARPA file; the unknown word is ``unk``, else the first of :data:`UNK_SYMBOLS` it lists."""
        lm = read_arpa(path, unk=unk)
        if unk is None:
            unk = next((u for u in UNK_SYMBOLS if (u,) in lm.probs[0]), None)
        return cls(lm, unk=unk)

    def begin_state(self) -> State:
        """The state at a sentence start (``<s>``)."""
        return (BOS,)

    def null_state(self) -> State:
        """The empty history (no ``<s>``)."""
        return ()

    def in_vocab(self, word: str) -> bool:
        return (word,) in self.lm.probs[0] and word != BOS

    def _lookup(self, state: State, word: str) -> tuple[float, State, int]:
        probs, backoffs, N = self.lm.probs, self.lm.backoffs, self.order
        hist = state[-(N - 1) :] if N > 1 else ()
        if not self.in_vocab(word):
            if self.unk is None:  # kenlm: a unigram of log10 prob OOV_LOG10 after backing off the whole history
                return OOV_LOG10 + sum(backoffs.get(hist[i:], 0.0) for i in range(len(hist))), (), 1
            word = self.unk
        logp, length = self.lm.backoff_logprob(hist, word)
        seq = (*hist, word)
        nxt: State = ()
        for k in range(min(len(seq), N - 1), 0, -1):
            if seq[-k:] in probs[k - 1]:
                nxt = seq[-k:]
                break
        return logp, nxt, length

    def _memo_lookup(self, state: State, word: str) -> tuple[float, State, int]:
        key = (state, word)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._lookup(state, word)
        return hit

    def score(self, state: State, word: str) -> tuple[float, State]:
        """``(log10 p(word | state), next state)``."""
        hit = self._memo_lookup(state, word)
        return hit[0], hit[1]

    def full_scores(self, words: Sequence[str] | str, *, bos: bool = True, eos: bool = True):
        """Per word (and ``</s>``): ``(log10 p, length of the matched n-gram, oov)``, as ``kenlm.Model.full_scores``."""
        if isinstance(words, str):
            words = words.split()
        state = self.begin_state() if bos else self.null_state()
        out = []
        for w in [*words, EOS] if eos else list(words):
            logp, state, length = self._memo_lookup(state, w)
            out.append((logp, length, not self.in_vocab(w)))
        return out

    def sentence_score(self, words: Sequence[str] | str, *, bos: bool = True, eos: bool = True) -> float:
        """log10 probability of a sentence (``kenlm.Model.score``)."""
        return sum(s for s, _, _ in self.full_scores(words, bos=bos, eos=eos))
