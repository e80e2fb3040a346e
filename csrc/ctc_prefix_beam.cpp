// CTC prefix beam search on CPU: see ctc_prefix_beam.h for the update rules and the outputs.
//
// Every step mirrors asr_kd.decoding.ctc.ctc_prefix_beam_search operation by operation (same
// log-add formula as torch.logaddexp, same order of additions), so that scores agree to the last
// few ulps and exact ties break the same way (smaller token sequence first).
#include "ctc_prefix_beam.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <vector>

namespace asr_kd {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// torch.logaddexp's scalar formula (log-add of two log values; -inf (+) -inf = -inf).
inline double log_add(double a, double b) {
  if (std::isinf(a) && a == b) return a;
  const double m = std::max(a, b);
  return m + std::log1p(std::exp(-std::abs(a - b)));
}

// Label prefixes of one utterance: node 0 is the empty prefix; node i is parent[i] + token[i].
// A prefix has one node for the whole search (child lookup through a hash map), so a prefix
// that leaves the beam and comes back later is still recognised as the child of its parent.
struct PrefixTrie {
  std::vector<int32_t> parent{-1};
  std::vector<int32_t> token{-1};
  std::vector<int32_t> length{0};
  std::unordered_map<uint64_t, int32_t> children;

  int32_t child(int32_t node, int32_t tok) {
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(node)) << 32) |
                         static_cast<uint32_t>(tok);
    auto it = children.find(key);
    if (it != children.end()) return it->second;
    const auto id = static_cast<int32_t>(parent.size());
    parent.push_back(node);
    token.push_back(tok);
    length.push_back(length[node] + 1);
    children.emplace(key, id);
    return id;
  }

  // The tokens of `node`, followed by `extra` when it is >= 0.
  void sequence(int32_t node, int32_t extra, std::vector<int32_t>& out) const {
    const int32_t len = length[node];
    out.resize(len + (extra >= 0 ? 1 : 0));
    for (int32_t i = len - 1; i >= 0; --i, node = parent[node]) out[i] = token[node];
    if (extra >= 0) out[len] = extra;
  }
};

struct UttResult {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<double> score, ctc, bias;
};

