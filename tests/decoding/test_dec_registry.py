"""The decoding-method registry (asr_kd.decoding.search): every registered name decodes a tiny random
AsrModel exactly like the direct search call; ctc-hlg through decode_batch equals wfst_decode on the same
log-probs; prepared resources are cached; clear errors for unknown methods and missing heads."""

import os

import pytest
import torch
from decoding_bruteforce import ENCODER, SpreadCtc, write_token_lm
from lattice_reference import LATTICE_METHODS, lattice_method_reference, write_word_lm

from asr_kd.decoding import (
    attention_beam_search,
    attention_rescoring,
    best_paths,
    ctc_greedy_search,
    ctc_prefix_beam_search,
    mask_ctc_beam_search,
    mask_ctc_easy_first,
    modified_beam_search,
    transducer_greedy_search,
)
from asr_kd.decoding.lm_fusion import TokenNgramLm
from asr_kd.decoding.search import (
    DECODING_METHODS,
    METHODS,
    NBEST_METHODS,
    DecodingMethod,
    SearchOptions,
    decode_batch,
    decode_nbest,
    get_decoding_method,
    list_decoding_methods,
    prepare_decoding,
    register_decoding_method,
)
from asr_kd.models.asr_model import build_asr_model

V = 12


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_asr_model(
        {
            "vocab_size": V,
            "sos_id": 1,
            "eos_id": 1,
            "encoder": ENCODER,
            "ctc": {},
            "inter_ctc": {"layers": [1]},
            "transducer": {"d_pred": 8, "d_joint": 8},
            "attention_decoder": {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0},
            "mask_ctc": {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0},
        }
    ).eval()
    m.ctc = SpreadCtc(m.ctc)
    return m


@pytest.fixture(scope="module")
def causal_model():
    """A transducer on the causal variant of ENCODER, for the streaming methods."""
    torch.manual_seed(0)
    cfg = {"vocab_size": V, "encoder": {**ENCODER, "causal": True}, "transducer": {"d_pred": 8, "d_joint": 8}}
    return build_asr_model(cfg).eval()


@pytest.fixture(scope="module")
def ctc_only():
    torch.manual_seed(0)
    return build_asr_model({"vocab_size": V, "encoder": ENCODER, "ctc": {}}).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 40, 20, generator=g), torch.tensor([40, 31])


