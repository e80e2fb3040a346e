"""Interpolated modified Kneser-Ney n-gram estimation (Chen & Goodman 1998), written as ARPA.

No ``lmplz`` installs here (PyPI's ``kenlm`` only queries ARPA files), so :func:`train_ngram`
estimates the model itself, in the way ``lmplz`` and SRILM's ``-kndiscount -interpolate`` do:

- Sentences are ``<s> w1 ... wk </s>``; ``<s>`` is a history only, never predicted.
- **Adjusted counts** ``a(g)``: the raw count for the highest order N and for n-grams that start
  with ``<s>`` (they cannot be extended to the left); otherwise the continuation count
  ``N1+(. g)``, the number of distinct words seen before ``g``.
- **Discounts** per order n, from the counts-of-counts ``n_k`` (how many n-grams have ``a = k``):
  ``Y = n1 / (n1 + 2 n2)``, ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2``, ``D3+ = 3 - 4Y n4/n3``.
  When an order's counts-of-counts cannot give valid discounts (some ``n_k`` = 0 or a discount
  outside ``[0, k]``, as on tiny corpora) the fallback ``(0.5, 1.0, 1.5)`` is used, with a
  warning (``lmplz --discount_fallback``'s default).
- **Interpolation**: for a history ``h`` with ``T(h) = sum_w a(h w)``,
  ``p(w | h) = max(a(h w) - D(a(h w)), 0) / T(h) + gamma(h) p(w | h[1:])``,
  ``gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / T(h)``;
  the unigrams interpolate with the uniform distribution over the vocabulary (every word seen,
  ``</s>`` and the unknown word, if any; ``<s>`` excluded).
- **ARPA**: each listed n-gram ``h w`` gets its interpolated ``log10 p(w | h)``, each listed
  history its ``log10 gamma(h)`` as backoff weight, so the ARPA backoff rule gives back the
  interpolated distribution for unseen ``h w`` too, and every history's probabilities sum to 1.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["BOS", "EOS", "FALLBACK_DISCOUNTS", "NgramModel", "kn_discounts", "train_ngram", "write_arpa"]

BOS = "<s>"
EOS = "</s>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def kn_discounts(n1: int, n2: int, n3: int, n4: int) -> tuple[float, float, float] | None:
    """Chen & Goodman's discounts ``(D1, D2, D3+)`` from counts-of-counts; None when invalid."""
    if min(n1, n2, n3, n4) <= 0:
        return None
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if any(not 0.0 <= dk <= k + 1 for k, dk in enumerate(d)):
        return None
    return d


@dataclass
class NgramModel:
    """An estimated model: ``probs[n-1][g]`` = p(g[-1] | g[:-1]), ``backoffs[h]`` = gamma(h).

    Attributes:
        order: N.
        probs: per order, ``{ngram: probability}`` (not log) for every listed n-gram.
        backoffs: ``{history: gamma}`` for the histories (orders < N) with continuations.
        discounts: ``(D1, D2, D3+)`` per order (index n - 1).
        vocab: the predicted symbols (words, ``</s>``, the unknown word).
    """

    order: int
    probs: list[dict[tuple[str, ...], float]]
    backoffs: dict[tuple[str, ...], float]
    discounts: list[tuple[float, float, float]]
    vocab: list[str]

    def prob(self, word: str, history: Sequence[str] = ()) -> float:
        """p(word | history) by the backoff rule (equal to the interpolated probability)."""
        hist = tuple(history)[-(self.order - 1) :] if self.order > 1 else ()
        bow = 1.0
        for start in range(len(hist) + 1):
            h = hist[start:]
            p = self.probs[len(h)].get(h + (word,))
            if p is not None:
                return bow * p
            bow *= self.backoffs.get(h, 1.0)
        raise KeyError(f"{word!r} is not in the vocabulary")

    def write_arpa(self, path: str | Path) -> None:
        write_arpa(self, path)


def _sentences(text: Iterable[str | Sequence[str]]) -> Iterable[list[str]]:
    for s in text:
        words = s.split() if isinstance(s, str) else list(s)
        if words:
            yield words


