"""The standard and the modified CTC topology (asr_kd.decoding.wfst.build_ctc_topo): the label sequences
each reads a frame sequence as, against brute-force references on tiny vocabularies (the standard one:
exactly the CTC collapse; the modified one: every cut of each run of equal frames into pieces); their arc
counts (V * V against 4 V - 3, a 12k-token modified H); HL decoding with each against brute force, the
same where the lexicon spells no two equal neighbouring tokens; the cached graphs record their topology."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

kf = pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")

from decoding_bruteforce import collapse, random_log_probs  # noqa: E402

from asr_kd.decoding.hlg import compile_HLG, compile_LG, get_hlg, num_arcs  # noqa: E402
from asr_kd.decoding.search import SearchOptions, get_decoding_method  # noqa: E402
from asr_kd.decoding.wfst import (  # noqa: E402
    AUTO_MODIFIED_ABOVE,
    build_ctc_topo,
    build_hlg,
    resolve_ctc_topo,
    wfst_decode,
)

TOPOS = ("standard", "modified")


def modified_readings(path, blank=0) -> set[tuple]:
    """The documented language of the modified topology: each maximal run of ``n`` equal non-blank frames
    is read as ``m`` copies of its token, any ``1 <= m <= n``; blank runs give nothing."""
    choices = []
    for tok, run in itertools.groupby(path):
        n = len(list(run))
        choices.append([()] if tok == blank else [(tok,) * m for m in range(1, n + 1)])
    return {sum(c, ()) for c in itertools.product(*choices)}


def readings(H, path) -> set[tuple]:
    """The output sequences of every path of ``H`` that reads the frames ``path`` (input ``token + 1``)
    and ends in a final state: the composition of the linear acceptor of ``path`` with ``H``, enumerated."""
    A = kf.StdVectorFst()
    for _ in range(len(path) + 1):
        A.add_state()
    A.start = 0
    A.set_final(len(path), 0.0)
    for i, tok in enumerate(path):
        A.add_arc(i, kf.StdArc(tok + 1, tok + 1, 0.0, i + 1))
    H = H.copy() if hasattr(H, "copy") else H
    kf.arcsort(H, sort_type="ilabel")
    C = kf.compose(A, H)
    zero = kf.TropicalWeight.zero
    out: set[tuple] = set()

    def walk(state, labels):
        if C.final(state) != zero:
            out.add(tuple(labels))
        for a in kf.ArcIterator(C, state):
            walk(a.nextstate, labels + ([a.olabel] if a.olabel else []))

    if C.num_states:
        walk(C.start, [])
    return out


def finals(H) -> set[int]:
    zero = kf.TropicalWeight.zero
    return {s for s in range(H.num_states) if H.final(s) != zero}


# ---- the languages ----


@pytest.mark.parametrize("V", [2, 3])
def test_standard_topology_reads_exactly_the_ctc_collapse(V):
    H = build_ctc_topo(V)
    for T in range(5):
        for path in itertools.product(range(V), repeat=T):
            assert readings(H, path) == {collapse(path)}, path


@pytest.mark.parametrize("V", [2, 3])
def test_modified_topology_reads_every_cut_of_the_runs(V):
    H = build_ctc_topo(V, modified=True)
    extra = 0
    for T in range(6):
        for path in itertools.product(range(V), repeat=T):
            got = readings(H, path)
            assert got == modified_readings(path), path
            assert collapse(path) in got  # the standard reading is always one of them
            extra += len(got) > 1
    assert extra > 0  # not a vacuous comparison: some frame sequences have several readings


def test_modified_topology_examples_from_the_docstring():
    H = build_ctc_topo(3, modified=True)
    assert readings(H, (1, 1)) == {(1,), (1, 1)}
    assert readings(H, (1, 1, 1)) == {(1,), (1, 1), (1, 1, 1)}
    assert readings(H, (1, 0, 1)) == {(1, 1)}  # a blank still separates
    assert readings(H, (1, 2)) == {(1, 2)}
    assert readings(H, (0, 2, 2, 0, 1)) == {(2, 1), (2, 2, 1)}
    S = build_ctc_topo(3)
    assert readings(S, (1, 1)) == {(1,)} and readings(S, (1, 0, 1)) == {(1, 1)}


def test_label_sequences_need_fewer_frames_with_the_modified_topology():
    """U tokens with R equal neighbours: standard needs T >= U + R frames, modified T >= U."""
    V = 3
    std, mod = build_ctc_topo(V), build_ctc_topo(V, modified=True)
    for y in [(1, 1), (1, 1, 1), (1, 2, 2), (2, 1)]:
        R = sum(a == b for a, b in itertools.pairwise(y))
        for T in range(len(y) + R + 1):
            paths = list(itertools.product(range(V), repeat=T))
            assert any(y in readings(mod, p) for p in paths) == (T >= len(y)), (y, T)
            assert any(y in readings(std, p) for p in paths) == (T >= len(y) + R), (y, T)


# ---- sizes ----


@pytest.mark.parametrize("V", [1, 2, 3, 5, 8])
def test_arc_counts_are_quadratic_and_linear(V):
    std, mod = build_ctc_topo(V), build_ctc_topo(V, modified=True)
    assert std.num_states == mod.num_states == V
    assert num_arcs(std) == V * V
    assert num_arcs(mod) == 4 * V - 3
    assert finals(std) == set(range(V)) and finals(mod) == {0}
    assert not any(a.ilabel == 0 for s in range(V) for a in kf.ArcIterator(mod, s))  # no input epsilons


def test_a_12k_token_modified_topology_builds():
    V = 12092  # the WordPiece lang dir of asr_kd.lm.wordpiece_lang
    H = build_ctc_topo(V, modified=True)
    assert H.num_states == V and num_arcs(H) == 4 * V - 3  # the standard one: V * V = 146,216,464 arcs
    assert resolve_ctc_topo("auto", V) == "modified"
    assert build_hlg(7, ctc_topo="auto").num_states == 7


def test_auto_threshold_and_bad_values():
    assert AUTO_MODIFIED_ABOVE == 1000
    assert resolve_ctc_topo("auto", 128) == resolve_ctc_topo("auto", 500) == "standard"
    assert resolve_ctc_topo("auto", 1000) == "standard" and resolve_ctc_topo("auto", 1001) == "modified"
    assert resolve_ctc_topo("standard", 20000) == "standard" and resolve_ctc_topo("modified", 3) == "modified"
    with pytest.raises(ValueError, match="ctc_topo must be one of 'standard', 'modified', 'auto', got 'k2'"):
        resolve_ctc_topo("k2", 10)
    with pytest.raises(ValueError, match="ctc_topo"):
        build_hlg(4, ctc_topo="Modified")
    with pytest.raises(ValueError, match="vocab_size must be >= 1"):
        build_ctc_topo(0, modified=True)
    # auto keeps the small graphs standard: the same FST as before the option
    assert str(build_hlg(5)) == str(build_hlg(5, ctc_topo="standard")) != str(build_hlg(5, ctc_topo="modified"))


# ---- HL decoding ----

V = 4
WORDS = {"<eps>": 0, "A": 1, "B": 2, "C": 3, "D": 4, "#0": 5}
#: every spelling starts with 1 and none ends with 1 or repeats a token: no word sequence spells two equal
#: neighbouring tokens, so the two topologies cannot differ
NO_REPEATS = [("A", [1, 2]), ("B", [1, 3]), ("C", [1, 2, 3]), ("D", [1, 3, 2])]
#: C spells "3 3", "A A" spells "1 1"
REPEATS = [("A", [1]), ("B", [2, 3]), ("C", [3, 3])]


def parses(tokens, lexicon):
    if not tokens:
        return [()]
    out = []
    for w, sp in lexicon:
        if tokens[: len(sp)] == tuple(sp):
            out += [(w, *rest) for rest in parses(tokens[len(sp) :], lexicon)]
    return out


def brute_force(lp, lexicon, topo):
    """The best (acoustic score, word sequence) over every frame sequence, every reading of it by the
    topology's language and every parse of that reading into words; ties: the set of best spellings."""
    rows = lp.tolist()
    best, spellings = -math.inf, set()
    for path in itertools.product(range(V), repeat=len(rows)):
        ac = sum(rows[t][c] for t, c in enumerate(path))
        for y in {collapse(path)} if topo == "standard" else modified_readings(path):
            if parses(y, lexicon):
                if ac > best + 1e-9:
                    best, spellings = ac, {y}
                elif ac > best - 1e-9:
                    spellings.add(y)
    return best, spellings