def write_lang_dir(path):
    """tokens t1..t11 (blank 0), one word per token: w<i> spelled t<i>."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokens.txt").write_text("<blk> 0\n" + "".join(f"t{i} {i}\n" for i in range(1, V)))
    (path / "words.txt").write_text("<eps> 0\n" + "".join(f"w{i} {i}\n" for i in range(1, V)))
    (path / "lexicon.txt").write_text("".join(f"w{i} t{i}\n" for i in range(1, V)))
    write_token_lm(path)  # tokens_2gram.arpa, for modified-beam-lm
    return path


@pytest.fixture(scope="module")
def lang_dir(tmp_path_factory):
    return write_lang_dir(tmp_path_factory.mktemp("lang"))


@pytest.fixture(scope="module")
def lm_lang_dir(tmp_path_factory):
    """The lang dir with G's symbols in words.txt and a word bigram (the lattice methods' rescoring LM)."""
    lang = write_lang_dir(tmp_path_factory.mktemp("lm_lang"))
    write_word_lm(lang, V)
    return lang


OPTS = SearchOptions(beam=3)


@torch.no_grad()
def direct_results(method, model, x, x_lens, lang_dir):
    """What the search functions give when called by hand (opts = OPTS)."""
    if method in ("streaming-greedy", "streaming-modified-beam"):  # simulated streaming: chunk masks, offline search
        chunked = model.encode(x, x_lens, chunk_size=2, left_context=1)
        if method == "streaming-greedy":
            return transducer_greedy_search(
                model.transducer.predictor, model.transducer.joiner, chunked.out, chunked.out_lens
            )
        return best_paths(
            modified_beam_search(
                model.transducer.predictor, model.transducer.joiner, chunked.out, chunked.out_lens, beam=3
            )
        )
    enc_out = model.encode(x, x_lens)
    enc, lens = enc_out.out, enc_out.out_lens
    lp = model.ctc(enc).log_softmax(-1)
    t, mask_id = model.transducer, model.mask_ctc.mask_id
    if method == "ctc-greedy":
        return ctc_greedy_search(lp, lens)
    if method == "ctc-prefix-beam":
        return best_paths(ctc_prefix_beam_search(lp, lens, beam=3))
    if method == "attention-beam":
        return best_paths(
            attention_beam_search(
                model.attention_decoder, enc, lens, beam=3, sos=1, eos=1, ctc_log_probs=lp, ctc_weight=0.3
            )
        )
    if method == "attention-rescoring":
        return best_paths(
            attention_rescoring(
                model.attention_decoder,
                enc,
                lens,
                ctc_prefix_beam_search(lp, lens, beam=3),
                ctc_weight=0.3,
                sos=1,
                eos=1,
            )
        )
    if method == "transducer-greedy":
        return transducer_greedy_search(t.predictor, t.joiner, enc, lens)
    if method == "modified-beam":
        return best_paths(modified_beam_search(t.predictor, t.joiner, enc, lens, beam=3))
    if method == "modified-beam-lm":
        lm = TokenNgramLm.from_files(lang_dir / "tokens_2gram.arpa", lang_dir / "tokens.txt")
        return best_paths(modified_beam_search(t.predictor, t.joiner, enc, lens, beam=3, lm=lm, lm_scale=0.5))
    if method == "mask-ctc":
        return mask_ctc_easy_first(lp, lens, model.mask_ctc, enc, lens, p_thr=0.99, K=2, mask_id=mask_id)
    if method == "mask-ctc-beam":
        return best_paths(
            mask_ctc_beam_search(lp, lens, model.mask_ctc, enc, lens, beam=3, p_thr=0.99, K=2, mask_id=mask_id)
        )
    if method == "ctc-hlg":
        pytest.importorskip("kaldifst")
        pytest.importorskip("kaldi_decoder")
        from asr_kd.decoding.wfst import build_hlg_from_lang_dir, wfst_decode

        graph, _ = build_hlg_from_lang_dir(lang_dir)
        return best_paths(wfst_decode(graph, lp, lens, beam=16.0))
    if method in LATTICE_METHODS:
        pytest.importorskip("kaldi_decoder")
        pytest.importorskip("kaldilm")
        return lattice_method_reference(method, model, enc, lens, lp, lang_dir)
    pytest.fail(f"registered decoding method {method!r} has no direct-call reference in this test")


@pytest.mark.parametrize("method", list_decoding_methods())
def test_every_registered_method_equals_the_direct_call(method, model, causal_model, batch, lm_lang_dir):
    x, x_lens = batch
    if get_decoding_method(method).from_features:  # chunk-by-chunk streaming needs a causal encoder
        model = causal_model
    lang_dir = lm_lang_dir
    want = direct_results(method, model, x, x_lens, lang_dir)
    opts = SearchOptions(
        beam=3,
        lang_dir=lang_dir,
        lm_arpa=lang_dir / "tokens_2gram.arpa",
        lm_scale=0.5,
        rescore_arpa=lang_dir / "words_2gram.arpa",
        chunk_size=2,
        left_context=1,
    )
    got = decode_batch(model, x, x_lens, method, opts)
    assert got == want
    assert len(got) == 2 and any(got), got  # the comparison is not between empty outputs
    # a prepared decoder, given the encoder output
    enc_out = model.encode(x, x_lens)
    assert prepare_decoding(model, method, opts).decode(x, x_lens, encoder_out=enc_out) == want
    if get_decoding_method(method).nbest:
        tokens, scores = decode_nbest(model, x, x_lens, method, opts)
        assert [t[0] if t else [] for t in tokens] == want
        assert all(s == sorted(s, reverse=True) for s in scores)


def test_registry_lists_all_methods():
    names = list_decoding_methods()
    assert names == sorted(METHODS) == sorted(DECODING_METHODS)
    assert {
        "ctc-greedy",
        "ctc-prefix-beam",
        "ctc-hlg",
        "attention-beam",
        "attention-rescoring",
        "transducer-greedy",
        "modified-beam",
        "mask-ctc",
        "mask-ctc-beam",
    } <= set(names)
    assert tuple(NBEST_METHODS) == (
        "ctc-prefix-beam",
        "attention-beam",
        "attention-rescoring",
        "modified-beam",
        "modified-beam-lm",
        "mask-ctc-beam",
        "nbest",
        "nbest-rescoring",
        "attention-decoder-rescoring-with-ngram",
        "streaming-modified-beam",
    )
    assert list_decoding_methods(nbest=True) == sorted(NBEST_METHODS)
    assert "ctc-hlg" in list_decoding_methods(nbest=False) and "ctc-hlg" not in NBEST_METHODS
    assert METHODS["attention-rescoring"] == ("ctc", "attention_decoder")
    assert get_decoding_method("modified-beam").default_beam == 4
    assert get_decoding_method("ctc-hlg").output == "words"


@torch.no_grad()
def test_ctc_hlg_via_decode_batch_equals_wfst_decode(model, batch, lang_dir):
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldi_decoder")
    from asr_kd.decoding.wfst import build_hlg_from_lang_dir, wfst_decode

    x, x_lens = batch
    enc_out = model.encode(x, x_lens)
    graph, id_to_word = build_hlg_from_lang_dir(lang_dir)
    for layer, lp in (
        (None, model.ctc(enc_out.out).log_softmax(-1)),
        (1, model.inter_ctc_head(1)(enc_out.layer_outputs[0]).log_softmax(-1)),
    ):
        for beam, scale in ((16.0, 1.0), (8.0, 0.5)):
            opts = SearchOptions(lang_dir=str(lang_dir), ctc_layer=layer, search_beam=beam, acoustic_scale=scale)
            want = wfst_decode(graph, lp, enc_out.out_lens, beam=beam, acoustic_scale=scale)
            got = decode_batch(model, x, x_lens, "ctc-hlg", opts)
            assert got == [r.best for r in want]
        # one word per token and no LM: the WFST best path is the CTC best path
        assert got == ctc_greedy_search(lp, enc_out.out_lens)
    dec = prepare_decoding(model, "ctc-hlg", SearchOptions(lang_dir=lang_dir))
    hyps = dec.decode(x, x_lens)
    assert dec.words(hyps) == [[f"w{i}" for i in h] for h in hyps]
    assert dec.words(hyps) == [[id_to_word[i] for i in h] for h in hyps]
    assert dec.state.kind == "HL" and dec.state.vocab_size == V


def test_ctc_hlg_graph_is_prepared_once_and_rebuilt_when_the_lang_dir_changes(model, tmp_path, monkeypatch):
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldi_decoder")
    import asr_kd.decoding.hlg as hlg
    import asr_kd.decoding.wfst as wfst

    lang = write_lang_dir(tmp_path / "lang")
    builds = []
    real = hlg.get_hlg
    monkeypatch.setattr(hlg, "get_hlg", lambda *a, **k: builds.append(a) or real(*a, **k))
    opts = SearchOptions(lang_dir=lang)
    first = prepare_decoding(model, "ctc-hlg", opts).state
    assert first.info.kind == "HL" and not first.info.cached and (lang / "HL.fst").is_file()
    assert prepare_decoding(model, "ctc-hlg", SearchOptions(lang_dir=str(lang), beam=7)).state is first
    assert len(builds) == 1
    # a touched file: prepared again, but the same content loads the graph cached in the lang dir
    lex = lang / "lexicon.txt"
    st = lex.stat()
    os.utime(lex, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = prepare_decoding(model, "ctc-hlg", opts).state
    assert second is not first and second.info.cached and len(builds) == 2
    # changed content: rebuilt
    lex.write_text(lex.read_text() + "w1 t2\n")
    third = prepare_decoding(model, "ctc-hlg", opts).state
    assert not third.info.cached and third.info.sha256 != first.info.sha256 and len(builds) == 3
    # a graph passed as a resource is used as it is
    graph, id_to_word = wfst.build_hlg_from_lang_dir(lang)
    dec = prepare_decoding(model, "ctc-hlg", SearchOptions(), resources={"hlg": (graph, id_to_word)})
    assert dec.state.graph is graph and len(builds) == 3


def test_ctc_hlg_needs_a_lang_dir(model, batch):
    x, x_lens = batch
    with pytest.raises(ValueError, match="ctc-hlg.*lang dir"):
        decode_batch(model, x, x_lens, "ctc-hlg")
    with pytest.raises(ValueError, match="no n-best"):
        decode_nbest(model, x, x_lens, "ctc-hlg")


def test_ctc_hlg_rejects_a_lang_dir_of_another_vocabulary(model, batch, tmp_path):
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldi_decoder")
    lang = write_lang_dir(tmp_path / "lang")
    (lang / "tokens.txt").write_text("<blk> 0\n" + "".join(f"t{i} {i}\n" for i in range(1, V + 3)))
    x, x_lens = batch
    with pytest.raises(ValueError, match=f"{V} CTC outputs.*{V + 3} tokens"):
        decode_batch(model, x, x_lens, "ctc-hlg", SearchOptions(lang_dir=lang))


def test_unknown_method_lists_the_registered_names(ctc_only, batch):
    x, x_lens = batch
    with pytest.raises(ValueError, match="unknown decoding method 'viterbi'") as e:
        decode_batch(ctc_only, x, x_lens, "viterbi")
    for name in list_decoding_methods():
        assert name in str(e.value)
    with pytest.raises(ValueError, match="unknown decoding method"):
        get_decoding_method("viterbi")


@pytest.mark.parametrize(
    "method,head",
    [
        ("attention-beam", "attention_decoder"),
        ("modified-beam", "transducer"),
        ("transducer-greedy", "transducer"),
        ("mask-ctc", "mask_ctc"),
        ("mask-ctc-beam", "mask_ctc"),
        ("attention-rescoring", "attention_decoder"),
    ],
)
def test_missing_head_is_named(ctc_only, batch, method, head):
    x, x_lens = batch
    with pytest.raises(ValueError, match=f"'{method}' needs the model's {head} head"):
        decode_batch(ctc_only, x, x_lens, method)


def test_missing_ctc_head_is_named(batch):
    torch.manual_seed(0)
    tr = build_asr_model({"vocab_size": V, "encoder": ENCODER, "transducer": {"d_pred": 8, "d_joint": 8}}).eval()
    x, x_lens = batch
    for method in ("ctc-greedy", "ctc-prefix-beam", "ctc-hlg"):
        with pytest.raises(ValueError, match=f"'{method}' needs the model's ctc head"):
            decode_batch(tr, x, x_lens, method, SearchOptions(lang_dir="unused"))
    with pytest.raises(KeyError, match="inter-CTC"):
        decode_batch(tr, x, x_lens, "ctc-greedy", SearchOptions(ctc_layer=1))


def test_a_registered_method_is_usable_everywhere(ctc_only, batch):
    @register_decoding_method("test-ctc-top2", nbest=True, requires=("ctc",))
    class Top2(DecodingMethod):
        """The CTC prefix beam's n-best, prepared state = the beam."""

        suffix_options = ("beam",)

        def prepare(self, model, opts, resources):
            return resources.get("beam", 2)

        def search(self, model, enc_out, opts, state):
            lp = model.ctc(enc_out.out).log_softmax(-1)
            return ctc_prefix_beam_search(lp, enc_out.out_lens, beam=state)

    try:
        assert "test-ctc-top2" in list_decoding_methods() and "test-ctc-top2" in NBEST_METHODS
        assert METHODS["test-ctc-top2"] == ("ctc",)
        x, x_lens = batch
        tokens, _ = decode_nbest(ctc_only, x, x_lens, "test-ctc-top2", resources={"beam": 2})
        assert all(len(t) <= 2 for t in tokens)
        assert decode_batch(ctc_only, x, x_lens, "test-ctc-top2") == [t[0] for t in tokens]
        assert get_decoding_method("test-ctc-top2").suffix(SearchOptions(beam=5)) == "test-ctc-top2_beam-5"
        with pytest.raises(ValueError, match="registered twice"):
            register_decoding_method("test-ctc-top2")(Top2)
    finally:
        DECODING_METHODS.pop("test-ctc-top2", None)
    assert "test-ctc-top2" not in NBEST_METHODS


