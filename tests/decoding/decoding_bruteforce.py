"""Brute-force references for the decoding tests (tiny V and T only)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import torch

#: a tiny random Conformer (20-dim input) for the decoding-method tests
ENCODER = {
    "type": "conformer",
    "input_dim": 20,
    "d_model": 16,
    "num_layers": 2,
    "num_heads": 2,
    "ffn_dim": 32,
    "conv_kernel": 3,
    "subsampling_channels": 4,
    "dropout": 0.0,
}


class SpreadCtc(torch.nn.Module):
    """The random encoder barely varies over time: amplify the variation so the CTC outputs are not all blank."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, enc):
        return 30.0 * self.head(enc - enc.mean(dim=1, keepdim=True))


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


# ---- reference (dict-based, unvectorised) CTC prefix beam search, same semantics ----


def _log_add(a, b):
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


def reference_prefix_beam_search(log_probs, lens, beam, blank_id=0, top_k=None, prune_threshold=None, token_bias=None):
    """Returns per utterance a list of (score, ctc, bias, prefix) best first."""
    _NEG_INF = -math.inf
    lp = log_probs.to(torch.float64)
    V = lp.size(-1)
    if top_k is not None and top_k < V:
        cand_ids = lp.topk(top_k, dim=-1).indices.sort(dim=-1).values
    else:
        cand_ids = torch.arange(V).expand(lp.shape)
    keep_mask = None
    if prune_threshold is not None:
        keep_mask = lp.gather(-1, cand_ids) >= lp.max(dim=-1, keepdim=True).values - prune_threshold
    out = []
    for n in range(lp.size(0)):
        L = int(lens[n])
        rows, cands = lp[n, :L].tolist(), cand_ids[n, :L].tolist()
        keeps = keep_mask[n, :L].tolist() if keep_mask is not None else None
        beams = {(): [0.0, _NEG_INF]}
        bias = {(): 0.0}
        for t, row in enumerate(rows):
            frame_cands = cands[t]
            if keeps is not None:
                frame_cands = [c for c, k in zip(frame_cands, keeps[t]) if k]
            nxt: dict[tuple, list[float]] = {}
            for prefix, (pb, pnb) in beams.items():
                p_tot = _log_add(pb, pnb)
                last = prefix[-1] if prefix else None
                for c in frame_cands:
                    p = row[c]
                    if c == blank_id:
                        e = nxt.setdefault(prefix, [_NEG_INF, _NEG_INF])
                        e[0] = _log_add(e[0], p_tot + p)
                        continue
                    ext = prefix + (c,)
                    if ext not in bias:
                        bias[ext] = bias[prefix] + (float(token_bias(prefix, c)) if token_bias is not None else 0.0)
                    if c == last:
                        e = nxt.setdefault(prefix, [_NEG_INF, _NEG_INF])
                        e[1] = _log_add(e[1], pnb + p)
                        e = nxt.setdefault(ext, [_NEG_INF, _NEG_INF])
                        e[1] = _log_add(e[1], pb + p)
                    else:
                        e = nxt.setdefault(ext, [_NEG_INF, _NEG_INF])
                        e[1] = _log_add(e[1], p_tot + p)
            ranked = sorted(
                ((_log_add(pb, pnb) + bias[g], g) for g, (pb, pnb) in nxt.items() if _log_add(pb, pnb) > _NEG_INF),
                key=lambda x: (-x[0], x[1]),
            )[:beam]
            beams = {g: nxt[g] for _, g in ranked}
        out.append(
            sorted(
                ((_log_add(*beams[g]) + bias[g], _log_add(*beams[g]), bias[g], g) for g in beams),
                key=lambda x: (-x[0], x[3]),
            )
        )
    return out


# ---- Mask-CTC beam search (Algorithm 1 of Gong et al., 2022): unvectorised references ----


def _fill_sets(seq, k, logp, mask_id, tokens):
    """Every way to fill ``k`` masked positions of ``seq``: [(score, new sequence)]."""
    masked = [i for i, t in enumerate(seq) if t == mask_id]
    out = []
    for pos in itertools.combinations(masked, k):
        for toks in itertools.product(tokens, repeat=k):
            new = list(seq)
            score = 0.0
            for p, t in zip(pos, toks):
                new[p] = t
                score += logp[p][t]
            out.append((score, tuple(new)))
    return out


def mask_ctc_exhaustive(mlm_logp, seq, plan, mask_id, tokens) -> dict[tuple, float]:
    """{final sequence: best score over every fill order} of one utterance.

    Walks every path of candidate sets (depth-first): iteration i fills ``plan[i]`` of the masks
    left, a path's score is the sum of the log posteriors of its fills, each from the MLM run on
    the sequence as it was before that iteration (``mlm_logp(seq) -> (L, V)`` nested lists).
    ``tokens``: the ids a mask may take.
    """
    best: dict[tuple, float] = {}

    def walk(cur, i, score):
        if i == len(plan):
            best[cur] = max(best.get(cur, -math.inf), score)
            return
        logp = mlm_logp(cur)
        for s, new in _fill_sets(cur, plan[i], logp, mask_id, tokens):
            walk(new, i + 1, score + s)

    walk(tuple(seq), 0, 0.0)
    return best


def reference_mask_ctc_beam_search(mlm_logp, seq, plan, mask_id, tokens, beam):
    """Algorithm 1 for one utterance by full enumeration: [(score, sequence)] best first.

    Each hypothesis of Omega_0 contributes its ``beam`` best candidate sets (all sets enumerated);
    Omega_1 merges identical sequences (max score) and keeps the ``beam`` best.
    """
    omega = [(0.0, tuple(seq))]
    for k in plan:
        pool: dict[tuple, float] = {}
        for score, cur in omega:
            sets = sorted(_fill_sets(cur, k, mlm_logp(cur), mask_id, tokens), key=lambda x: -x[0])[:beam]
            for s, new in sets:
                pool[new] = max(pool.get(new, -math.inf), score + s)
        omega = sorted(((s, q) for q, s in pool.items()), key=lambda x: -x[0])[:beam]
    return omega


def write_token_lm(lang_dir, order: int = 2, seed: int = 0, name: str = "tokens_2gram.arpa"):
    """A token-level ARPA over the non-blank tokens of ``lang_dir/tokens.txt`` (random sentences,
    a skew towards token 1), written as ``lang_dir/name`` (for ``modified-beam-lm``)."""
    from asr_kd.lm.ngram import train_ngram, write_arpa

    pieces = [line.split()[0] for line in (lang_dir / "tokens.txt").read_text().splitlines()[1:]]
    g = torch.Generator().manual_seed(seed)
    sents = []
    for _ in range(100):
        ids = torch.randint(0, len(pieces), (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
        sents.append(" ".join(pieces[0 if i % 3 == 0 else i] for i in ids))
    path = lang_dir / name
    write_arpa(train_ngram(sents, order, unk="<unk>"), path)
    return path
