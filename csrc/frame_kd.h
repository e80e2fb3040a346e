// Fused frame-level knowledge-distillation loss (kernel 1 of asr_kd._C).
//
// Notation (all per frame (n, t); V = vocabulary size, K = number of kept teacher entries):
//   s_v = z_s[v] / tau                       student logits scaled by the temperature
//   u_k = x_t[k] / tau                       teacher logits / log-probs / top-k log-probs, scaled
//   ls  = logsumexp_v s_v,  lt = logsumexp_k u_k
//   log p_s(v) = s_v - ls,  log p_t(k) = u_k - lt     (p_t is renormalised over the K kept entries)
//   kl(n, t) = sum_k p_t(k) (log p_t(k) - log p_s(idx_k))
//   ce(n, t) = -sum_k p_t(k) log p_s(idx_k)               (= kl + H(p_t))
//   loss(n, t) = w(n, t) * c * {kl | ce},   c = tau^2 if scale_by_t2 else 1
// Dense teachers use idx_k = k and K = V.
//
// Gradient (student only; the teacher is a target):
//   d loss(n, t) / d z_s[v] = w * c / tau * (p_s(v) - sum_{k: idx_k = v} p_t(k))
//
// Frames with w == 0 are skipped entirely: loss 0, saved LSEs 0, gradient 0 (even for non-finite
// logits in padded frames).
#pragma once

#include <torch/types.h>

#include <optional>
#include <tuple>

namespace asr_kd {

/// Forward of the fused frame-level KD loss on CPU.
///
/// @param student          (N, T, V) float32/float64 student logits.
/// @param teacher          (N, T, V) teacher logits or log-probs (dense), or (N, T, K) top-k teacher
///                         log-probs when @p teacher_indices is given; same dtype as @p student.
/// @param teacher_indices  undefined (dense) or (N, T, K) int64 vocabulary indices of @p teacher.
/// @param weights          (N, T) per-frame weights, same dtype as @p student.
/// @param temperature      tau > 0.
/// @param kl               true: KL(p_t || p_s); false: cross-entropy -sum p_t log p_s.
/// @param scale_by_t2      multiply the loss by tau^2 (Hinton scaling).
/// @return (loss (N, T), student_lse (N, T), teacher_lse (N, T)); the LSEs are of the scaled
///         logits s and u and are what the backward needs.
std::tuple<at::Tensor, at::Tensor, at::Tensor> frame_kd_forward_cpu(
    const at::Tensor& student, const at::Tensor& teacher,
    const std::optional<at::Tensor>& teacher_indices, const at::Tensor& weights,
    double temperature, bool kl, bool scale_by_t2);

/// Backward of the fused frame-level KD loss on CPU.
///
/// @param grad_loss    (N, T) gradient of the objective w.r.t. the per-frame loss.
/// @param student_lse  (N, T) and @param teacher_lse (N, T): as returned by the forward.
/// @return (N, T, V) gradient w.r.t. the student logits.
at::Tensor frame_kd_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& teacher,
    const std::optional<at::Tensor>& teacher_indices, const at::Tensor& weights,
    const at::Tensor& student_lse, const at::Tensor& teacher_lse, double temperature,
    bool scale_by_t2);

/// Shape/dtype/device checks shared by the CPU and CUDA entry points; returns K.
int64_t frame_kd_check_inputs(const at::Tensor& student, const at::Tensor& teacher,
                              const std::optional<at::Tensor>& teacher_indices,
                              const at::Tensor& weights, double temperature);

/// True when this build of asr_kd._C carries the CUDA kernels.
bool with_cuda();

}  // namespace asr_kd
