// CTC prefix beam search on CPU (kernel 2 of asr_kd._C).
//
// The native twin of asr_kd.decoding.ctc.ctc_prefix_beam_search (the reference, whose docstring
// holds the rules): per utterance a beam of label prefixes g with log blank / non-blank
// probabilities pb(g) / pnb(g); per frame t and candidate token c (log posterior p):
//
//   c == blank    : pb'(g)      (+)= pb(g) (+) pnb(g) + p
//   c == last(g)  : pnb'(g)     (+)= pnb(g) + p           (repeat collapses)
//                   pnb'(g + c) (+)= pb(g) + p            (blank separates a real repeat)
//   otherwise     : pnb'(g + c) (+)= pb(g) (+) pnb(g) + p
//
// ranked by score = (pb (+) pnb) + bias(g), best `beam` kept, ties -> smaller token sequence;
// bias(g) = sum of a static per-token bias vector over g's tokens (0 without one). Candidates per
// frame: the top_k largest log posteriors, and those >= max - prune_threshold (blank included).
// Computed in double whatever the input dtype (float32 / float64), like the reference.
//
// Prefixes live in a per-utterance trie (parent pointer + token per node, a hash map
// (parent, token) -> node so that a prefix always has the same node); the beam maps nodes to beam
// slots for the "extension already in the beam" merge. Utterances run in parallel
// (at::parallel_for over the batch).
#pragma once

#include <torch/types.h>

#include <optional>
#include <tuple>

namespace asr_kd {

// Returns (tokens, token_offsets, hyp_offsets, scores, ctc_scores, bias_scores):
//   tokens        int64 (total tokens,)   all hypotheses' tokens, concatenated
//   token_offsets int64 (H + 1,)   hypothesis h: tokens[token_offsets[h]:token_offsets[h + 1]]
//   hyp_offsets   int64 (N + 1,)   utterance n: hypotheses hyp_offsets[n]:hyp_offsets[n + 1]
//   scores, ctc_scores, bias_scores  float64 (H,)  ranking score = ctc + bias, best first per utt.
// log_probs (N, T, V) float32/float64 CPU; lens (N,) integer CPU with 0 <= lens[n] <= T;
// token_bias: optional (V,) floating CPU tensor; top_k >= 0 when given; nbest >= 0.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ctc_prefix_beam_search_cpu(const at::Tensor& log_probs, const at::Tensor& lens, int64_t beam,
                           int64_t blank_id, std::optional<int64_t> top_k,
                           std::optional<double> prune_threshold,
                           const std::optional<at::Tensor>& token_bias, int64_t nbest);

}  // namespace asr_kd
