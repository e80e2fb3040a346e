"""HLG = H o det(L o G), compiled once with kaldifst and cached in the lang dir.

Steps (icefall's ``compile_hlg.py``, with kaldifst instead of k2):

1. G from ARPA with kaldilm (Kaldi's ``arpa2fst``, icefall's tool): an acceptor over word ids with
   ``#0`` on the backoff arcs, ``<s>``/``</s>`` turned into the start state and final weights;
   ``lm_scale`` multiplies its costs.
2. L from the lang dir's ``lexicon.txt`` with the disambiguation symbols
   (:mod:`asr_kd.lm.lang`): ``#1..#K`` end ambiguous spellings, ``#0:#0`` loops on the loop state.
3. ``LG = det(L o G)`` (Kaldi's ``DeterminizeStar``, which also removes epsilons); then the
   disambiguation symbols become epsilons (token ids ``>= V`` on the input side, word ids
   ``>= id(#0)`` on the output side), ``eps:eps`` arcs are removed, the graph is trimmed and
   arc-sorted. Without G, ``L`` alone is determinised the same way (``HL``).
4. ``HLG = H o LG`` with H the CTC topology of :func:`asr_kd.decoding.wfst.build_ctc_topo`
   (input labels ``token + 1``, what kaldi-decoder's ``DecodableCtc`` expects), arc-sorted on the
   input labels. ``ctc_topo``: ``"standard"`` (``V * V`` arcs, the CTC collapse), ``"modified"``
   (``4 V - 3`` arcs; a run of equal frames may also be read as several tokens, see
   ``build_ctc_topo``) or ``"auto"`` (the default: modified when V > ``AUTO_MODIFIED_ABOVE`` = 1000,
   so BPE-128 / BPE-500 graphs stay standard and a 12k WordPiece lang dir gets a buildable H).

Before composing, :func:`estimate_graph_bytes` bounds the size of ``L o G`` and of ``H o LG``;
a graph that would not fit in ``max_bytes`` (default: 80 % of the available memory) is refused
with :class:`GraphTooLargeError` naming the inputs and the estimate.

:func:`get_hlg` caches the result in the lang dir as ``HLG_<lm>.fst`` / ``HL.fst`` with a
``.json`` beside it holding the sha256 of the inputs (``tokens.txt``, ``words.txt``,
``lexicon.txt``, the ARPA file, ``lm_scale``, ``max_order``, this builder's version, and the CTC
topology when it is the modified one); a later call with the same inputs loads the file, changed
inputs rebuild it. Modified-topology graphs are cached under their own name (``HL_modified.fst``,
``HLG_<lm>_modified.fst``) and their json records ``"ctc_topo"``; a cached graph whose json names
another topology (no ``"ctc_topo"``: built before the option, standard) is rebuilt, never reused.
Build time, states, arcs and file size are logged and stored in the json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from asr_kd.lm.lang import is_disambig, num_arcs

log = logging.getLogger(__name__)

__all__ = [
    "GraphTooLargeError",
    "GraphInfo",
    "compile_G",
    "compile_LG",
    "compile_HLG",
    "estimate_graph_bytes",
    "available_memory_bytes",
    "get_hlg",
    "num_arcs",
]

#: bump when the construction changes (invalidates cached graphs)
BUILDER_VERSION = 1
#: bytes per state / per arc of an OpenFst VectorFst, with the composition's bookkeeping (state
#: table, per-state arc vectors); a deliberately pessimistic constant
_STATE_BYTES = 96
_ARC_BYTES = 32


class GraphTooLargeError(MemoryError):
    """The estimated size of a composition exceeds the memory limit."""


@dataclass
class GraphInfo:
    """What :func:`get_hlg` built or loaded."""

    kind: str  # "HL" or "HLG"
    path: Path | None
    states: int
    arcs: int
    file_bytes: int | None = None
    build_seconds: float | None = None
    cached: bool = False
    sha256: str = ""
    estimate: dict = field(default_factory=dict)
    ctc_topo: str = "standard"  # the CTC topology of H: "standard" or "modified"


def _kf():
    import kaldifst  # noqa: PLC0415

    return kaldifst


def _arcs(fst, state):
    return _kf().ArcIterator(fst, state)


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (or total physical memory when that is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_graph_bytes(states: int, arcs: int) -> int:
    return _STATE_BYTES * states + _ARC_BYTES * arcs


def _check_fits(what: str, states: int, arcs: int, max_bytes: int | None, inputs: str) -> dict:
    est = estimate_graph_bytes(states, arcs)
    limit = int(0.8 * available_memory_bytes()) if max_bytes is None else int(max_bytes)
    info = {"what": what, "states": int(states), "arcs": int(arcs), "bytes": int(est), "limit_bytes": limit}
    log.info(
        "%s: estimated %d states, %d arcs, %.1f MiB (limit %.1f MiB)", what, states, arcs, est / 2**20, limit / 2**20
    )
    if est > limit:
        raise GraphTooLargeError(
            f"{what} would not fit in memory: estimated {states} states and {arcs} arcs, about "
            f"{est / 2**20:.1f} MiB, over the limit of {limit / 2**20:.1f} MiB ({inputs}). Use a smaller or "
            f"pruned LM (lower --order / --max-order), a smaller lexicon, or raise max_bytes."
        )
    return info


def compile_G(arpa: str | Path, words_txt: str | Path, *, max_order: int | None = None, lm_scale: float = 1.0):
    """G from an ARPA file with kaldilm (``#0`` on backoff arcs), costs times ``lm_scale``.

    The ARPA file is first read by the validating reader (:func:`asr_kd.lm.arpa.read_arpa`), so a
    malformed line is an :class:`~asr_kd.lm.arpa.ArpaFormatError` naming the file and line.
    Words missing from ``words.txt`` are dropped by kaldilm (counted in a warning here).
    """
    import kaldilm  # noqa: PLC0415

    from asr_kd.lm.arpa import read_arpa  # noqa: PLC0415
    from asr_kd.lm.lang import read_symbols  # noqa: PLC0415

    kf = _kf()
    lm = read_arpa(arpa)
    words = read_symbols(words_txt)
    missing = [w for w in lm.vocab if w not in words and w not in ("<s>", "</s>")]
    if missing:
        log.warning(
            "%s: %d LM words are not in %s and are dropped from G (e.g. %s)", arpa, len(missing), words_txt, missing[:5]
        )
    for sym in ("#0", "<s>", "</s>"):
        if sym not in words:
            raise ValueError(f"{words_txt}: no {sym!r} (needed for G)")
    text = kaldilm.arpa2fst(
        input_arpa=str(arpa),
        output_fst="",
        read_symbol_table=str(words_txt),
        disambig_symbol="#0",
        max_order=-1 if max_order is None else int(max_order),
        max_arpa_warnings=0,
    )
    if lm_scale != 1.0:
        lines = []
        for line in text.splitlines():
            p = line.split()
            if len(p) == 5:
                p[4] = repr(float(p[4]) * lm_scale)
            elif len(p) == 2:
                p[1] = repr(float(p[1]) * lm_scale)
            lines.append("\t".join(p))
        text = "\n".join(lines)
    G = kf.compile(text.strip() + "\n")
    return G


def _relabel_disambig(fst, first_token_disambig: int, first_word_disambig: int):
    """A copy of ``fst`` with input labels >= ``first_token_disambig`` and output labels >=
    ``first_word_disambig`` set to 0 (epsilon)."""
    kf = _kf()
    out = kf.StdVectorFst()
    for _ in range(fst.num_states):
        out.add_state()
    out.start = fst.start
    zero = kf.TropicalWeight.zero
    for s in range(fst.num_states):
        fw = fst.final(s)
        if fw != zero:
            out.set_final(s, fw)
        for a in _arcs(fst, s):
            il = 0 if a.ilabel >= first_token_disambig else a.ilabel
            ol = 0 if a.olabel >= first_word_disambig else a.olabel
            out.add_arc(s, kf.StdArc(il, ol, a.weight, a.nextstate))
    return out


def compile_LG(
    L,
    G,
    *,
    first_token_disambig: int,
    first_word_disambig: int,
    max_bytes=None,
    inputs: str = "",
    keep_disambig=False,
    remove_epsilon=True,
):
    """``det(L o G)`` (or ``det(L)`` with ``G=None``), disambiguation symbols removed, epsilons
    removed, trimmed, arc-sorted on the input labels. Returns ``(LG, estimate)``.

    ``keep_disambig``: return ``det(L o G)`` as it is (input-deterministic, with the ``#k``), for
    inspection. Removing the ``#k`` and the epsilons (icefall's order) may leave a state with two
    arcs on one token. ``remove_epsilon=False`` keeps the ``eps:eps`` arcs left by the removed
    ``#k`` (G's backoff arcs among them): removing them copies the arcs of each backoff state
    into every state that backs off to it (on a 300-sentence 3-gram, 144k LG arcs against 15k)."""
    kf = _kf()
    estimate = {}
    if G is not None:
        # each word arc of G becomes about len(spelling) arcs (and len - 1 states) of L o G; L has
        # 1 + sum(len - 1) states and sum(len) + 1 arcs (the #0 loop), so arcs - states = #spellings
        l_arcs, l_states = num_arcs(L), L.num_states
        avg_len = max((l_arcs - 1) / max(l_arcs - l_states, 1), 1.0)
        g_states, g_arcs = G.num_states, num_arcs(G)
        est_states = int(g_states + g_arcs * max(avg_len - 1.0, 0.0)) + 1
        est_arcs = int(g_arcs * avg_len) + 1
        estimate["LG"] = _check_fits("L o G", est_states, est_arcs, max_bytes, inputs)
        kf.arcsort(L, sort_type="olabel")
        kf.arcsort(G, sort_type="ilabel")
        LG = kf.compose(L, G)
        estimate["LG_composed"] = {"states": LG.num_states, "arcs": num_arcs(LG)}
    else:
        LG = L.copy() if hasattr(L, "copy") else L
    if not isinstance(LG, kf.StdVectorFst):
        LG = kf.StdVectorFst(LG)
    # tropical (use_log=False): the best path and its cost are kept exactly; True = stopped early
    if kf.determinize_star(LG, use_log=False):
        raise RuntimeError(f"determinize_star of {'L o G' if G is not None else 'L'} stopped early ({inputs})")
    if keep_disambig:
        return LG, estimate
    LG = _relabel_disambig(LG, first_token_disambig, first_word_disambig)
    if remove_epsilon:
        kf.rmepsilon(LG)
    kf.connect(LG)
    kf.arcsort(LG, sort_type="ilabel")
    return LG, estimate


def compile_HLG(vocab_size: int, LG, *, max_bytes=None, inputs: str = "", ctc_topo: str = "auto"):
    """``H o LG`` (H: CTC topology over ``vocab_size`` tokens), arc-sorted on input labels.

    ``ctc_topo``: ``"standard"``, ``"modified"`` or ``"auto"`` (:func:`asr_kd.decoding.wfst.resolve_ctc_topo`).

    Returns ``(HLG, estimate)``. The estimate: a state of ``H o LG`` is a pair (H state, LG state
    ``s``): one per distinct token on the arcs into ``s`` (epsilon arcs bring the tokens into their
    source), plus the after-blank one (state 0). Standard H: each pair has a blank arc, a repeat
    self-loop and the arcs of ``s``. Modified H: the pair (0, ``s``) has the blank loop and two arcs
    per arc of ``s`` (a one-frame run, the start of a longer one); a pair (``t``, ``s``) only its two
    repeat arcs and the epsilon arcs of ``s``.
    """
    from asr_kd.decoding.wfst import build_ctc_topo, resolve_ctc_topo  # noqa: PLC0415

    kf = _kf()
    topo = resolve_ctc_topo(ctc_topo, vocab_size)
    n = LG.num_states
    into: list[set] = [set() for _ in range(n)]
    eps_from: list[list[int]] = [[] for _ in range(n)]
    outdeg = [LG.num_arcs(s) for s in range(n)]
    eps_out = [0] * n
    for s in range(n):
        for a in _arcs(LG, s):
            if a.ilabel:
                into[a.nextstate].add(a.ilabel)
            else:
                eps_from[a.nextstate].append(s)
                eps_out[s] += 1
    pairs = [1 + len(into[s]) + sum(len(into[p]) for p in eps_from[s]) for s in range(n)]
    est_states = sum(pairs)
    if topo == "modified":
        est_arcs = sum(1 + 2 * o + (p - 1) * (2 + e) for p, o, e in zip(pairs, outdeg, eps_out))
    else:
        est_arcs = sum(p * (2 + o) for p, o in zip(pairs, outdeg))
    estimate = {"HLG": _check_fits("H o LG", est_states, est_arcs, max_bytes, inputs)}
    estimate["HLG"]["ctc_topo"] = topo
    H = build_ctc_topo(vocab_size, modified=topo == "modified")
    kf.arcsort(H, sort_type="olabel")
    HLG = kf.compose(H, LG)
    if not isinstance(HLG, kf.StdVectorFst):
        HLG = kf.StdVectorFst(HLG)
    kf.arcsort(HLG, sort_type="ilabel")
    return HLG, estimate


def _sha(parts: Mapping[str, object]) -> str:
    h = hashlib.sha256()
    for k in sorted(parts):
        v = parts[k]
        h.update(k.encode())
        h.update(b"\0")
        if isinstance(v, Path):
            with open(v, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(repr(v).encode())
        h.update(b"\0")
    return h.hexdigest()


def graph_name(
    arpa: str | Path | None,
    lm_scale: float = 1.0,
    max_order: int | None = None,
    remove_epsilon: bool = True,
    ctc_topo: str = "standard",
) -> str:
    """Cache file stem: ``HL`` without an LM, else ``HLG_<arpa stem>[_o<max_order>][_lms-<scale>]``;
    ``_eps`` appended when the epsilons are kept, ``_modified`` with the modified CTC topology
    (``ctc_topo``: the resolved ``"standard"`` or ``"modified"``)."""
    if ctc_topo not in ("standard", "modified"):
        raise ValueError(f"graph_name: ctc_topo must be 'standard' or 'modified' (resolved), got {ctc_topo!r}")
    if arpa is None:
        name = "HL"
    else:
        name = f"HLG_{Path(arpa).name.removesuffix('.arpa')}"
        if max_order is not None:
            name += f"_o{max_order}"
        if lm_scale != 1.0:
            name += f"_lms-{lm_scale:g}"
    if not remove_epsilon:
        name += "_eps"
    return name + "_modified" if ctc_topo == "modified" else name


def get_hlg(
    lang_dir: str | Path,
    arpa: str | Path | None = None,
    *,
    lm_scale: float = 1.0,
    max_order: int | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    max_bytes: int | None = None,
    remove_epsilon: bool = True,
    ctc_topo: str = "auto",
):
    """The HLG (or HL without ``arpa``) of a lang dir, built once and cached (see the module docstring).

    Args:
        lang_dir: ``tokens.txt``, ``words.txt`` (with ``#0``), ``lexicon.txt``.
        arpa: an ARPA file (or ARPA text containing a newline: built in memory, not cached on disk).
        lm_scale: multiplies G's costs.
        max_order: use the ARPA's n-grams up to this order only (kaldilm's ``--max-order``).
        cache: read/write the cached graph (``cache_dir``, default ``lang_dir``).
        max_bytes: refuse compositions estimated above this (default: 80 % of available memory).
        remove_epsilon: remove LG's ``eps:eps`` arcs (icefall's recipe; see :func:`compile_LG`).
        ctc_topo: H's CTC topology, ``"standard"``, ``"modified"`` or ``"auto"`` (modified when the
            vocabulary, ``max(tokens.txt ids) + 1``, exceeds ``AUTO_MODIFIED_ABOVE``; see
            :func:`asr_kd.decoding.wfst.build_ctc_topo` for what each accepts).

    Returns:
        ``(graph, id_to_word, info)`` with info a :class:`GraphInfo`.
    """
    from asr_kd.decoding.wfst import CTC_TOPOS, resolve_ctc_topo  # noqa: PLC0415
    from asr_kd.lm.lang import LangError, build_lexicon_disambig_fst, load_lexicon_ids, with_backoff_symbol  # noqa: PLC0415

    kf = _kf()
    if ctc_topo not in CTC_TOPOS:  # before any file is read or written
        raise ValueError(f"ctc_topo must be one of {', '.join(map(repr, CTC_TOPOS))}, got {ctc_topo!r}")
    lang_dir = Path(lang_dir)
    tmp_arpa = None
    if arpa is not None and "\n" in str(arpa):
        fd, tmp_arpa = tempfile.mkstemp(suffix=".arpa")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(str(arpa))
        arpa_path, cache = Path(tmp_arpa), False
    else:
        arpa_path = None if arpa is None else Path(arpa)
    try:
        if arpa_path is not None and not arpa_path.is_file():
            raise FileNotFoundError(f"ARPA file {arpa_path} not found")
        tokens, words, dis, tok_dis, _ = load_lexicon_ids(lang_dir)
        id_to_word = {i: w for w, i in words.items()}
        kind = "HL" if arpa_path is None else "HLG"
        vocab = max(tokens.values()) + 1
        topo = resolve_ctc_topo(ctc_topo, vocab)
        inputs = {
            "tokens.txt": lang_dir / "tokens.txt",
            "words.txt": lang_dir / "words.txt",
            "lexicon.txt": lang_dir / "lexicon.txt",
            "lm_scale": float(lm_scale),
            "max_order": max_order,
            "version": BUILDER_VERSION,
            "remove_epsilon": bool(remove_epsilon),
        }
        if topo != "standard":  # standard: the original H, left out so earlier caches stay valid
            inputs["ctc_topo"] = topo
        if arpa_path is not None:
            inputs["arpa"] = arpa_path
        sha = _sha(inputs)
        cdir = Path(cache_dir) if cache_dir is not None else lang_dir
        stem = graph_name(arpa_path, lm_scale, max_order, remove_epsilon, topo)
        fst_path, meta_path = cdir / f"{stem}.fst", cdir / f"{stem}.json"
        if cache and fst_path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = {}
            cached_topo = meta.get("ctc_topo", "standard")  # no field: built before the option (standard)
            if meta.get("sha256") == sha and cached_topo != topo:
                log.warning("%s: built with the %s CTC topology, %s asked for; rebuilding", fst_path, cached_topo, topo)
            elif meta.get("sha256") == sha:
                t0 = time.perf_counter()
                graph = kf.StdVectorFst.read(str(fst_path))
                if graph is not None and graph.num_states > 0:
                    log.info(
                        "%s: loaded cached %s (%d states) in %.2fs",
                        fst_path,
                        kind,
                        graph.num_states,
                        time.perf_counter() - t0,
                    )
                    info = GraphInfo(
                        kind, fst_path, meta.get("states", graph.num_states), meta.get("arcs", -1),
                        meta.get("file_bytes"), meta.get("build_seconds"), True, sha, meta.get("estimate", {}),
                        topo,
                    )  # fmt: skip
                    return graph, id_to_word, info
            else:
                log.info("%s: inputs changed (sha256 differs); rebuilding", fst_path)
        desc = f"lang dir {lang_dir}" + (f", LM {arpa if tmp_arpa is None else '<text>'}" if arpa_path else "")
        if arpa_path is not None and "#0" not in words:
            raise LangError(f"{lang_dir / 'words.txt'}: no '#0' (G's backoff symbol); rewrite it with prepare_lang")
        words = with_backoff_symbol(words)  # HL: an #0 for L's self-loop when words.txt has none
        for e in dis:  # output labels >= id(#0) become epsilon: no word of the lexicon may be among them
            if words[e.word] >= words["#0"]:
                raise LangError(
                    f"{lang_dir / 'lexicon.txt'}:{e.line}: word {e.word!r} has id {words[e.word]} in "
                    f"{lang_dir / 'words.txt'}, not below the id {words['#0']} of '#0' (the ids from #0 on are "
                    "removed from the graph: put #0, <s>, </s> after the words)"
                )
        t0 = time.perf_counter()
        L = build_lexicon_disambig_fst(dis, tok_dis, words)
        G = None
        if arpa_path is not None:
            G = compile_G(arpa_path, lang_dir / "words.txt", max_order=max_order, lm_scale=lm_scale)
        first_tok = min(i for s, i in tok_dis.items() if is_disambig(s))  # not "##" WordPiece units
        LG, est = compile_LG(
            L,
            G,
            first_token_disambig=first_tok,
            first_word_disambig=words["#0"],
            max_bytes=max_bytes,
            inputs=desc,
            remove_epsilon=remove_epsilon,
        )
        graph, est2 = compile_HLG(vocab, LG, max_bytes=max_bytes, inputs=desc, ctc_topo=topo)
        est.update(est2)
        est["LG_actual"] = {"states": LG.num_states, "arcs": num_arcs(LG)}
        secs = time.perf_counter() - t0
        states, arcs = graph.num_states, num_arcs(graph)
        info = GraphInfo(kind, None, states, arcs, None, secs, False, sha, est, topo)
        if cache:
            try:
                cdir.mkdir(parents=True, exist_ok=True)
                tmp = fst_path.with_name(fst_path.name + ".tmp")
                graph.write(str(tmp))
                tmp.replace(fst_path)
                info.path, info.file_bytes = fst_path, fst_path.stat().st_size
                meta = {
                    "sha256": sha,
                    "kind": kind,
                    "ctc_topo": topo,
                    "states": states,
                    "arcs": arcs,
                    "file_bytes": info.file_bytes,
                    "build_seconds": round(secs, 3),
                    "estimate": est,
                    "inputs": {k: str(v) for k, v in inputs.items()},
                }
                meta_path.write_text(json.dumps(meta, indent=1) + "\n")
            except OSError as e:
                log.warning("cannot cache %s in %s (%s); keeping it in memory", kind, cdir, e)
        log.info(
            "built %s (%s, %s CTC topology) in %.2fs: %d states, %d arcs%s",
            kind, desc, topo, secs, states, arcs,
            f", {info.file_bytes / 2**20:.1f} MiB on disk" if info.file_bytes else "",
        )  # fmt: skip
        return graph, id_to_word, info
    finally:
        if tmp_arpa is not None:
            os.unlink(tmp_arpa)
