"""CTC prefix beam search, native (kernel 2 of ``asr_kd._C``) with the Python reference as fallback.

The search itself is specified by the pure-Python reference :func:`ctc_prefix_beam_search_reference`
(re-exported as ``asr_kd.decoding.ctc.ctc_prefix_beam_search``; its docstring gives the blank /
non-blank update, the ``top_k`` / ``prune_threshold`` candidate pruning and the tie-breaking: equal
scores -> smaller token tuple first). The native op
``torch.ops.asr_kd.ctc_prefix_beam_search`` (``csrc/ctc_prefix_beam.cpp``) follows it operation
by operation in float64 and runs the utterances of a batch in parallel (``at::parallel_for``,
torch's intra-op threads), so both return the same hypotheses and, within a few ulps, the same
scores.

Token bias: the reference takes an arbitrary hook ``token_bias(prefix_tuple, token) -> float``,
which C++ cannot call cheaply. The native op supports a **static per-token bias vector** ``(V,)``
instead (``bias(g + c) = bias(g) + vec[c]``, the same as the hook ``lambda prefix, tok: vec[tok]``).
Here ``token_bias`` may be either:

- a tensor / sequence of ``V`` floats: native when available, else the reference with the
  equivalent hook;
- a callable: always the Python reference (``backend="native"`` raises).

Backends: ``"native"`` (the extension, an error when it is missing or cannot take the arguments),
``"python"`` (the reference; ``"torch"`` is accepted as an alias), ``"auto"`` (native when the
extension is built and the arguments allow it, else the reference). ``ASR_KD_NATIVE=0`` or
``asr_kd.ops.set_backend("torch")`` forces the reference for ``"auto"`` and ``"native"`` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from asr_kd.ops import frame_kd as _frame_kd
from asr_kd.ops._native import load_native
from asr_kd.ops.nbest import NBest

__all__ = [
    "ctc_prefix_beam_search",
    "ctc_prefix_beam_search_native",
    "ctc_prefix_beam_search_reference",
    "TokenBias",
]

_NEG_INF = float("-inf")

TokenBias = Callable[[tuple, int], float]
"""``token_bias(prefix, token) -> float``: a log-domain bonus for extending ``prefix`` (a tuple of
token ids) by ``token`` (never blank); e.g. context biasing or a shallow-fusion LM."""

BACKENDS = ("auto", "native", "python", "torch")

TokenBiasArg = torch.Tensor | Sequence[float] | TokenBias | None


def ctc_prefix_beam_search_reference(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    beam: int = 10,
    blank_id: int = 0,
    *,
    top_k: int | None = None,
    prune_threshold: float | None = None,
    token_bias: TokenBias | None = None,
    nbest: int | None = None,
) -> list[NBest]:
    """CTC prefix beam search in Python (one utterance at a time): the reference of the native op.

    Each prefix ``g`` (a tuple of non-blank tokens) carries ``pb`` / ``pnb``: the log probability of
    all alignments of the frames so far that collapse to ``g`` and end in blank / in ``g``'s last
    token. For every frame ``t`` and every prefix in the beam, for every candidate token ``c``
    (log posterior ``p``)::

        c == blank        : pb'(g)      += pb(g) (+) pnb(g) + p
        c == last(g)      : pnb'(g)     += pnb(g) + p           (repeat collapses)
                            pnb'(g + c) += pb(g) + p            (blank separates a real repeat)
        otherwise         : pnb'(g + c) += pb(g) (+) pnb(g) + p

    (``+=`` is log-add, ``(+)`` log-add). After the frame, prefixes are ranked by
    ``score = (pb (+) pnb) + bias`` and the best ``beam`` are kept (ties: smaller token tuple first);
    prefixes whose probability is zero are dropped. ``bias(g)`` is the sum of
    ``token_bias(g[:i], g[i])`` over the prefix, computed once when the prefix is created.

    Candidate tokens at frame ``t``: all V tokens, restricted to the ``top_k`` largest log posteriors
    of the frame when ``top_k`` is set, and to tokens with ``log p >= max_v log p - prune_threshold``
    when ``prune_threshold`` is set (blank is treated like any other token by both rules).

    With ``beam`` at least the number of label sequences and no pruning, the result is exact: every
    label sequence of length <= T' with its total CTC probability.

    Args:
        log_probs: ``(N, T', V)`` frame log posteriors.
        lens: ``(N,)`` valid frame counts.
        beam: prefixes kept after each frame.
        blank_id: the blank token.
        top_k: per-frame candidate limit (None: all tokens).
        prune_threshold: per-frame log-probability window below the frame maximum (None: off).
        token_bias: optional hook ``(prefix tuple, token) -> float`` added to the ranking score;
            it must be deterministic (it may be called again for the same arguments).
        nbest: hypotheses returned per utterance (default ``beam``).

    Returns:
        N :class:`NBest` lists, best first, with ``scores`` = ctc + bias and ``components``
        ``{"ctc": [...], "bias": [...]}`` (ctc is the log probability ``pb (+) pnb``).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    nbest = beam if nbest is None else nbest
    lp = log_probs.detach().to("cpu", torch.float64)
    lens_list = lens.tolist()
    V = lp.size(-1)

    # allowed (frame, token) pairs
    allowed = torch.ones(lp.shape, dtype=torch.bool)
    if top_k is not None and top_k < V:
        allowed = torch.zeros_like(allowed).scatter_(-1, lp.topk(top_k, dim=-1).indices, True)
    if prune_threshold is not None:
        allowed &= lp >= lp.max(dim=-1, keepdim=True).values - prune_threshold
    lp = lp.masked_fill(~allowed, _NEG_INF)

    results = []
    for n in range(lp.size(0)):
        prefixes: list[tuple] = [()]
        pb = torch.zeros(1, dtype=torch.float64)
        pnb = torch.full((1,), _NEG_INF, dtype=torch.float64)
        bias = torch.zeros(1, dtype=torch.float64)
        for t in range(lens_list[n]):
            row = lp[n, t]  # (V,)
            K = len(prefixes)
            last = torch.tensor([g[-1] if g else -1 for g in prefixes])  # (K,)
            has_last = last >= 0
            p_tot = torch.logaddexp(pb, pnb)  # (K,)
            # the prefix itself: through blank, or by repeating its last token
            stay_pb = p_tot + row[blank_id]
            stay_pnb = torch.where(has_last, pnb + row[last.clamp(min=0)], _NEG_INF)
            # extensions g + c, (K, V); c == last(g) needs a blank in between
            ext = p_tot[:, None] + row[None, :]
            rl = has_last.nonzero().flatten()
            ext[rl, last[rl]] = pb[rl] + row[last[rl]]
            ext[:, blank_id] = _NEG_INF
            # an extension that is already a prefix of the beam adds to that prefix
            index = {g: k for k, g in enumerate(prefixes)}
            for k2, g in enumerate(prefixes):
                k1 = index.get(g[:-1]) if g else None
                if k1 is not None:
                    stay_pnb[k2] = torch.logaddexp(stay_pnb[k2], ext[k1, g[-1]])
                    ext[k1, g[-1]] = _NEG_INF
            ext_bias = bias[:, None].expand(K, V).clone()
            if token_bias is not None:
                for k, c in torch.isfinite(ext).nonzero().tolist():
                    ext_bias[k, c] += float(token_bias(prefixes[k], c))
            stay_score = torch.logaddexp(stay_pb, stay_pnb) + bias  # (K,)
            scores = torch.cat([stay_score, (ext + ext_bias).flatten()])  # (K + K * V,)
            finite = int(torch.isfinite(scores).sum())
            if finite == 0:
                prefixes, pb, pnb, bias = [], pb[:0], pnb[:0], bias[:0]
                break
            kth = scores.topk(min(beam, finite)).values[-1]
            chosen = (scores >= kth).nonzero().flatten().tolist()  # ties at the boundary included

            def key(i: int, prefixes=prefixes, K=K, scores=scores) -> tuple:
                g = prefixes[i] if i < K else prefixes[(i - K) // V] + ((i - K) % V,)
                return (-float(scores[i]), g)

            chosen = sorted(chosen, key=key)[:beam]
            new_prefixes, new_pb, new_pnb, new_bias = [], [], [], []
            for i in chosen:
                if i < K:
                    new_prefixes.append(prefixes[i])
                    new_pb.append(stay_pb[i])
                    new_pnb.append(stay_pnb[i])
                    new_bias.append(bias[i])
                else:
                    k, c = divmod(i - K, V)
                    new_prefixes.append(prefixes[k] + (c,))
                    new_pb.append(torch.tensor(_NEG_INF, dtype=torch.float64))
                    new_pnb.append(ext[k, c])
                    new_bias.append(ext_bias[k, c])
            prefixes = new_prefixes
            pb, pnb, bias = torch.stack(new_pb), torch.stack(new_pnb), torch.stack(new_bias)
        ctc = torch.logaddexp(pb, pnb).tolist()
        b = bias.tolist()
        order = sorted(range(len(prefixes)), key=lambda i: (-(ctc[i] + b[i]), prefixes[i]))[:nbest]
        results.append(
            NBest(
                tokens=[list(prefixes[i]) for i in order],
                scores=[ctc[i] + b[i] for i in order],
                components={"ctc": [ctc[i] for i in order], "bias": [b[i] for i in order]},
            )
        )
    return results


def _static_bias(token_bias: TokenBiasArg, V: int) -> torch.Tensor | None:
    """The ``(V,)`` float64 CPU bias vector of a static ``token_bias`` (None for None)."""
    if token_bias is None:
        return None
    vec = torch.as_tensor(token_bias).detach().to("cpu", torch.float64).flatten()
    if vec.numel() != V:
        raise ValueError(f"a static token_bias must have V = {V} entries, got {vec.numel()}")
    return vec


def _native_obstacle(
    log_probs: torch.Tensor,
    blank_id: int,
    top_k: int | None,
    token_bias: TokenBiasArg,
    nbest: int | None,
) -> str | None:
    """Why the native op cannot run these arguments (None when it can)."""
    if load_native() is None:
        return "asr_kd._C is not built (pip install --no-build-isolation -e .)"
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 3:
        return "log_probs must be a (N, T, V) tensor"
    if not log_probs.is_floating_point():
        return f"log_probs must be floating point, got {log_probs.dtype}"
    if callable(token_bias) and not isinstance(token_bias, torch.Tensor):
        return "a callable token_bias hook runs in Python only (pass a (V,) bias vector instead)"
    V = log_probs.size(-1)
    if not 0 <= blank_id < V:
        return f"blank_id must be in [0, {V}), got {blank_id}"
    if top_k is not None and top_k < 0:
        return f"top_k must be >= 0, got {top_k}"
    if nbest is not None and nbest < 0:
        return f"nbest must be >= 0, got {nbest}"
    return None


def ctc_prefix_beam_search_native(
    log_probs: torch.Tensor,
    lens: torch.Tensor | Sequence[int],
    beam: int = 10,
    blank_id: int = 0,
    *,
    top_k: int | None = None,
    prune_threshold: float | None = None,
    token_bias: TokenBiasArg = None,
    nbest: int | None = None,
) -> list[NBest]:
    """CTC prefix beam search with the native op (arguments and result as the reference's).

    Args:
        log_probs: ``(N, T', V)`` frame log posteriors (any float dtype, any device; searched on
            the CPU in float64, float32 / float64 read directly).
        lens: ``(N,)`` valid frame counts, ``0 <= lens[n] <= T'``.
        beam: prefixes kept after each frame (>= 1).
        blank_id: the blank token, in ``[0, V)``.
        top_k: per-frame candidate limit (None: all tokens). Ties at the k-th value keep the
            smaller token ids (the reference's ``torch.topk`` leaves that order unspecified).
        prune_threshold: per-frame log-probability window below the frame maximum (None: off).
        token_bias: None or a static ``(V,)`` per-token bias (tensor or sequence of floats).
        nbest: hypotheses returned per utterance (default ``beam``).

    Returns:
        N :class:`NBest` lists, best first, ``scores`` = ctc + bias,
        ``components = {"ctc": [...], "bias": [...]}``.

    Raises:
        RuntimeError: the extension is missing or cannot take these arguments (e.g. a callable
            ``token_bias``).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    _require_native(_native_obstacle(log_probs, blank_id, top_k, token_bias, nbest))
    return _search_native(log_probs, lens, beam, blank_id, top_k, prune_threshold, token_bias, nbest)


def _require_native(why: str | None) -> None:
    """Raise the backend='native' error when ``why`` (from :func:`_native_obstacle`) is set."""
    if why is not None:
        raise RuntimeError(f"ctc_prefix_beam_search(backend='native'): {why}")


def _search_native(log_probs, lens, beam, blank_id, top_k, prune_threshold, token_bias, nbest) -> list[NBest]:
    """The native op on arguments already checked by :func:`_native_obstacle`."""
    nbest = beam if nbest is None else nbest
    lp = log_probs.detach().cpu()
    if lp.dtype not in (torch.float32, torch.float64):
        lp = lp.to(torch.float64)
    lens_t = torch.as_tensor(lens).detach().to("cpu", torch.int64).flatten()
    bias = _static_bias(token_bias, lp.size(-1))
    tokens, tok_off, hyp_off, scores, ctc, bias_s = torch.ops.asr_kd.ctc_prefix_beam_search(
        lp.contiguous(),
        lens_t,
        int(beam),
        int(blank_id),
        None if top_k is None else int(top_k),
        None if prune_threshold is None else float(prune_threshold),
        bias,
        int(nbest),
    )
    tokens, tok_off, hyp_off = tokens.tolist(), tok_off.tolist(), hyp_off.tolist()
    scores, ctc, bias_s = scores.tolist(), ctc.tolist(), bias_s.tolist()
    results = []
    for n in range(len(hyp_off) - 1):
        h0, h1 = hyp_off[n], hyp_off[n + 1]
        results.append(
            NBest(
                tokens=[tokens[tok_off[h] : tok_off[h + 1]] for h in range(h0, h1)],
                scores=scores[h0:h1],
                components={"ctc": ctc[h0:h1], "bias": bias_s[h0:h1]},
            )
        )
    return results


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lens: torch.Tensor | Sequence[int],
    beam: int = 10,
    blank_id: int = 0,
    *,
    top_k: int | None = None,
    prune_threshold: float | None = None,
    token_bias: TokenBiasArg = None,
    nbest: int | None = None,
    backend: str = "auto",
) -> list[NBest]:
    """CTC prefix beam search on the chosen backend (see the module docstring).

    Arguments and result as :func:`ctc_prefix_beam_search_reference`, except that
    ``token_bias`` may also be a static ``(V,)`` bias vector, plus ``backend``:
    ``"auto"`` | ``"native"`` | ``"python"`` (alias ``"torch"``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    use_python = backend in ("python", "torch") or _frame_kd.get_backend() == "torch"
    if not use_python:
        why = _native_obstacle(log_probs, blank_id, top_k, token_bias, nbest)
        if why is None:
            return _search_native(log_probs, lens, beam, blank_id, top_k, prune_threshold, token_bias, nbest)
        if backend == "native" or _frame_kd.get_backend() == "native":
            _require_native(why)
    hook = token_bias
    is_hook = callable(token_bias) and not isinstance(token_bias, torch.Tensor)
    if token_bias is not None and not is_hook:
        vec = _static_bias(token_bias, log_probs.size(-1)).tolist()
        hook = lambda prefix, tok: vec[tok]  # noqa: E731
    if not isinstance(lens, torch.Tensor):
        lens = torch.as_tensor(lens)
    return ctc_prefix_beam_search_reference(
        log_probs,
        lens,
        beam,
        blank_id,
        top_k=top_k,
        prune_threshold=prune_threshold,
        token_bias=hook,
        nbest=nbest,
    )
