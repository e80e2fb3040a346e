"""One Mask-CTC beam-search iteration after the MLM call: native (kernel 3 of ``asr_kd._C``) or
the PyTorch reference.

``asr_kd.decoding.mask_ctc.mask_ctc_beam_search`` (Algorithm 1 of Gong et al., 2022) runs, per
iteration, one batched masked-LM call for all hypotheses of all utterances and then the search
bookkeeping: the ``beam`` best candidate sets of each hypothesis (``_top_fill_sets``: ``k`` masked
positions filled, ranked by the joint log posterior), the candidates' sequences and scores, and per
utterance the merge of identical sequences (max score) and the pruning to ``beam`` (``_prune``).
:func:`mask_ctc_beam_step` is that bookkeeping as one call:

- ``backend="python"`` (alias ``"torch"``): the reference :func:`mask_ctc_beam_step_reference`
  (``_top_fill_sets`` + ``_prune``, defined here), on the inputs' device;
- ``backend="native"``: ``torch.ops.asr_kd.mask_ctc_beam_step`` (``csrc/mask_ctc_beam.cpp``), CPU,
  float32 / float64 ``logp``, utterances in parallel (``at::parallel_for``); inputs on another
  device are copied to the CPU and the results back;
- ``backend="auto"``: native for CPU float32 / float64 ``logp`` when the extension is built, else
  the reference (a CUDA search keeps its bookkeeping on the GPU).

Both return the same tensors exactly: tokens, scores (the same float64 additions in the same order)
and the order of the beam, ties included (the native op replicates ``torch.topk``'s CPU order of
equal values, the stable sorts and ``torch.unique``'s lexicographic order). ``ASR_KD_NATIVE=0`` or
``asr_kd.ops.set_backend("torch")`` forces the reference for ``"auto"`` and ``"native"`` alike.
"""

from __future__ import annotations

import torch

from asr_kd.ops import frame_kd as _frame_kd
from asr_kd.ops._native import load_native

__all__ = ["mask_ctc_beam_step", "mask_ctc_beam_step_native", "mask_ctc_beam_step_reference", "BACKENDS"]

BACKENDS = ("auto", "native", "python", "torch")

Beam = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

_NEG_INF = float("-inf")


def _native_obstacle(logp: torch.Tensor, auto: bool) -> str | None:
    """Why the native op cannot (``auto``: should not) run on this input (None when it can)."""
    if load_native() is None:
        return "asr_kd._C is not built (pip install --no-build-isolation -e .)"
    if not isinstance(logp, torch.Tensor) or logp.dim() != 3:
        return "logp must be an (A, L, V) tensor"
    if logp.dtype not in (torch.float32, torch.float64):
        return f"logp must be float32 or float64, got {logp.dtype}"
    if auto and logp.device.type != "cpu":
        return f"logp is on {logp.device} (auto keeps the bookkeeping on the device)"
    return None


