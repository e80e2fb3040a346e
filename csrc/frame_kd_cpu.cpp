// CPU kernel of the fused frame-level KD loss (see frame_kd.h for the maths).
//
// Each frame (n, t) is one unit of work for at::parallel_for. Per frame:
//   forward:  the student row (V) and the teacher row (V, or K for top-k) are streamed once.
//             Log-sum-exps are computed online in tiles of kTile elements: the tile's maximum is
//             taken, the running sums are rescaled when the maximum grows, then the tile's
//             exponentials are accumulated (the tile is re-read from L1, never from memory).
//             The KL/CE term is accumulated in the same sweep, weighted by exp(u - running max).
//             Nothing of size V is allocated; only (N, T) loss and the two (N, T) LSEs are written.
//   backward: one sweep recomputes p_s and p_t from the saved LSEs and writes the gradient
//             (top-k: a dense sweep writing w c / tau * p_s, then K scattered subtractions).
// The inner loops are written for `#pragma omp simd`; float32 uses a branch-free exp so that they
// vectorise, and the hot functions are cloned for x86-64-v3 (AVX2 + FMA) with a run-time choice.
// Build with -fno-trapping-math (setup.py and CMakeLists.txt do): without it GCC refuses to
// if-convert the selects in exp_nonpos and the backward loops stay scalar (~5x slower).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "frame_kd.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(ASR_KD_NO_MULTIVERSION)
#define ASR_KD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ASR_KD_CLONES
#endif

#if defined(__GNUC__)
#define ASR_KD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ASR_KD_ALWAYS_INLINE inline
#endif

namespace asr_kd {
namespace cpu_detail {

constexpr int64_t kTile = 64;

/// exp(x) for x <= 0 in float32 without library calls, so loops around it vectorise.
/// exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]; exp(r) by its
/// Taylor series to degree 7 (truncation error r^8/8! < 6e-9 relative, below float epsilon).
/// Returns 0 for x < -87 (exp(-87) ~ 1.6e-38 is the smallest normal float scale used) and
/// NaN for NaN.
ASR_KD_ALWAYS_INLINE float exp_nonpos(float x) {
  constexpr float kLog2e = 1.4426950408889634f;
  constexpr float kLn2Hi = 0.693359375f;                 // few mantissa bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.1219444005469058277e-4f;   // ln 2 - kLn2Hi
  constexpr float kRound = 12582912.0f;                  // 1.5 * 2^23: adding it rounds to integer
  constexpr float kMin = -87.0f;
  const float xc = x < kMin ? kMin : x;
  const float n = (xc * kLog2e + kRound) - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < kMin ? 0.0f : p * scale;
}

ASR_KD_ALWAYS_INLINE double exp_nonpos(double x) { return std::exp(x); }

template <typename T>
struct Params {
  const T* student;        // (F, V)
  const T* teacher;        // (F, V) dense or (F, K) top-k
  const int64_t* indices;  // (F, K) or nullptr (dense)
  const T* weights;        // (F)
  const T* grad_loss;      // (F), backward only
  T* loss;                 // (F), forward only
  T* student_lse;          // (F)
  T* teacher_lse;          // (F)
  T* grad_student;         // (F, V), backward only
  int64_t V;
  int64_t K;
  T inv_tau;
  T kl_coef;  // 1 for KL, 0 for CE
  T scale;    // tau^2 or 1
  std::atomic<int>* bad_index;
};

/// Running log-sum-exp state: max `m` and sum of exp(x - m).
struct Lse {
  double m = -std::numeric_limits<double>::infinity();
  double s = 0.0;
  /// Moves the reference point to `new_max` if larger; returns the factor applied to the sums.
  ASR_KD_ALWAYS_INLINE double raise(double new_max) {
    if (new_max > m) {
      const double r = std::exp(m - new_max);  // 0 when m = -inf
      s *= r;
      m = new_max;
      return r;
    }
    return 1.0;
  }
  /// The reference point usable inside a tile (0 while everything seen is -inf, so that
  /// exp(x - ref) = 0 instead of NaN for x = -inf).
  template <typename T>
  ASR_KD_ALWAYS_INLINE T ref() const {
    return std::isinf(m) && m < 0 ? T(0) : static_cast<T>(m);
  }
  double value() const { return m + std::log(s); }
};

/// Online LSE of row[0:V] * inv_tau (student row of a top-k frame).
template <typename T>
ASR_KD_ALWAYS_INLINE Lse row_lse(const T* row, int64_t V, T inv_tau) {
  Lse st;
  for (int64_t off = 0; off < V; off += kTile) {
    const int64_t L = std::min(kTile, V - off);
    const T* x = row + off;
    T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < L; ++i) {
      const T a = x[i] * inv_tau;
      mx = a > mx ? a : mx;
    }
    st.raise(mx);
    const T ref = st.ref<T>();
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < L; ++i) sum += exp_nonpos(x[i] * inv_tau - ref);
    st.s += sum;
  }
  return st;
}

