"""Transducer search: batched greedy search and modified beam search.

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, D encoder dim,
P predictor dim, J joiner dim, V vocabulary (blank = ``predictor.blank_id``, 0 by default),
B hypotheses of all utterances stacked, c = ``predictor.context_size``.

The predictor and joiner are duck-typed like ``asr_kd.models.heads.transducer``:

- ``predictor(y (B, c), need_pad=False) -> (B, 1, P)``: the output after the last ``c`` tokens
  (a stateless predictor; positions before the sequence start hold blank), with attributes
  ``context_size`` and ``blank_id``;
- ``joiner.enc_proj(enc (..., D)) -> (..., J)``, ``joiner.pred_proj(pred (..., P)) -> (..., J)`` and
  ``joiner(enc_proj (B, J), pred_proj (B, J)) -> logits (B, V)`` on projected inputs.

:func:`modified_beam_search` caches the predictor output per context and can fuse a token-level
n-gram LM (:mod:`asr_kd.decoding.lm_fusion`); both searches take a blank penalty.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from asr_kd.decoding.common import NBest
from asr_kd.decoding.lm_fusion import TokenNgramLm

__all__ = ["transducer_greedy_search", "modified_beam_search"]

_NEG_INF = float("-inf")


def _pred_proj(predictor: Any, joiner: Any, context: torch.Tensor) -> torch.Tensor:
    """``context (B, c)`` last tokens -> projected predictor output ``(B, J)``."""
    return joiner.pred_proj(predictor(context, need_pad=False)[:, -1])


def _context(tokens: tuple, c: int, blank_id: int) -> list[int]:
    """The last ``c`` tokens, left-padded with blank."""
    tail = list(tokens[-c:]) if tokens else []
    return [blank_id] * (c - len(tail)) + tail


@torch.no_grad()
def transducer_greedy_search(
    predictor: Any,
    joiner: Any,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    max_sym_per_frame: int = 1,
    *,
    blank_penalty: float = 0.0,
) -> list[list[int]]:
    """Greedy transducer decoding, batched over utterances.

    At each frame the joiner's argmax is taken; a non-blank symbol is emitted, the predictor is
    advanced, and the same frame is tried again until blank or ``max_sym_per_frame`` symbols.

    Args:
        predictor, joiner: see the module docstring.
        enc: ``(N, T', D)`` encoder output.
        enc_lens: ``(N,)`` valid frames.
        max_sym_per_frame: most symbols emitted per frame (>= 1).
        blank_penalty: subtracted from the blank logit before the argmax (icefall's ``blank_penalty``).

    Returns:
        N token-id lists.
    """
    if max_sym_per_frame < 1:
        raise ValueError("max_sym_per_frame must be >= 1")
    N, T, _ = enc.shape
    device = enc.device
    c, blank = int(predictor.context_size), int(predictor.blank_id)
    lens = enc_lens.tolist()
    enc_p = joiner.enc_proj(enc)  # (N, T', J)
    context = torch.full((N, c), blank, dtype=torch.long, device=device)
    pred_p = _pred_proj(predictor, joiner, context)  # (N, J)
    hyps: list[list[int]] = [[] for _ in range(N)]
    for t in range(T):
        can = torch.tensor([t < L for L in lens], device=device)
        if not bool(can.any()):
            break
        for _ in range(max_sym_per_frame):
            logits = joiner(enc_p[:, t], pred_p)  # (N, V)
            if blank_penalty:
                logits[:, blank] -= blank_penalty
            y = logits.argmax(dim=-1)  # (N,)
            emit = can & (y != blank)
            if not bool(emit.any()):
                break
            idx = emit.nonzero().flatten()
            for i, tok in zip(idx.tolist(), y[idx].tolist()):
                hyps[i].append(tok)
            context[idx] = torch.cat([context[idx, 1:], y[idx, None]], dim=1)
            pred_p[idx] = _pred_proj(predictor, joiner, context[idx]).to(pred_p.dtype)
            can = emit
    return hyps


class _PredictorCache:
    """Projected predictor outputs ``(J,)`` per context (the last ``c`` tokens), computed once.

    ``rows(contexts)`` -> ``(B, J)`` for B context tuples; the contexts not seen before go through
    the predictor in one batch. ``calls`` / ``computed``: predictor calls and rows computed so far.
    """

    def __init__(self, predictor: Any, joiner: Any, device: torch.device, enabled: bool = True):
        self.predictor, self.joiner, self.device, self.enabled = predictor, joiner, device, enabled
        self.index: dict[tuple, int] = {}
        self.bank: torch.Tensor | None = None  # (num contexts, J)
        self.calls = 0
        self.computed = 0

    def _compute(self, contexts: list[tuple]) -> torch.Tensor:
        self.calls += 1
        self.computed += len(contexts)
        ctx = torch.tensor(contexts, dtype=torch.long, device=self.device)  # (B, c)
        return _pred_proj(self.predictor, self.joiner, ctx)

    def rows(self, contexts: list[tuple]) -> torch.Tensor:
        if not self.enabled:
            return self._compute(contexts)
        missing = list(dict.fromkeys(c for c in contexts if c not in self.index))
        if missing:
            new = self._compute(missing)
            for ctx in missing:
                self.index[ctx] = len(self.index)
            self.bank = new if self.bank is None else torch.cat([self.bank, new.to(self.bank.dtype)])
        idx = torch.tensor([self.index[c] for c in contexts], device=self.device)
        return self.bank.index_select(0, idx)


@torch.no_grad()
def modified_beam_search(
    predictor: Any,
    joiner: Any,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    beam: int = 4,
    *,
    lm: TokenNgramLm | None = None,
    lm_scale: float = 0.0,
    blank_penalty: float = 0.0,
    cache: bool = True,
    stats: dict | None = None,
) -> list[NBest]:
    """Modified beam search (at most one symbol per frame), batched over utterances.

    Each hypothesis is a token sequence with the log probability of all its alignments seen so
    far (one symbol or blank per frame). At frame ``t`` every hypothesis of an utterance is
    extended by every token (blank keeps the sequence); the ``beam`` best (hypothesis, token)
    pairs of the utterance are kept and pairs giving the same token sequence are merged by
    log-add. With ``beam >=`` (hypotheses x V) at every frame the search is exact: each sequence
    gets its total probability over all one-symbol-per-frame alignments.

    **Shallow fusion** with ``lm`` (a token-level n-gram, :mod:`asr_kd.decoding.lm_fusion`): a
    hypothesis also carries an LM state; emitting token ``v`` adds ``lm_scale * ln p_LM(v | state)``
    before the pruning, and the final ranking adds ``lm_scale * ln p_LM(</s> | state)``. A sequence's
    score is then ``ln P(y | x) + lm_scale * ln p_LM(y </s>)`` (exact with a large beam), and the
    n-best's ``components["lm"]`` holds ``ln p_LM(y </s>)``. ``lm_scale = 0`` is the plain search.

    The predictor output is computed once per context (the last ``c`` tokens) and cached for the
    whole call; each frame's new contexts go through the predictor in one batch (``cache=False``:
    recomputed for every hypothesis at every frame, the same results).

    Args:
        predictor, joiner: see the module docstring.
        enc: ``(N, T', D)`` encoder output.
        enc_lens: ``(N,)`` valid frames.
        beam: (hypothesis, token) pairs kept per utterance and frame.
        lm, lm_scale: shallow fusion (see above).
        blank_penalty: subtracted from the blank logit before the log-softmax (icefall's
            ``blank_penalty``; > 0 emits more tokens).
        cache: cache the predictor output per context.
        stats: when given, filled with ``predictor_calls`` and ``predictor_rows`` (rows computed).

    Returns:
        N :class:`NBest` lists (tokens and scores), best first.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    N, T, _ = enc.shape
    device = enc.device
    c, blank = int(predictor.context_size), int(predictor.blank_id)
    use_lm = lm is not None and lm_scale != 0.0
    lens = enc_lens.tolist()
    enc_p = joiner.enc_proj(enc)  # (N, T', J)
    pred_cache = _PredictorCache(predictor, joiner, device, enabled=cache)
    hyps: list[dict[tuple, float]] = [{(): 0.0} for _ in range(N)]
    # per utterance: hypothesis -> LM state (only with an LM)
    lm_states: list[dict[tuple, Any]] = [{(): lm.begin_state()} if use_lm else {} for _ in range(N)]
    for t in range(T):
        active = [n for n in range(N) if t < lens[n]]
        if not active:
            break
        flat = [(n, toks, lp) for n in active for toks, lp in hyps[n].items()]
        contexts = [tuple(_context(toks, c, blank)) for _, toks, _ in flat]
        utt = torch.tensor([n for n, _, _ in flat], device=device)
        logits = joiner(enc_p[utt, t], pred_cache.rows(contexts).to(enc_p.dtype))  # (B, V)
        if blank_penalty:
            logits[:, blank] -= blank_penalty
        if use_lm and logits.size(-1) != lm.vocab_size:
            raise ValueError(f"the LM's token table has {lm.vocab_size} tokens, the model's joiner {logits.size(-1)}")
        logp = logits.to(torch.float64).log_softmax(dim=-1)
        prev = torch.tensor([lp for _, _, lp in flat], dtype=torch.float64, device=device)
        logp = logp + prev[:, None]
        if use_lm:
            lm_lp = torch.stack([lm.logprobs(lm_states[n][toks]) for n, toks, _ in flat]).to(device)  # (B, V)
            logp = logp + lm_scale * lm_lp
        V = logp.size(-1)
        start = 0
        for n in active:
            k = len(hyps[n])
            block = logp[start : start + k].reshape(-1)  # (k * V,)
            top = block.topk(min(beam, block.numel()))
            merged: dict[tuple, float] = {}
            states: dict[tuple, Any] = {}
            for score, idx in zip(top.values.tolist(), top.indices.tolist()):
                if score == _NEG_INF:
                    continue
                toks = flat[start + idx // V][1]
                v = idx % V
                key = toks if v == blank else toks + (v,)
                if key in merged:
                    a, b = max(merged[key], score), min(merged[key], score)
                    merged[key] = a + math.log1p(math.exp(b - a))
                else:
                    merged[key] = score
                    if use_lm:
                        states[key] = lm_states[n][toks] if v == blank else lm.advance(lm_states[n][toks], v)
            hyps[n] = merged
            if use_lm:
                lm_states[n] = states
            start += k
    if stats is not None:
        stats["predictor_calls"] = stats.get("predictor_calls", 0) + pred_cache.calls
        stats["predictor_rows"] = stats.get("predictor_rows", 0) + pred_cache.computed
    results = []
    for n in range(N):
        items = list(hyps[n].items())
        lm_lp: list[float] = []
        if use_lm:
            lm_lp = [lm.sequence_logprob(toks) for toks, _ in items]
            items = [(toks, s + lm_scale * lm.final(lm_states[n][toks])) for toks, s in items]
        order = sorted(range(len(items)), key=lambda i: (-items[i][1], items[i][0]))
        res = NBest(tokens=[list(items[i][0]) for i in order], scores=[items[i][1] for i in order])
        if use_lm:
            res.components["lm"] = [lm_lp[i] for i in order]
        results.append(res)
    return results
