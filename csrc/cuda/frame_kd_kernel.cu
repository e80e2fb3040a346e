// CUDA kernels of the fused frame-level KD loss (maths in ../frame_kd.h, interface in
// frame_kd_kernel.h). Plain CUDA runtime; no torch headers.
//
// Work split: a group of kThreads threads owns one frame (n, t).
//   V <= 1024: kThreads = 32, a warp per frame, 8 frames per 256-thread block, shuffles only.
//   V >  1024: kThreads = 256, a block per frame; warp shuffles, then one pass through shared memory.
// Forward: every thread streams its strided share of the row once, keeping online (max, sum) states
// for the student LSE and (max, sum, weighted KL/CE term) for the teacher; the states are merged
// by the group. Backward: recomputes p_s, p_t from the saved LSEs in one sweep; top-k subtracts
// the sparse p_t after a group barrier with atomics (indices may repeat).
// An out-of-range top-k index makes that frame's loss NaN (forward) and is skipped (backward).
#include <cuda_runtime.h>

#include <cstdint>

#include "frame_kd_kernel.h"

namespace asr_kd {
namespace cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kWarp = 32;
constexpr int64_t kWarpPerFrameMaxV = 1024;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }
__device__ __forceinline__ float neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double neg_inf(double) {
  return __longlong_as_double(static_cast<long long>(0xfff0000000000000ULL));
}
__device__ __forceinline__ float quiet_nan(float) { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double quiet_nan(double) {
  return __longlong_as_double(static_cast<long long>(0x7ff8000000000000ULL));
}

/// Online log-sum-exp: running max m and sum of exp(x - m).
template <typename T>
struct LseState {
  T m;
  T s;
};

/// Teacher state: LseState plus a = sum exp(u - m) * d with d = c u - s_idx.
template <typename T>
struct TeacherState {
  T m;
  T s;
  T a;
};

template <typename T>
__device__ __forceinline__ void push(LseState<T>& st, T x) {
  if (x > st.m) {
    st.s = st.s * dev_exp(st.m - x) + T(1);
    st.m = x;
  } else if (x > neg_inf(x)) {
    st.s += dev_exp(x - st.m);
  }
}

template <typename T>
__device__ __forceinline__ void push(TeacherState<T>& st, T u, T d) {
  if (u > st.m) {
    const T r = dev_exp(st.m - u);
    st.s = st.s * r + T(1);
    st.a = (r > T(0) ? st.a * r : T(0)) + d;
    st.m = u;
  } else if (u > neg_inf(u)) {
    const T e = dev_exp(u - st.m);
    st.s += e;
    if (e > T(0)) st.a += e * d;
  }
}

template <typename T>
__device__ __forceinline__ LseState<T> merge(const LseState<T>& x, const LseState<T>& y) {
  if (!(y.m > neg_inf(y.m))) return x;
  if (!(x.m > neg_inf(x.m))) return y;
  const T m = x.m > y.m ? x.m : y.m;
  return {m, x.s * dev_exp(x.m - m) + y.s * dev_exp(y.m - m)};
}

template <typename T>
__device__ __forceinline__ TeacherState<T> merge(const TeacherState<T>& x,
                                                 const TeacherState<T>& y) {
  if (!(y.m > neg_inf(y.m))) return x;
  if (!(x.m > neg_inf(x.m))) return y;
  const T m = x.m > y.m ? x.m : y.m;
  const T rx = dev_exp(x.m - m), ry = dev_exp(y.m - m);
  return {m, x.s * rx + y.s * ry, (rx > T(0) ? x.a * rx : T(0)) + (ry > T(0) ? y.a * ry : T(0))};
}

template <typename T>
__device__ __forceinline__ void warp_merge(LseState<T>& s, TeacherState<T>& t) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) {
    const LseState<T> os{__shfl_xor_sync(kFullMask, s.m, off), __shfl_xor_sync(kFullMask, s.s, off)};
    const TeacherState<T> ot{__shfl_xor_sync(kFullMask, t.m, off),
                             __shfl_xor_sync(kFullMask, t.s, off),
                             __shfl_xor_sync(kFullMask, t.a, off)};
    s = merge(s, os);
    t = merge(t, ot);
  }
}

/// Merges the states of the kThreads threads of a frame; the result is valid in the group's
/// first thread (all lanes of the warp for kThreads == 32).
template <typename T, int kThreads>
__device__ __forceinline__ void group_merge(LseState<T>& s, TeacherState<T>& t) {
  warp_merge(s, t);
  if constexpr (kThreads > kWarp) {
    constexpr int kWarps = kThreads / kWarp;
    __shared__ T sh[5][kWarps];
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (lane == 0) {
      sh[0][warp] = s.m;
      sh[1][warp] = s.s;
      sh[2][warp] = t.m;
      sh[3][warp] = t.s;
      sh[4][warp] = t.a;
    }
    __syncthreads();
    if (warp == 0) {
      const T ninf = neg_inf(T(0));
      s = lane < kWarps ? LseState<T>{sh[0][lane], sh[1][lane]} : LseState<T>{ninf, T(0)};
      t = lane < kWarps ? TeacherState<T>{sh[2][lane], sh[3][lane], sh[4][lane]}
                        : TeacherState<T>{ninf, T(0), T(0)};
      warp_merge(s, t);
    }
  }
}