def spelling(word_ids, lexicon):
    sp = {WORDS[w]: tuple(t) for w, t in lexicon}
    return tuple(t for i in word_ids for t in sp[i])


@pytest.mark.parametrize("seed", range(5))
def test_hl_decoding_is_the_same_with_both_topologies_when_no_repeat_can_be_spelled(seed):
    T = 6
    lp = random_log_probs(1, T, V, seed=seed, sharp=2.0)
    score, spellings = brute_force(lp[0], NO_REPEATS, "standard")
    assert brute_force(lp[0], NO_REPEATS, "modified") == (score, spellings)
    res = {
        topo: wfst_decode(build_hlg(V, NO_REPEATS, WORDS, ctc_topo=topo), lp, torch.tensor([T]), beam=1e3)[0]
        for topo in TOPOS
    }
    assert res["standard"].tokens == res["modified"].tokens
    assert spelling(res["standard"].tokens[0], NO_REPEATS) in spellings
    for r in res.values():
        assert r.scores[0] == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("topo", TOPOS)
def test_hl_decoding_with_spellable_repeats_matches_its_topology_brute_force(seed, topo):
    T = 5
    lp = random_log_probs(1, T, V, seed=seed, sharp=2.0)
    score, spellings = brute_force(lp[0], REPEATS, topo)
    got = wfst_decode(build_hlg(V, REPEATS, WORDS, ctc_topo=topo), lp, torch.tensor([T]), beam=1e3)[0]
    assert got.scores[0] == pytest.approx(score, abs=1e-4)
    assert spelling(got.tokens[0], REPEATS) in spellings


