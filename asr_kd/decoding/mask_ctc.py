"""Mask-CTC inference: CTC greedy output refined by a conditional masked LM (easy-first).

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, D model dim,
V vocabulary (blank = 0), L token positions (longest CTC output of the batch).

The masked LM is duck-typed like ``asr_kd.models.heads.MaskCtcDecoder``:
``mlm_decoder(memory (N, T', D), memory_lens (N,), ys_masked (N, L)) -> logits (N, L, V)`` where
``ys_masked`` holds token ids, ``mask_id`` at masked positions and ``ignore_id`` (-1) as padding.

(The Mask-CTC beam search of the AR->NAR paper, Algorithm 1, would be a separate function in this
module with the same inputs plus a beam width; it shares the CTC segmentation below.)
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["mask_ctc_easy_first", "ctc_greedy_with_confidence"]

_NEG_INF = float("-inf")


def ctc_greedy_with_confidence(
    log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0
) -> tuple[list[list[int]], list[list[float]]]:
    """CTC best path with a confidence per output token.

    A token's confidence is the largest frame posterior inside the run of frames that produced it
    (the frames between the neighbouring blanks / other tokens).

    Args:
        log_probs: ``(N, T', V)`` frame log posteriors.
        lens: ``(N,)`` valid frames.

    Returns:
        ``(tokens, confidences)``: N lists of token ids and N lists of probabilities in [0, 1].
    """
    best_lp, ids = log_probs.detach().max(dim=-1)  # (N, T')
    probs = best_lp.exp().cpu()
    ids = ids.cpu()
    tokens, confs = [], []
    for n, L in enumerate(lens.tolist()):
        if L == 0:
            tokens.append([])
            confs.append([])
            continue
        uniq, counts = torch.unique_consecutive(ids[n, :L], return_counts=True)
        seg = torch.repeat_interleave(torch.arange(uniq.numel()), counts)  # (L,)
        seg_conf = torch.zeros(uniq.numel(), dtype=probs.dtype).scatter_reduce(
            0, seg, probs[n, :L], reduce="amax", include_self=False
        )
        keep = uniq != blank_id
        tokens.append(uniq[keep].tolist())
        confs.append(seg_conf[keep].tolist())
    return tokens, confs


@torch.no_grad()
def mask_ctc_easy_first(
    ctc_log_probs: torch.Tensor,
    lens: torch.Tensor,
    mlm_decoder: Any,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    *,
    p_thr: float = 0.99,
    K: int = 2,
    mask_id: int,
    blank_id: int = 0,
    ignore_id: int = -1,
) -> list[list[int]]:
    """Mask-CTC easy-first decoding (Higuchi et al., 2020), batched across utterances.

    1. CTC greedy search; each output token gets the confidence of
       :func:`ctc_greedy_with_confidence`.
    2. Tokens with confidence ``< p_thr`` are replaced by ``mask_id``; the others are final.
    3. With ``M`` masks, ``R = min(K, M)`` rounds: in round ``r`` (0-based) the masked LM predicts
       every masked position (token = argmax over V without blank, confidence = its probability)
       and the ``ceil(remaining / (R - r))`` most confident masks are filled (ties: leftmost
       first); the last round fills all remaining masks. Utterances without masks skip the MLM.

    Args:
        ctc_log_probs: ``(N, T', V)`` CTC log posteriors.
        lens: ``(N,)`` valid CTC frames.
        mlm_decoder: see the module docstring.
        enc: ``(N, T', D)`` encoder output (MLM memory).
        enc_lens: ``(N,)`` valid encoder frames.
        p_thr: CTC confidence threshold for keeping a token.
        K: most MLM iterations (>= 1).
        mask_id: the ``<mask>`` token id of the MLM (V for ``MaskCtcDecoder``).
        blank_id: CTC blank (never predicted).
        ignore_id: padding id of ``ys_masked``.

    Returns:
        N token-id lists.
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    device = enc.device
    N = enc.size(0)
    tokens, confs = ctc_greedy_with_confidence(ctc_log_probs, lens, blank_id)
    L = max((len(t) for t in tokens), default=0)
    if L == 0:
        return [[] for _ in range(N)]
    ys = torch.full((N, L), ignore_id, dtype=torch.long)
    masked = torch.zeros(N, L, dtype=torch.bool)
    for n, (tok, conf) in enumerate(zip(tokens, confs)):
        if tok:
            ys[n, : len(tok)] = torch.tensor(tok)
            masked[n, : len(tok)] = torch.tensor(conf) < p_thr
    ys[masked] = mask_id
    ys, masked = ys.to(device), masked.to(device)
    rounds = masked.sum(dim=1).clamp(max=K)  # (N,) R per utterance
    positions = torch.arange(L, device=device)

    for r in range(int(rounds.max())):
        todo = (masked.any(dim=1)).nonzero().flatten()  # utterances with masks left
        if todo.numel() == 0:
            break
        logits = mlm_decoder(enc[todo], enc_lens.to(device)[todo], ys[todo])  # (n, L, V)
        logp = logits.float().log_softmax(dim=-1)
        if blank_id is not None and 0 <= blank_id < logp.size(-1):
            logp[..., blank_id] = _NEG_INF
        conf, pred = logp.max(dim=-1)  # (n, L)
        m = masked[todo]
        remaining = m.sum(dim=1)  # (n,)
        left = (rounds[todo] - r).clamp(min=1)
        n_fill = (remaining + left - 1) // left  # ceil(remaining / rounds left)
        score = conf.masked_fill(~m, _NEG_INF)
        # rank masked positions by confidence (descending), ties by position
        order = torch.sort(score, dim=1, descending=True, stable=True).indices  # (n, L)
        rank = torch.empty_like(order).scatter_(1, order, positions.expand_as(order))
        fill = m & (rank < n_fill[:, None])
        sub = ys[todo]
        sub[fill] = pred[fill]
        ys[todo] = sub
        masked[todo] = m & ~fill
    return [ys[n, : len(tokens[n])].tolist() for n in range(N)]
