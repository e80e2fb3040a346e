// One Mask-CTC beam-search iteration on CPU: see mask_ctc_beam.h for what it computes.
//
// Each step mirrors asr_kd.decoding.mask_ctc._top_fill_sets / _prune (same float64 additions in
// the same order, same stable orders), so that tokens, scores and the order of the returned beam
// are identical to the PyTorch reference, not just close.
#include "mask_ctc_beam.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace asr_kd {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// torch.topk(row, k, largest=True, sorted=True) on CPU, order of equal values included: a replica
// of at::native::topk_impl_loop (ATen/native/TopKImpl.h), i.e. the same std::partial_sort (when
// k * 64 <= V) or std::nth_element + std::sort of the first k - 1 calls, with the same comparator,
// on the same (value, index) queue.
template <typename scalar_t>
void topk_like_torch(const scalar_t* row, int64_t V, int64_t k,
                     std::vector<std::pair<scalar_t, int64_t>>& queue, double* values,
                     int32_t* indices) {
  using elem_t = std::pair<scalar_t, int64_t>;
  queue.resize(V);
  for (int64_t j = 0; j < V; ++j) {
    queue[j].first = row[j];
    queue[j].second = j;
  }
  auto greater = [](const elem_t& x, const elem_t& y) -> bool {
    return (std::isnan(x.first) && !std::isnan(y.first)) || (x.first > y.first);
  };
  if (k * 64 <= V) {
    std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), greater);
  } else {
    std::nth_element(queue.begin(), queue.begin() + k - 1, queue.end(), greater);
    std::sort(queue.begin(), queue.begin() + k - 1, greater);
  }
  for (int64_t j = 0; j < k; ++j) {
    values[j] = static_cast<double>(queue[j].first);
    indices[j] = static_cast<int32_t>(queue[j].second);
  }
}

// The b best values of a row and their indices, sorted descending, in one pass with a small
// insertion buffer. Returns false when the result could depend on how equal values are ordered:
// two equal finite values among the b best, a finite b-th value that occurs again outside them,
// or a NaN; the caller then uses topk_like_torch. (-inf entries never form a set, so their order
// does not matter.) Otherwise the b best are unique and torch.topk returns exactly these.
template <typename scalar_t>
bool topk_distinct(const scalar_t* row, int64_t V, int64_t b, double* values, int32_t* indices) {
  scalar_t bv[64] = {};
  int32_t bi[64] = {};
  if (b > 64) return false;
  int64_t n = 0;
  for (int64_t v = 0; v < V; ++v) {
    const scalar_t x = row[v];
    if (n == b && x <= bv[b - 1]) continue;  // the common case; NaN goes on
    if (std::isnan(x)) return false;
    int64_t p = n < b ? n++ : b - 1;
    for (; p > 0 && bv[p - 1] < x; --p) {
      bv[p] = bv[p - 1];
      bi[p] = bi[p - 1];
    }
    bv[p] = x;
    bi[p] = static_cast<int32_t>(v);
  }
  for (int64_t i = 1; i < b; ++i)
    if (bv[i] == bv[i - 1] && static_cast<double>(bv[i]) != kNegInf) return false;
  const scalar_t kth = bv[b - 1];
  if (static_cast<double>(kth) != kNegInf) {
    int64_t eq = 0;
    for (int64_t v = 0; v < V; ++v) eq += row[v] == kth;
    if (eq != 1) return false;
  }
  for (int64_t i = 0; i < b; ++i) {
    values[i] = static_cast<double>(bv[i]);
    indices[i] = bi[i];
  }
  return true;
}

struct Cand {
  double score;
  int32_t key;  // position in the reference's concatenation [kept sets, extensions]
};

inline bool cand_before(const Cand& a, const Cand& b) {  // stable descending sort
  return a.score > b.score || (a.score == b.score && a.key < b.key);
}

// Shapes and constants shared by every utterance of one call.
struct StepShape {
  int64_t L, V, beam, b, M, mask_id;
};