template <int kThreads>
__device__ __forceinline__ void group_barrier() {
  if constexpr (kThreads == kWarp) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

template <typename T, int kThreads>
__global__ void __launch_bounds__(kBlock) frame_kd_forward_kernel(FrameKdParams<T> p) {
  constexpr int kFramesPerBlock = kBlock / kThreads;
  const int lane = threadIdx.x % kThreads;
  const int64_t f = static_cast<int64_t>(blockIdx.x) * kFramesPerBlock + threadIdx.x / kThreads;
  if (f >= p.frames) return;  // uniform over the frame's group
  const T w = p.weights[f];
  if (w == T(0)) {
    if (lane == 0) p.loss[f] = p.student_lse[f] = p.teacher_lse[f] = T(0);
    return;
  }
  const T inv = static_cast<T>(p.inv_tau);
  const T c = static_cast<T>(p.kl_coef);
  const T ninf = neg_inf(inv);
  const T* zs = p.student + f * p.V;
  LseState<T> ss{ninf, T(0)};
  TeacherState<T> ts{ninf, T(0), T(0)};
  if (p.indices == nullptr) {
    const T* zt = p.teacher + f * p.V;
    for (int64_t v = lane; v < p.V; v += kThreads) {
      const T a = zs[v] * inv;
      const T b = zt[v] * inv;
      push(ss, a);
      push(ts, b, c * b - a);
    }
  } else {
    for (int64_t v = lane; v < p.V; v += kThreads) push(ss, zs[v] * inv);
    const T* xt = p.teacher + f * p.K;
    const int64_t* idx = p.indices + f * p.K;
    for (int64_t k = lane; k < p.K; k += kThreads) {
      const int64_t i = idx[k];
      const T a = (i >= 0 && i < p.V) ? zs[i] * inv : quiet_nan(inv);
      const T b = xt[k] * inv;
      push(ts, b, c * b - a);
    }
  }
  group_merge<T, kThreads>(ss, ts);
  if (lane == 0) {
    const T lse_s = ss.m + dev_log(ss.s);
    const T lse_t = ts.m + dev_log(ts.s);
    const T frame = ts.a / ts.s + lse_s - c * lse_t;
    p.loss[f] = w * static_cast<T>(p.scale) * frame;
    p.student_lse[f] = lse_s;
    p.teacher_lse[f] = lse_t;
  }
}

template <typename T, int kThreads>
__global__ void __launch_bounds__(kBlock) frame_kd_backward_kernel(FrameKdParams<T> p) {
  constexpr int kFramesPerBlock = kBlock / kThreads;
  const int lane = threadIdx.x % kThreads;
  const int64_t f = static_cast<int64_t>(blockIdx.x) * kFramesPerBlock + threadIdx.x / kThreads;
  if (f >= p.frames) return;
  T* g = p.grad_student + f * p.V;
  const T inv = static_cast<T>(p.inv_tau);
  const T coef = p.grad_loss[f] * p.weights[f] * static_cast<T>(p.scale) * inv;
  if (coef == T(0)) {
    for (int64_t v = lane; v < p.V; v += kThreads) g[v] = T(0);
    return;
  }
  const T* zs = p.student + f * p.V;
  const T ls = p.student_lse[f];
  const T lt = p.teacher_lse[f];
  if (p.indices == nullptr) {
    const T* zt = p.teacher + f * p.V;
    for (int64_t v = lane; v < p.V; v += kThreads) {
      g[v] = coef * (dev_exp(zs[v] * inv - ls) - dev_exp(zt[v] * inv - lt));
    }
  } else {
    for (int64_t v = lane; v < p.V; v += kThreads) g[v] = coef * dev_exp(zs[v] * inv - ls);
    group_barrier<kThreads>();
    const T* xt = p.teacher + f * p.K;
    const int64_t* idx = p.indices + f * p.K;
    for (int64_t k = lane; k < p.K; k += kThreads) {
      const int64_t i = idx[k];
      if (i >= 0 && i < p.V) atomicAdd(g + i, -coef * dev_exp(xt[k] * inv - lt));
    }
  }
}

template <typename T, bool kForward>
int launch(const FrameKdParams<T>& p, void* stream) {
  if (p.frames == 0) return static_cast<int>(cudaSuccess);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool warp_per_frame = p.V <= kWarpPerFrameMaxV;
  const int64_t frames_per_block = warp_per_frame ? kBlock / kWarp : 1;
  const int64_t blocks = (p.frames + frames_per_block - 1) / frames_per_block;
  if (blocks > 0x7fffffffLL) return static_cast<int>(cudaErrorInvalidConfiguration);
  const dim3 grid(static_cast<unsigned>(blocks));
  if (kForward) {
    if (warp_per_frame) {
      frame_kd_forward_kernel<T, kWarp><<<grid, kBlock, 0, s>>>(p);
    } else {
      frame_kd_forward_kernel<T, kBlock><<<grid, kBlock, 0, s>>>(p);
    }
  } else {
    if (warp_per_frame) {
      frame_kd_backward_kernel<T, kWarp><<<grid, kBlock, 0, s>>>(p);
    } else {
      frame_kd_backward_kernel<T, kBlock><<<grid, kBlock, 0, s>>>(p);
    }
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

template <typename T>
int launch_frame_kd_forward(const FrameKdParams<T>& p, void* stream) {
  return launch<T, true>(p, stream);
}

template <typename T>
int launch_frame_kd_backward(const FrameKdParams<T>& p, void* stream) {
  return launch<T, false>(p, stream);
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

template int launch_frame_kd_forward<float>(const FrameKdParams<float>&, void*);
template int launch_frame_kd_forward<double>(const FrameKdParams<double>&, void*);
template int launch_frame_kd_backward<float>(const FrameKdParams<float>&, void*);
template int launch_frame_kd_backward<double>(const FrameKdParams<double>&, void*);

}  // namespace cuda
}  // namespace asr_kd