def test_two_frames_3_3_are_the_word_c_only_with_the_modified_topology():
    lp = torch.full((1, 2, V), -20.0, dtype=torch.float64)
    lp[0, :, 3] = -0.01  # both frames: token 3
    lp[0, 0, 1] = -6.0  # an expensive way out: "A" then blank
    lp[0, 1, 0] = -6.0
    lens = torch.tensor([2])
    mod = wfst_decode(build_hlg(V, REPEATS, WORDS, ctc_topo="modified"), lp, lens, beam=1e3)[0]
    std = wfst_decode(build_hlg(V, REPEATS, WORDS, ctc_topo="standard"), lp, lens, beam=1e3)[0]
    assert mod.tokens == [[WORDS["C"]]] and mod.scores[0] == pytest.approx(-0.02, abs=1e-6)
    assert std.tokens == [[WORDS["A"]]] and std.scores[0] == pytest.approx(-12.0, abs=1e-6)


def test_k2_decodes_the_modified_hl_as_kaldi_decoder_does(k2):
    from test_dec_wfst import ARPA, LEXICON
    from test_dec_wfst import WORDS as LM_WORDS

    from asr_kd.decoding.k2_graph import k2_graph_from_kaldifst, k2_one_best

    # with an LM: without one, frames "1 1 1" are "A", "A A" or "A A A" at equal cost (ties)
    graph = build_hlg(V, LEXICON, LM_WORDS, ARPA, ctc_topo="modified")
    lp = random_log_probs(4, 9, V, seed=3, sharp=2.5)
    lens = torch.tensor([9, 7, 2, 0])
    want = wfst_decode(graph, lp, lens, beam=1e3, max_active=100000)
    got = k2_one_best(k2_graph_from_kaldifst(graph), lp, lens, search_beam=1e3, output_beam=1e3)
    assert [r.tokens for r in got] == [r.tokens for r in want]
    assert any(r.best for r in want)
    for a, b in zip(got, want, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


# ---- the cached lang-dir graphs ----

LANG_TOKENS = "<blk> 0\na 1\nb 2\nc 3\n"
LANG_LEXICON = {"A": ("a",), "B": ("b", "c"), "C": ("c", "c"), "E": ("b",)}
LANG_WORDS = ["<eps>", "<UNK>", "A", "B", "C", "E", "#0", "<s>", "</s>"]
TOK = {"a": 1, "b": 2, "c": 3}


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    d = tmp_path_factory.mktemp("lang")
    (d / "tokens.txt").write_text(LANG_TOKENS)
    (d / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(LANG_WORDS)))
    (d / "lexicon.txt").write_text("".join(f"{w} {' '.join(u)}\n" for w, u in LANG_LEXICON.items()))
    return d


