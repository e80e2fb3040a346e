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

Both searches are resumable: :class:`GreedyStreams` / :class:`BeamStreams` hold the search state of N
streams and ``advance`` it over the next encoder frames; the functions run one ``advance`` over whole
utterances, chunk-by-chunk streaming (:mod:`asr_kd.decoding.streaming`) one per chunk.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from asr_kd.decoding.common import NBest
from asr_kd.decoding.lm_fusion import TokenNgramLm

__all__ = ["BeamStreams", "GreedyStreams", "transducer_greedy_search", "modified_beam_search"]

_NEG_INF = float("-inf")


def _pred_proj(predictor: Any, joiner: Any, context: torch.Tensor) -> torch.Tensor:
    """``context (B, c)`` last tokens -> projected predictor output ``(B, J)``."""
    return joiner.pred_proj(predictor(context, need_pad=False)[:, -1])


def _context(tokens: tuple, c: int, blank_id: int) -> list[int]:
    """The last ``c`` tokens, left-padded with blank."""
    tail = list(tokens[-c:]) if tokens else []
    return [blank_id] * (c - len(tail)) + tail


class GreedyStreams:
    """Resumable greedy search over N streams: the search state carried from one run of encoder frames
    to the next (a stream's tokens so far, its last ``c`` tokens and the projected predictor output).

    :func:`transducer_greedy_search` runs :meth:`advance` once over whole utterances; chunk-by-chunk
    decoding (:mod:`asr_kd.decoding.streaming`) runs it once per chunk, which gives the same tokens.

    Args:
        predictor, joiner: see the module docstring.
        num_streams: N.
        device: where the search state lives.
        max_sym_per_frame: most symbols emitted per frame (>= 1).
        blank_penalty: subtracted from the blank logit before the argmax.
    """

    def __init__(
        self,
        predictor: Any,
        joiner: Any,
        num_streams: int,
        device: torch.device | str | None = None,
        *,
        max_sym_per_frame: int = 1,
        blank_penalty: float = 0.0,
    ):
        if max_sym_per_frame < 1:
            raise ValueError("max_sym_per_frame must be >= 1")
        self.predictor, self.joiner = predictor, joiner
        self.max_sym_per_frame, self.blank_penalty = int(max_sym_per_frame), float(blank_penalty)
        self.c, self.blank = int(predictor.context_size), int(predictor.blank_id)
        self.context = torch.full((num_streams, self.c), self.blank, dtype=torch.long, device=device)  # (N, c)
        self.pred_p = _pred_proj(predictor, joiner, self.context)  # (N, J)
        #: N token-id lists, the tokens emitted so far
        self.hyps: list[list[int]] = [[] for _ in range(num_streams)]

    @torch.no_grad()
    def advance(self, enc_p: torch.Tensor, lens: torch.Tensor | list[int]) -> None:
        """Search the next frames: ``enc_p (N, T, J)`` projected encoder frames (``joiner.enc_proj``), of
        which the first ``lens[n]`` (``(N,)``, 0 allowed) are stream n's next frames."""
        device = enc_p.device
        lens = lens.tolist() if isinstance(lens, torch.Tensor) else list(lens)
        blank, context, pred_p = self.blank, self.context, self.pred_p
        for t in range(enc_p.size(1)):
            can = torch.tensor([t < L for L in lens], device=device)
            if not bool(can.any()):
                break
            for _ in range(self.max_sym_per_frame):
                logits = self.joiner(enc_p[:, t], pred_p)  # (N, V)
                if self.blank_penalty:
                    logits[:, blank] -= self.blank_penalty
                y = logits.argmax(dim=-1)  # (N,)
                emit = can & (y != blank)
                if not bool(emit.any()):
                    break
                idx = emit.nonzero().flatten()
                for i, tok in zip(idx.tolist(), y[idx].tolist()):
                    self.hyps[i].append(tok)
                context[idx] = torch.cat([context[idx, 1:], y[idx, None]], dim=1)
                pred_p[idx] = _pred_proj(self.predictor, self.joiner, context[idx]).to(pred_p.dtype)
                can = emit


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
    search = GreedyStreams(
        predictor, joiner, enc.size(0), enc.device, max_sym_per_frame=max_sym_per_frame, blank_penalty=blank_penalty
    )
    search.advance(joiner.enc_proj(enc), enc_lens)  # (N, T', J)
    return search.hyps


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


