"""The searches driven by the real heads (tiny, randomly initialised) of asr_kd.models.heads, on the
output of each tiny encoder (asr_kd.testing.encoders): exact against brute force where the search space
is small, and every registered decoding method on a model of each encoder against its direct call."""

import pytest
import torch
from decoding_bruteforce import all_sequences, brute_force_one_sym, ctc_sequence_probs, ref_greedy, write_token_lm
from lattice_reference import LATTICE_METHODS, lattice_method_reference, write_word_lm  # noqa: E402

from asr_kd.decoding import (
    attention_beam_search,
    attention_rescoring,
    best_paths,
    ctc_greedy_search,
    mask_ctc_beam_search,
    mask_ctc_easy_first,
    modified_beam_search,
    transducer_greedy_search,
)
from asr_kd.decoding.ctc import ctc_prefix_beam_search
from asr_kd.decoding.lm_fusion import TokenNgramLm
from asr_kd.decoding.search import SearchOptions, decode_batch, decode_nbest, get_decoding_method, list_decoding_methods
from asr_kd.models.asr_model import build_asr_model
from asr_kd.models.encoder import build_encoder
from asr_kd.testing.encoders import input_frames, layer_at_output_rate_reference, tiny_encoder_config

heads = pytest.importorskip("asr_kd.models.heads")

F = 10


@torch.no_grad()
def _enc(encoder_type, N=2, T=4, seed=0):
    """A tiny ``encoder_type`` encoder's output on random features: (N, T, D) frames, (N,) lengths
    [T, T - 1, ...], and D."""
    torch.manual_seed(seed)
    enc = build_encoder(tiny_encoder_config(encoder_type, F)).eval()
    x_lens = torch.tensor([input_frames(enc, T - n) for n in range(N)])
    g = torch.Generator().manual_seed(seed)
    out = enc(torch.randn(N, int(x_lens.max()), F, generator=g), x_lens)
    assert out.out_lens.tolist() == [T - n for n in range(N)] and out.out.size(1) == T
    return out.out, out.out_lens, enc.output_dim


@torch.no_grad()
def test_attention_decoder_beam_search_exact(encoder_type):
    enc, lens, D = _enc(encoder_type)
    torch.manual_seed(0)
    V, SOS = 5, 4  # 0 blank, 1..3 tokens, 4 sos/eos
    dec = heads.AttentionDecoder(V, D, num_layers=2, heads=2, d_ff=16, dropout=0.0).eval()
    ctc = heads.CtcHead(D, V).eval()
    ctc_lp = ctc.log_probs(enc)
    for w, ctc_in in [(0.0, None), (0.3, ctc_lp)]:
        res = attention_beam_search(
            dec,
            enc,
            lens,
            beam=64,
            sos=SOS,
            eos=SOS,
            max_len=3,
            ctc_log_probs=ctc_in,
            ctc_weight=w,
            pre_beam=V,
            nbest=5,
        )
        for n in range(2):
            L = int(lens[n])
            seqs = [list(s) for s in all_sequences((1, 2, 3), 3)]
            # teacher-forced scores of every sequence (the rescoring path)
            full = attention_rescoring(
                dec, enc[n : n + 1], lens[n : n + 1], [seqs], [[0.0] * len(seqs)], 0.0, sos=SOS, eos=SOS
            )[0]
            att = dict(zip(map(tuple, full.tokens), full.components["att"]))
            probs = ctc_sequence_probs(ctc_lp[n, :L].double())

            def total(s):
                if w == 0.0:
                    return att[tuple(s)]
                return (1 - w) * att[tuple(s)] + w * probs.get(tuple(s), float("-inf"))

            ref = sorted(((total(s), s) for s in seqs), key=lambda x: (-x[0], x[1]))[:5]
            assert res[n].tokens == [r[1] for r in ref]
            assert res[n].scores == pytest.approx([r[0] for r in ref], abs=1e-4)


class _TensorMemoryOnly:
    """The decoder without ``precompute_memory``: the search passes the memory tensor every step
    (the cross-attention K/V then live in the cache and are reordered with it)."""

    def __init__(self, dec):
        self.dec = dec

    def forward_one_step(self, memory, memory_mask, ys, cache):
        return self.dec.forward_one_step(memory, memory_mask, ys, cache)


