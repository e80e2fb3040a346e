"""CTC search: greedy, prefix beam search, and the CTC prefix scorer for joint decoding.

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, V vocabulary (blank = 0
by default), B hypotheses (beams of all utterances stacked), C candidate tokens per hypothesis,
K n-best size.

All functions take per-frame **log** posteriors ``log_probs (N, T', V)`` (e.g. ``CtcHead.log_probs``)
and valid lengths ``lens (N,)``; frames at or beyond ``lens[n]`` are ignored.

``ctc_prefix_beam_search`` is the pure-Python reference for the native version: it is the textbook
prefix beam search with separate blank / non-blank prefix probabilities in the log domain, whose
pruning rules are spelled out in its docstring so that another implementation can match it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from asr_kd.decoding.common import NBest, valid_mask

__all__ = [
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "CtcPrefixScorer",
    "CtcPrefixState",
    "CtcPrefixExtension",
]

_NEG_INF = float("-inf")

TokenBias = Callable[[tuple, int], float]
"""``token_bias(prefix, token) -> float``: a log-domain bonus for extending ``prefix`` (a tuple of
token ids) by ``token`` (never blank); e.g. context biasing or a shallow-fusion LM."""


def ctc_greedy_search(
    log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0
) -> list[list[int]]:
    """Best path decoding: per-frame argmax, merge repeats, drop blanks (batched).

    Args:
        log_probs: ``(N, T', V)`` frame log posteriors (any monotone scores work).
        lens: ``(N,)`` valid frame counts.
        blank_id: the blank token.

    Returns:
        N token-id lists.
    """
    ids = log_probs.argmax(dim=-1)  # (N, T')
    prev = torch.nn.functional.pad(ids[:, :-1], (1, 0), value=-1)  # (N, T')
    keep = (ids != blank_id) & (ids != prev) & valid_mask(lens.to(ids.device), ids.size(1))
    ids, keep = ids.cpu(), keep.cpu()
    return [ids[n][keep[n]].tolist() for n in range(ids.size(0))]


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    beam: int = 10,
    blank_id: int = 0,
    *,
    top_k: Optional[int] = None,
    prune_threshold: Optional[float] = None,
    token_bias: Optional[TokenBias] = None,
    nbest: Optional[int] = None,
) -> list[NBest]:
    """CTC prefix beam search (one utterance at a time; the reference implementation).

    Each prefix ``g`` (a tuple of non-blank tokens) carries ``pb`` / ``pnb``: the log probability of
    all alignments of the frames so far that collapse to ``g`` and end in blank / in ``g``'s last
    token. For every frame ``t`` and every prefix in the beam, for every candidate token ``c``
    (log posterior ``p``)::

        c == blank        : pb'(g)      += pb(g) (+) pnb(g) + p
        c == last(g)      : pnb'(g)     += pnb(g) + p           (repeat collapses)
                            pnb'(g + c) += pb(g) + p            (blank separates a real repeat)
        otherwise         : pnb'(g + c) += pb(g) (+) pnb(g) + p

    (``+=`` is log-add, ``(+)`` log-add). After the frame, prefixes are ranked by
    ``score = (pb (+) pnb) + bias`` and the best ``beam`` are kept (ties: smaller token tuple first);
    prefixes whose probability is zero are dropped. ``bias(g)`` is the sum of
    ``token_bias(g[:i], g[i])`` over the prefix, computed once when the prefix is created.

    Candidate tokens at frame ``t``: all V tokens, restricted to the ``top_k`` largest log posteriors
    of the frame when ``top_k`` is set, and to tokens with ``log p >= max_v log p - prune_threshold``
    when ``prune_threshold`` is set (blank is treated like any other token by both rules).

    With ``beam`` at least the number of label sequences and no pruning, the result is exact: every
    label sequence of length <= T' with its total CTC probability.

    Args:
        log_probs: ``(N, T', V)`` frame log posteriors.
        lens: ``(N,)`` valid frame counts.
        beam: prefixes kept after each frame.
        blank_id: the blank token.
        top_k: per-frame candidate limit (None: all tokens).
        prune_threshold: per-frame log-probability window below the frame maximum (None: off).
        token_bias: optional hook ``(prefix tuple, token) -> float`` added to the ranking score;
            it must be deterministic (it may be called again for the same arguments).
        nbest: hypotheses returned per utterance (default ``beam``).

    Returns:
        N :class:`NBest` lists, best first, with ``scores`` = ctc + bias and ``components``
        ``{"ctc": [...], "bias": [...]}`` (ctc is the log probability ``pb (+) pnb``).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    nbest = beam if nbest is None else nbest
    lp = log_probs.detach().to("cpu", torch.float64)
    lens_list = lens.tolist()
    V = lp.size(-1)

    # allowed (frame, token) pairs
    allowed = torch.ones(lp.shape, dtype=torch.bool)
    if top_k is not None and top_k < V:
        allowed = torch.zeros_like(allowed).scatter_(-1, lp.topk(top_k, dim=-1).indices, True)
    if prune_threshold is not None:
        allowed &= lp >= lp.max(dim=-1, keepdim=True).values - prune_threshold
    lp = lp.masked_fill(~allowed, _NEG_INF)

    results = []
    for n in range(lp.size(0)):
        prefixes: list[tuple] = [()]
        pb = torch.zeros(1, dtype=torch.float64)
        pnb = torch.full((1,), _NEG_INF, dtype=torch.float64)
        bias = torch.zeros(1, dtype=torch.float64)
        for t in range(lens_list[n]):
            row = lp[n, t]  # (V,)
            K = len(prefixes)
            last = torch.tensor([g[-1] if g else -1 for g in prefixes])  # (K,)
            has_last = last >= 0
            p_tot = torch.logaddexp(pb, pnb)  # (K,)
            # the prefix itself: through blank, or by repeating its last token
            stay_pb = p_tot + row[blank_id]
            stay_pnb = torch.where(has_last, pnb + row[last.clamp(min=0)], _NEG_INF)
            # extensions g + c, (K, V); c == last(g) needs a blank in between
            ext = p_tot[:, None] + row[None, :]
            rl = has_last.nonzero().flatten()
            ext[rl, last[rl]] = pb[rl] + row[last[rl]]
            ext[:, blank_id] = _NEG_INF
            # an extension that is already a prefix of the beam adds to that prefix
            index = {g: k for k, g in enumerate(prefixes)}
            for k2, g in enumerate(prefixes):
                k1 = index.get(g[:-1]) if g else None
                if k1 is not None:
                    stay_pnb[k2] = torch.logaddexp(stay_pnb[k2], ext[k1, g[-1]])
                    ext[k1, g[-1]] = _NEG_INF
            ext_bias = bias[:, None].expand(K, V).clone()
            if token_bias is not None:
                for k, c in torch.isfinite(ext).nonzero().tolist():
                    ext_bias[k, c] += float(token_bias(prefixes[k], c))
            stay_score = torch.logaddexp(stay_pb, stay_pnb) + bias  # (K,)
            scores = torch.cat([stay_score, (ext + ext_bias).flatten()])  # (K + K * V,)
            finite = int(torch.isfinite(scores).sum())
            if finite == 0:
                prefixes, pb, pnb, bias = [], pb[:0], pnb[:0], bias[:0]
                break
            kth = scores.topk(min(beam, finite)).values[-1]
            chosen = (scores >= kth).nonzero().flatten().tolist()  # ties at the boundary included

            def key(i: int) -> tuple:
                g = prefixes[i] if i < K else prefixes[(i - K) // V] + ((i - K) % V,)
                return (-float(scores[i]), g)

            chosen = sorted(chosen, key=key)[:beam]
            new_prefixes, new_pb, new_pnb, new_bias = [], [], [], []
            for i in chosen:
                if i < K:
                    new_prefixes.append(prefixes[i])
                    new_pb.append(stay_pb[i])
                    new_pnb.append(stay_pnb[i])
                    new_bias.append(bias[i])
                else:
                    k, c = divmod(i - K, V)
                    new_prefixes.append(prefixes[k] + (c,))
                    new_pb.append(torch.tensor(_NEG_INF, dtype=torch.float64))
                    new_pnb.append(ext[k, c])
                    new_bias.append(ext_bias[k, c])
            prefixes = new_prefixes
            pb, pnb, bias = torch.stack(new_pb), torch.stack(new_pnb), torch.stack(new_bias)
        ctc = torch.logaddexp(pb, pnb).tolist()
        b = bias.tolist()
        order = sorted(range(len(prefixes)), key=lambda i: (-(ctc[i] + b[i]), prefixes[i]))[:nbest]
        results.append(
            NBest(
                tokens=[list(prefixes[i]) for i in order],
                scores=[ctc[i] + b[i] for i in order],
                components={"ctc": [ctc[i] for i in order], "bias": [b[i] for i in order]},
            )
        )
    return results


# ----------------------------------------------------------------------------------------------
# CTC prefix scorer (Watanabe et al., "Hybrid CTC/attention architecture", 2017, Algorithm 2)
# ----------------------------------------------------------------------------------------------


@dataclass
class CtcPrefixState:
    """Prefix-scorer state of B hypotheses.

    Attributes:
        r: ``(T', 2, B)`` log ``r^n_t(g)``, ``r^b_t(g)``: probability of frames ``0..t`` producing
            the prefix ``g`` and ending in its last token (n) / in blank (b).
        log_psi: ``(B,)`` log prefix probability of ``g`` (0 for the empty prefix).
        last: ``(B,)`` last token of ``g`` (-1 for the empty prefix).
        utt: ``(B,)`` utterance index of each hypothesis (row of the scorer's ``log_probs``).
        length: ``(B,)`` number of tokens in ``g``.
    """

    r: torch.Tensor
    log_psi: torch.Tensor
    last: torch.Tensor
    utt: torch.Tensor
    length: torch.Tensor


@dataclass
class CtcPrefixExtension:
    """Scores of B hypotheses each extended by C candidates (output of ``CtcPrefixScorer.score``).

    Attributes:
        r: ``(T', 2, B, C)`` log ``r^n``/``r^b`` of every extension.
        log_psi: ``(B, C)`` log prefix probability of every extension (for ``eos``: the
            probability of the whole label sequence ``g``).
        candidates: ``(B, C)`` the candidate token ids.
        parent: the state that was extended.
    """

    r: torch.Tensor
    log_psi: torch.Tensor
    candidates: torch.Tensor
    parent: CtcPrefixState


class CtcPrefixScorer:
    """CTC prefix probabilities for growing label prefixes, batched over hypotheses.

    For a prefix ``h = g + c`` the prefix probability ``psi(h)`` is the total probability of all
    label sequences that start with ``h`` (summed over alignments of the ``lens[n]`` frames), i.e.
    ``sum_t phi_{t-1}(g, c) * y_c(t)``. ``log psi(h) - log psi(g) <= 0`` is the CTC score increment
    used by joint CTC/attention beam search. For ``c == eos_id`` it is the probability of the label
    sequence being exactly ``g``. Blank never extends a prefix (its score is ``-inf``).

    Usage::

        scorer = CtcPrefixScorer(log_probs, lens, blank_id=0, eos_id=eos)
        state = scorer.initial_state(torch.arange(N))         # one empty prefix per utterance
        ext = scorer.score(state, candidates)                  # (B, C) log psi of extensions
        state = scorer.select(ext, hyp_idx, cand_idx)          # follow the chosen extensions

    Args:
        log_probs: ``(N, T', V)`` frame log posteriors.
        lens: ``(N,)`` valid frame counts (padded frames are replaced by "certain blank", which
            leaves every prefix probability unchanged).
        blank_id: the blank token.
        eos_id: end-of-sentence token (scored as "the sequence ends here"), or None.
    """

    def __init__(
        self,
        log_probs: torch.Tensor,
        lens: torch.Tensor,
        blank_id: int = 0,
        eos_id: Optional[int] = None,
    ) -> None:
        N, T, V = log_probs.shape
        x = log_probs.detach().clone()
        pad = ~valid_mask(lens.to(x.device), T)  # (N, T')
        x[pad] = _NEG_INF
        x[..., blank_id][pad] = 0.0
        self.x = x.transpose(0, 1).contiguous()  # (T', N, V)
        self.blank_id = blank_id
        self.eos_id = eos_id
        self.vocab_size = V

    def initial_state(self, utt: torch.Tensor) -> CtcPrefixState:
        """State of empty prefixes, one per entry of ``utt (B,)`` (utterance indices)."""
        utt = utt.to(self.x.device)
        r_b = self.x[:, utt, self.blank_id].cumsum(dim=0)  # (T', B)
        r_n = torch.full_like(r_b, _NEG_INF)
        B = utt.numel()
        return CtcPrefixState(
            r=torch.stack([r_n, r_b], dim=1),
            log_psi=torch.zeros(B, dtype=self.x.dtype, device=self.x.device),
            last=torch.full((B,), -1, dtype=torch.long, device=self.x.device),
            utt=utt,
            length=torch.zeros(B, dtype=torch.long, device=self.x.device),
        )

    def score(
        self, state: CtcPrefixState, candidates: Optional[torch.Tensor] = None
    ) -> CtcPrefixExtension:
        """Prefix probabilities of every hypothesis extended by every candidate.

        Args:
            state: B hypotheses.
            candidates: ``(B, C)`` token ids (None: all V tokens).

        Returns:
            A :class:`CtcPrefixExtension`; ``.log_psi (B, C)``.
        """
        T = self.x.size(0)
        B = state.utt.numel()
        if candidates is None:
            candidates = torch.arange(self.vocab_size, device=self.x.device).expand(B, -1)
        candidates = candidates.to(self.x.device)
        C = candidates.size(1)
        xs = self.x[:, state.utt, :]  # (T', B, V)
        y = xs.gather(2, candidates[None].expand(T, B, C))  # (T', B, C)
        y_blank = xs[:, :, self.blank_id, None]  # (T', B, 1)
        r_n_g, r_b_g = state.r[:, 0, :, None], state.r[:, 1, :, None]  # (T', B, 1)
        same = (candidates == state.last[:, None])[None]  # (1, B, C)
        # phi_t: probability of frames 0..t producing g such that c can start at t + 1
        phi = torch.logaddexp(r_b_g, torch.where(same, _NEG_INF, r_n_g))  # (T', B, C)
        # phi_{-1}: the empty prefix can be extended at frame 0
        phi_init = torch.where(state.last == -1, 0.0, _NEG_INF).to(y.dtype)[:, None]  # (B, 1)
        start = phi_init + y[0]  # (B, C)

        r = torch.full((T, 2, B, C), _NEG_INF, dtype=y.dtype, device=y.device)
        r[0, 0] = start
        # g + c needs len(g) + 1 frames: r_t(g + c) is zero for t < len(g), skip those frames
        first = max(1, int(state.length.min())) if B > 0 else T
        for t in range(first, T):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + y[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + y_blank[t]
        terms = torch.cat([start[None], phi[:-1] + y[1:]], dim=0)  # (T', B, C)
        log_psi = terms.logsumexp(dim=0)  # (B, C)

        if self.eos_id is not None:
            full = torch.logaddexp(state.r[-1, 0], state.r[-1, 1])[:, None].expand(B, C)
            log_psi = torch.where(candidates == self.eos_id, full, log_psi)
        log_psi = log_psi.masked_fill(candidates == self.blank_id, _NEG_INF)
        return CtcPrefixExtension(r=r, log_psi=log_psi, candidates=candidates, parent=state)

    def select(
        self, ext: CtcPrefixExtension, hyp_idx: torch.Tensor, cand_idx: torch.Tensor
    ) -> CtcPrefixState:
        """The states of the extensions ``(hyp_idx[i], cand_idx[i])``, each ``(B',)``."""
        hyp_idx = hyp_idx.to(ext.r.device)
        cand_idx = cand_idx.to(ext.r.device)
        return CtcPrefixState(
            r=ext.r[:, :, hyp_idx, cand_idx],
            log_psi=ext.log_psi[hyp_idx, cand_idx],
            last=ext.candidates[hyp_idx, cand_idx],
            utt=ext.parent.utt[hyp_idx],
            length=ext.parent.length[hyp_idx] + 1,
        )