def test_result_suffixes():
    from asr_kd.bin.decode import method_suffix

    o = SearchOptions(beam=10)
    assert method_suffix("ctc-greedy", o) == "ctc-greedy"
    assert method_suffix("ctc-prefix-beam", o) == "ctc-prefix-beam_beam-10"
    assert method_suffix("attention-beam", o) == "attention-beam_beam-10_ctcw-0.3"
    assert (
        method_suffix("attention-rescoring", SearchOptions(ctc_layer=2))
        == "attention-rescoring_beam-10_ctcw-0.3_layer-2"
    )
    assert method_suffix("transducer-greedy", o) == "transducer-greedy"
    assert method_suffix("modified-beam", SearchOptions(beam=4)) == "modified-beam_beam-4"
    assert (
        method_suffix("mask-ctc-beam", SearchOptions(mask_schedule="espnet", ctc_layer=1))
        == "mask-ctc-beam_beam-10_pthr-0.99_K-2_sched-espnet_layer-1"
    )
    assert method_suffix("ctc-greedy", SearchOptions(ctc_layer=6)) == "ctc-greedy_layer-6"
    assert method_suffix("ctc-hlg", o) == "ctc-hlg_noG"
    assert (
        method_suffix("ctc-hlg", SearchOptions(arpa="lm.arpa", lm_scale=0.5, ctc_layer=3))
        == "ctc-hlg_G_lms-0.5_layer-3"
    )


