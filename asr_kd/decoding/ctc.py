"""CTC search: greedy, prefix beam search, and the CTC prefix scorer for joint decoding.

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, V vocabulary (blank = 0
by default), B hypotheses (beams of all utterances stacked), C candidate tokens per hypothesis,
K n-best size.

All functions take per-frame **log** posteriors ``log_probs (N, T', V)`` (e.g. ``CtcHead.log_probs``)
and valid lengths ``lens (N,)``; frames at or beyond ``lens[n]`` are ignored.

``ctc_prefix_beam_search`` is the pure-Python reference of the native op: the textbook prefix beam
search with separate blank / non-blank prefix probabilities in the log domain, whose pruning rules
are spelled out in its docstring so that another implementation can match it exactly. It lives
beside the op (:func:`asr_kd.ops.ctc_prefix_beam.ctc_prefix_beam_search_reference`) and is
re-exported here; :func:`asr_kd.ops.ctc_prefix_beam_search` picks the native op or this reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asr_kd.decoding.common import valid_mask
from asr_kd.ops.ctc_prefix_beam import TokenBias
from asr_kd.ops.ctc_prefix_beam import (
    ctc_prefix_beam_search_reference as ctc_prefix_beam_search,
)

__all__ = [
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "CtcPrefixScorer",
    "CtcPrefixState",
    "CtcPrefixExtension",
    "TokenBias",
]

_NEG_INF = float("-inf")


def ctc_greedy_search(log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
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
        eos_id: int | None = None,
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

    def score(self, state: CtcPrefixState, candidates: torch.Tensor | None = None) -> CtcPrefixExtension:
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

    def select(self, ext: CtcPrefixExtension, hyp_idx: torch.Tensor, cand_idx: torch.Tensor) -> CtcPrefixState:
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