class _Uncached:
    """Reference: every step is the teacher-forced forward over the whole prefix."""

    def __init__(self, dec):
        self.dec = dec

    def forward_one_step(self, memory, memory_mask, ys, cache):
        lens = memory_mask.reshape(memory.size(0), -1).sum(-1)
        return self.dec(memory, lens, ys)[:, -1].log_softmax(-1), None


@torch.no_grad()
@pytest.mark.parametrize("use_ctc", [False, True])
def test_attention_beam_search_cached_decoder_equals_uncached(use_ctc, encoder_type):
    V, SOS, N, T = 12, 11, 3, 9
    enc, _, d_enc = _enc(encoder_type, N=N, T=T, seed=4)
    enc = enc.double()
    torch.manual_seed(3)
    dec = heads.AttentionDecoder(V, 8, num_layers=2, heads=2, d_ff=16, dropout=0.0, d_memory=d_enc)
    dec = dec.double().eval()
    g = torch.Generator().manual_seed(4)
    lens = torch.tensor([T, 5, 2])
    enc[1, 5:] = 1e3  # padding must not matter
    enc[2, 2:] = -1e3
    ctc_lp = torch.randn(N, T, V, generator=g, dtype=torch.float64).log_softmax(-1) if use_ctc else None
    kw = dict(beam=4, sos=SOS, eos=SOS, ctc_log_probs=ctc_lp, ctc_weight=0.3, max_len=6, pre_beam=V)
    runs = [attention_beam_search(d, enc, lens, **kw) for d in (dec, _TensorMemoryOnly(dec), _Uncached(dec))]
    for res in runs[1:]:
        for a, b in zip(runs[0], res):
            assert a.tokens == b.tokens
            assert a.scores == pytest.approx(b.scores, abs=1e-9)
            assert a.components["att"] == pytest.approx(b.components["att"], abs=1e-9)


@torch.no_grad()
def test_attention_rescoring_of_the_ctc_nbest(encoder_type):
    enc, lens, D = _enc(encoder_type, T=6)
    torch.manual_seed(1)
    V, SOS, W = 6, 5, 0.5
    dec = heads.AttentionDecoder(V, D, num_layers=1, heads=2, d_ff=16, dropout=0.0).eval()
    ctc = heads.CtcHead(D, V).eval()
    nb = ctc_prefix_beam_search(ctc.log_probs(enc), lens, beam=4)
    res = attention_rescoring(dec, enc, lens, nb, ctc_weight=W, sos=SOS, eos=SOS)
    for n in range(2):
        assert sorted(map(tuple, res[n].tokens)) == sorted(map(tuple, nb[n].tokens))
        assert res[n].scores == sorted(res[n].scores, reverse=True)
        # each score: the teacher-forced log p_att(y, eos) + w * the CTC prefix-beam score (WeNet)
        ctc_score = dict(zip(map(tuple, nb[n].tokens), nb[n].components.get("ctc", nb[n].scores)))
        for toks, score in zip(res[n].tokens, res[n].scores):
            ys = torch.tensor([[SOS] + list(toks)])
            lp = dec(enc[n : n + 1], lens[n : n + 1], ys)[0].log_softmax(-1)
            att = sum(float(lp[j, y]) for j, y in enumerate(list(toks) + [SOS]))
            assert score == pytest.approx(att + W * ctc_score[tuple(toks)], abs=1e-4)


@torch.no_grad()
def test_transducer_heads(encoder_type):
    enc, lens, D = _enc(encoder_type, T=4)
    torch.manual_seed(2)
    V = 3
    pred = heads.StatelessPredictor(V, 6, context_size=2).eval()
    joiner = heads.Joiner(D, 6, 7, V).eval()
    res = modified_beam_search(pred, joiner, enc, lens, beam=200)
    greedy = transducer_greedy_search(pred, joiner, enc, lens, max_sym_per_frame=2)
    for n in range(2):
        L = int(lens[n])
        ref = brute_force_one_sym(pred, joiner, enc[n], L, V)
        assert tuple(res[n].best) == max(ref, key=ref.get)
        for toks, s in zip(res[n].tokens, res[n].scores):
            assert s == pytest.approx(ref[tuple(toks)], abs=1e-4)
        assert greedy[n] == ref_greedy(pred, joiner, enc[n], L, 2)