def test_search_options_stay_positional_compatible():
    o = SearchOptions(4, 0.5, None, 2, 0.9, 3, "espnet", 0.1)
    assert (
        o.beam,
        o.ctc_weight,
        o.ctc_layer,
        o.max_sym_per_frame,
        o.p_thr,
        o.iterations,
        o.mask_schedule,
        o.length_penalty,
    ) == (4, 0.5, None, 2, 0.9, 3, "espnet", 0.1)
    assert o.lang_dir is None and o.arpa is None


def test_searches_call_the_ops_through_their_modules(model, batch, monkeypatch):
    """Benchmarks and tests swap the ops module functions; the decoders must see the swap."""
    import asr_kd.ops as ops
    import asr_kd.ops.mask_ctc_beam as mcb

    calls = []

    def spy(real):
        return lambda *a, **kw: calls.append(real.__name__) or real(*a, **kw)

    monkeypatch.setattr(mcb, "mask_ctc_beam_step", spy(mcb.mask_ctc_beam_step))
    monkeypatch.setattr(ops, "ctc_prefix_beam_search", spy(ops.ctc_prefix_beam_search))
    x, x_lens = batch
    decode_batch(model, x, x_lens, "mask-ctc-beam", OPTS)
    decode_batch(model, x, x_lens, "ctc-prefix-beam", OPTS)
    assert "mask_ctc_beam_step" in calls and "ctc_prefix_beam_search" in calls