def train_ngram(
    sentences: Iterable[str | Sequence[str]],
    order: int,
    *,
    unk: str | None = "<unk>",
    discounts: Sequence[tuple[float, float, float]] | None = None,
    fallback: tuple[float, float, float] = FALLBACK_DISCOUNTS,
) -> NgramModel:
    """Estimate an interpolated modified Kneser-Ney model (see the module docstring).

    Args:
        sentences: one sentence per item (a string split on whitespace, or a word list); empty
            ones are skipped.
        order: N (1 to 6; the recipes use 2-4).
        unk: the unknown-word symbol added to the vocabulary (it gets the uniform share of the
            unigram mass: ``gamma() / |V|``); None for a closed vocabulary.
        discounts: ``(D1, D2, D3+)`` for each order 1..N, instead of estimating them.
        fallback: the discounts of an order whose counts-of-counts give none.

    Raises:
        ValueError: no sentence, an order outside 1..6, or a reserved symbol (``<s>``, ``</s>``)
            inside a sentence.
    """
    if not 1 <= order <= 6:
        raise ValueError(f"order must be 1..6, not {order}")
    if discounts is not None and len(discounts) != order:
        raise ValueError(f"discounts: need {order} triples (one per order), got {len(discounts)}")
    raw: list[Counter] = [Counter() for _ in range(order)]
    n_sent = 0
    for words in _sentences(sentences):
        for w in words:
            if w in (BOS, EOS):
                raise ValueError(f"sentence {n_sent + 1} contains the reserved symbol {w!r}: {' '.join(words)!r}")
        n_sent += 1
        seq = [BOS, *words, EOS]
        for n in range(1, order + 1):
            c = raw[n - 1]
            for i in range(len(seq) - n + 1):
                c[tuple(seq[i : i + n])] += 1
    if n_sent == 0:
        raise ValueError("no sentences to train on")

    # adjusted counts
    adj: list[dict[tuple[str, ...], int]] = [dict() for _ in range(order)]
    adj[order - 1] = dict(raw[order - 1])
    for n in range(order - 1, 0, -1):
        cont: Counter = Counter()
        for g in raw[n]:  # (n+1)-grams
            cont[g[1:]] += 1
        a = adj[n - 1]
        for g, c in raw[n - 1].items():
            a[g] = c if g[0] == BOS else cont.get(g, 0)
    adj[0].pop((BOS,), None)  # <s> is never predicted
    vocab = sorted(g[0] for g in adj[0])
    if unk is not None and (unk,) not in adj[0]:
        adj[0][(unk,)] = 0
        vocab.append(unk)

    # discounts
    ds: list[tuple[float, float, float]] = []
    for n in range(1, order + 1):
        if discounts is not None:
            ds.append(tuple(float(x) for x in discounts[n - 1]))
            continue
        coc = Counter(c for c in adj[n - 1].values() if 1 <= c <= 4)
        d = kn_discounts(coc[1], coc[2], coc[3], coc[4])
        if d is None:
            log.warning(
                "order %d: counts-of-counts n1..n4 = %s give no valid discounts; using the fallback %s",
                n,
                [coc[k] for k in (1, 2, 3, 4)],
                fallback,
            )
            d = tuple(fallback)
        ds.append(d)

    def disc(n: int, c: int) -> float:
        return 0.0 if c == 0 else ds[n - 1][min(c, 3) - 1]

    # per-history totals and gammas
    probs: list[dict[tuple[str, ...], float]] = [dict() for _ in range(order)]
    backoffs: dict[tuple[str, ...], float] = {}
    uniform = 1.0 / len(vocab)
    for n in range(1, order + 1):
        total: dict[tuple[str, ...], float] = defaultdict(float)
        mass: dict[tuple[str, ...], float] = defaultdict(float)
        for g, c in adj[n - 1].items():
            total[g[:-1]] += c
            mass[g[:-1]] += disc(n, c)
        gamma = {h: mass[h] / t for h, t in total.items() if t > 0}
        lower = probs[n - 2] if n > 1 else None
        p = probs[n - 1]
        for g, c in adj[n - 1].items():
            h = g[:-1]
            low = uniform if lower is None else lower[g[1:]]
            p[g] = max(c - disc(n, c), 0.0) / total[h] + gamma[h] * low
        if n > 1:
            backoffs.update(gamma)
        elif () in gamma:
            backoffs[()] = gamma[()]
    return NgramModel(order=order, probs=probs, backoffs=backoffs, discounts=ds, vocab=vocab)


def _fmt(x: float) -> str:
    return f"{x:.7g}"


def write_arpa(model: NgramModel, path: str | Path) -> None:
    """Write ``model`` as ARPA text (log10 probabilities and backoff weights)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    N = model.order
    sections: list[list[str]] = []
    for n in range(1, N + 1):
        rows = []
        entries = dict(model.probs[n - 1])
        if n == 1:
            entries[(BOS,)] = None
        for g in sorted(entries, key=lambda g: g):
            p = entries[g]
            lp = "-99" if p is None else _fmt(math.log10(p))
            row = f"{lp}\t{' '.join(g)}"
            if n < N and g[-1] != EOS:
                bo = model.backoffs.get(g)
                if bo is not None and bo > 0:
                    row += f"\t{_fmt(math.log10(bo))}"
                elif bo is not None:  # gamma = 0: every continuation is undiscounted (impossible with D > 0)
                    row += "\t-99"
            rows.append(row)
        sections.append(rows)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n, rows in enumerate(sections, 1):
            f.write(f"ngram {n}={len(rows)}\n")
        for n, rows in enumerate(sections, 1):
            f.write(f"\n\\{n}-grams:\n")
            f.write("\n".join(rows))
            f.write("\n")
        f.write("\n\\end\\\n")
    tmp.replace(path)