template <typename T>
ASR_KD_ALWAYS_INLINE void forward_frame(const Params<T>& p, int64_t f) {
  const T w = p.weights[f];
  if (w == T(0)) {
    p.loss[f] = T(0);
    p.student_lse[f] = T(0);
    p.teacher_lse[f] = T(0);
    return;
  }
  const T inv_tau = p.inv_tau;
  const T c = p.kl_coef;
  const T* zs = p.student + f * p.V;
  Lse ls, lt;
  double acc = 0.0;  // sum_k exp(u_k - lt.m) (c u_k - s_idx_k)
  if (p.indices == nullptr) {
    const T* zt = p.teacher + f * p.V;
    for (int64_t off = 0; off < p.V; off += kTile) {
      const int64_t L = std::min(kTile, p.V - off);
      const T* xs = zs + off;
      const T* xt = zt + off;
      T ms = -std::numeric_limits<T>::infinity();
      T mt = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : ms, mt)
      for (int64_t i = 0; i < L; ++i) {
        const T a = xs[i] * inv_tau;
        const T b = xt[i] * inv_tau;
        ms = a > ms ? a : ms;
        mt = b > mt ? b : mt;
      }
      ls.raise(ms);
      acc *= lt.raise(mt);
      const T rs = ls.ref<T>();
      const T rt = lt.ref<T>();
      T sum_s = 0, sum_t = 0, sum_a = 0;
#pragma omp simd reduction(+ : sum_s, sum_t, sum_a)
      for (int64_t i = 0; i < L; ++i) {
        const T a = xs[i] * inv_tau;
        const T b = xt[i] * inv_tau;
        const T es = exp_nonpos(a - rs);
        const T et = exp_nonpos(b - rt);
        sum_s += es;
        sum_t += et;
        sum_a += et > T(0) ? et * (c * b - a) : T(0);
      }
      ls.s += sum_s;
      lt.s += sum_t;
      acc += sum_a;
    }
  } else {
    const T* xt_row = p.teacher + f * p.K;
    const int64_t* idx_row = p.indices + f * p.K;
    bool bad = false;
    for (int64_t k = 0; k < p.K; ++k) bad |= (idx_row[k] < 0) | (idx_row[k] >= p.V);
    if (bad) {
      p.bad_index->store(1, std::memory_order_relaxed);
      p.loss[f] = p.student_lse[f] = p.teacher_lse[f] = T(0);
      return;
    }
    ls = row_lse(zs, p.V, inv_tau);
    for (int64_t off = 0; off < p.K; off += kTile) {
      const int64_t L = std::min(kTile, p.K - off);
      const T* xt = xt_row + off;
      const int64_t* idx = idx_row + off;
      T mt = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mt)
      for (int64_t i = 0; i < L; ++i) {
        const T b = xt[i] * inv_tau;
        mt = b > mt ? b : mt;
      }
      acc *= lt.raise(mt);
      const T rt = lt.ref<T>();
      T sum_t = 0, sum_a = 0;
#pragma omp simd reduction(+ : sum_t, sum_a)
      for (int64_t i = 0; i < L; ++i) {
        const T a = zs[idx[i]] * inv_tau;
        const T b = xt[i] * inv_tau;
        const T et = exp_nonpos(b - rt);
        sum_t += et;
        sum_a += et > T(0) ? et * (c * b - a) : T(0);
      }
      lt.s += sum_t;
      acc += sum_a;
    }
  }
  const double lse_s = ls.value();
  const double lse_t = lt.value();
  const double frame = acc / lt.s + lse_s - static_cast<double>(c) * lse_t;
  p.loss[f] = static_cast<T>(static_cast<double>(w) * static_cast<double>(p.scale) * frame);
  p.student_lse[f] = static_cast<T>(lse_s);
  p.teacher_lse[f] = static_cast<T>(lse_t);
}

