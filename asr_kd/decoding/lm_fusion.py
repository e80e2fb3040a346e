"""A token-level n-gram LM for shallow fusion in transducer search (``modified-beam-lm``).

The LM's words are the model's tokens (BPE pieces such as ``▁THE``): an ARPA file trained on the
train transcripts tokenised by the model's BPE (``asr_kd.bin.train_lm --bpe-model``,
``local/prepare_lm.sh --token-orders``). Each hypothesis carries an :class:`~asr_kd.lm.query.NgramQuery`
state; emitting token ``v`` adds ``lm_scale * ln p_LM(v | state)`` to its score, and the final
ranking adds ``lm_scale * ln p_LM(</s> | state)``. Blank scores nothing.

A token missing from the LM's vocabulary (e.g. ``<sos/eos>``) scores as the LM's unknown word when
it has one, else kenlm's -100 (log10). :class:`TokenNgramLm` refuses an LM that shares too few
words with the token table (a word-level ARPA given by mistake).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from asr_kd.lm.arpa import EOS
from asr_kd.lm.query import OOV_LOG10, NgramQuery

__all__ = ["TokenNgramLm", "read_token_table"]

LN10 = math.log(10.0)
State = tuple[str, ...]


def read_token_table(path: str | Path) -> list[str]:
    """``tokens.txt`` (``piece id`` lines, ids 0..V-1) -> the V pieces by id (``#k`` lines dropped)."""
    from asr_kd.lm.lang import LangError, is_disambig, read_symbols  # noqa: PLC0415

    table = {i: s for s, i in read_symbols(path).items() if not is_disambig(s)}
    V = len(table)
    missing = [i for i in range(V) if i not in table]
    if missing:
        raise LangError(f"{path}: token ids are not 0..{V - 1} (missing {missing[:5]})")
    return [table[i] for i in range(V)]


class TokenNgramLm:
    """Natural-log LM scores over a V-token vocabulary, one row per LM state.

    Args:
        query: the n-gram model (its words are token pieces).
        tokens: the V pieces by token id (``tokens.txt``).
        blank_id: the blank token (scores 0 and never advances the state).
        min_coverage: the smallest share of the LM's words (``</s>`` and the unknown word excluded)
            that must be tokens; below it ``ValueError`` (a word-level LM).
        path: named in messages.

    Attributes:
        vocab_size: V.
    """

    def __init__(
        self,
        query: NgramQuery,
        tokens: Sequence[str],
        *,
        blank_id: int = 0,
        min_coverage: float = 0.5,
        path: str = "<lm>",
    ):
        self.query = query
        self.tokens = list(tokens)
        self.vocab_size = len(self.tokens)
        self.blank_id = blank_id
        lm_words = [w for w in query.lm.vocab if w not in (EOS, query.unk)]
        known = set(self.tokens)
        covered = sum(w in known for w in lm_words)
        if not lm_words or covered < min_coverage * len(lm_words):
            raise ValueError(
                f"{path}: only {covered} of the LM's {len(lm_words)} words are tokens of the model's "
                f"{self.vocab_size}-token table (e.g. {lm_words[:3]}): a token-level ARPA is needed "
                "(asr_kd.bin.train_lm --bpe-model, local/prepare_lm.sh --token-orders)"
            )
        self._rows: dict[State, torch.Tensor] = {}
        self._rows10: dict[State, torch.Tensor] = {}
        # LM word -> token ids; tokens outside the LM's vocabulary read the unknown word (or OOV_LOG10)
        by_word: dict[str, list[int]] = {}
        oov: list[int] = []
        for v, t in enumerate(self.tokens):
            if v == blank_id:
                continue
            w = t if query.in_vocab(t) else query.unk
            (oov if w is None else by_word.setdefault(w, [])).append(v)
        self._by_word = by_word
        self._oov = oov
        self._conts = self._continuations()

    @classmethod
    def from_files(cls, arpa: str | Path, tokens_txt: str | Path, *, blank_id: int = 0) -> TokenNgramLm:
        """Read a token-level ARPA file and the model's ``tokens.txt``."""
        return cls(NgramQuery.from_arpa(arpa), read_token_table(tokens_txt), blank_id=blank_id, path=str(arpa))

    def begin_state(self) -> State:
        return self.query.begin_state()

    def _continuations(self) -> dict[State, tuple[list[int], list[float]]]:
        """``{history: (token ids, log10 p(token | history))}`` of the listed n-grams (built once, at load)."""
        acc: dict[State, tuple[list[int], list[float]]] = {}
        by_word = self._by_word
        for probs in self.query.lm.probs:
            for g, lp in probs.items():
                vs = by_word.get(g[-1])
                if vs is None:
                    continue
                entry = acc.get(g[:-1])
                if entry is None:
                    entry = acc[g[:-1]] = ([], [])
                entry[0].extend(vs)
                entry[1].extend([lp] * len(vs))
        return acc

    def _row10(self, hist: State) -> torch.Tensor:
        """log10 scores after ``hist`` by the backoff rule: the row of ``hist[1:]`` plus ``bow(hist)``,
        overwritten by the listed n-grams ``hist w``."""
        row = self._rows10.get(hist)
        if row is not None:
            return row
        if hist:
            row = self._row10(hist[1:]) + self.query.lm.backoffs.get(hist, 0.0)
        else:
            row = torch.zeros(self.vocab_size, dtype=torch.float64)
            row[self._oov] = OOV_LOG10
        cont = self._conts.get(hist)
        if cont is not None:
            row[torch.tensor(cont[0], dtype=torch.long)] = torch.tensor(cont[1], dtype=torch.float64)
        row[self.blank_id] = 0.0
        self._rows10[hist] = row
        return row

    def logprobs(self, state: State) -> torch.Tensor:
        """``(V,)`` float64 ``ln p(token | state)`` (0 at blank), cached per state."""
        row = self._rows.get(state)
        if row is None:
            N = self.query.order
            row = self._rows[state] = self._row10(state[-(N - 1) :] if N > 1 else ()) * LN10
        return row

    def clear_cache(self) -> None:
        """Forget the rows computed so far (for timing; the continuation index is kept)."""
        self._rows.clear()
        self._rows10.clear()

    def advance(self, state: State, token: int) -> State:
        """The state after emitting ``token`` (blank: unchanged)."""
        if token == self.blank_id:
            return state
        return self.query.score(state, self.tokens[token])[1]

    def final(self, state: State) -> float:
        """``ln p(</s> | state)``."""
        return self.query.score(state, EOS)[0] * LN10

    def sequence_logprob(self, tokens: Sequence[int], *, eos: bool = True) -> float:
        """``ln p_LM`` of a token sequence from ``<s>`` (blanks skipped), with ``</s>`` when ``eos``."""
        state, total = self.begin_state(), 0.0
        for v in tokens:
            if v == self.blank_id:
                continue
            total += float(self.logprobs(state)[v])
            state = self.advance(state, v)
        return total + (self.final(state) if eos else 0.0)