@pytest.mark.parametrize("seed", range(4))
def test_get_hlg_modified_hl_matches_the_modified_brute_force(lang, seed, tmp_path):
    lexicon = [(w, [TOK[u] for u in sp]) for w, sp in LANG_LEXICON.items()]
    graph, id_to_word, info = get_hlg(lang, cache_dir=tmp_path, ctc_topo="modified")
    assert info.ctc_topo == "modified" and info.path.name == "HL_modified.fst"
    T = 5
    lp = random_log_probs(1, T, V, seed=seed, sharp=1.5)
    got = wfst_decode(graph, lp, torch.tensor([T]), beam=1e3)[0]
    score, spellings = brute_force(lp[0], lexicon, "modified")
    assert got.scores[0] == pytest.approx(score, abs=1e-4)
    sp = {w: tuple(TOK[u] for u in s) for w, s in LANG_LEXICON.items()}
    assert tuple(t for i in got.tokens[0] for t in sp[id_to_word[i]]) in spellings


def test_cached_graphs_record_their_topology(lang, tmp_path, caplog):
    g_std, _, i_std = get_hlg(lang, cache_dir=tmp_path)  # auto, 4 tokens: standard
    g_mod, _, i_mod = get_hlg(lang, cache_dir=tmp_path, ctc_topo="modified")
    assert (i_std.ctc_topo, i_std.path.name, i_std.cached) == ("standard", "HL.fst", False)
    assert (i_mod.ctc_topo, i_mod.path.name, i_mod.cached) == ("modified", "HL_modified.fst", False)
    assert i_std.sha256 != i_mod.sha256 and str(g_std) != str(g_mod)
    assert json.loads((tmp_path / "HL.json").read_text())["ctc_topo"] == "standard"
    assert json.loads((tmp_path / "HL_modified.json").read_text())["ctc_topo"] == "modified"
    # each is reused by its own topology
    _, _, again = get_hlg(lang, cache_dir=tmp_path, ctc_topo="standard")
    assert again.cached and again.ctc_topo == "standard"
    g2, _, again = get_hlg(lang, cache_dir=tmp_path, ctc_topo="modified")
    assert again.cached and again.ctc_topo == "modified" and str(g2) == str(g_mod)
    # a modified graph under the standard name (same sha) is not reused for the standard topology
    meta = json.loads((tmp_path / "HL.json").read_text())
    (tmp_path / "HL.fst").write_bytes((tmp_path / "HL_modified.fst").read_bytes())
    (tmp_path / "HL.json").write_text(json.dumps({**meta, "ctc_topo": "modified"}))
    with caplog.at_level("WARNING", logger="asr_kd.decoding.hlg"):
        g3, _, rebuilt = get_hlg(lang, cache_dir=tmp_path, ctc_topo="standard")
    assert not rebuilt.cached and str(g3) == str(g_std)
    assert "built with the modified CTC topology, standard asked for" in caplog.text
    # a json from before the option (no "ctc_topo"): a standard graph, still reused as such
    meta = json.loads((tmp_path / "HL.json").read_text())
    del meta["ctc_topo"]
    (tmp_path / "HL.json").write_text(json.dumps(meta))
    _, _, legacy = get_hlg(lang, cache_dir=tmp_path)
    assert legacy.cached and legacy.ctc_topo == "standard"
    with pytest.raises(ValueError, match="ctc_topo must be one of"):
        get_hlg(lang, cache_dir=tmp_path, ctc_topo="linear")