template <typename scalar_t>
UttResult search_one(const scalar_t* lp, int64_t T_n, int64_t V, int64_t beam, int64_t blank,
                     std::optional<int64_t> top_k, std::optional<double> prune_threshold,
                     const double* tb, int64_t nbest) {
  PrefixTrie trie;
  // the beam: K prefixes (trie nodes) with their log pb / pnb and bias
  std::vector<int32_t> node{0};
  std::vector<double> pb{0.0}, pnb{kNegInf}, bias{0.0};
  std::vector<int32_t> slot_of{0};  // trie node -> beam slot, -1 when not in the beam

  std::vector<double> row(V), masked(V);
  std::vector<int32_t> order(V), cand, pos_of(V, -1);
  std::vector<double> p_tot, stay_pb, stay_pnb, stay_score, ext, ext_score, heap;
  std::vector<int32_t> last;
  std::vector<int64_t> chosen;
  std::vector<int32_t> seq_a, seq_b;
  std::vector<int32_t> new_node;
  std::vector<double> new_pb, new_pnb, new_bias;
  const bool use_top_k = top_k.has_value() && *top_k < V;

  for (int64_t t = 0; t < T_n; ++t) {
    // ---- the frame's log posteriors, candidate pruning (blank treated like any token)
    const scalar_t* src = lp + t * V;
    for (int64_t v = 0; v < V; ++v) row[v] = static_cast<double>(src[v]);
    if (use_top_k) {
      std::fill(masked.begin(), masked.end(), kNegInf);
      const int64_t k = *top_k;
      if (k > 0) {
        std::iota(order.begin(), order.end(), 0);
        auto better = [&](int32_t a, int32_t b) {
          return row[a] > row[b] || (row[a] == row[b] && a < b);
        };
        std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), better);
        for (int64_t i = 0; i < k; ++i) masked[order[i]] = row[order[i]];
      }
    } else {
      masked = row;
    }
    if (prune_threshold.has_value()) {
      double mx = kNegInf;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, row[v]);
      const double floor = mx - *prune_threshold;
      for (int64_t v = 0; v < V; ++v)
        if (!(row[v] >= floor)) masked[v] = kNegInf;
    }
    cand.clear();
    for (int64_t v = 0; v < V; ++v)
      if (v != blank && masked[v] != kNegInf) {
        pos_of[v] = static_cast<int32_t>(cand.size());
        cand.push_back(static_cast<int32_t>(v));
      }
    const int64_t K = static_cast<int64_t>(node.size());
    const int64_t C = static_cast<int64_t>(cand.size());
    const double p_blank = masked[blank];

    // ---- the prefixes themselves and their extensions
    p_tot.resize(K);
    stay_pb.resize(K);
    stay_pnb.resize(K);
    stay_score.resize(K);
    last.resize(K);
    ext.resize(K * C);
    ext_score.resize(K * C);
    for (int64_t k = 0; k < K; ++k) {
      p_tot[k] = log_add(pb[k], pnb[k]);
      stay_pb[k] = p_tot[k] + p_blank;
      last[k] = node[k] == 0 ? -1 : trie.token[node[k]];
      stay_pnb[k] = last[k] >= 0 ? pnb[k] + masked[last[k]] : kNegInf;
      double* e = ext.data() + k * C;
      const double pt = p_tot[k];
      for (int64_t j = 0; j < C; ++j) e[j] = pt + masked[cand[j]];
      if (last[k] >= 0 && pos_of[last[k]] >= 0) e[pos_of[last[k]]] = pb[k] + masked[last[k]];
    }
    // an extension that is already a prefix of the beam adds to that prefix
    for (int64_t k2 = 0; k2 < K; ++k2) {
      const int32_t n2 = node[k2];
      if (n2 == 0) continue;
      const int32_t k1 = slot_of[trie.parent[n2]];
      if (k1 < 0) continue;
      const int32_t j = pos_of[trie.token[n2]];
      if (j < 0) continue;  // extension probability 0: log_add(x, -inf) = x
      double& e = ext[k1 * C + j];
      stay_pnb[k2] = log_add(stay_pnb[k2], e);
      e = kNegInf;
    }
    // ---- ranking scores, and the beam-th best among the finite ones
    heap.clear();
    auto offer = [&](double s) {
      if (s == kNegInf) return;
      if (static_cast<int64_t>(heap.size()) < beam) {
        heap.push_back(s);
        std::push_heap(heap.begin(), heap.end(), std::greater<double>());
      } else if (s > heap.front()) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<double>());
        heap.back() = s;
        std::push_heap(heap.begin(), heap.end(), std::greater<double>());
      }
    };
    for (int64_t k = 0; k < K; ++k) {
      stay_score[k] = log_add(stay_pb[k], stay_pnb[k]) + bias[k];
      offer(stay_score[k]);
    }
    for (int64_t k = 0; k < K; ++k) {
      const double* e = ext.data() + k * C;
      double* s = ext_score.data() + k * C;
      const double bk = bias[k];
      if (tb != nullptr) {
        for (int64_t j = 0; j < C; ++j)
          s[j] = e[j] != kNegInf ? e[j] + (bk + tb[cand[j]]) : kNegInf;
      } else {
        for (int64_t j = 0; j < C; ++j) s[j] = e[j] != kNegInf ? e[j] + bk : kNegInf;
      }
      for (int64_t j = 0; j < C; ++j) offer(s[j]);
    }
    for (int64_t j = 0; j < C; ++j) pos_of[cand[j]] = -1;
    if (heap.empty()) {  // every prefix has probability 0: the beam dies
      node.clear();
      break;
    }
    const double kth = heap.front();

    // ---- the best `beam` (ties at the boundary: smaller token sequence first)
    chosen.clear();
    for (int64_t k = 0; k < K; ++k)
      if (stay_score[k] >= kth) chosen.push_back(k);
    for (int64_t i = 0; i < K * C; ++i)
      if (ext_score[i] >= kth) chosen.push_back(K + i);
    auto score_of = [&](int64_t i) { return i < K ? stay_score[i] : ext_score[i - K]; };
    auto seq_of = [&](int64_t i, std::vector<int32_t>& out) {
      if (i < K)
        trie.sequence(node[i], -1, out);
      else
        trie.sequence(node[(i - K) / C], cand[(i - K) % C], out);
    };
    std::sort(chosen.begin(), chosen.end(), [&](int64_t a, int64_t b) {
      const double sa = score_of(a), sb = score_of(b);
      if (sa != sb) return sa > sb;
      seq_of(a, seq_a);
      seq_of(b, seq_b);
      return std::lexicographical_compare(seq_a.begin(), seq_a.end(), seq_b.begin(), seq_b.end());
    });
    if (static_cast<int64_t>(chosen.size()) > beam) chosen.resize(beam);

    new_node.clear();
    new_pb.clear();
    new_pnb.clear();
    new_bias.clear();
    for (const int64_t i : chosen) {
      if (i < K) {
        new_node.push_back(node[i]);
        new_pb.push_back(stay_pb[i]);
        new_pnb.push_back(stay_pnb[i]);
        new_bias.push_back(bias[i]);
      } else {
        const int64_t k = (i - K) / C, j = (i - K) % C;
        const int32_t c = cand[j];
        new_node.push_back(trie.child(node[k], c));
        new_pb.push_back(kNegInf);
        new_pnb.push_back(ext[i - K]);
        new_bias.push_back(tb != nullptr ? bias[k] + tb[c] : bias[k]);
      }
    }
    for (const int32_t n : node) slot_of[n] = -1;
    node.swap(new_node);
    pb.swap(new_pb);
    pnb.swap(new_pnb);
    bias.swap(new_bias);
    if (slot_of.size() < trie.parent.size()) slot_of.resize(trie.parent.size(), -1);
    for (size_t k = 0; k < node.size(); ++k) slot_of[node[k]] = static_cast<int32_t>(k);
  }

  // ---- n-best: by ctc + bias, ties -> smaller token sequence
  const int64_t K = static_cast<int64_t>(node.size());
  std::vector<double> ctc(K), total(K);
  std::vector<std::vector<int32_t>> seqs(K);
  std::vector<int64_t> idx(K);
  for (int64_t k = 0; k < K; ++k) {
    ctc[k] = log_add(pb[k], pnb[k]);
    total[k] = ctc[k] + bias[k];
    trie.sequence(node[k], -1, seqs[k]);
    idx[k] = k;
  }
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    if (total[a] != total[b]) return total[a] > total[b];
    return seqs[a] < seqs[b];
  });
  UttResult res;
  const int64_t keep = std::min(K, nbest);
  for (int64_t r = 0; r < keep; ++r) {
    const int64_t k = idx[r];
    res.tokens.push_back(std::move(seqs[k]));
    res.score.push_back(total[k]);
    res.ctc.push_back(ctc[k]);
    res.bias.push_back(bias[k]);
  }
  return res;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ctc_prefix_beam_search_cpu(const at::Tensor& log_probs, const at::Tensor& lens, int64_t beam,
                           int64_t blank_id, std::optional<int64_t> top_k,
                           std::optional<double> prune_threshold,
                           const std::optional<at::Tensor>& token_bias, int64_t nbest) {
  TORCH_CHECK(log_probs.dim() == 3, "ctc_prefix_beam_search: log_probs must be (N, T, V), got ",
              log_probs.sizes());
  TORCH_CHECK(log_probs.device().is_cpu(), "ctc_prefix_beam_search: log_probs must be on CPU");
  TORCH_CHECK(log_probs.scalar_type() == at::kFloat || log_probs.scalar_type() == at::kDouble,
              "ctc_prefix_beam_search: log_probs must be float32 or float64, got ",
              log_probs.scalar_type());
  const int64_t N = log_probs.size(0), T = log_probs.size(1), V = log_probs.size(2);
  TORCH_CHECK(V >= 1, "ctc_prefix_beam_search: empty vocabulary");
  TORCH_CHECK(V < (int64_t{1} << 31), "ctc_prefix_beam_search: vocabulary too large");
  TORCH_CHECK(lens.dim() == 1 && lens.size(0) == N,
              "ctc_prefix_beam_search: lens must be (N,) with N = ", N, ", got ", lens.sizes());
  TORCH_CHECK(lens.device().is_cpu(), "ctc_prefix_beam_search: lens must be on CPU");
  TORCH_CHECK(!lens.is_floating_point() && !lens.is_complex(),
              "ctc_prefix_beam_search: lens must be an integer tensor");
  TORCH_CHECK(beam >= 1, "ctc_prefix_beam_search: beam must be >= 1, got ", beam);
  TORCH_CHECK(blank_id >= 0 && blank_id < V, "ctc_prefix_beam_search: blank_id ", blank_id,
              " out of range for V = ", V);
  TORCH_CHECK(!top_k.has_value() || *top_k >= 0,
              "ctc_prefix_beam_search: top_k must be >= 0, got ", *top_k);
  TORCH_CHECK(nbest >= 0, "ctc_prefix_beam_search: nbest must be >= 0, got ", nbest);
  at::Tensor bias_vec;
  if (token_bias.has_value()) {
    TORCH_CHECK(token_bias->dim() == 1 && token_bias->size(0) == V,
                "ctc_prefix_beam_search: token_bias must be (V,) with V = ", V, ", got ",
                token_bias->sizes());
    TORCH_CHECK(token_bias->device().is_cpu(), "ctc_prefix_beam_search: token_bias must be on CPU");
    bias_vec = token_bias->to(at::kDouble).contiguous();
  }
  const at::Tensor lens64 = lens.to(at::kLong).contiguous();
  const int64_t* len_ptr = lens64.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(len_ptr[n] >= 0 && len_ptr[n] <= T, "ctc_prefix_beam_search: lens[", n, "] = ",
                len_ptr[n], " out of range [0, ", T, "]");
  const at::Tensor lp = log_probs.contiguous();
  const double* tb = bias_vec.defined() ? bias_vec.data_ptr<double>() : nullptr;

  std::vector<UttResult> results(N);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_prefix_beam_search_cpu", [&] {
    const scalar_t* base = lp.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n)
        results[n] = search_one<scalar_t>(base + n * T * V, len_ptr[n], V, beam, blank_id, top_k,
                                          prune_threshold, tb, nbest);
    });
  });

  int64_t H = 0, L = 0;
  for (const auto& r : results) {
    H += static_cast<int64_t>(r.tokens.size());
    for (const auto& s : r.tokens) L += static_cast<int64_t>(s.size());
  }
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor tokens = at::empty({L}, i64), token_offsets = at::empty({H + 1}, i64),
             hyp_offsets = at::empty({N + 1}, i64), scores = at::empty({H}, f64),
             ctc = at::empty({H}, f64), bias = at::empty({H}, f64);
  int64_t* tok = tokens.data_ptr<int64_t>();
  int64_t* toff = token_offsets.data_ptr<int64_t>();
  int64_t* hoff = hyp_offsets.data_ptr<int64_t>();
  double* sc = scores.data_ptr<double>();
  double* cc = ctc.data_ptr<double>();
  double* bb = bias.data_ptr<double>();
  int64_t h = 0, l = 0;
  toff[0] = 0;
  for (int64_t n = 0; n < N; ++n) {
    hoff[n] = h;
    const auto& r = results[n];
    for (size_t i = 0; i < r.tokens.size(); ++i, ++h) {
      for (const int32_t x : r.tokens[i]) tok[l++] = x;
      toff[h + 1] = l;
      sc[h] = r.score[i];
      cc[h] = r.ctc[i];
      bb[h] = r.bias[i];
    }
  }
  hoff[N] = h;
  return {tokens, token_offsets, hyp_offsets, scores, ctc, bias};
}

}  // namespace asr_kd
