"""HLG = H o det(L o G) (asr_kd.decoding.hlg): decoding a tiny graph gives the brute-force best word
sequence and score, the same as the undeterminised composition; G from kaldilm scores sentences
as the ARPA does; the graph is cached by the sha of its inputs; oversized graphs are refused."""

import itertools
import math

import pytest
import torch

kf = pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from decoding_bruteforce import collapse, random_log_probs  # noqa: E402

from asr_kd.decoding.hlg import GraphTooLargeError, compile_G, compile_LG, get_hlg, num_arcs  # noqa: E402
from asr_kd.decoding.wfst import build_ctc_topo, wfst_decode  # noqa: E402
from asr_kd.lm.arpa import read_arpa  # noqa: E402
from asr_kd.lm.lang import LangError, build_lexicon_disambig_fst, load_lexicon_ids  # noqa: E402
from asr_kd.lm.ngram import train_ngram, write_arpa  # noqa: E402

V = 4  # <blk> a b c
TOKENS = "<blk> 0\na 1\nb 2\nc 3\n"
# homophones (A, D), a spelling that is a prefix of another (E "b" of B "b c"): needs #1, #2
LEXICON = {"A": ("a",), "B": ("b", "c"), "C": ("c", "c"), "D": ("a",), "E": ("b",)}
WORDS = ["<eps>", "<UNK>", "A", "B", "C", "D", "E", "#0", "<s>", "</s>"]
TEXT = ["A B", "B E A", "C C", "D E", "A A B", "E B", "D C", "B", "A D E B", "C"]
TOK = {"a": 1, "b": 2, "c": 3}


def write_lang(d):
    """The tiny lang dir in ``d``: tokens.txt, words.txt, lexicon.txt, G_2gram.arpa and G_3gram.arpa of TEXT."""
    (d / "tokens.txt").write_text(TOKENS)
    (d / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(WORDS)))
    (d / "lexicon.txt").write_text("".join(f"{w} {' '.join(u)}\n" for w, u in LEXICON.items()))
    for order in (2, 3):
        write_arpa(train_ngram(TEXT, order, unk=None), d / f"G_{order}gram.arpa")
    return d


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    return write_lang(tmp_path_factory.mktemp("lang"))


def parses(tokens):
    """Every word sequence whose spellings concatenate to ``tokens``."""
    if not tokens:
        return [()]
    out = []
    for w, sp in LEXICON.items():
        if tokens[: len(sp)] == sp:
            out += [(w, *rest) for rest in parses(tokens[len(sp) :])]
    return out


def brute_force(lp, lm=None, lm_scale=1.0):
    """Best (acoustic + lm_scale * ln p_LM) over every CTC path and every parse of it."""
    rows = lp.tolist()
    best = (-math.inf, None)
    inv = {i: t for t, i in TOK.items()}
    for path in itertools.product(range(V), repeat=len(rows)):
        ac = sum(rows[t][c] for t, c in enumerate(path))
        for words in parses(tuple(inv[c] for c in collapse(path))):
            s = ac + (lm_scale * lm.score(list(words)) * math.log(10) if lm is not None else 0.0)
            if s > best[0] + 1e-9:
                best = (s, words)
    return best


def undeterminised(lang, arpa=None, lm_scale=1.0):
    """H o L_disambig o G with no determinisation, disambiguation symbols -> epsilon afterwards."""
    from asr_kd.decoding.hlg import _relabel_disambig

    tokens, words, dis, tok_dis, _ = load_lexicon_ids(lang)
    L = build_lexicon_disambig_fst(dis, tok_dis, words)
    if arpa is not None:
        G = compile_G(arpa, lang / "words.txt", lm_scale=lm_scale)
        kf.arcsort(L, sort_type="olabel")
        L = kf.compose(L, G)
    LG = _relabel_disambig(L, min(i for s, i in tok_dis.items() if s.startswith("#")), words["#0"])
    kf.arcsort(LG, sort_type="ilabel")
    H = build_ctc_topo(V)
    kf.arcsort(H, sort_type="olabel")
    HLG = kf.compose(H, LG)
    kf.arcsort(HLG, sort_type="ilabel")
    return HLG


