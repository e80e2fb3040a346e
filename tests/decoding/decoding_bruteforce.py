"""Brute-force references for the decoding tests (tiny V and T only)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import torch


def random_log_probs(N: int, T: int, V: int, seed: int = 0, sharp: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (sharp * torch.randn(N, T, V, generator=g, dtype=torch.float64)).log_softmax(-1)


def collapse(path, blank=0) -> tuple:
    out, prev = [], None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def ctc_sequence_probs(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple, float]:
    """{label sequence: log sum over all alignments} for one utterance ``(T, V)``."""
    T, V = log_probs.shape
    lp = log_probs.tolist()
    acc: dict[tuple, list[float]] = defaultdict(list)
    for path in itertools.product(range(V), repeat=T):
        acc[collapse(path, blank)].append(sum(lp[t][c] for t, c in enumerate(path)))
    return {k: torch.tensor(v, dtype=torch.float64).logsumexp(0).item() for k, v in acc.items()}


def ctc_prefix_prob(log_probs: torch.Tensor, prefix: tuple, blank: int = 0) -> float:
    """log of the total probability of all label sequences starting with ``prefix``."""
    probs = ctc_sequence_probs(log_probs, blank)
    vals = [v for k, v in probs.items() if k[: len(prefix)] == tuple(prefix)]
    return torch.tensor(vals, dtype=torch.float64).logsumexp(0).item() if vals else -math.inf


def all_sequences(tokens, max_len):
    for L in range(max_len + 1):
        yield from itertools.product(tokens, repeat=L)


# ---- transducer (predictor/joiner protocol of asr_kd.decoding.transducer) ----


def transducer_frame_logp(pred, joiner, enc_t, tokens):
    c = pred.context_size
    ctx = ([0] * c + list(tokens))[-c:]
    e = joiner.enc_proj(enc_t[None])
    p = joiner.pred_proj(pred(torch.tensor([ctx]), need_pad=False)[:, -1])
    return joiner(e, p).log_softmax(-1)[0]


def ref_greedy(pred, joiner, enc, T, max_sym):
    hyp = []
    for t in range(T):
        for _ in range(max_sym):
            lp = transducer_frame_logp(pred, joiner, enc[t], hyp)
            v = int(lp.argmax())
            if v == 0:
                break
            hyp.append(v)
    return hyp


def brute_force_one_sym(pred, joiner, enc, T, V):
    acc = defaultdict(list)
    memo = {}

    def frame(t, toks):
        key = (t, tuple(toks))
        if key not in memo:
            memo[key] = transducer_frame_logp(pred, joiner, enc[t], toks).tolist()
        return memo[key]

    for path in itertools.product(range(V), repeat=T):
        toks, total = [], 0.0
        for t, v in enumerate(path):
            total += frame(t, toks)[v]
            if v != 0:
                toks.append(v)
        acc[tuple(toks)].append(total)
    return {k: torch.tensor(v, dtype=torch.float64).logsumexp(0).item() for k, v in acc.items()}
