// Operator registry of asr_kd._C: schemas under the `asr_kd` namespace (torch.ops.asr_kd.*),
// CPU and Meta (shape-only) implementations. The CUDA implementations are registered by
// csrc/cuda/frame_kd_cuda.cpp when the build defines ASR_KD_WITH_CUDA.
#include <torch/library.h>

#include "ctc_prefix_beam.h"
#include "frame_kd.h"
#include "mask_ctc_beam.h"

namespace asr_kd {

bool with_cuda() {
#ifdef ASR_KD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> frame_kd_forward_meta(
    const at::Tensor& student, const at::Tensor& teacher,
    const std::optional<at::Tensor>& teacher_indices, const at::Tensor& weights,
    double temperature, bool /*kl*/, bool /*scale_by_t2*/) {
  frame_kd_check_inputs(student, teacher, teacher_indices, weights, temperature);
  auto opts = student.options();
  auto nt = {student.size(0), student.size(1)};
  return {at::empty(nt, opts), at::empty(nt, opts), at::empty(nt, opts)};
}

at::Tensor frame_kd_backward_meta(const at::Tensor& /*grad_loss*/, const at::Tensor& student,
                                  const at::Tensor& teacher,
                                  const std::optional<at::Tensor>& teacher_indices,
                                  const at::Tensor& weights, const at::Tensor& /*student_lse*/,
                                  const at::Tensor& /*teacher_lse*/, double temperature,
                                  bool /*scale_by_t2*/) {
  frame_kd_check_inputs(student, teacher, teacher_indices, weights, temperature);
  return at::empty(student.sizes(), student.options());
}

}  // namespace
}  // namespace asr_kd

TORCH_LIBRARY(asr_kd, m) {
  m.def(
      "frame_kd_forward(Tensor student, Tensor teacher, Tensor? teacher_indices, Tensor weights, "
      "float temperature, bool kl, bool scale_by_t2) -> (Tensor loss, Tensor student_lse, "
      "Tensor teacher_lse)");
  m.def(
      "frame_kd_backward(Tensor grad_loss, Tensor student, Tensor teacher, "
      "Tensor? teacher_indices, Tensor weights, Tensor student_lse, Tensor teacher_lse, "
      "float temperature, bool scale_by_t2) -> Tensor");
  // CTC prefix beam search (csrc/ctc_prefix_beam.h); CPU only, outputs are data-dependent (no Meta).
  m.def(
      "ctc_prefix_beam_search(Tensor log_probs, Tensor lens, int beam, int blank_id, int? top_k, "
      "float? prune_threshold, Tensor? token_bias, int nbest) -> (Tensor tokens, "
      "Tensor token_offsets, Tensor hyp_offsets, Tensor scores, Tensor ctc_scores, "
      "Tensor bias_scores)");
  // One Mask-CTC beam-search iteration without the MLM call (csrc/mask_ctc_beam.h); CPU only,
  // data-dependent output sizes (no Meta).
  m.def(
      "mask_ctc_beam_step(Tensor logp, Tensor hyp_ys, Tensor hyp_score, Tensor hyp_utt, Tensor k, "
      "int beam, int num_utts, int mask_id) -> (Tensor ys, Tensor score, Tensor utt)");
}

TORCH_LIBRARY_IMPL(asr_kd, CPU, m) {
  m.impl("frame_kd_forward", &asr_kd::frame_kd_forward_cpu);
  m.impl("frame_kd_backward", &asr_kd::frame_kd_backward_cpu);
  m.impl("ctc_prefix_beam_search", &asr_kd::ctc_prefix_beam_search_cpu);
  m.impl("mask_ctc_beam_step", &asr_kd::mask_ctc_beam_step_cpu);
}

TORCH_LIBRARY_IMPL(asr_kd, Meta, m) {
  m.impl("frame_kd_forward", &asr_kd::frame_kd_forward_meta);
  m.impl("frame_kd_backward", &asr_kd::frame_kd_backward_meta);
}
