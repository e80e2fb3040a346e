// One iteration of the Mask-CTC beam search on CPU (kernel 3 of asr_kd._C): everything of
// Algorithm 1 of Gong et al. (2022) except the masked-LM call.
//
// The native twin of asr_kd.decoding.mask_ctc._beam_step_reference (= _top_fill_sets followed by
// _prune, whose docstrings hold the rules), with the same results bit for bit, tie-breaking
// included:
//
//   for every hypothesis h with k[h] > 0 (the "active" ones, logp row a = its rank among them):
//     its `beam` best candidate sets (k[h] distinct masked positions, one token each, score = the
//     float64 sum of their log posteriors) by the same exact enumeration as _top_fill_sets: the
//     M = min(max masks of an active row, beam + kmax - 1) positions with the best top token
//     (ties: leftmost), each position's min(beam, V) best tokens (one pass with a small buffer
//     when they are unique; where equal values make torch.topk's order matter, its CPU algorithm
//     replicated: the same std::nth_element / std::partial_sort calls on the same queue), and
//     the dynamic programme over the positions left to right with stable ordering (sets that do
//     not use the new position first, then extensions by parent rank, then token rank);
//     candidates = h's sequence with the set filled in, score = score[h] + set score (finite only);
//   hypotheses with k[h] == 0 pass through unchanged;
//   per utterance: identical sequences merged (max score), the `beam` best kept, ordered by
//     score descending, ties by the token sequence (lexicographic, as torch.unique sorts rows).
//
// Utterances run in parallel (at::parallel_for over utterances, grain 1).
#pragma once

#include <torch/types.h>

#include <tuple>

namespace asr_kd {

// logp      (A, L, V) float32/float64: the masked LM's log posteriors (banned tokens at -inf) of
//           the A hypotheses with k > 0, in ascending hypothesis order;
// hyp_ys    (H, L) int64 token ids, mask_id at masked positions (padding: anything else);
// hyp_score (H,) float64; hyp_utt (H,) int64 in [0, num_utts); k (H,) int64 >= 0, the number of
//           masks each hypothesis fills in this iteration (0 = passes through).
// Returns (ys (H', L) int64, score (H',) float64, utt (H',) int64): the next beam, grouped by
// utterance (ascending), best first within an utterance, at most `beam` per utterance.
std::tuple<at::Tensor, at::Tensor, at::Tensor> mask_ctc_beam_step_cpu(
    const at::Tensor& logp, const at::Tensor& hyp_ys, const at::Tensor& hyp_score,
    const at::Tensor& hyp_utt, const at::Tensor& k, int64_t beam, int64_t num_utts,
    int64_t mask_id);

}  // namespace asr_kd
