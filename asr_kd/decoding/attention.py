"""Attention-decoder search: joint CTC/attention one-pass beam search and attention rescoring.

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, D model dim,
V vocabulary, W beam width, B = N * W hypotheses, C candidate tokens per hypothesis, L label length.

The decoder is duck-typed (``asr_kd.models.heads.AttentionDecoder`` or any stand-in):

- beam search calls ``decoder.forward_one_step(memory (B, T', D), memory_mask (B, 1, T') bool with
  True = valid frame, ys (B, l) int64 (sos first), cache) -> (logp (B, V), cache)``; ``cache`` is
  ``None`` on the first call and may be any tree of tensors (list / tuple / dict) whose first
  dimension is the hypothesis, so that the search can reorder it between steps (only the positions
  the cache does not cover need computing, i.e. the last one);
- if the decoder has ``precompute_memory(enc (N, T', D)) -> tree`` (the memory-only part of every
  step, e.g. the cross-attention keys/values), the search calls it once per batch and passes the
  result, per utterance (not expanded to hypotheses), as ``memory`` instead of the tensor;
  hypotheses ``n * W .. n * W + W - 1`` are those of utterance n. It is never reordered: a
  hypothesis never changes utterance;
- rescoring calls ``decoder(memory (M, T', D), memory_lens (M,), ys_in (M, L)) -> logits (M, L, V)``
  (teacher forcing; ``ys_in`` is sos + hypothesis, right-padded with eos).

The decoder outputs are passed through ``log_softmax`` (a no-op for log probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from asr_kd.decoding.common import NBest, index_select_tree, valid_mask
from asr_kd.decoding.ctc import CtcPrefixScorer

__all__ = ["attention_beam_search", "attention_rescoring"]

_NEG_INF = float("-inf")


@torch.no_grad()
def attention_beam_search(
    decoder: Any,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    beam: int = 10,
    *,
    sos: int,
    eos: int,
    ctc_log_probs: torch.Tensor | None = None,
    ctc_weight: float = 0.3,
    max_len: int | None = None,
    length_penalty: float = 0.0,
    pre_beam: int | None = None,
    blank_id: int | None = 0,
    nbest: int | None = None,
) -> list[NBest]:
    """Joint CTC/attention one-pass beam search (ESPnet-style scores), batched over utterances.

    Every hypothesis ``y`` is scored::

        score(y) = (1 - ctc_weight) * log p_att(y, eos) + ctc_weight * log p_ctc(y)
                   + length_penalty * (len(y) + 1)

    accumulated token by token: the CTC part of token ``c`` after prefix ``g`` is
    ``log psi(g + c) - log psi(g)`` (:class:`~asr_kd.decoding.ctc.CtcPrefixScorer`; for ``eos`` it
    is the probability of the whole sequence). Without ``ctc_log_probs`` the score is the attention
    log probability alone (``ctc_weight`` is ignored).

    Each step keeps the best ``beam`` (hypothesis, token) pairs per utterance; pairs ending in
    ``eos`` leave the beam as finished hypotheses. With CTC, only the ``pre_beam`` best attention
    tokens of each hypothesis get a CTC score (default ``int(1.5 * beam)``, all tokens when
    ``pre_beam >= V``). An utterance stops when no running hypothesis is left, when its length
    limit is reached (then only ``eos`` is allowed), or when ``nbest`` finished hypotheses all score
    above every running one's best reachable score (exact: all increments are <= length_penalty).
    With ``beam`` and ``pre_beam`` at least the number of possible sequences the search is exact.

    Args:
        decoder: see the module docstring.
        enc: ``(N, T', D)`` encoder output (the decoder's memory).
        enc_lens: ``(N,)`` valid encoder frames.
        beam: beam width W.
        sos, eos: start / end-of-sentence ids (may be equal).
        ctc_log_probs: optional ``(N, T', V)`` CTC log posteriors on the same vocabulary.
        ctc_weight: lambda in the score above.
        max_len: most tokens per hypothesis (eos excluded); None: ``enc_lens[n]`` per utterance.
        length_penalty: added per output token (eos included); > 0 favours longer outputs.
        pre_beam: candidates per hypothesis scored by CTC.
        blank_id: the CTC blank, never emitted (None: no token is banned; CTC then uses 0).
        nbest: finished hypotheses returned per utterance (default ``beam``).

    Returns:
        N :class:`NBest` lists, best first, ``components`` ``{"att": ..., "ctc": ...}`` (the
        unweighted log probabilities, ctc = 0 without CTC).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    device = enc.device
    N, T, _ = enc.shape
    W = beam
    B = N * W
    nbest = W if nbest is None else nbest
    enc_lens = enc_lens.to(device)
    if max_len is None:
        max_lens = enc_lens.clone()
    else:
        max_lens = torch.full((N,), int(max_len), device=device, dtype=torch.long)
    use_ctc = ctc_log_probs is not None
    lam = float(ctc_weight) if use_ctc else 0.0

    utt = torch.arange(N, device=device).repeat_interleave(W)  # (B,)
    if hasattr(decoder, "precompute_memory"):  # once per batch, shared by each utterance's W hypotheses
        memory = decoder.precompute_memory(enc)
    else:
        memory = enc.index_select(0, utt)  # (B, T', D)
    memory_mask = valid_mask(enc_lens, T).index_select(0, utt).unsqueeze(1)  # (B, 1, T')
    ys = torch.full((B, 1), sos, dtype=torch.long, device=device)
    scores = torch.full((N, W), _NEG_INF, device=device, dtype=torch.float64)
    scores[:, 0] = 0.0
    scores = scores.view(B)
    att_acc = torch.zeros(B, device=device, dtype=torch.float64)
    cache = None
    scorer = state = None
    if use_ctc:
        scorer = CtcPrefixScorer(ctc_log_probs.to(device), enc_lens, blank_id or 0, eos_id=eos)
        state = scorer.initial_state(utt)

    finished: list[list[tuple[float, list[int], float, float]]] = [[] for _ in range(N)]
    done = torch.zeros(N, dtype=torch.bool, device=device)
    step = 0
    while not bool(done.all()):
        logp, cache = decoder.forward_one_step(memory, memory_mask, ys, cache)
        logp = logp.to(torch.float64).log_softmax(dim=-1)  # (B, V)
        V = logp.size(-1)
        if blank_id is not None and blank_id not in (sos, eos):
            logp[:, blank_id] = _NEG_INF
        at_limit = (step >= max_lens).index_select(0, utt)  # (B,)
        if bool(at_limit.any()):
            eos_only = torch.full_like(logp, _NEG_INF)
            eos_only[:, eos] = logp[:, eos]
            logp = torch.where(at_limit[:, None], eos_only, logp)

        if use_ctc:
            C = max(1, min(V, int(1.5 * W) if pre_beam is None else pre_beam))
            cands = logp.topk(C, dim=-1).indices if C < V else None
            if cands is None:
                cands = torch.arange(V, device=device).expand(B, V)
            att_c = logp.gather(1, cands)  # (B, C)
            ext = scorer.score(state, cands)
            ctc_inc = ext.log_psi.to(torch.float64) - state.log_psi.to(torch.float64)[:, None]
            ctc_inc = torch.nan_to_num(ctc_inc, nan=_NEG_INF)
        else:
            C = V
            cands = torch.arange(V, device=device).expand(B, V)
            att_c = logp
            ctc_inc = torch.zeros_like(att_c)
        inc = (1.0 - lam) * att_c + lam * ctc_inc + length_penalty  # (B, C)
        # (1 - lam) * -inf is nan when lam == 1: an impossible token stays impossible
        inc = torch.where(torch.isneginf(att_c) | torch.isneginf(ctc_inc), _NEG_INF, inc)
        total = (scores[:, None] + inc).view(N, W * C)
        top_scores, top_idx = total.topk(W, dim=-1)  # (N, W)
        parent = (top_idx // C + torch.arange(N, device=device)[:, None] * W).view(B)
        cand_pos = (top_idx % C).view(B)
        tokens = cands[parent, cand_pos]  # (B,)
        new_scores = top_scores.view(B)
        new_att = att_acc[parent] + att_c[parent, cand_pos]
        new_ctc = ext.log_psi[parent, cand_pos].to(torch.float64) if use_ctc else None

        ended = (tokens == eos) & torch.isfinite(new_scores)
        if bool(ended.any()):
            for b in ended.nonzero().flatten().tolist():
                n = b // W
                if done[n]:
                    continue
                hyp = ys[parent[b], 1:].tolist()
                ctc_val = float(new_ctc[b]) if use_ctc else 0.0
                finished[n].append((float(new_scores[b]), hyp, float(new_att[b]), ctc_val))
        new_scores = new_scores.masked_fill(tokens == eos, _NEG_INF)

        # reorder and extend the running hypotheses
        ys = torch.cat([ys.index_select(0, parent), tokens[:, None]], dim=1)
        cache = index_select_tree(cache, parent)
        if use_ctc:
            state = scorer.select(ext, parent, cand_pos)
        scores = new_scores
        att_acc = new_att
        step += 1

        # per-utterance stopping
        run_best = scores.view(N, W).max(dim=-1).values  # (N,)
        remaining = (max_lens - step + 1).clamp(min=0).to(torch.float64)
        bound = run_best + max(0.0, length_penalty) * remaining
        for n in range(N):
            if done[n]:
                continue
            if not torch.isfinite(run_best[n]) or step > int(max_lens[n]):
                done[n] = True
            elif len(finished[n]) >= nbest:
                kth = sorted((f[0] for f in finished[n]), reverse=True)[nbest - 1]
                if kth >= float(bound[n]):
                    done[n] = True
        scores = scores.view(N, W).masked_fill(done[:, None], _NEG_INF).view(B)

    results = []
    for n in range(N):
        hyps = sorted(finished[n], key=lambda f: (-f[0], f[1]))[:nbest]
        results.append(
            NBest(
                tokens=[h[1] for h in hyps],
                scores=[h[0] for h in hyps],
                components={"att": [h[2] for h in hyps], "ctc": [h[3] for h in hyps]},
            )
        )
    return results


def attention_rescoring(
    decoder: Any,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    nbest: Sequence[NBest | Sequence[Sequence[int]]],
    ctc_scores: Sequence[Sequence[float]] | None = None,
    ctc_weight: float = 0.5,
    *,
    sos: int,
    eos: int,
) -> list[NBest]:
    """Rescore CTC n-best lists with the attention decoder (WeNet-style), one batched decoder call.

    ``score = log p_att(y, eos) + ctc_weight * ctc_score`` for each hypothesis ``y``.

    Args:
        decoder: see the module docstring (teacher-forced ``decoder(memory, memory_lens, ys_in)``).
        enc: ``(N, T', D)`` encoder output.
        enc_lens: ``(N,)`` valid encoder frames.
        nbest: per utterance, an :class:`NBest` (e.g. from ``ctc_prefix_beam_search``) or a list
            of K token-id lists.
        ctc_scores: per utterance, K CTC log probabilities; default: the ``"ctc"`` component
            (else ``scores``) of each :class:`NBest`.
        ctc_weight: weight of the CTC score.
        sos, eos: start / end-of-sentence ids.

    Returns:
        N :class:`NBest` lists re-ranked by the new score, ``components`` ``{"att", "ctc"}``.
    """
    device = enc.device
    N = enc.size(0)
    hyps_per_utt: list[list[list[int]]] = []
    ctc_per_utt: list[list[float]] = []
    for n in range(N):
        item = nbest[n]
        if isinstance(item, NBest):
            hyps = [list(h) for h in item.tokens]
            default = item.components.get("ctc", item.scores)
        else:
            hyps = [list(h) for h in item]
            default = [0.0] * len(hyps)
        scores = list(ctc_scores[n]) if ctc_scores is not None else list(default)
        if len(scores) != len(hyps):
            raise ValueError(f"utterance {n}: {len(hyps)} hypotheses but {len(scores)} ctc scores")
        hyps_per_utt.append(hyps)
        ctc_per_utt.append([float(s) for s in scores])

    flat = [(n, h) for n in range(N) for h in hyps_per_utt[n]]
    att: list[float] = []
    if flat:
        M = len(flat)
        L = max(len(h) for _, h in flat) + 1
        ys_in = torch.full((M, L), eos, dtype=torch.long, device=device)
        ys_out = torch.full((M, L), -1, dtype=torch.long, device=device)
        for m, (_, h) in enumerate(flat):
            ys_in[m, 0] = sos
            if h:
                ys_in[m, 1 : len(h) + 1] = torch.tensor(h, device=device)
                ys_out[m, : len(h)] = torch.tensor(h, device=device)
            ys_out[m, len(h)] = eos
        utt = torch.tensor([n for n, _ in flat], device=device)
        logits = decoder(enc.index_select(0, utt), enc_lens.to(device).index_select(0, utt), ys_in)
        logp = logits.to(torch.float64).log_softmax(dim=-1)  # (M, L, V)
        mask = ys_out >= 0
        tok = logp.gather(2, ys_out.clamp(min=0)[..., None]).squeeze(-1)  # (M, L)
        att = tok.masked_fill(~mask, 0.0).sum(dim=1).tolist()

    results = []
    m = 0
    for n in range(N):
        rows = []
        for h, c in zip(hyps_per_utt[n], ctc_per_utt[n]):
            rows.append((att[m] + ctc_weight * c, h, att[m], c))
            m += 1
        rows.sort(key=lambda r: (-r[0], r[1]))
        results.append(
            NBest(
                tokens=[r[1] for r in rows],
                scores=[r[0] for r in rows],
                components={"att": [r[2] for r in rows], "ctc": [r[3] for r in rows]},
            )
        )
    return results
