"""Mask-CTC inference: CTC greedy output refined by a conditional masked LM.

Two searches share the CTC segmentation and the mask-filling schedule below:

* :func:`mask_ctc_easy_first` — greedy easy-first filling (Higuchi et al., 2020);
* :func:`mask_ctc_beam_search` — the beam search of Algorithm 1 of Gong, Zhou and Qian, "Knowledge
  Transfer and Distillation from Autoregressive to Non-Autoregressive Speech Recognition"
  (Interspeech 2022), section 3.1. With ``beam=1`` it is exactly the easy-first search.

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, D model dim,
V vocabulary (blank = 0), L token positions (longest CTC output of the batch), B beam,
H hypotheses (all utterances' beams stacked).

The masked LM is duck-typed like ``asr_kd.models.heads.MaskCtcDecoder``:
``mlm_decoder(memory (N, T', D), memory_lens (N,), ys_masked (N, L)) -> logits (N, L, V)`` where
``ys_masked`` holds token ids, ``mask_id`` at masked positions and ``ignore_id`` (-1) as padding.
Neither blank nor ``mask_id`` (when it is one of the V outputs) is ever filled in.

Mask-filling schedule (``schedule``, :func:`mask_fill_schedule`), for ``M`` masks and the knob ``K``:

* ``"paper"`` (default): Algorithm 1 / Eq. 5 of Gong et al. — ``ceil(M / K)`` MLM iterations that
  fill ``K`` masks each, the last one ``M mod K`` (``K`` when ``K`` divides ``M``). ``K`` is the
  number of tokens per iteration.
* ``"espnet"``: ESPnet's ``MaskCTCInference`` (``maskctc_n_iterations``) — ``R = min(K, M)``
  iterations, the first ``R - 1`` fill ``M // R`` masks each, the last one the rest. ``K`` is the
  number of iterations.

(Before the beam search existed, :func:`mask_ctc_easy_first` used ``min(K, M)`` iterations filling
``ceil(remaining / iterations left)`` each; for ``K = 2`` that equals ``"paper"`` up to 3 masks.)
"""

from __future__ import annotations

from typing import Any

import torch

from asr_kd.decoding.common import NBest
from asr_kd.ops import mask_ctc_beam as _beam_step_op  # called through the module (patchable)

__all__ = [
    "mask_ctc_easy_first",
    "mask_ctc_beam_search",
    "ctc_greedy_with_confidence",
    "mask_fill_schedule",
    "MASK_SCHEDULES",
]

_NEG_INF = float("-inf")

#: accepted values of the ``schedule`` argument (see the module docstring)
MASK_SCHEDULES = ("paper", "espnet")


def ctc_greedy_with_confidence(
    log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0
) -> tuple[list[list[int]], list[list[float]]]:
    """CTC best path with a confidence per output token.

    A token's confidence is the largest frame posterior inside the run of frames that produced it
    (the frames between the neighbouring blanks / other tokens).

    Args:
        log_probs: ``(N, T', V)`` frame log posteriors.
        lens: ``(N,)`` valid frames.

    Returns:
        ``(tokens, confidences)``: N lists of token ids and N lists of probabilities in [0, 1].
    """
    best_lp, ids = log_probs.detach().max(dim=-1)  # (N, T')
    probs = best_lp.exp().cpu()
    ids = ids.cpu()
    tokens, confs = [], []
    for n, L in enumerate(lens.tolist()):
        if L == 0:
            tokens.append([])
            confs.append([])
            continue
        uniq, counts = torch.unique_consecutive(ids[n, :L], return_counts=True)
        seg = torch.repeat_interleave(torch.arange(uniq.numel()), counts)  # (L,)
        seg_conf = torch.zeros(uniq.numel(), dtype=probs.dtype).scatter_reduce(
            0, seg, probs[n, :L], reduce="amax", include_self=False
        )
        keep = uniq != blank_id
        tokens.append(uniq[keep].tolist())
        confs.append(seg_conf[keep].tolist())
    return tokens, confs