class BeamStreams:
    """Resumable modified beam search over N streams: the hypotheses (token sequence -> log
    probability), their LM states and the predictor cache carried from one run of encoder frames to
    the next.

    :func:`modified_beam_search` runs :meth:`advance` once over whole utterances and ranks the
    hypotheses with :meth:`results`; chunk-by-chunk decoding (:mod:`asr_kd.decoding.streaming`) runs
    :meth:`advance` once per chunk, which gives the same hypotheses and scores. The arguments are those
    of :func:`modified_beam_search`.
    """

    def __init__(
        self,
        predictor: Any,
        joiner: Any,
        num_streams: int,
        device: torch.device | str | None = None,
        *,
        beam: int = 4,
        lm: TokenNgramLm | None = None,
        lm_scale: float = 0.0,
        blank_penalty: float = 0.0,
        cache: bool = True,
    ):
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.joiner, self.beam, self.blank_penalty = joiner, int(beam), float(blank_penalty)
        self.c, self.blank = int(predictor.context_size), int(predictor.blank_id)
        self.lm, self.lm_scale = lm, float(lm_scale)
        self.use_lm = lm is not None and lm_scale != 0.0
        self.device = torch.device(device) if device is not None else None
        self.pred_cache = _PredictorCache(predictor, joiner, self.device, enabled=cache)
        #: per stream: token sequence -> log probability of its alignments so far
        self.hyps: list[dict[tuple, float]] = [{(): 0.0} for _ in range(num_streams)]
        # per stream: hypothesis -> LM state (only with an LM)
        self.lm_states: list[dict[tuple, Any]] = [
            {(): lm.begin_state()} if self.use_lm else {} for _ in range(num_streams)
        ]

    @torch.no_grad()
    def advance(self, enc_p: torch.Tensor, lens: torch.Tensor | list[int]) -> None:
        """Search the next frames: ``enc_p (N, T, J)`` projected encoder frames (``joiner.enc_proj``), of
        which the first ``lens[n]`` (``(N,)``, 0 allowed) are stream n's next frames."""
        device = enc_p.device
        self.pred_cache.device = device
        lens = lens.tolist() if isinstance(lens, torch.Tensor) else list(lens)
        hyps, lm_states, lm, blank, c = self.hyps, self.lm_states, self.lm, self.blank, self.c
        for t in range(enc_p.size(1)):
            active = [n for n in range(len(hyps)) if t < lens[n]]
            if not active:
                break
            flat = [(n, toks, lp) for n in active for toks, lp in hyps[n].items()]
            contexts = [tuple(_context(toks, c, blank)) for _, toks, _ in flat]
            utt = torch.tensor([n for n, _, _ in flat], device=device)
            logits = self.joiner(enc_p[utt, t], self.pred_cache.rows(contexts).to(enc_p.dtype))  # (B, V)
            if self.blank_penalty:
                logits[:, blank] -= self.blank_penalty
            if self.use_lm and logits.size(-1) != lm.vocab_size:
                raise ValueError(
                    f"the LM's token table has {lm.vocab_size} tokens, the model's joiner {logits.size(-1)}"
                )
            logp = logits.to(torch.float64).log_softmax(dim=-1)
            prev = torch.tensor([lp for _, _, lp in flat], dtype=torch.float64, device=device)
            logp = logp + prev[:, None]
            if self.use_lm:
                lm_lp = torch.stack([lm.logprobs(lm_states[n][toks]) for n, toks, _ in flat]).to(device)  # (B, V)
                logp = logp + self.lm_scale * lm_lp
            V = logp.size(-1)
            start = 0
            for n in active:
                k = len(hyps[n])
                block = logp[start : start + k].reshape(-1)  # (k * V,)
                top = block.topk(min(self.beam, block.numel()))
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
                        if self.use_lm:
                            states[key] = lm_states[n][toks] if v == blank else lm.advance(lm_states[n][toks], v)
                hyps[n] = merged
                if self.use_lm:
                    lm_states[n] = states
                start += k

    def best(self) -> list[list[int]]:
        """Each stream's best token sequence so far (partial results; without the LM's end score)."""
        return [list(min(h.items(), key=lambda kv: (-kv[1], kv[0]))[0]) for h in self.hyps]

    def results(self) -> list[NBest]:
        """N :class:`NBest` lists, best first (with an LM, the final ranking adds its ``</s>`` score)."""
        lm, lm_scale = self.lm, self.lm_scale
        results = []
        for n in range(len(self.hyps)):
            items = list(self.hyps[n].items())
            lm_lp: list[float] = []
            if self.use_lm:
                lm_lp = [lm.sequence_logprob(toks) for toks, _ in items]
                items = [(toks, s + lm_scale * lm.final(self.lm_states[n][toks])) for toks, s in items]
            order = sorted(range(len(items)), key=lambda i: (-items[i][1], items[i][0]))
            res = NBest(tokens=[list(items[i][0]) for i in order], scores=[items[i][1] for i in order])
            if self.use_lm:
                res.components["lm"] = [lm_lp[i] for i in order]
            results.append(res)
        return results


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
    search = BeamStreams(
        predictor,
        joiner,
        enc.size(0),
        enc.device,
        beam=beam,
        lm=lm,
        lm_scale=lm_scale,
        blank_penalty=blank_penalty,
        cache=cache,
    )
    search.advance(joiner.enc_proj(enc), enc_lens)  # (N, T', J)
    if stats is not None:
        stats["predictor_calls"] = stats.get("predictor_calls", 0) + search.pred_cache.calls
        stats["predictor_rows"] = stats.get("predictor_rows", 0) + search.pred_cache.computed
    return search.results()
