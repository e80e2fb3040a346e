// Torch side of the CUDA frame-level KD kernels: checks, contiguity, dtype dispatch, the current
// stream, and the CUDA registrations of torch.ops.asr_kd.frame_kd_{forward,backward}.
//
// Uses only device-generic c10 APIs (DeviceGuard, the CUDA DeviceGuardImpl's current stream via
// c10::Stream::native_handle()), so it compiles against the CPU torch headers as well and links
// against nothing beyond libtorch and cudart. Built only with ASR_KD_WITH_CUDA.
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include "../frame_kd.h"
#include "frame_kd_kernel.h"

namespace asr_kd {
namespace {

void* current_cuda_stream(const at::Device& device) {
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(device).native_handle();
}

void check_launch(int code) {
  TORCH_CHECK(code == 0, "frame_kd CUDA kernel launch failed: ", cuda::error_string(code));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> frame_kd_forward_cuda(
    const at::Tensor& student, const at::Tensor& teacher,
    const std::optional<at::Tensor>& teacher_indices, const at::Tensor& weights,
    double temperature, bool kl, bool scale_by_t2) {
  const int64_t K = frame_kd_check_inputs(student, teacher, teacher_indices, weights, temperature);
  TORCH_CHECK(student.is_cuda(), "frame_kd_forward_cuda: tensors must be on a CUDA device");
  c10::DeviceGuard guard(student.device());
  const bool topk = teacher_indices.has_value() && teacher_indices->defined();
  const at::Tensor s = student.contiguous();
  const at::Tensor t = teacher.contiguous();
  const at::Tensor w = weights.contiguous();
  const at::Tensor idx = topk ? teacher_indices->contiguous() : at::Tensor();
  const int64_t N = s.size(0), T = s.size(1), V = s.size(2);
  at::Tensor loss = at::empty({N, T}, s.options());
  at::Tensor ls = at::empty({N, T}, s.options());
  at::Tensor lt = at::empty({N, T}, s.options());
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "frame_kd_forward_cuda", [&] {
    cuda::FrameKdParams<scalar_t> p;
    p.student = s.data_ptr<scalar_t>();
    p.teacher = t.data_ptr<scalar_t>();
    p.indices = topk ? idx.data_ptr<int64_t>() : nullptr;
    p.weights = w.data_ptr<scalar_t>();
    p.loss = loss.data_ptr<scalar_t>();
    p.student_lse = ls.data_ptr<scalar_t>();
    p.teacher_lse = lt.data_ptr<scalar_t>();
    p.frames = N * T;
    p.V = V;
    p.K = K;
    p.inv_tau = 1.0 / temperature;
    p.kl_coef = kl ? 1.0 : 0.0;
    p.scale = scale_by_t2 ? temperature * temperature : 1.0;
    check_launch(cuda::launch_frame_kd_forward<scalar_t>(p, current_cuda_stream(s.device())));
  });
  return {loss, ls, lt};
}

at::Tensor frame_kd_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& student,
                                  const at::Tensor& teacher,
                                  const std::optional<at::Tensor>& teacher_indices,
                                  const at::Tensor& weights, const at::Tensor& student_lse,
                                  const at::Tensor& teacher_lse, double temperature,
                                  bool scale_by_t2) {
  const int64_t K = frame_kd_check_inputs(student, teacher, teacher_indices, weights, temperature);
  TORCH_CHECK(student.is_cuda(), "frame_kd_backward_cuda: tensors must be on a CUDA device");
  for (const at::Tensor* x : {&grad_loss, &student_lse, &teacher_lse}) {
    TORCH_CHECK(x->sizes() == weights.sizes() && x->scalar_type() == student.scalar_type() &&
                    x->device() == student.device(),
                "frame_kd_backward: grad_loss and the LSEs must be (N, T) like the weights");
  }
  c10::DeviceGuard guard(student.device());
  const bool topk = teacher_indices.has_value() && teacher_indices->defined();
  const at::Tensor s = student.contiguous();
  const at::Tensor t = teacher.contiguous();
  const at::Tensor w = weights.contiguous();
  const at::Tensor g = grad_loss.contiguous();
  const at::Tensor ls = student_lse.contiguous();
  const at::Tensor lt = teacher_lse.contiguous();
  const at::Tensor idx = topk ? teacher_indices->contiguous() : at::Tensor();
  const int64_t N = s.size(0), T = s.size(1), V = s.size(2);
  at::Tensor grad = at::empty({N, T, V}, s.options());
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "frame_kd_backward_cuda", [&] {
    cuda::FrameKdParams<scalar_t> p;
    p.student = s.data_ptr<scalar_t>();
    p.teacher = t.data_ptr<scalar_t>();
    p.indices = topk ? idx.data_ptr<int64_t>() : nullptr;
    p.weights = w.data_ptr<scalar_t>();
    p.grad_loss = g.data_ptr<scalar_t>();
    p.student_lse = const_cast<scalar_t*>(ls.data_ptr<scalar_t>());
    p.teacher_lse = const_cast<scalar_t*>(lt.data_ptr<scalar_t>());
    p.grad_student = grad.data_ptr<scalar_t>();
    p.frames = N * T;
    p.V = V;
    p.K = K;
    p.inv_tau = 1.0 / temperature;
    p.scale = scale_by_t2 ? temperature * temperature : 1.0;
    check_launch(cuda::launch_frame_kd_backward<scalar_t>(p, current_cuda_stream(s.device())));
  });
  return grad;
}

}  // namespace
}  // namespace asr_kd

TORCH_LIBRARY_IMPL(asr_kd, CUDA, m) {
  m.impl("frame_kd_forward", &asr_kd::frame_kd_forward_cuda);
  m.impl("frame_kd_backward", &asr_kd::frame_kd_backward_cuda);
}