def _top_fill_sets(logp: torch.Tensor, masked: torch.Tensor, k: torch.Tensor, beam: int):
    """The ``beam`` best ways to fill ``k`` of the masked positions of each row (Eq. 5).

    A way ("candidate set") picks ``k[a]`` distinct masked positions and a token for each; its
    score is the sum of their log posteriors. Exact top-``beam`` enumeration:

    * only a position's ``beam`` best tokens can appear in a top-``beam`` set (swapping in any of
      them gives ``beam`` sets at least as good), and only the ``beam + k - 1`` positions with the
      best top token (a set using another position leaves ``beam`` of those free, each giving a
      set at least as good);
    * a dynamic programme over these positions (left to right) keeps, for each number ``j <= k``
      of positions picked so far, the ``beam`` best partial sets (the restriction of a top set to
      the positions seen is a top partial set): ``O((beam + k) * k * beam^2)`` per row.

    Ties: the leftmost positions first (as the easy-first search,
    ``asr_kd.decoding.mask_ctc.mask_ctc_easy_first``).

    Args:
        logp: ``(A, L, V)`` log posteriors (banned tokens at -inf); scores are summed in float64.
        masked: ``(A, L)`` bool.
        k: ``(A,)`` positions to fill per row, ``1 <= k[a] <=`` masks of row ``a``.
        beam: B.

    Returns:
        ``(scores (A, B), pos (A, B, k_max), tok (A, B, k_max))``: sets best first, score -inf for
        missing sets; ``pos`` holds sequence positions, -1 in the unused slots ``>= k[a]``.
    """
    A, L, V = logp.shape
    device = logp.device
    kmax = int(k.max())
    M = min(int(masked.sum(dim=1).max()), beam + kmax - 1)
    b = min(beam, V)
    # the M masked positions with the best top token (leftmost on ties), in ascending order
    top1 = logp.max(dim=-1).values.masked_fill(~masked, _NEG_INF)  # (A, L)
    posmap = torch.sort(top1, dim=1, descending=True, stable=True).indices[:, :M]
    posmap = posmap.sort(dim=1).values  # (A, M)
    valid = masked.gather(1, posmap)  # (A, M)
    tl, ti = logp.gather(1, posmap[..., None].expand(A, M, V)).topk(b, dim=-1)  # (A, M, b)
    tl = tl.double().masked_fill(~valid[..., None], _NEG_INF)  # sums in float64

    S = torch.full((A, kmax + 1, beam), _NEG_INF, dtype=tl.dtype, device=device)
    S[:, 0, 0] = 0.0
    items = torch.full((A, kmax + 1, beam, kmax), -1, dtype=torch.long, device=device)  # m * b + r
    r_ids = torch.arange(b, device=device)
    for m in range(M):
        ext = S[:, :-1, :, None] + tl[:, m, None, None, :]  # (A, kmax, B, b): pick position m
        cand_s = torch.cat([S[:, 1:], ext.flatten(2)], dim=2)  # (A, kmax, B + B * b)
        ext_items = items[:, :-1, :, None, :].expand(A, kmax, beam, b, kmax).clone()
        for j in range(kmax):  # row j + 1 extends row j: its slot j gets (m, r)
            ext_items[:, j, :, :, j] = m * b + r_ids
        cand_items = torch.cat([items[:, 1:], ext_items.flatten(2, 3)], dim=2)
        order = torch.sort(cand_s, dim=2, descending=True, stable=True).indices[..., :beam]
        S[:, 1:] = cand_s.gather(2, order)
        items[:, 1:] = cand_items.gather(2, order[..., None].expand(A, kmax, beam, kmax))

    rows = torch.arange(A, device=device)
    scores, items = S[rows, k], items[rows, k]  # (A, B), (A, B, kmax)
    used = items >= 0
    m_idx, r_idx = (items // b).clamp(min=0), (items % b).clamp(min=0)
    pos = posmap.gather(1, m_idx.flatten(1)).view_as(items).masked_fill(~used, -1)
    tok = ti[rows[:, None, None], m_idx, r_idx].masked_fill(~used, -1)
    return scores, pos, tok


def _prune(ys: torch.Tensor, score: torch.Tensor, utt: torch.Tensor, beam: int, num_utts: int):
    """Merge identical hypotheses of an utterance (max score) and keep its ``beam`` best.

    Returns ``(ys, score, utt)`` grouped by utterance (ascending), best first within a group
    (score ties: token order of ``torch.unique``).
    """
    key = torch.cat([utt[:, None], ys], dim=1)
    uniq, inv = torch.unique(key, dim=0, return_inverse=True)
    best = torch.full((uniq.size(0),), _NEG_INF, dtype=score.dtype, device=score.device)
    best = best.scatter_reduce(0, inv, score, reduce="amax")
    u_utt = uniq[:, 0]
    order = torch.sort(best, descending=True, stable=True).indices
    order = order[torch.sort(u_utt[order], stable=True).indices]  # by utterance, best first
    g = u_utt[order]
    counts = torch.bincount(g, minlength=num_utts)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(g.numel(), device=g.device) - starts[g]
    sel = order[rank < beam]
    return uniq[sel, 1:], best[sel], u_utt[sel]


def mask_ctc_beam_step_reference(
    logp: torch.Tensor,
    hyp_ys: torch.Tensor,
    hyp_score: torch.Tensor,
    hyp_utt: torch.Tensor,
    k: torch.Tensor,
    beam: int,
    num_utts: int,
    *,
    mask_id: int,
    ignore_id: int = -1,
) -> Beam:
    """The PyTorch reference; arguments and result as :func:`mask_ctc_beam_step`.

    The ``beam`` best fill sets of every hypothesis with ``k > 0`` (:func:`_top_fill_sets`), each
    written into a copy of the hypothesis with the score added, the hypotheses with ``k == 0``
    passed through, then the merge and per-utterance pruning of :func:`_prune`.
    """
    act = (k > 0).nonzero().flatten()
    done = (k == 0).nonzero().flatten()
    if act.numel() == 0:  # nothing to fill
        return _prune(hyp_ys, hyp_score, hyp_utt, beam, num_utts)
    a_ys, a_utt = hyp_ys[act], hyp_utt[act]
    set_score, pos, tok = _top_fill_sets(logp, a_ys == mask_id, k[act], beam)
    A, L = a_ys.shape
    # the candidates' sequences; unused slots write into a spare column L
    cand = torch.cat([a_ys, a_ys.new_full((A, 1), ignore_id)], dim=1)[:, None].repeat(1, beam, 1)
    cand.scatter_(2, pos.masked_fill(pos < 0, L), tok.masked_fill(pos < 0, ignore_id))
    cand = cand[..., :L]  # (A, B, L)
    cand_score = hyp_score[act, None] + set_score  # (A, B)
    ok = torch.isfinite(cand_score)
    return _prune(
        torch.cat([hyp_ys[done], cand[ok]]),
        torch.cat([hyp_score[done], cand_score[ok]]),
        torch.cat([hyp_utt[done], a_utt[:, None].expand(A, beam)[ok]]),
        beam,
        num_utts,
    )


def mask_ctc_beam_step_native(
    logp: torch.Tensor,
    hyp_ys: torch.Tensor,
    hyp_score: torch.Tensor,
    hyp_utt: torch.Tensor,
    k: torch.Tensor,
    beam: int,
    num_utts: int,
    *,
    mask_id: int,
    ignore_id: int = -1,
) -> Beam:
    """The native op (CPU; other devices are copied there and back); see :func:`mask_ctc_beam_step`.

    ``ignore_id`` is accepted for symmetry with the reference and unused (the op writes only the
    filled positions; padding passes through as it is).

    Raises:
        RuntimeError: the extension is missing or ``logp`` is not float32 / float64.
    """
    why = _native_obstacle(logp, auto=False)
    if why is not None:
        raise RuntimeError(f"mask_ctc_beam_step(backend='native'): {why}")
    device = hyp_ys.device
    cpu = torch.device("cpu")
    ys, score, utt = torch.ops.asr_kd.mask_ctc_beam_step(
        logp.detach().to(cpu).contiguous(),
        hyp_ys.detach().to(cpu, torch.int64),
        hyp_score.detach().to(cpu, torch.float64),
        hyp_utt.detach().to(cpu, torch.int64),
        k.detach().to(cpu, torch.int64),
        int(beam),
        int(num_utts),
        int(mask_id),
    )
    if device.type != "cpu":
        ys, score, utt = ys.to(device), score.to(device), utt.to(device)
    return ys, score, utt


def mask_ctc_beam_step(
    logp: torch.Tensor,
    hyp_ys: torch.Tensor,
    hyp_score: torch.Tensor,
    hyp_utt: torch.Tensor,
    k: torch.Tensor,
    beam: int,
    num_utts: int,
    *,
    mask_id: int,
    ignore_id: int = -1,
    backend: str = "auto",
) -> Beam:
    """Next beam of the Mask-CTC beam search from the MLM output of the current one.

    Args:
        logp: ``(A, L, V)`` MLM log posteriors (banned tokens at -inf) of the hypotheses with
            ``k > 0``, in ascending hypothesis order.
        hyp_ys: ``(H, L)`` int64 current hypotheses, ``mask_id`` at masked positions, padding
            ``ignore_id``.
        hyp_score: ``(H,)`` float64 scores.
        hyp_utt: ``(H,)`` utterance of each hypothesis, in ``[0, num_utts)``.
        k: ``(H,)`` masks each hypothesis fills now (``1 <= k <=`` its masks), 0 for hypotheses
            whose utterance is done (they pass through).
        beam: B: fill sets per hypothesis and hypotheses kept per utterance.
        num_utts: N.
        mask_id, ignore_id: as in :func:`~asr_kd.decoding.mask_ctc.mask_ctc_beam_search`.
        backend: ``"auto"`` | ``"native"`` | ``"python"`` (alias ``"torch"``), see the module docstring.

    Returns:
        ``(ys (H', L), score (H',) float64, utt (H',))``: at most ``beam`` hypotheses per
        utterance, grouped by utterance (ascending), best first (score ties: token sequence
        ascending); identical sequences merged with the larger score.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    glob = _frame_kd.get_backend()
    kw = dict(mask_id=mask_id, ignore_id=ignore_id)
    if not (backend in ("python", "torch") or glob == "torch"):
        explicit = backend == "native" or glob == "native"
        why = _native_obstacle(logp, auto=not explicit)
        if why is None:
            return mask_ctc_beam_step_native(logp, hyp_ys, hyp_score, hyp_utt, k, beam, num_utts, **kw)
        if explicit:
            raise RuntimeError(f"mask_ctc_beam_step(backend='native'): {why}")
    return mask_ctc_beam_step_reference(logp, hyp_ys, hyp_score, hyp_utt, k, beam, num_utts, **kw)