template <typename T>
ASR_KD_ALWAYS_INLINE void backward_frame(const Params<T>& p, int64_t f) {
  T* g = p.grad_student + f * p.V;
  const T coef = p.grad_loss[f] * p.weights[f] * p.scale * p.inv_tau;
  if (coef == T(0)) {
    std::fill(g, g + p.V, T(0));
    return;
  }
  const T inv_tau = p.inv_tau;
  const T* zs = p.student + f * p.V;
  const T ls = p.student_lse[f];
  const T lt = p.teacher_lse[f];
  if (p.indices == nullptr) {
    const T* zt = p.teacher + f * p.V;
#pragma omp simd
    for (int64_t v = 0; v < p.V; ++v) {
      g[v] = coef * (exp_nonpos(zs[v] * inv_tau - ls) - exp_nonpos(zt[v] * inv_tau - lt));
    }
  } else {
    const T* xt = p.teacher + f * p.K;
    const int64_t* idx = p.indices + f * p.K;
    bool bad = false;
    for (int64_t k = 0; k < p.K; ++k) bad |= (idx[k] < 0) | (idx[k] >= p.V);
    if (bad) {
      p.bad_index->store(1, std::memory_order_relaxed);
      std::fill(g, g + p.V, T(0));
      return;
    }
#pragma omp simd
    for (int64_t v = 0; v < p.V; ++v) g[v] = coef * exp_nonpos(zs[v] * inv_tau - ls);
    for (int64_t k = 0; k < p.K; ++k) g[idx[k]] -= coef * exp_nonpos(xt[k] * inv_tau - lt);
  }
}

// Non-template entry points, one per dtype, so that target_clones can multiversion them.
ASR_KD_CLONES void forward_frames(const Params<float>& p, int64_t begin, int64_t end) {
  for (int64_t f = begin; f < end; ++f) forward_frame<float>(p, f);
}
ASR_KD_CLONES void forward_frames(const Params<double>& p, int64_t begin, int64_t end) {
  for (int64_t f = begin; f < end; ++f) forward_frame<double>(p, f);
}
ASR_KD_CLONES void backward_frames(const Params<float>& p, int64_t begin, int64_t end) {
  for (int64_t f = begin; f < end; ++f) backward_frame<float>(p, f);
}
ASR_KD_CLONES void backward_frames(const Params<double>& p, int64_t begin, int64_t end) {
  for (int64_t f = begin; f < end; ++f) backward_frame<double>(p, f);
}

/// Frames per at::parallel_for chunk: at least ~16k elements of work per chunk.
inline int64_t grain_size(int64_t V) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(V, 1)); }

}  // namespace cpu_detail

int64_t frame_kd_check_inputs(const at::Tensor& student, const at::Tensor& teacher,
                              const std::optional<at::Tensor>& teacher_indices,
                              const at::Tensor& weights, double temperature) {
  TORCH_CHECK(student.dim() == 3, "frame_kd: student logits must be (N, T, V), got ",
              student.sizes());
  TORCH_CHECK(student.scalar_type() == at::kFloat || student.scalar_type() == at::kDouble,
              "frame_kd: student logits must be float32 or float64, got ", student.scalar_type());
  TORCH_CHECK(student.size(2) >= 1, "frame_kd: empty vocabulary (V = 0)");
  TORCH_CHECK(teacher.dim() == 3, "frame_kd: teacher must be 3-D, got ", teacher.sizes());
  TORCH_CHECK(teacher.scalar_type() == student.scalar_type(),
              "frame_kd: teacher dtype ", teacher.scalar_type(), " != student dtype ",
              student.scalar_type());
  TORCH_CHECK(teacher.device() == student.device(), "frame_kd: teacher on ", teacher.device(),
              ", student on ", student.device());
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0.0,
              "frame_kd: temperature must be a positive finite number, got ", temperature);
  TORCH_CHECK(weights.dim() == 2 && weights.size(0) == student.size(0) &&
                  weights.size(1) == student.size(1),
              "frame_kd: weights must be (N, T) = (", student.size(0), ", ", student.size(1),
              "), got ", weights.sizes());
  TORCH_CHECK(weights.scalar_type() == student.scalar_type() &&
                  weights.device() == student.device(),
              "frame_kd: weights must have the student's dtype and device");
  const bool topk = teacher_indices.has_value() && teacher_indices->defined();
  if (!topk) {
    TORCH_CHECK(teacher.sizes() == student.sizes(), "frame_kd: dense teacher shape ",
                teacher.sizes(), " != student shape ", student.sizes());
    return student.size(2);
  }
  const at::Tensor& idx = *teacher_indices;
  TORCH_CHECK(idx.scalar_type() == at::kLong, "frame_kd: teacher indices must be int64, got ",
              idx.scalar_type());
  TORCH_CHECK(idx.sizes() == teacher.sizes(), "frame_kd: teacher indices shape ", idx.sizes(),
              " != teacher values shape ", teacher.sizes());
  TORCH_CHECK(idx.device() == student.device(), "frame_kd: indices on ", idx.device(),
              ", student on ", student.device());
  TORCH_CHECK(teacher.size(0) == student.size(0) && teacher.size(1) == student.size(1),
              "frame_kd: top-k teacher (N, T) = (", teacher.size(0), ", ", teacher.size(1),
              ") != student (N, T) = (", student.size(0), ", ", student.size(1), ")");
  TORCH_CHECK(teacher.size(2) >= 1 && teacher.size(2) <= student.size(2),
              "frame_kd: top-k needs 1 <= k <= V, got k = ", teacher.size(2),
              ", V = ", student.size(2));
  return teacher.size(2);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> frame_kd_forward_cpu(
    const at::Tensor& student, const at::Tensor& teacher,
    const std::optional<at::Tensor>& teacher_indices, const at::Tensor& weights,
    double temperature, bool kl, bool scale_by_t2) {
  const int64_t K = frame_kd_check_inputs(student, teacher, teacher_indices, weights, temperature);
  TORCH_CHECK(student.device().is_cpu(), "frame_kd_forward_cpu: tensors must be on the CPU");
  const bool topk = teacher_indices.has_value() && teacher_indices->defined();
  const at::Tensor s = student.contiguous();
  const at::Tensor t = teacher.contiguous();
  const at::Tensor w = weights.contiguous();
  const at::Tensor idx = topk ? teacher_indices->contiguous() : at::Tensor();
  const int64_t N = s.size(0), T = s.size(1), V = s.size(2);
  at::Tensor loss = at::empty({N, T}, s.options());
  at::Tensor ls = at::empty({N, T}, s.options());
  at::Tensor lt = at::empty({N, T}, s.options());
  std::atomic<int> bad_index{0};
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "frame_kd_forward_cpu", [&] {
    cpu_detail::Params<scalar_t> p{};
    p.student = s.data_ptr<scalar_t>();
    p.teacher = t.data_ptr<scalar_t>();
    p.indices = topk ? idx.data_ptr<int64_t>() : nullptr;
    p.weights = w.data_ptr<scalar_t>();
    p.loss = loss.data_ptr<scalar_t>();
    p.student_lse = ls.data_ptr<scalar_t>();
    p.teacher_lse = lt.data_ptr<scalar_t>();
    p.V = V;
    p.K = K;
    p.inv_tau = static_cast<scalar_t>(1.0 / temperature);
    p.kl_coef = kl ? scalar_t(1) : scalar_t(0);
    p.scale = static_cast<scalar_t>(scale_by_t2 ? temperature * temperature : 1.0);
    p.bad_index = &bad_index;
    at::parallel_for(0, N * T, cpu_detail::grain_size(V), [&](int64_t begin, int64_t end) {
      cpu_detail::forward_frames(p, begin, end);
    });
  });
  TORCH_CHECK(bad_index.load() == 0, "frame_kd: teacher indices out of range [0, ", V, ")");
  return {loss, ls, lt};
}