@torch.no_grad()
def test_mask_ctc_decoder(encoder_type):
    enc, lens, D = _enc(encoder_type, T=10)
    torch.manual_seed(3)
    V = 6
    mlm = heads.MaskCtcDecoder(V, D, num_layers=1, heads=2, d_ff=16, dropout=0.0).eval()
    ctc = heads.CtcHead(D, V).eval()
    lp = (3 * ctc(enc)).log_softmax(-1)
    greedy = ctc_greedy_search(lp, lens)
    out = mask_ctc_easy_first(lp, lens, mlm, enc, lens, p_thr=0.9, K=2, mask_id=mlm.mask_id)
    for n in range(2):
        assert len(out[n]) == len(greedy[n])
        assert all(0 < t < V for t in out[n])
    assert mask_ctc_easy_first(lp, lens, mlm, enc, lens, p_thr=0.0, mask_id=mlm.mask_id) == greedy


# ------------------------------------------------------------------ every method on a model of each encoder
V_MODEL = 8
BEAM = 3


def _write_lang_dir(path):
    """tokens t1..t7 (blank 0), one word per token: w<i> spelled t<i>."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokens.txt").write_text("<blk> 0\n" + "".join(f"t{i} {i}\n" for i in range(1, V_MODEL)))
    (path / "words.txt").write_text("<eps> 0\n" + "".join(f"w{i} {i}\n" for i in range(1, V_MODEL)))
    (path / "lexicon.txt").write_text("".join(f"w{i} t{i}\n" for i in range(1, V_MODEL)))
    write_token_lm(path)  # tokens_2gram.arpa, for modified-beam-lm
    write_word_lm(path, V_MODEL)  # words_2gram.arpa, the rescoring LM of the lattice methods
    return path


def _all_heads_model(encoder_type, x, x_lens, causal=False):
    torch.manual_seed(0)
    model = build_asr_model(
        {
            "vocab_size": V_MODEL,
            "encoder": {**tiny_encoder_config(encoder_type, F), "causal": causal},
            "ctc": {},
            "inter_ctc": {"layers": [1, 2]},
            "transducer": {"d_pred": 8, "d_joint": 8},
            "attention_decoder": {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0},
            "mask_ctc": {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0},
        }
    ).eval()
    with torch.no_grad():  # random layers barely vary over time: centre and scale the CTC heads' inputs
        enc = model.encode(x, x_lens)
        valid = enc.valid_mask()
        for head, h in [(model.ctc, enc.out), *((model.inter_ctc_head(k), enc.layer(k)) for k in (1, 2))]:
            h = h[valid]
            w = head.output.weight.mul_(2.0 / h.std(0).mean())
            head.output.bias.copy_(-(w @ h.mean(0)))
    return model


@torch.no_grad()
def _direct(method, model, enc_out, ctc_layer, lang_dir):
    """The search functions called by hand on the model's heads; inter-CTC log-probs from the reference
    resampling of layer ``ctc_layer`` to the output rate."""
    enc, lens = enc_out.out, enc_out.out_lens
    if ctc_layer is None:
        lp = model.ctc(enc).log_softmax(-1)
    else:
        k = ctc_layer
        layer_lens = enc_out.layer_lens[k - 1] if enc_out.layer_lens is not None else lens
        h = layer_at_output_rate_reference(
            enc_out.layer_outputs[k - 1],
            layer_lens,
            model.encoder.layer_info[k - 1].subsampling,
            model.encoder.subsampling_factor,
            enc.size(1),
        )
        lp = model.inter_ctc_head(k)(h).log_softmax(-1)
    t, mask_id = model.transducer, model.mask_ctc.mask_id
    if method == "ctc-greedy":
        return ctc_greedy_search(lp, lens)
    if method == "ctc-prefix-beam":
        return best_paths(ctc_prefix_beam_search(lp, lens, beam=BEAM))
    if method == "ctc-hlg":
        from asr_kd.decoding.wfst import build_hlg_from_lang_dir, wfst_decode

        graph, _ = build_hlg_from_lang_dir(lang_dir)
        return best_paths(wfst_decode(graph, lp, lens, beam=16.0))
    if method == "attention-beam":
        return best_paths(
            attention_beam_search(
                model.attention_decoder,
                enc,
                lens,
                beam=BEAM,
                sos=1,
                eos=1,
                ctc_log_probs=lp,
                ctc_weight=0.3,
                blank_id=0,
            )
        )
    if method == "attention-rescoring":
        return best_paths(
            attention_rescoring(
                model.attention_decoder,
                enc,
                lens,
                ctc_prefix_beam_search(lp, lens, beam=BEAM),
                ctc_weight=0.3,
                sos=1,
                eos=1,
            )
        )
    if method == "transducer-greedy":
        return transducer_greedy_search(t.predictor, t.joiner, enc, lens)
    if method == "modified-beam":
        return best_paths(modified_beam_search(t.predictor, t.joiner, enc, lens, beam=BEAM))
    if method == "streaming-greedy":  # enc_out: simulated streaming (the chunk-masked forward)
        return transducer_greedy_search(t.predictor, t.joiner, enc, lens)
    if method == "streaming-modified-beam":
        return best_paths(modified_beam_search(t.predictor, t.joiner, enc, lens, beam=BEAM))
    if method == "modified-beam-lm":
        lm = TokenNgramLm.from_files(lang_dir / "tokens_2gram.arpa", lang_dir / "tokens.txt")
        return best_paths(modified_beam_search(t.predictor, t.joiner, enc, lens, beam=BEAM, lm=lm, lm_scale=0.5))
    if method == "mask-ctc":
        return mask_ctc_easy_first(lp, lens, model.mask_ctc, enc, lens, p_thr=0.99, K=2, mask_id=mask_id)
    if method == "mask-ctc-beam":
        return best_paths(
            mask_ctc_beam_search(lp, lens, model.mask_ctc, enc, lens, beam=BEAM, p_thr=0.99, K=2, mask_id=mask_id)
        )
    if method in LATTICE_METHODS:
        return lattice_method_reference(method, model, enc, lens, lp, lang_dir)
    pytest.fail(f"registered decoding method {method!r} has no direct-call reference in this test")


@pytest.mark.parametrize("method", list_decoding_methods())
def test_every_method_decodes_a_model_of_each_encoder(method, encoder_type, tmp_path):
    """decode_batch / decode_nbest on a model of each encoder give the direct search on its heads,
    from the final CTC head and, for methods reading CTC, from the inter-CTC heads of layers 1 and 2
    (on the Zipformer, layer 1 runs at twice the output rate: its frames are averaged in pairs)."""
    m = get_decoding_method(method)
    if method == "ctc-hlg" or method in LATTICE_METHODS:
        pytest.importorskip("kaldifst")
        pytest.importorskip("kaldi_decoder")
        pytest.importorskip("kaldilm")
    g = torch.Generator().manual_seed(1)
    x_lens = torch.tensor([72, 53])
    x = torch.randn(2, 72, F, generator=g)
    model = _all_heads_model(encoder_type, x, x_lens, causal=m.from_features)  # streaming: a causal encoder
    lang_dir = _write_lang_dir(tmp_path / "lang")
    chunk = {"chunk_size": 2, "left_context": 1} if m.from_features else {}
    with torch.no_grad():
        enc_out = model.encode(x, x_lens, **chunk)
    uses_ctc = "ctc" in m.requires or method == "attention-beam"
    hyps = []
    for ctc_layer in (None, 1, 2) if uses_ctc else (None,):
        opts = SearchOptions(
            beam=BEAM,
            lang_dir=lang_dir,
            ctc_layer=ctc_layer,
            lm_arpa=lang_dir / "tokens_2gram.arpa",
            lm_scale=0.5,
            rescore_arpa=lang_dir / "words_2gram.arpa",
            **chunk,
        )
        want = _direct(method, model, enc_out, ctc_layer, lang_dir)
        got = decode_batch(model, x, x_lens, method, opts)
        assert got == want, ctc_layer
        assert len(got) == 2
        hyps.extend(got)
        if m.nbest:
            tokens, scores = decode_nbest(model, x, x_lens, method, opts, encoder_out=enc_out)
            assert [t[0] if t else [] for t in tokens] == want
            assert all(s == sorted(s, reverse=True) for s in scores)
    assert sum(map(len, hyps)) >= len(hyps), hyps  # not a comparison of (mostly) empty outputs
