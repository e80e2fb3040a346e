"""One Mask-CTC beam-search iteration after the MLM call: native (kernel 3 of ``asr_kd._C``) or
the PyTorch reference.

:func:`asr_kd.decoding.mask_ctc.mask_ctc_beam_search` (Algorithm 1 of Gong et al., 2022) runs, per
iteration, one batched masked-LM call for all hypotheses of all utterances and then the search
bookkeeping: the ``beam`` best candidate sets of each hypothesis (``_top_fill_sets``: ``k`` masked
positions filled, ranked by the joint log posterior), the candidates' sequences and scores, and per
utterance the merge of identical sequences (max score) and the pruning to ``beam`` (``_prune``).
:func:`mask_ctc_beam_step` is that bookkeeping as one call:

- ``backend="python"`` (alias ``"torch"``): the reference,
  ``asr_kd.decoding.mask_ctc._beam_step_reference`` (``_top_fill_sets`` + ``_prune``), on the
  inputs' device;
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

from typing import Optional

import torch

from asr_kd.decoding.mask_ctc import _beam_step_reference
from asr_kd.ops import frame_kd as _frame_kd
from asr_kd.ops._native import load_native

__all__ = ["mask_ctc_beam_step", "mask_ctc_beam_step_native", "mask_ctc_beam_step_reference",
           "BACKENDS"]

BACKENDS = ("auto", "native", "python", "torch")

Beam = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _native_obstacle(logp: torch.Tensor, auto: bool) -> Optional[str]:
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


def mask_ctc_beam_step_reference(
    logp: torch.Tensor, hyp_ys: torch.Tensor, hyp_score: torch.Tensor, hyp_utt: torch.Tensor,
    k: torch.Tensor, beam: int, num_utts: int, *, mask_id: int, ignore_id: int = -1,
) -> Beam:
    """The PyTorch reference (``_top_fill_sets`` + ``_prune``); arguments as :func:`mask_ctc_beam_step`."""
    return _beam_step_reference(logp, hyp_ys, hyp_score, hyp_utt, k, beam, num_utts, mask_id, ignore_id)


def mask_ctc_beam_step_native(
    logp: torch.Tensor, hyp_ys: torch.Tensor, hyp_score: torch.Tensor, hyp_utt: torch.Tensor,
    k: torch.Tensor, beam: int, num_utts: int, *, mask_id: int, ignore_id: int = -1,
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
        logp.detach().to(cpu).contiguous(), hyp_ys.detach().to(cpu, torch.int64),
        hyp_score.detach().to(cpu, torch.float64), hyp_utt.detach().to(cpu, torch.int64),
        k.detach().to(cpu, torch.int64), int(beam), int(num_utts), int(mask_id),
    )
    if device.type != "cpu":
        ys, score, utt = ys.to(device), score.to(device), utt.to(device)
    return ys, score, utt


def mask_ctc_beam_step(
    logp: torch.Tensor, hyp_ys: torch.Tensor, hyp_score: torch.Tensor, hyp_utt: torch.Tensor,
    k: torch.Tensor, beam: int, num_utts: int, *, mask_id: int, ignore_id: int = -1,
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