@torch.no_grad()
@pytest.mark.parametrize("keep_epsilon", [False, True])
def test_ctc_hlg_with_an_lm_uses_the_cached_determinised_hlg(model, batch, tmp_path, keep_epsilon):
    """ctc-hlg with opts.arpa: the words and scores of wfst_decode on the undeterminised
    H o L o G of build_hlg_from_lang_dir (a bigram KN LM: both G constructions are exact)."""
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldi_decoder")
    pytest.importorskip("kaldilm")
    from asr_kd.decoding.wfst import build_hlg_from_lang_dir, wfst_decode
    from asr_kd.lm.ngram import train_ngram, write_arpa

    lang = write_lang_dir(tmp_path / "lang")
    (lang / "words.txt").write_text((lang / "words.txt").read_text() + f"#0 {V}\n<s> {V + 1}\n</s> {V + 2}\n")
    arpa = lang / "G_2gram.arpa"
    write_arpa(train_ngram(["w1 w2 w3", "w2 w3", "w5 w1 w2", "w4", "w3 w3 w1"], 2, unk=None), arpa)
    x, x_lens = batch
    opts = SearchOptions(lang_dir=lang, arpa=arpa, search_beam=30.0, keep_epsilon=keep_epsilon)
    dec = prepare_decoding(model, "ctc-hlg", opts)
    assert dec.state.kind == "HLG" and dec.state.info.path.name == f"HLG_G_2gram{'_eps' if keep_epsilon else ''}.fst"
    got = dec.decode(x, x_lens)
    enc_out = model.encode(x, x_lens)
    lp = model.ctc(enc_out.out).log_softmax(-1)
    graph, _ = build_hlg_from_lang_dir(lang, arpa)
    want = wfst_decode(graph, lp, enc_out.out_lens, beam=30.0)
    assert got == [r.best for r in want] and sum(map(len, got)) > 0
    mine = wfst_decode(dec.state.graph, lp, enc_out.out_lens, beam=30.0)
    assert [r.scores[0] for r in mine] == pytest.approx([r.scores[0] for r in want], abs=1e-3)
    assert get_decoding_method("ctc-hlg").suffix(opts) == "ctc-hlg_G_lms-1" + ("_eps" if keep_epsilon else "")