def test_hlg_size_estimate_bounds_the_modified_graph(lang):
    pytest.importorskip("kaldilm")
    from asr_kd.lm.lang import build_lexicon_disambig_fst, is_disambig, load_lexicon_ids, with_backoff_symbol
    from asr_kd.lm.ngram import train_ngram, write_arpa

    arpa = lang / "G_2gram.arpa"
    write_arpa(train_ngram(["A B", "C C", "E A", "B E A", "A A"], 2, unk=None), arpa)
    _, _, info = get_hlg(lang, arpa, cache=False, ctc_topo="modified")
    est = info.estimate["HLG"]
    assert est["ctc_topo"] == "modified"
    assert est["states"] >= info.states and est["arcs"] >= info.arcs
    _, _, std = get_hlg(lang, arpa, cache=False, ctc_topo="standard")
    assert std.estimate["HLG"]["states"] >= std.states and std.estimate["HLG"]["arcs"] >= std.arcs
    # the same LG under both: the same pairs (H state, LG state), so the same states estimate (not a strict
    # bound on this HL: its epsilon-input word arc lets OpenFst's epsilon filter duplicate a pair)
    tokens, words, dis, tok_dis, _ = load_lexicon_ids(lang)
    words = with_backoff_symbol(words)
    L = build_lexicon_disambig_fst(dis, tok_dis, words)
    first = min(i for s, i in tok_dis.items() if is_disambig(s))
    LG, _ = compile_LG(L, None, first_token_disambig=first, first_word_disambig=words["#0"])
    hl_mod, e_mod = compile_HLG(V, LG, ctc_topo="modified")
    hl_std, e_std = compile_HLG(V, LG, ctc_topo="standard")
    assert e_mod["HLG"]["states"] == e_std["HLG"]["states"]
    assert (e_mod["HLG"]["ctc_topo"], e_std["HLG"]["ctc_topo"]) == ("modified", "standard")
    assert num_arcs(hl_mod) > 0 and num_arcs(hl_std) > 0


def test_decoding_options_name_and_key_the_topology(lang):
    m = get_decoding_method("ctc-hlg")
    auto, mod = SearchOptions(lang_dir=lang), SearchOptions(lang_dir=lang, ctc_topo="modified")
    assert m.suffix(auto) == "ctc-hlg_noG"  # auto: unchanged result names
    assert m.suffix(mod) == "ctc-hlg_noG_topo-modified"
    assert m.cache_key(auto, {}) != m.cache_key(mod, {})
    assert get_decoding_method("ctc-decoding").suffix(mod) == "ctc-decoding_topo-modified"
    with pytest.raises(ValueError, match="SearchOptions.ctc_topo must be one of"):
        m.check(type("M", (), {"blank_id": 0, "ctc": object()})(), SearchOptions(lang_dir=lang, ctc_topo="x"))


def test_compile_hlg_cli_builds_the_modified_graph(lang, tmp_path, capsys):
    import shutil

    from asr_kd.bin import compile_hlg

    d = tmp_path / "lang"
    shutil.copytree(lang, d)
    assert compile_hlg.main(["--lang-dir", str(d), "--ctc-topo", "modified"]) == 0
    out = json.loads(capsys.readouterr().out.split("compile_hlg: ", 1)[1])
    assert out["ctc_topo"] == "modified" and out["graph"].endswith("HL_modified.fst")
    assert compile_hlg.main(["--lang-dir", str(d)]) == 0  # auto, 4 tokens: standard, its own file
    out = json.loads(capsys.readouterr().out.split("compile_hlg: ", 1)[1])
    assert out["ctc_topo"] == "standard" and out["graph"].endswith("HL.fst") and not out["cached"]


@pytest.mark.parametrize("modified", [False, True])
def test_both_topologies_are_k2s_ctc_topo(k2, modified):
    """Converted to k2 (labels = CTC columns, -1 arcs into the final state), each H has exactly the arcs of
    ``k2.ctc_topo(V - 1, modified=...)``."""
    from asr_kd.decoding.k2_graph import k2_graph_from_kaldifst

    for V in (2, 3, 6):
        ours = k2_graph_from_kaldifst(build_ctc_topo(V, modified=modified))
        ref = k2.ctc_topo(V - 1, modified=modified)

        def arcs(fsa):
            a = fsa.arcs.values()[:, :3].tolist()
            return sorted((s, d, lab, int(x)) for (s, d, lab), x in zip(a, fsa.aux_labels.tolist(), strict=True))

        assert arcs(ours) == arcs(ref), V