at::Tensor frame_kd_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& student,
                                 const at::Tensor& teacher,
                                 const std::optional<at::Tensor>& teacher_indices,
                                 const at::Tensor& weights, const at::Tensor& student_lse,
                                 const at::Tensor& teacher_lse, double temperature,
                                 bool scale_by_t2) {
  const int64_t K = frame_kd_check_inputs(student, teacher, teacher_indices, weights, temperature);
  TORCH_CHECK(student.device().is_cpu(), "frame_kd_backward_cpu: tensors must be on the CPU");
  for (const at::Tensor* x : {&grad_loss, &student_lse, &teacher_lse}) {
    TORCH_CHECK(x->sizes() == weights.sizes() && x->scalar_type() == student.scalar_type() &&
                    x->device() == student.device(),
                "frame_kd_backward: grad_loss and the LSEs must be (N, T) like the weights");
  }
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
  std::atomic<int> bad_index{0};
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "frame_kd_backward_cpu", [&] {
    cpu_detail::Params<scalar_t> p{};
    p.student = s.data_ptr<scalar_t>();
    p.teacher = t.data_ptr<scalar_t>();
    p.indices = topk ? idx.data_ptr<int64_t>() : nullptr;
    p.weights = w.data_ptr<scalar_t>();
    p.grad_loss = g.data_ptr<scalar_t>();
    p.student_lse = const_cast<scalar_t*>(ls.data_ptr<scalar_t>());
    p.teacher_lse = const_cast<scalar_t*>(lt.data_ptr<scalar_t>());
    p.grad_student = grad.data_ptr<scalar_t>();
    p.V = V;
    p.K = K;
    p.inv_tau = static_cast<scalar_t>(1.0 / temperature);
    p.scale = static_cast<scalar_t>(scale_by_t2 ? temperature * temperature : 1.0);
    p.bad_index = &bad_index;
    at::parallel_for(0, N * T, cpu_detail::grain_size(V), [&](int64_t begin, int64_t end) {
      cpu_detail::backward_frames(p, begin, end);
    });
  });
  TORCH_CHECK(bad_index.load() == 0, "frame_kd: teacher indices out of range [0, ", V, ")");
  return grad;
}

}  // namespace asr_kd