def words_of(res, id_to_word):
    return tuple(id_to_word[i] for i in res.tokens[0])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "order,lm_scale,remove_epsilon", [(2, 1.0, True), (3, 1.0, True), (3, 0.5, True), (3, 1.0, False)]
)
def test_hlg_decoding_equals_brute_force_and_the_undeterminised_graph(
    lang, seed, order, lm_scale, remove_epsilon, tmp_path
):
    arpa = lang / f"G_{order}gram.arpa"
    lm = read_arpa(arpa, unk=None)
    graph, id_to_word, info = get_hlg(lang, arpa, lm_scale=lm_scale, cache_dir=tmp_path, remove_epsilon=remove_epsilon)
    assert info.kind == "HLG"
    T = 5
    lp = random_log_probs(1, T, V, seed=seed, sharp=1.5)
    got = wfst_decode(graph, lp, torch.tensor([T]), beam=1000.0)[0]
    score, words = brute_force(lp[0], lm, lm_scale)
    assert words_of(got, id_to_word) == words
    assert got.scores[0] == pytest.approx(score, abs=1e-3)
    # graph score = lm_scale * ln p_LM(words): the LM part of the path is the ARPA's
    assert got.components["graph"][0] == pytest.approx(lm_scale * lm.score(list(words)) * math.log(10), abs=1e-3)
    # determinisation keeps the best path and its score
    ref = wfst_decode(undeterminised(lang, arpa, lm_scale), lp, torch.tensor([T]), beam=1000.0)[0]
    assert words_of(ref, id_to_word) == words
    assert ref.scores[0] == pytest.approx(got.scores[0], abs=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_hl_without_lm_equals_brute_force(lang, seed, tmp_path):
    graph, id_to_word, info = get_hlg(lang, cache_dir=tmp_path)
    assert info.kind == "HL"
    T = 5
    lp = random_log_probs(1, T, V, seed=seed, sharp=1.5)
    got = wfst_decode(graph, lp, torch.tensor([T]), beam=1000.0)[0]
    score, words = brute_force(lp[0])
    assert got.scores[0] == pytest.approx(score, abs=1e-4)
    # homophones tie without an LM: the spelling is what is determined
    assert [LEXICON[w] for w in words_of(got, id_to_word)] == [LEXICON[w] for w in words]
    ref = wfst_decode(undeterminised(lang), lp, torch.tensor([T]), beam=1000.0)[0]
    assert ref.scores[0] == pytest.approx(got.scores[0], abs=1e-4)


def test_graph_has_no_disambiguation_symbols_and_LG_is_deterministic(lang, tmp_path):
    graph, _, info = get_hlg(lang, lang / "G_3gram.arpa", cache_dir=tmp_path)
    n_words_disambig = WORDS.index("#0")
    for s in range(graph.num_states):
        for a in kf.ArcIterator(graph, s):
            assert a.ilabel <= V  # token + 1, or epsilon
            assert a.olabel < n_words_disambig  # no #0, <s>, </s>
    assert info.states == graph.num_states and info.arcs == num_arcs(graph)
    # det(L o G): no state has two arcs with the same token (the undeterminised one has)
    tokens, words, dis, tok_dis, _ = load_lexicon_ids(lang)
    L = build_lexicon_disambig_fst(dis, tok_dis, words)
    G = compile_G(lang / "G_3gram.arpa", lang / "words.txt")
    first = min(i for s, i in tok_dis.items() if s.startswith("#"))

    def repeated_labels(fst):
        n = 0
        for s in range(fst.num_states):
            labels = [a.ilabel for a in kf.ArcIterator(fst, s)]
            n += len(labels) - len(set(labels))
        return n

    kw = {"first_token_disambig": first, "first_word_disambig": words["#0"]}
    LG, _ = compile_LG(L.copy(), G.copy(), keep_disambig=True, **kw)
    assert repeated_labels(LG) == 0 and LG.num_input_epsilons(LG.start) == 0
    kf.arcsort(L, sort_type="olabel")
    assert repeated_labels(kf.compose(L, G)) > 0
    # the final LG has no #k: input labels are tokens or epsilon
    LG, _ = compile_LG(L.copy(), G.copy(), **kw)
    assert all(a.ilabel < first for s in range(LG.num_states) for a in kf.ArcIterator(LG, s))


@pytest.mark.parametrize("order", [2, 3])
def test_kaldilm_G_scores_sentences_like_the_arpa(lang, order):
    """G's best path over a word sequence costs -ln p_ARPA: exactly for a bigram KN model (a backoff
    arc reaches the same state as the n-gram arc and costs more); at most that for a trigram (G's
    backoff arcs are an approximation: backing off leads to a lower-order state, which may score
    the next words better)."""
    arpa = lang / f"G_{order}gram.arpa"
    lm = read_arpa(arpa, unk=None)
    G = compile_G(arpa, lang / "words.txt")
    wid = {w: i for i, w in enumerate(WORDS)}
    # follow G on a word sequence: best path of (linear acceptor o G), backoff arcs (#0) epsilon-like
    Gd = kf.StdVectorFst()
    for _ in range(G.num_states):
        Gd.add_state()
    Gd.start = G.start
    for s in range(G.num_states):
        fw = G.final(s)
        if fw != kf.TropicalWeight.zero:
            Gd.set_final(s, fw)
        for a in kf.ArcIterator(G, s):
            lab = 0 if a.ilabel == wid["#0"] else a.ilabel
            Gd.add_arc(s, kf.StdArc(lab, lab, a.weight, a.nextstate))
    kf.arcsort(Gd, sort_type="ilabel")
    n_equal = 0
    for sent in ["A B", "B E A", "E E E", "C", "D A C B", "A A B", "C C", "E B A D", "B B"]:
        lin = kf.make_linear_acceptor([wid[w] for w in sent.split()])
        _, _, _, weight = kf.get_linear_symbol_sequence(kf.shortest_path(kf.compose(lin, Gd)))
        cost, exact = float(weight.value), -lm.score(sent) * math.log(10)
        if order == 2:
            assert cost == pytest.approx(exact, abs=1e-4), sent
        assert cost <= exact + 1e-4, sent
        n_equal += abs(cost - exact) < 1e-4
    assert n_equal >= 5


def test_cached_by_input_sha(lang, tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text((lang / "G_2gram.arpa").read_text())
    g1, _, i1 = get_hlg(lang, arpa, cache_dir=tmp_path)
    assert not i1.cached and (tmp_path / "HLG_lm.fst").is_file() and (tmp_path / "HLG_lm.json").is_file()
    assert i1.build_seconds is not None and i1.file_bytes == (tmp_path / "HLG_lm.fst").stat().st_size
    g2, _, i2 = get_hlg(lang, arpa, cache_dir=tmp_path)
    assert i2.cached and i2.sha256 == i1.sha256 and str(g2) == str(g1)
    # another LM under the same name: rebuilt
    arpa.write_text((lang / "G_3gram.arpa").read_text())
    _, _, i3 = get_hlg(lang, arpa, cache_dir=tmp_path)
    assert not i3.cached and i3.sha256 != i1.sha256
    # lm_scale is part of the key (and of the file name)
    _, _, i4 = get_hlg(lang, arpa, lm_scale=0.5, cache_dir=tmp_path)
    assert not i4.cached and i4.path.name == "HLG_lm_lms-0.5.fst"


@pytest.mark.parametrize("remove_epsilon", [True, False])
def test_a_graph_too_large_is_refused_before_composing(lang, tmp_path, remove_epsilon):
    _, _, info = get_hlg(lang, lang / "G_3gram.arpa", cache=False, remove_epsilon=remove_epsilon)
    est = info.estimate
    # the estimates bound the real sizes
    assert est["HLG"]["states"] >= info.states and est["HLG"]["arcs"] >= info.arcs
    assert est["LG"]["states"] >= est["LG_composed"]["states"] and est["LG"]["arcs"] >= est["LG_composed"]["arcs"]
    lg, hlg = est["LG"]["bytes"], est["HLG"]["bytes"]
    assert hlg > lg
    with pytest.raises(GraphTooLargeError, match=r"L o G would not fit in memory: estimated \d+ states"):
        get_hlg(lang, lang / "G_3gram.arpa", cache_dir=tmp_path, max_bytes=lg - 1, remove_epsilon=remove_epsilon)
    with pytest.raises(GraphTooLargeError, match=r"H o LG would not fit in memory.*G_3gram.arpa"):
        get_hlg(lang, lang / "G_3gram.arpa", cache_dir=tmp_path, max_bytes=hlg - 1, remove_epsilon=remove_epsilon)
    assert not list(tmp_path.glob("HLG*"))
    get_hlg(lang, lang / "G_3gram.arpa", cache_dir=tmp_path, max_bytes=hlg, remove_epsilon=remove_epsilon)


def test_bad_lexicon_is_named(lang, tmp_path):
    for f in ("tokens.txt", "words.txt"):
        (tmp_path / f).write_text((lang / f).read_text())
    (tmp_path / "lexicon.txt").write_text("A a\nB b x\n")
    with pytest.raises(LangError, match="lexicon.txt:2: token 'x'"):
        get_hlg(tmp_path)
    (tmp_path / "lexicon.txt").write_text("A a\nZ b\n")
    with pytest.raises(LangError, match="lexicon.txt:2: word 'Z' is not in"):
        get_hlg(tmp_path)


def test_max_order_drops_the_higher_ngrams(lang, tmp_path):
    arpa = lang / "G_3gram.arpa"
    full, lower = compile_G(arpa, lang / "words.txt"), compile_G(arpa, lang / "words.txt", max_order=2)
    # kaldilm keeps the states and drops the 3-gram arcs (those ending in </s> are final weights)
    n_trigram_arcs = sum(g[-1] != "</s>" for g in read_arpa(arpa, unk=None).probs[2])
    assert num_arcs(full) - num_arcs(lower) == n_trigram_arcs > 0
    _, _, info = get_hlg(lang, arpa, max_order=2, cache_dir=tmp_path)
    assert info.path.name == "HLG_G_3gram_o2.fst"


def test_a_word_numbered_after_the_backoff_symbol_is_refused(lang, tmp_path):
    (tmp_path / "tokens.txt").write_text(TOKENS)
    (tmp_path / "lexicon.txt").write_text("A a\nB b c\n")
    (tmp_path / "words.txt").write_text("<eps> 0\nA 1\n#0 2\nB 3\n<s> 4\n</s> 5\n")
    with pytest.raises(LangError, match=r"lexicon.txt:2: word 'B' has id 3 in .*words.txt, not below the id 2 of '#0'"):
        get_hlg(tmp_path)
