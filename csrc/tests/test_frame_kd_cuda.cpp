// C++ test of the CUDA frame-level KD kernels through their raw launcher interface
// (csrc/cuda/frame_kd_kernel.h), against the CPU kernel (itself tested against libtorch in
// test_frame_kd.cpp). Exit status 77 (reported as skipped by ctest) when no GPU is visible.
#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <type_traits>
#include <vector>

#include "cuda/frame_kd_kernel.h"
#include "frame_kd.h"

namespace {

int g_failures = 0;

#define CUDA_OK(expr)                                                                   \
  do {                                                                                  \
    cudaError_t e_ = (expr);                                                            \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

template <typename T>
T* to_device(const at::Tensor& t) {
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, t.nbytes()));
  CUDA_OK(cudaMemcpy(p, t.data_ptr(), t.nbytes(), cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}

template <typename T>
at::Tensor to_host(const T* p, at::IntArrayRef sizes, at::ScalarType dtype) {
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(dtype));
  CUDA_OK(cudaMemcpy(t.data_ptr(), p, t.nbytes(), cudaMemcpyDeviceToHost));
  return t;
}

void check_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol, const char* what) {
  const at::Tensor err = (got.to(at::kDouble) - want.to(at::kDouble)).abs() - (want.to(at::kDouble).abs() * rtol + atol);
  if (err.max().item<double>() > 0 || !at::isfinite(got).all().item<bool>()) {
    std::fprintf(stderr, "%s: CUDA vs CPU mismatch\n", what);
    ++g_failures;
  }
}

template <typename T>
void run_case(int64_t N, int64_t Tn, int64_t V, int64_t k, bool kl, double tau, double rtol, double atol) {
  const at::ScalarType dtype = std::is_same<T, float>::value ? at::kFloat : at::kDouble;
  const auto opt = at::TensorOptions().dtype(dtype);
  at::manual_seed(N * 1000 + V + k);
  const at::Tensor s = 3.0 * at::randn({N, Tn, V}, opt);
  at::Tensor t = 3.0 * at::randn({N, Tn, V}, opt);
  std::optional<at::Tensor> idx;
  if (k > 0) {
    auto [values, indices] = at::topk(at::log_softmax(t, -1), k, -1);
    t = values.contiguous();
    idx = indices.contiguous();
  }
  const at::Tensor w = at::where(at::rand({N, Tn}, opt) < 0.3, at::zeros({N, Tn}, opt), at::rand({N, Tn}, opt) + 0.5);
  const at::Tensor g = at::rand({N, Tn}, opt);
  auto [loss, ls, lt] = asr_kd::frame_kd_forward_cpu(s, t, idx, w, tau, kl, true);
  const at::Tensor grad = asr_kd::frame_kd_backward_cpu(g, s, t, idx, w, ls, lt, tau, true);

  asr_kd::cuda::FrameKdParams<T> p;
  p.student = to_device<T>(s);
  p.teacher = to_device<T>(t);
  p.indices = idx ? to_device<int64_t>(*idx) : nullptr;
  p.weights = to_device<T>(w);
  p.grad_loss = to_device<T>(g);
  CUDA_OK(cudaMalloc(&p.loss, N * Tn * sizeof(T)));
  CUDA_OK(cudaMalloc(&p.student_lse, N * Tn * sizeof(T)));
  CUDA_OK(cudaMalloc(&p.teacher_lse, N * Tn * sizeof(T)));
  CUDA_OK(cudaMalloc(&p.grad_student, N * Tn * V * sizeof(T)));
  p.frames = N * Tn;
  p.V = V;
  p.K = k > 0 ? k : V;
  p.inv_tau = 1.0 / tau;
  p.kl_coef = kl ? 1.0 : 0.0;
  p.scale = tau * tau;
  CUDA_OK(static_cast<cudaError_t>(asr_kd::cuda::launch_frame_kd_forward<T>(p, nullptr)));
  CUDA_OK(static_cast<cudaError_t>(asr_kd::cuda::launch_frame_kd_backward<T>(p, nullptr)));
  CUDA_OK(cudaDeviceSynchronize());
  check_close(to_host(p.loss, {N, Tn}, dtype), loss, rtol, atol, "loss");
  check_close(to_host(p.student_lse, {N, Tn}, dtype), ls, rtol, atol, "student_lse");
  check_close(to_host(p.grad_student, {N, Tn, V}, dtype), grad, rtol, atol, "grad");
  for (const void* ptr : {(const void*)p.student, (const void*)p.teacher, (const void*)p.indices,
                          (const void*)p.weights, (const void*)p.grad_loss, (const void*)p.loss,
                          (const void*)p.student_lse, (const void*)p.teacher_lse,
                          (const void*)p.grad_student}) {
    if (ptr) cudaFree(const_cast<void*>(ptr));
  }
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  for (int64_t V : {37, 1000, 3000}) {  // warp-per-frame and block-per-frame kernels
    for (int64_t k : {int64_t(0), int64_t(5)}) {
      run_case<float>(3, 7, V, k, true, 1.5, 1e-4, 2e-5);
      run_case<double>(3, 7, V, k, false, 0.8, 1e-9, 1e-11);
    }
  }
  std::printf("%s\n", g_failures ? "FAIL" : "PASS");
  return g_failures ? 1 : 0;
}
