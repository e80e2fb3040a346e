// Launcher interface of the CUDA frame-level KD kernels (frame_kd_kernel.cu).
//
// Deliberately free of torch and CUDA headers: raw pointers in, an int error code (a cudaError_t)
// out, the stream as void*. frame_kd_kernel.cu therefore compiles with nvcc against the CUDA
// runtime alone (the CPU torch wheel ships no usable ATen/cuda, c10/cuda headers), and the torch
// side (frame_kd_cuda.cpp) needs no CUDA header either.
#pragma once

#include <cstdint>

namespace asr_kd {
namespace cuda {

/// Pointers are to contiguous device memory; F = N * T frames.
template <typename T>
struct FrameKdParams {
  const T* student = nullptr;        // (F, V) student logits
  const T* teacher = nullptr;        // (F, V) dense teacher, or (F, K) top-k log-probs
  const int64_t* indices = nullptr;  // (F, K) top-k vocabulary indices; nullptr = dense
  const T* weights = nullptr;        // (F) per-frame weights
  const T* grad_loss = nullptr;      // (F) backward input
  T* loss = nullptr;                 // (F) forward output: w * c * {kl | ce}
  T* student_lse = nullptr;          // (F) forward output / backward input: lse(z_s / tau)
  T* teacher_lse = nullptr;          // (F) forward output / backward input: lse(x_t / tau)
  T* grad_student = nullptr;         // (F, V) backward output
  int64_t frames = 0;
  int64_t V = 0;
  int64_t K = 0;  // = V when dense
  double inv_tau = 1.0;
  double kl_coef = 1.0;  // 1: KL, 0: cross-entropy
  double scale = 1.0;    // tau^2 or 1
};

/// Forward: fills loss, student_lse, teacher_lse. Returns a cudaError_t (0 = success).
template <typename T>
int launch_frame_kd_forward(const FrameKdParams<T>& p, void* stream);

/// Backward: fills grad_student. Returns a cudaError_t (0 = success).
template <typename T>
int launch_frame_kd_backward(const FrameKdParams<T>& p, void* stream);

/// cudaGetErrorString of a code returned above.
const char* error_string(int code);

}  // namespace cuda
}  // namespace asr_kd