// Scratch space of one worker (reused across the hypotheses it handles).
template <typename scalar_t>
struct Scratch {
  std::vector<std::pair<scalar_t, int64_t>> queue;
  std::vector<std::pair<scalar_t, int32_t>> top1;  // (best log posterior, position) of masks
  std::vector<double> tl_all;                      // (L, b) per mask: b best log posteriors
  std::vector<int32_t> ti_all;                     // (L, b) and their tokens
  std::vector<char> exact;                         // (L,) tl_all / ti_all are torch.topk's
  std::vector<int32_t> pos;                        // selected positions, ascending
  std::vector<double> tl;                          // (M, b) token log posteriors
  std::vector<int32_t> ti;                         // (M, b) token ids
  std::vector<int64_t> cnt;                        // sets per DP row
  std::vector<double> sc, new_sc;                  // (k + 1, beam) set scores
  std::vector<int32_t> items, new_items;           // (k + 1, beam, k) picks m * b + r
  std::vector<Cand> cands;
};

// The finite ones of the `beam` best fill sets of one hypothesis (_top_fill_sets, one row).
// Appends (score, then k (position, token) pairs) to `sets_score` / `sets_fill`.
template <typename scalar_t>
void top_fill_sets_row(const scalar_t* lp, const int64_t* ys, int64_t ka, const StepShape& sh,
                       Scratch<scalar_t>& w, std::vector<double>& sets_score,
                       std::vector<int64_t>& sets_fill) {
  const int64_t L = sh.L, V = sh.V, beam = sh.beam, b = sh.b;
  // ---- positions: the M masks with the best top token (ties: leftmost), then ascending.
  // Masks whose best token is -inf (and the unmasked positions the reference may pad posmap
  // with) only yield -inf sets, which the reference drops at the end: they are left out.
  // The b best tokens of every mask come with its best token (one pass, topk_distinct); where
  // ties make torch.topk's order matter they are redone with its replica once selected.
  w.top1.clear();
  w.tl_all.resize(L * b);
  w.ti_all.resize(L * b);
  w.exact.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    if (ys[l] != sh.mask_id) continue;
    const scalar_t* row = lp + l * V;
    double* tv = w.tl_all.data() + l * b;
    int32_t* tix = w.ti_all.data() + l * b;
    scalar_t mx;
    w.exact[l] = topk_distinct<scalar_t>(row, V, b, tv, tix);
    if (w.exact[l]) {
      mx = static_cast<scalar_t>(tv[0]);
    } else {
      mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
    }
    if (static_cast<double>(mx) == kNegInf) continue;
    w.top1.emplace_back(mx, static_cast<int32_t>(l));
  }
  const int64_t Mv = std::min<int64_t>(sh.M, static_cast<int64_t>(w.top1.size()));
  if (Mv < ka) return;  // fewer usable positions than masks to fill: no finite set
  std::stable_sort(w.top1.begin(), w.top1.end(),
                   [](const auto& x, const auto& y) { return x.first > y.first; });
  w.pos.resize(Mv);
  for (int64_t i = 0; i < Mv; ++i) w.pos[i] = w.top1[i].second;
  std::sort(w.pos.begin(), w.pos.end());
  // ---- each position's b best tokens, torch.topk's order
  w.tl.resize(Mv * b);
  w.ti.resize(Mv * b);
  for (int64_t m = 0; m < Mv; ++m) {
    const int64_t l = w.pos[m];
    if (w.exact[l]) {
      std::copy(w.tl_all.begin() + l * b, w.tl_all.begin() + (l + 1) * b, w.tl.begin() + m * b);
      std::copy(w.ti_all.begin() + l * b, w.ti_all.begin() + (l + 1) * b, w.ti.begin() + m * b);
    } else {
      topk_like_torch<scalar_t>(lp + l * V, V, b, w.queue, w.tl.data() + m * b,
                                w.ti.data() + m * b);
    }
  }
  // ---- DP over the positions: row j = the best partial sets with j positions picked
  w.cnt.assign(ka + 1, 0);
  w.sc.resize((ka + 1) * beam);
  w.new_sc.resize(beam);
  w.items.resize((ka + 1) * beam * ka);
  w.new_items.resize(beam * ka);
  w.cnt[0] = 1;
  w.sc[0] = 0.0;
  for (int64_t m = 0; m < Mv; ++m) {
    const double* t = w.tl.data() + m * b;
    // rows updated from the previous step's rows: j descending, so row j - 1 is still old
    for (int64_t j = std::min<int64_t>(ka, m + 1); j >= 1; --j) {
      const int64_t n_old = w.cnt[j], n_par = w.cnt[j - 1];
      if (n_par == 0) continue;
      const double* old_sc = w.sc.data() + j * beam;
      const double* par_sc = w.sc.data() + (j - 1) * beam;
      w.cands.clear();
      for (int64_t i = 0; i < n_old; ++i) w.cands.push_back({old_sc[i], static_cast<int32_t>(i)});
      // Parent scores and t are both descending, so extension (s, r) is preceded (score >=, key
      // smaller) by the (s + 1)(r + 1) - 1 extensions (s' <= s, r' <= r): only those with
      // (s + 1)(r + 1) <= beam can reach the top `beam`.
      for (int64_t s = 0; s < n_par; ++s) {
        for (int64_t r = 0; r < b && (s + 1) * (r + 1) <= beam; ++r) {
          if (t[r] == kNegInf) break;  // descending: the rest is -inf too
          w.cands.push_back({par_sc[s] + t[r], static_cast<int32_t>(n_old + s * b + r)});
        }
      }
      const int64_t n_new = std::min<int64_t>(beam, static_cast<int64_t>(w.cands.size()));
      std::partial_sort(w.cands.begin(), w.cands.begin() + n_new, w.cands.end(), cand_before);
      const int32_t* old_it = w.items.data() + j * beam * ka;
      const int32_t* par_it = w.items.data() + (j - 1) * beam * ka;
      for (int64_t q = 0; q < n_new; ++q) {
        const Cand& c = w.cands[q];
        int32_t* dst = w.new_items.data() + q * ka;
        w.new_sc[q] = c.score;
        if (c.key < n_old) {
          std::copy(old_it + c.key * ka, old_it + c.key * ka + j, dst);
        } else {
          const int64_t e = c.key - n_old, s = e / b, r = e % b;
          std::copy(par_it + s * ka, par_it + s * ka + (j - 1), dst);
          dst[j - 1] = static_cast<int32_t>(m * b + r);
        }
      }
      std::copy(w.new_sc.begin(), w.new_sc.begin() + n_new, w.sc.begin() + j * beam);
      std::copy(w.new_items.begin(), w.new_items.begin() + n_new * ka,
                w.items.begin() + j * beam * ka);
      w.cnt[j] = n_new;
    }
  }
  const double* fin_sc = w.sc.data() + ka * beam;
  const int32_t* fin_it = w.items.data() + ka * beam * ka;
  for (int64_t q = 0; q < w.cnt[ka]; ++q) {
    sets_score.push_back(fin_sc[q]);
    for (int64_t j = 0; j < ka; ++j) {
      const int32_t item = fin_it[q * ka + j];
      const int64_t m = item / b, r = item % b;
      sets_fill.push_back(w.pos[m]);
      sets_fill.push_back(w.ti[m * b + r]);
    }
  }
}