def mask_fill_schedule(num_masks: int, K: int, schedule: str = "paper") -> list[int]:
    """How many masks each MLM iteration fills (the list sums to ``num_masks``; empty for 0 masks).

    ``"paper"``: ``[K] * (M // K) + [M % K]`` (last entry dropped when 0);
    ``"espnet"``: ``R = min(K, M)`` entries, ``[M // R] * (R - 1) + [M - (R - 1) * (M // R)]``.

    >>> mask_fill_schedule(5, 2), mask_fill_schedule(5, 2, "espnet"), mask_fill_schedule(1, 2, "espnet")
    ([2, 2, 1], [2, 3], [1])
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"unknown mask-filling schedule {schedule!r}; choose from {MASK_SCHEDULES}")
    if num_masks <= 0:
        return []
    if schedule == "paper":
        q, r = divmod(num_masks, K)
        return [K] * q + ([r] if r else [])
    R = min(K, num_masks)
    q = num_masks // R
    return [q] * (R - 1) + [num_masks - q * (R - 1)]


def _init_masks(ctc_log_probs, lens, p_thr, mask_id, blank_id, ignore_id, K, schedule, device):
    """CTC greedy + thresholding shared by both searches.

    Returns ``(tokens, ys (N, L) or None, fill (N, I) long)``: the CTC greedy token lists; their
    padded ``(N, L)`` ids (``ignore_id`` padding) with ``mask_id`` where the confidence is below
    ``p_thr`` (``None`` when every output is empty); and per utterance the number of masks each of
    the ``I`` iterations fills (0 once the utterance is done).
    """
    tokens, confs = ctc_greedy_with_confidence(ctc_log_probs, lens, blank_id)
    N = len(tokens)
    L = max((len(t) for t in tokens), default=0)
    mask_fill_schedule(0, K, schedule)  # validates K and schedule
    if L == 0:
        return tokens, None, torch.zeros(N, 0, dtype=torch.long, device=device)
    ys = torch.full((N, L), ignore_id, dtype=torch.long)
    plans = []
    for n, (tok, conf) in enumerate(zip(tokens, confs)):
        if tok:
            ys[n, : len(tok)] = torch.tensor(tok)
            masked = torch.tensor(conf) < p_thr
            ys[n, : len(tok)][masked] = mask_id
            plans.append(mask_fill_schedule(int(masked.sum()), K, schedule))
        else:
            plans.append([])
    fill = torch.zeros(N, max(map(len, plans)), dtype=torch.long)
    for n, plan in enumerate(plans):
        fill[n, : len(plan)] = torch.tensor(plan, dtype=torch.long)
    return tokens, ys.to(device), fill.to(device)


def _mlm_log_probs(mlm_decoder, memory, memory_lens, ys, mask_id, blank_id) -> torch.Tensor:
    """``(n, L, V)`` float32 MLM log posteriors with blank and ``mask_id`` (if an output) at -inf."""
    logp = mlm_decoder(memory, memory_lens, ys).float().log_softmax(dim=-1)
    V = logp.size(-1)
    for banned in (blank_id, mask_id):
        if banned is not None and 0 <= banned < V:
            logp[..., banned] = _NEG_INF
    return logp


@torch.no_grad()
def mask_ctc_easy_first(
    ctc_log_probs: torch.Tensor,
    lens: torch.Tensor,
    mlm_decoder: Any,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    *,
    p_thr: float = 0.99,
    K: int = 2,
    mask_id: int,
    blank_id: int = 0,
    ignore_id: int = -1,
    schedule: str = "paper",
) -> list[list[int]]:
    """Mask-CTC easy-first decoding (Higuchi et al., 2020), batched across utterances.

    1. CTC greedy search; each output token gets the confidence of
       :func:`ctc_greedy_with_confidence`.
    2. Tokens with confidence ``< p_thr`` are replaced by ``mask_id``; the others are final.
    3. The masks are filled in the iterations of :func:`mask_fill_schedule` (``K``, ``schedule``):
       in each one the masked LM predicts every masked position (token = argmax over V without
       blank, confidence = its probability) and the scheduled number of most confident masks are
       filled (ties: leftmost first). Utterances without masks left skip the MLM.

    Args:
        ctc_log_probs: ``(N, T', V)`` CTC log posteriors.
        lens: ``(N,)`` valid CTC frames.
        mlm_decoder: see the module docstring.
        enc: ``(N, T', D)`` encoder output (MLM memory).
        enc_lens: ``(N,)`` valid encoder frames.
        p_thr: CTC confidence threshold for keeping a token.
        K: masks per iteration (``schedule="paper"``) or number of iterations (``"espnet"``), >= 1.
        mask_id: the ``<mask>`` token id of the MLM (V for ``MaskCtcDecoder``).
        blank_id: CTC blank (never predicted).
        ignore_id: padding id of ``ys_masked``.
        schedule: ``"paper"`` or ``"espnet"`` (module docstring).

    Returns:
        N token-id lists.
    """
    device = enc.device
    N = enc.size(0)
    tokens, ys, fill_plan = _init_masks(ctc_log_probs, lens, p_thr, mask_id, blank_id, ignore_id, K, schedule, device)
    if ys is None:
        return [[] for _ in range(N)]
    L = ys.size(1)
    masked = ys == mask_id
    positions = torch.arange(L, device=device)
    enc_lens = enc_lens.to(device)

    for r in range(fill_plan.size(1)):
        todo = (fill_plan[:, r] > 0).nonzero().flatten()  # utterances with masks left
        sub = ys[todo]
        logp = _mlm_log_probs(mlm_decoder, enc[todo], enc_lens[todo], sub, mask_id, blank_id)
        conf, pred = logp.max(dim=-1)  # (n, L)
        m = masked[todo]
        score = conf.masked_fill(~m, _NEG_INF)
        # rank masked positions by confidence (descending), ties by position
        order = torch.sort(score, dim=1, descending=True, stable=True).indices  # (n, L)
        rank = torch.empty_like(order).scatter_(1, order, positions.expand_as(order))
        fill = m & (rank < fill_plan[todo, r][:, None])
        sub[fill] = pred[fill]
        ys[todo] = sub
        masked[todo] = m & ~fill
    return [ys[n, : len(tokens[n])].tolist() for n in range(N)]


@torch.no_grad()
def mask_ctc_beam_search(
    ctc_log_probs: torch.Tensor,
    ctc_lens: torch.Tensor,
    decoder: Any,
    memory: torch.Tensor,
    memory_lens: torch.Tensor,
    *,
    beam: int = 10,
    p_thr: float = 0.99,
    K: int = 2,
    mask_id: int,
    blank_id: int = 0,
    ignore_id: int = -1,
    schedule: str = "paper",
    backend: str = "auto",
) -> list[NBest]:
    """Beam search on NAR masked-LM decoding (Gong et al., 2022, Algorithm 1), batched.

    1. ``y`` = CTC greedy output; tokens with confidence ``< p_thr`` (see
       :func:`ctc_greedy_with_confidence`) become ``mask_id`` (``M`` masks), the others are final.
       ``Omega_0 = {y_obs^0}`` with score 0.
    2. For each iteration of :func:`mask_fill_schedule` (``schedule="paper"``: ``ceil(M / K)``
       iterations filling ``k = K`` masks, the last ``M mod K``): every hypothesis of
       ``Omega_0`` goes through the MLM (all hypotheses of all utterances in one decoder call);
       its ``beam`` best candidate sets ``C`` (``k`` masked positions, each with a token) by the
       joint log posterior ``sum_{c in C} log p_mlm(c | y_obs, H)`` (Eq. 5) are pushed into
       ``Omega_1``; ``Omega_0`` = the ``beam`` best of ``Omega_1``.
    3. Return ``Omega_0`` best first.

    **Score**: a hypothesis' score is the sum, over the masks filled so far, of the log MLM
    posterior of the token each was filled with, taken from the MLM call of the iteration that
    filled it (its context then). Kept CTC tokens add nothing, so an utterance's hypotheses all
    fill the same ``M`` tokens and compare without length normalisation; with no masks the only
    hypothesis is the CTC greedy output with score 0. Hypotheses reaching the same token sequence
    through different fill orders are merged, keeping the larger score.

    With ``beam=1`` this equals :func:`mask_ctc_easy_first` with the same ``K`` and ``schedule``.
    The MLM never fills blank, nor ``mask_id`` when that is one of its outputs.

    Args:
        ctc_log_probs: ``(N, T', V)`` CTC log posteriors.
        ctc_lens: ``(N,)`` valid CTC frames.
        decoder: the masked LM (module docstring), e.g. ``MaskCtcDecoder``.
        memory: ``(N, T', D)`` encoder output.
        memory_lens: ``(N,)`` valid encoder frames.
        beam: B (>= 1): candidate sets per hypothesis and hypotheses kept per utterance.
        p_thr: CTC confidence threshold.
        K: masks per iteration (``"paper"``) or iterations (``"espnet"``), >= 1.
        mask_id: the ``<mask>`` id (V for ``MaskCtcDecoder``).
        blank_id: CTC blank.
        ignore_id: padding id of the decoder input.
        schedule: ``"paper"`` (default) or ``"espnet"``, see the module docstring.
        backend: the search bookkeeping of each iteration (fill sets, merge, prune; not the MLM
            call), see :func:`asr_kd.ops.mask_ctc_beam_step`: ``"auto"`` (the native op of
            ``asr_kd._C`` for CPU float32/float64 MLM outputs, else PyTorch), ``"native"``,
            ``"python"``. Same hypotheses, scores and order on all backends.

    Returns:
        N :class:`~asr_kd.decoding.common.NBest` (at most ``beam`` hypotheses, best first), with
        ``components["mlm"]`` = the scores.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if backend not in _beam_step_op.BACKENDS:
        raise ValueError(f"backend must be one of {_beam_step_op.BACKENDS}, got {backend!r}")
    device = memory.device
    N = memory.size(0)
    tokens, ys, fill_plan = _init_masks(
        ctc_log_probs, ctc_lens, p_thr, mask_id, blank_id, ignore_id, K, schedule, device
    )
    if ys is None:
        return [NBest([[]], [0.0], {"mlm": [0.0]}) for _ in range(N)]
    memory_lens = memory_lens.to(device)
    hyp_ys = ys  # (H, L)
    hyp_utt = torch.arange(N, device=device)  # (H,)
    hyp_score = torch.zeros(N, dtype=torch.float64, device=device)  # (H,)

    for i in range(fill_plan.size(1)):
        k = fill_plan[hyp_utt, i]  # (H,)
        act = (k > 0).nonzero().flatten()
        a_ys, a_utt = hyp_ys[act], hyp_utt[act]
        logp = _mlm_log_probs(decoder, memory[a_utt], memory_lens[a_utt], a_ys, mask_id, blank_id)
        hyp_ys, hyp_score, hyp_utt = _beam_step_op.mask_ctc_beam_step(
            logp, hyp_ys, hyp_score, hyp_utt, k, beam, N, mask_id=mask_id, ignore_id=ignore_id, backend=backend
        )

    out_ys, out_score, out_utt = hyp_ys.tolist(), hyp_score.tolist(), hyp_utt.tolist()
    per_utt: list[list[tuple[float, list[int]]]] = [[] for _ in range(N)]
    for seq, s, n in zip(out_ys, out_score, out_utt):
        per_utt[n].append((s, seq[: len(tokens[n])]))
    results = []
    for hyps in per_utt:
        hyps.sort(key=lambda h: (-h[0], h[1]))
        scores = [s for s, _ in hyps]
        results.append(NBest([h for _, h in hyps], scores, {"mlm": list(scores)}))
    return results
