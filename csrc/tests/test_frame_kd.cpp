// C++ unit tests of the CPU frame-level KD kernel (csrc/frame_kd_cpu.cpp) against a direct libtorch
// computation: log_softmax / gather / sum for the loss and autograd for the student gradient.
//
// Usage: test_frame_kd <case>   (ctest runs every case; exit status 0 = pass, 1 = fail)
// No test framework: EXPECT records a failure with its location and the case keeps going.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>

#include "frame_kd.h"

namespace {

int g_failures = 0;

#define EXPECT(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                        \
    }                                                                      \
  } while (0)

void check_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                 const char* what, int line) {
  if (got.sizes() != want.sizes()) {
    std::fprintf(stderr, "line %d: %s: shape mismatch\n", line, what);
    ++g_failures;
    return;
  }
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const at::Tensor err = (g - w).abs() - (w.abs() * rtol + atol);
  const double worst = err.max().item<double>();
  const bool finite = at::isfinite(g).all().item<bool>();
  if (worst > 0 || !finite) {
    std::fprintf(stderr, "line %d: %s: not close (max |diff| = %g, finite = %d)\n", line, what,
                 (g - w).abs().max().item<double>(), int(finite));
    ++g_failures;
  }
}
#define CHECK_CLOSE(got, want, rtol, atol) check_close(got, want, rtol, atol, #got, __LINE__)

template <typename F>
bool throws(F&& f) {
  try {
    f();
  } catch (const c10::Error&) {
    return true;
  }
  return false;
}

struct Inputs {
  at::Tensor student, teacher, indices, weights, upstream;
};

/// Random (N, T, V) student, teacher (dense logits, or top-k (values, indices) of the teacher's
/// log-probs when k > 0), (N, T) weights with ~30 % zeros, (N, T) upstream gradient.
Inputs make_inputs(int64_t N, int64_t T, int64_t V, at::ScalarType dtype, int64_t k, uint64_t seed) {
  at::manual_seed(seed);
  const auto opt = at::TensorOptions().dtype(dtype);
  Inputs in;
  in.student = 3.0 * at::randn({N, T, V}, opt);
  at::Tensor t = 3.0 * at::randn({N, T, V}, opt);
  if (k > 0) {
    auto [values, indices] = at::topk(at::log_softmax(t, -1), k, -1);
    in.teacher = values.contiguous();
    in.indices = indices.contiguous();
  } else {
    in.teacher = t;
  }
  in.weights = at::where(at::rand({N, T}, opt) < 0.3, at::zeros({N, T}, opt),
                         0.5 + at::rand({N, T}, opt));
  in.upstream = at::rand({N, T}, opt);
  return in;
}

struct Result {
  at::Tensor loss, grad;
};

/// Direct libtorch computation: loss (N, T) and d(sum(loss * upstream))/d student via autograd.
Result reference(const Inputs& in, double tau, bool kl, bool scale_by_t2) {
  at::Tensor s = in.student.detach().clone().requires_grad_(true);
  at::Tensor log_ps = at::log_softmax(s / tau, -1);
  const at::Tensor log_pt = at::log_softmax(in.teacher / tau, -1);
  if (in.indices.defined()) log_ps = log_ps.gather(-1, in.indices);
  const at::Tensor pt = log_pt.exp();
  const at::Tensor terms = kl ? pt * (log_pt - log_ps) : -pt * log_ps;
  const double c = scale_by_t2 ? tau * tau : 1.0;
  const at::Tensor loss = terms.sum(-1) * in.weights * c;
  const auto grads = torch::autograd::grad({(loss * in.upstream).sum()}, {s});
  return {loss.detach(), grads[0]};
}

Result native(const Inputs& in, double tau, bool kl, bool scale_by_t2) {
  std::optional<at::Tensor> idx;
  if (in.indices.defined()) idx = in.indices;
  auto [loss, ls, lt] =
      asr_kd::frame_kd_forward_cpu(in.student, in.teacher, idx, in.weights, tau, kl, scale_by_t2);
  EXPECT(ls.sizes() == in.weights.sizes() && lt.sizes() == in.weights.sizes());
  at::Tensor grad = asr_kd::frame_kd_backward_cpu(in.upstream, in.student, in.teacher, idx,
                                                  in.weights, ls, lt, tau, scale_by_t2);
  return {loss, grad};
}

void compare(const Inputs& in, double tau, bool kl, bool scale_by_t2, double rtol, double atol) {
  const Result want = reference(in, tau, kl, scale_by_t2);
  const Result got = native(in, tau, kl, scale_by_t2);
  CHECK_CLOSE(got.loss, want.loss, rtol, atol);
  CHECK_CLOSE(got.grad, want.grad, rtol, atol);
}

// ------------------------------------------------------------------------------------ cases

void case_dense_f32() {
  for (int64_t V : {1, 7, 64, 67, 500, 5000}) {
    compare(make_inputs(3, 5, V, at::kFloat, 0, 1 + V), 1.5, true, true, 1e-4, 2e-5);
  }
}

void case_dense_f64() {
  for (int64_t V : {1, 13, 129, 2000}) {
    compare(make_inputs(2, 4, V, at::kDouble, 0, 2 + V), 0.7, true, true, 1e-9, 1e-11);
  }
}

