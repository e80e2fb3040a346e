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
"""

from __future__ import annotations

import math
from typing import Any

import torch

from asr_kd.decoding.common import NBest

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
) -> list[list[int]]:
    """Greedy transducer decoding, batched over utterances.

    At each frame the joiner's argmax is taken; a non-blank symbol is emitted, the predictor is
    advanced, and the same frame is tried again until blank or ``max_sym_per_frame`` symbols.

    Args:
        predictor, joiner: see the module docstring.
        enc: ``(N, T', D)`` encoder output.
        enc_lens: ``(N,)`` valid frames.
        max_sym_per_frame: most symbols emitted per frame (>= 1).

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
            y = joiner(enc_p[:, t], pred_p).argmax(dim=-1)  # (N,)
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


@torch.no_grad()
def modified_beam_search(
    predictor: Any,
    joiner: Any,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    beam: int = 4,
) -> list[NBest]:
    """Modified beam search (at most one symbol per frame), batched over utterances.

    Each hypothesis is a token sequence with the log probability of all its alignments seen so
    far (one symbol or blank per frame). At frame ``t`` every hypothesis of an utterance is
    extended by every token (blank keeps the sequence); the ``beam`` best (hypothesis, token)
    pairs of the utterance are kept and pairs giving the same token sequence are merged by
    log-add. With ``beam >=`` (hypotheses x V) at every frame the search is exact: each sequence
    gets its total probability over all one-symbol-per-frame alignments.

    Args:
        predictor, joiner: see the module docstring.
        enc: ``(N, T', D)`` encoder output.
        enc_lens: ``(N,)`` valid frames.
        beam: (hypothesis, token) pairs kept per utterance and frame.

    Returns:
        N :class:`NBest` lists (tokens and log probabilities), best first.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    N, T, _ = enc.shape
    device = enc.device
    c, blank = int(predictor.context_size), int(predictor.blank_id)
    lens = enc_lens.tolist()
    enc_p = joiner.enc_proj(enc)  # (N, T', J)
    hyps: list[dict[tuple, float]] = [{(): 0.0} for _ in range(N)]
    for t in range(T):
        active = [n for n in range(N) if t < lens[n]]
        if not active:
            break
        flat = [(n, toks, lp) for n in active for toks, lp in hyps[n].items()]
        context = torch.tensor(
            [_context(toks, c, blank) for _, toks, _ in flat], dtype=torch.long, device=device
        )  # (B, c)
        utt = torch.tensor([n for n, _, _ in flat], device=device)
        logits = joiner(enc_p[utt, t], _pred_proj(predictor, joiner, context))  # (B, V)
        logp = logits.to(torch.float64).log_softmax(dim=-1)
        prev = torch.tensor([lp for _, _, lp in flat], dtype=torch.float64, device=device)
        logp = logp + prev[:, None]
        V = logp.size(-1)
        start = 0
        for n in active:
            k = len(hyps[n])
            block = logp[start : start + k].reshape(-1)  # (k * V,)
            top = block.topk(min(beam, block.numel()))
            merged: dict[tuple, float] = {}
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
            hyps[n] = merged
            start += k
    results = []
    for n in range(N):
        ranked = sorted(hyps[n].items(), key=lambda kv: (-kv[1], kv[0]))
        results.append(NBest(tokens=[list(k) for k, _ in ranked], scores=[v for _, v in ranked]))
    return results
