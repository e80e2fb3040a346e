"""Python face of the native extension ``asr_kd._C``, each op with a pure-PyTorch reference.

- :func:`frame_kd_loss`: fused frame-level distillation loss (KL / CE between teacher and student
  posteriors per frame; dense or top-k teacher), with :func:`frame_kd_loss_reference` as the
  readable ground truth.
- :func:`native_available`: whether ``asr_kd._C`` is built; :func:`set_backend` /
  ``ASR_KD_NATIVE=0`` force the PyTorch references everywhere.
- :func:`ctc_prefix_beam_search` (``backend="auto"|"native"|"python"``) /
  :func:`ctc_prefix_beam_search_native`: CTC prefix beam search in C++ (kernel 2), same results as
  the Python reference :func:`ctc_prefix_beam_search_reference`; static ``(V,)`` token bias.
- :func:`mask_ctc_beam_step` (``backend="auto"|"native"|"python"``): one Mask-CTC beam-search
  iteration after the MLM call (top-B fill sets per hypothesis, merge, per-utterance prune) in C++
  (kernel 3), identical to the reference :func:`mask_ctc_beam_step_reference`; used by
  ``asr_kd.decoding.mask_ctc.mask_ctc_beam_search``.
- :class:`NBest`: the n-best result type of the searches (re-exported by ``asr_kd.decoding``).

The references live beside the ops they specify; this package imports nothing from
``asr_kd.decoding``, ``asr_kd.kd`` or ``asr_kd.training`` (decoders call ops, not the reverse;
``tests/ops/test_import_direction.py`` checks it).
"""

from asr_kd.ops._native import native_available, native_with_cuda
from asr_kd.ops.ctc_prefix_beam import (
    ctc_prefix_beam_search,
    ctc_prefix_beam_search_native,
    ctc_prefix_beam_search_reference,
)
from asr_kd.ops.frame_kd import (
    frame_kd_loss,
    frame_kd_loss_reference,
    get_backend,
    set_backend,
)
from asr_kd.ops.mask_ctc_beam import (
    mask_ctc_beam_step,
    mask_ctc_beam_step_native,
    mask_ctc_beam_step_reference,
)
from asr_kd.ops.nbest import NBest

__all__ = [
    "NBest",
    "ctc_prefix_beam_search",
    "ctc_prefix_beam_search_native",
    "ctc_prefix_beam_search_reference",
    "frame_kd_loss",
    "frame_kd_loss_reference",
    "get_backend",
    "mask_ctc_beam_step",
    "mask_ctc_beam_step_native",
    "mask_ctc_beam_step_reference",
    "native_available",
    "native_with_cuda",
    "set_backend",
]