struct UttBeam {
  std::vector<int64_t> ys;  // (n, L)
  std::vector<double> score;
};

// One utterance: candidates of its active hypotheses + its finished ones, merged and pruned
// (_prune: duplicates keep the max score; best `beam`, score descending, ties by sequence).
template <typename scalar_t>
UttBeam step_utterance(const std::vector<int64_t>& hyps, const scalar_t* logp, const int64_t* ys,
                       const double* score, const int64_t* k, const int64_t* act_row,
                       const StepShape& sh, Scratch<scalar_t>& w) {
  const int64_t L = sh.L;
  std::vector<int64_t> pool_ys;
  std::vector<double> pool_score;
  std::vector<double> sets_score;
  std::vector<int64_t> sets_fill;
  for (const int64_t h : hyps) {
    const int64_t* y = ys + h * L;
    if (k[h] <= 0) {  // nothing to fill this iteration: passes through
      pool_ys.insert(pool_ys.end(), y, y + L);
      pool_score.push_back(score[h]);
      continue;
    }
    sets_score.clear();
    sets_fill.clear();
    top_fill_sets_row<scalar_t>(logp + act_row[h] * L * sh.V, y, k[h], sh, w, sets_score,
                                sets_fill);
    const int64_t ka = k[h];
    for (size_t q = 0; q < sets_score.size(); ++q) {
      const double total = score[h] + sets_score[q];
      if (!std::isfinite(total)) continue;
      const size_t off = pool_ys.size();
      pool_ys.insert(pool_ys.end(), y, y + L);
      for (int64_t j = 0; j < ka; ++j)
        pool_ys[off + sets_fill[2 * (q * ka + j)]] = sets_fill[2 * (q * ka + j) + 1];
      pool_score.push_back(total);
    }
  }
  const int64_t P = static_cast<int64_t>(pool_score.size());
  auto seq_less = [&](int64_t a, int64_t c) {
    const int64_t* x = pool_ys.data() + a * L;
    const int64_t* y = pool_ys.data() + c * L;
    return std::lexicographical_compare(x, x + L, y, y + L);
  };
  auto seq_equal = [&](int64_t a, int64_t c) {
    return std::equal(pool_ys.data() + a * L, pool_ys.data() + (a + 1) * L, pool_ys.data() + c * L);
  };
  std::vector<int64_t> order(P);
  for (int64_t i = 0; i < P; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), seq_less);
  // unique sequences (ascending) with their best score
  std::vector<int64_t> uniq;
  std::vector<double> best;
  for (int64_t i = 0; i < P; ++i) {
    const int64_t p = order[i];
    if (!uniq.empty() && seq_equal(uniq.back(), p)) {
      best.back() = std::max(best.back(), pool_score[p]);
    } else {
      uniq.push_back(p);
      best.push_back(pool_score[p]);
    }
  }
  const int64_t U = static_cast<int64_t>(uniq.size());
  std::vector<int64_t> rank(U);
  for (int64_t i = 0; i < U; ++i) rank[i] = i;  // i ascending = sequence ascending
  const int64_t keep = std::min<int64_t>(sh.beam, U);
  std::partial_sort(rank.begin(), rank.begin() + keep, rank.end(), [&](int64_t a, int64_t c) {
    return best[a] > best[c] || (best[a] == best[c] && a < c);
  });
  UttBeam out;
  out.ys.resize(keep * L);
  out.score.resize(keep);
  for (int64_t q = 0; q < keep; ++q) {
    const int64_t* src = pool_ys.data() + uniq[rank[q]] * L;
    std::copy(src, src + L, out.ys.begin() + q * L);
    out.score[q] = best[rank[q]];
  }
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> mask_ctc_beam_step_cpu(
    const at::Tensor& logp, const at::Tensor& hyp_ys, const at::Tensor& hyp_score,
    const at::Tensor& hyp_utt, const at::Tensor& k, int64_t beam, int64_t num_utts,
    int64_t mask_id) {
  TORCH_CHECK(logp.dim() == 3, "mask_ctc_beam_step: logp must be (A, L, V), got ", logp.sizes());
  TORCH_CHECK(logp.device().is_cpu(), "mask_ctc_beam_step: logp must be on CPU");
  TORCH_CHECK(logp.scalar_type() == at::kFloat || logp.scalar_type() == at::kDouble,
              "mask_ctc_beam_step: logp must be float32 or float64, got ", logp.scalar_type());
  TORCH_CHECK(hyp_ys.dim() == 2, "mask_ctc_beam_step: hyp_ys must be (H, L), got ", hyp_ys.sizes());
  const int64_t H = hyp_ys.size(0), L = hyp_ys.size(1), A = logp.size(0), V = logp.size(2);
  TORCH_CHECK(logp.size(1) == L, "mask_ctc_beam_step: logp has L = ", logp.size(1),
              " positions, hyp_ys ", L);
  TORCH_CHECK(V >= 1, "mask_ctc_beam_step: empty vocabulary");
  TORCH_CHECK(V < (int64_t{1} << 31), "mask_ctc_beam_step: vocabulary too large");
  for (const at::Tensor* t : {&hyp_ys, &hyp_score, &hyp_utt, &k})
    TORCH_CHECK(t->device().is_cpu(), "mask_ctc_beam_step: all tensors must be on CPU");
  TORCH_CHECK(!hyp_ys.is_floating_point() && !hyp_ys.is_complex(),
              "mask_ctc_beam_step: hyp_ys must be an integer tensor");
  TORCH_CHECK(hyp_score.dim() == 1 && hyp_score.size(0) == H,
              "mask_ctc_beam_step: hyp_score must be (H,) with H = ", H, ", got ", hyp_score.sizes());
  TORCH_CHECK(hyp_utt.dim() == 1 && hyp_utt.size(0) == H && !hyp_utt.is_floating_point(),
              "mask_ctc_beam_step: hyp_utt must be an integer (H,) tensor with H = ", H);
  TORCH_CHECK(k.dim() == 1 && k.size(0) == H && !k.is_floating_point(),
              "mask_ctc_beam_step: k must be an integer (H,) tensor with H = ", H);
  TORCH_CHECK(beam >= 1, "mask_ctc_beam_step: beam must be >= 1, got ", beam);
  TORCH_CHECK(num_utts >= 0, "mask_ctc_beam_step: num_utts must be >= 0, got ", num_utts);

  const at::Tensor ys64 = hyp_ys.to(at::kLong).contiguous();
  const at::Tensor sc64 = hyp_score.to(at::kDouble).contiguous();
  const at::Tensor utt64 = hyp_utt.to(at::kLong).contiguous();
  const at::Tensor k64 = k.to(at::kLong).contiguous();
  const int64_t* ys = ys64.data_ptr<int64_t>();
  const double* score = sc64.data_ptr<double>();
  const int64_t* utt = utt64.data_ptr<int64_t>();
  const int64_t* kk = k64.data_ptr<int64_t>();

  // logp row of each active hypothesis; the reference's batch-wide kmax and M
  std::vector<int64_t> act_row(H, -1);
  std::vector<std::vector<int64_t>> hyps_of(num_utts);
  int64_t n_act = 0, kmax = 0, max_masks = 0;
  for (int64_t h = 0; h < H; ++h) {
    TORCH_CHECK(utt[h] >= 0 && utt[h] < num_utts, "mask_ctc_beam_step: hyp_utt[", h, "] = ",
                utt[h], " out of range [0, ", num_utts, ")");
    TORCH_CHECK(kk[h] >= 0, "mask_ctc_beam_step: k[", h, "] = ", kk[h], " < 0");
    hyps_of[utt[h]].push_back(h);
    if (kk[h] == 0) continue;
    act_row[h] = n_act++;
    kmax = std::max(kmax, kk[h]);
    int64_t masks = 0;
    for (int64_t l = 0; l < L; ++l) masks += ys[h * L + l] == mask_id;
    max_masks = std::max(max_masks, masks);
  }
  TORCH_CHECK(n_act == A, "mask_ctc_beam_step: logp has ", A, " rows but ", n_act,
              " hypotheses have k > 0");
  StepShape sh{L, V, beam, std::min(beam, V), std::min(max_masks, beam + kmax - 1), mask_id};
  TORCH_CHECK(sh.M * sh.b < (int64_t{1} << 31), "mask_ctc_beam_step: too many positions");

  std::vector<UttBeam> results(num_utts);
  const at::Tensor lp = logp.contiguous();
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "mask_ctc_beam_step_cpu", [&] {
    const scalar_t* base = lp.data_ptr<scalar_t>();
    at::parallel_for(0, num_utts, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> w;
      for (int64_t n = begin; n < end; ++n)
        results[n] =
            step_utterance<scalar_t>(hyps_of[n], base, ys, score, kk, act_row.data(), sh, w);
    });
  });

  int64_t H2 = 0;
  for (const auto& r : results) H2 += static_cast<int64_t>(r.score.size());
  at::Tensor out_ys = at::empty({H2, L}, at::TensorOptions().dtype(at::kLong));
  at::Tensor out_score = at::empty({H2}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor out_utt = at::empty({H2}, at::TensorOptions().dtype(at::kLong));
  int64_t* oy = out_ys.data_ptr<int64_t>();
  double* os = out_score.data_ptr<double>();
  int64_t* ou = out_utt.data_ptr<int64_t>();
  int64_t h = 0;
  for (int64_t n = 0; n < num_utts; ++n) {
    const auto& r = results[n];
    std::copy(r.ys.begin(), r.ys.end(), oy + h * L);
    for (size_t q = 0; q < r.score.size(); ++q, ++h) {
      os[h] = r.score[q];
      ou[h] = n;
    }
  }
  return {out_ys, out_score, out_utt};
}

}  // namespace asr_kd