void case_log_probs() {
  // log_softmax(log_probs / tau) == log_softmax(logits / tau): same loss and gradient.
  Inputs in = make_inputs(2, 6, 33, at::kDouble, 0, 3);
  const Result from_logits = native(in, 2.0, true, true);
  in.teacher = at::log_softmax(in.teacher, -1);
  const Result from_log_probs = native(in, 2.0, true, true);
  CHECK_CLOSE(from_log_probs.loss, from_logits.loss, 1e-10, 1e-12);
  CHECK_CLOSE(from_log_probs.grad, from_logits.grad, 1e-10, 1e-12);
  compare(in, 2.0, true, true, 1e-9, 1e-11);
}

void case_topk() {
  for (int64_t k : {1, 3, 20}) {
    compare(make_inputs(2, 5, 70, at::kFloat, k, 4 + k), 1.3, true, true, 1e-4, 2e-5);
    compare(make_inputs(2, 5, 70, at::kDouble, k, 5 + k), 1.3, false, true, 1e-9, 1e-11);
  }
}

void case_topk_k_equals_v() {
  Inputs dense = make_inputs(2, 4, 23, at::kDouble, 0, 6);
  Inputs topk = dense;
  auto [values, indices] = at::topk(at::log_softmax(dense.teacher, -1), 23, -1);
  topk.teacher = values.contiguous();
  topk.indices = indices.contiguous();
  const Result a = native(dense, 1.7, true, true);
  const Result b = native(topk, 1.7, true, true);
  CHECK_CLOSE(b.loss, a.loss, 1e-10, 1e-12);
  CHECK_CLOSE(b.grad, a.grad, 1e-10, 1e-12);
}

void case_masked() {
  Inputs in = make_inputs(2, 3, 9, at::kFloat, 0, 7);
  in.weights.zero_();
  in.student.index_put_({1}, std::nan(""));  // padded frames may hold garbage
  const Result r = native(in, 1.0, true, true);
  EXPECT(r.loss.eq(0).all().item<bool>());
  EXPECT(r.grad.eq(0).all().item<bool>());
  Inputs tk = make_inputs(2, 3, 9, at::kFloat, 4, 8);
  tk.weights.zero_();
  const Result r2 = native(tk, 2.0, false, true);
  EXPECT(r2.loss.eq(0).all().item<bool>());
  EXPECT(r2.grad.eq(0).all().item<bool>());
}

void case_ce_no_scale() {
  compare(make_inputs(3, 4, 31, at::kFloat, 0, 9), 3.0, false, false, 1e-4, 2e-5);
  compare(make_inputs(3, 4, 31, at::kDouble, 5, 10), 0.5, true, false, 1e-9, 1e-11);
}

void case_dispatcher() {
  // torch.ops.asr_kd.frame_kd_forward is registered by loading the library and runs the kernel.
  const Inputs in = make_inputs(2, 3, 17, at::kFloat, 0, 11);
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("asr_kd::frame_kd_forward", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                    const at::Tensor&, double, bool, bool)>();
  auto [loss, ls, lt] = op.call(in.student, in.teacher, std::nullopt, in.weights, 1.2, true, true);
  CHECK_CLOSE(loss, reference(in, 1.2, true, true).loss, 1e-4, 2e-5);
}

void case_errors() {
  const Inputs in = make_inputs(2, 3, 8, at::kFloat, 4, 12);
  const std::optional<at::Tensor> none;
  EXPECT(throws([&] { asr_kd::frame_kd_forward_cpu(in.student, in.student, none, in.weights, -1.0, true, true); }));
  EXPECT(throws([&] { asr_kd::frame_kd_forward_cpu(in.student, in.student, none, in.weights, 0.0, true, true); }));
  EXPECT(throws([&] { asr_kd::frame_kd_forward_cpu(in.student, in.student.slice(2, 0, 4), none, in.weights, 1.0, true, true); }));
  EXPECT(throws([&] { asr_kd::frame_kd_forward_cpu(in.student, in.student.to(at::kDouble), none, in.weights, 1.0, true, true); }));
  EXPECT(throws([&] { asr_kd::frame_kd_forward_cpu(in.student, in.student, none, in.weights.t(), 1.0, true, true); }));
  // k > V
  const at::Tensor big = at::zeros({2, 3, 9});
  const at::Tensor big_idx = at::zeros({2, 3, 9}, at::kLong);
  EXPECT(throws([&] { asr_kd::frame_kd_forward_cpu(in.student, big, big_idx, in.weights, 1.0, true, true); }));
  // out-of-range index
  at::Tensor bad = in.indices.clone();
  bad.index_put_({1, 2, 0}, 8);
  EXPECT(throws([&] { asr_kd::frame_kd_forward_cpu(in.student, in.teacher, bad, in.weights, 1.0, true, true); }));
  // the valid call does not throw
  EXPECT(!throws([&] { asr_kd::frame_kd_forward_cpu(in.student, in.teacher, in.indices, in.weights, 1.0, true, true); }));
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, std::function<void()>> cases = {
      {"dense_f32", case_dense_f32},   {"dense_f64", case_dense_f64},
      {"log_probs", case_log_probs},   {"topk", case_topk},
      {"topk_k_equals_v", case_topk_k_equals_v}, {"masked", case_masked},
      {"ce_no_scale", case_ce_no_scale}, {"dispatcher", case_dispatcher},
      {"errors", case_errors},
  };
  int ran = 0;
  for (const auto& [name, fn] : cases) {
    if (argc > 1 && name != argv[1]) continue;
    const int before = g_failures;
    fn();
    std::printf("[%s] %s\n", g_failures == before ? "PASS" : "FAIL", name.c_str());
    ++ran;
  }
  if (ran == 0) {
    std::fprintf(stderr, "unknown case %s\n", argc > 1 ? argv[1] : "");
    return 1;
  }
  return g_failures == 0 ? 0 : 1;
}
