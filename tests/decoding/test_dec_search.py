"""decode_batch: each named method on a real (tiny, random) AsrModel equals the direct search call."""

import pytest
import torch

from asr_kd.decoding import (
    attention_beam_search,
    attention_rescoring,
    best_paths,
    ctc_greedy_search,
    ctc_prefix_beam_search,
    mask_ctc_easy_first,
    modified_beam_search,
    transducer_greedy_search,
)
from asr_kd.decoding.mask_ctc import mask_ctc_beam_search
from asr_kd.decoding.search import METHODS, SearchOptions, check_method, decode_batch
from asr_kd.models.asr_model import build_asr_model

V = 12


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_asr_model(
        {
            "vocab_size": V,
            "sos_id": 1,
            "eos_id": 1,
            "encoder": {
                "type": "conformer",
                "input_dim": 20,
                "d_model": 16,
                "num_layers": 2,
                "num_heads": 2,
                "ffn_dim": 32,
                "conv_kernel": 3,
                "subsampling_channels": 4,
                "dropout": 0.0,
            },
            "ctc": {},
            "inter_ctc": {"layers": [1]},
            "transducer": {"d_pred": 8, "d_joint": 8},
            "attention_decoder": {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0},
            "mask_ctc": {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0},
        }
    ).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 40, 20, generator=g), torch.tensor([40, 31])


@torch.no_grad()
def test_every_method_matches_direct_call(model, batch):
    x, x_lens = batch
    enc_out = model.encode(x, x_lens)
    enc, lens = enc_out.out, enc_out.out_lens
    ctc_lp = model.ctc(enc).log_softmax(-1)
    t = model.transducer
    expected = {
        "ctc-greedy": ctc_greedy_search(ctc_lp, lens),
        "ctc-prefix-beam": best_paths(ctc_prefix_beam_search(ctc_lp, lens, beam=3)),
        "attention-beam": best_paths(
            attention_beam_search(
                model.attention_decoder, enc, lens, beam=3, sos=1, eos=1, ctc_log_probs=ctc_lp, ctc_weight=0.3
            )
        ),
        "attention-rescoring": best_paths(
            attention_rescoring(
                model.attention_decoder,
                enc,
                lens,
                ctc_prefix_beam_search(ctc_lp, lens, beam=3),
                ctc_weight=0.3,
                sos=1,
                eos=1,
            )
        ),
        "transducer-greedy": transducer_greedy_search(t.predictor, t.joiner, enc, lens),
        "modified-beam": best_paths(modified_beam_search(t.predictor, t.joiner, enc, lens, beam=3)),
        "mask-ctc": mask_ctc_easy_first(
            ctc_lp, lens, model.mask_ctc, enc, lens, p_thr=0.99, K=2, mask_id=model.mask_ctc.mask_id
        ),
        "mask-ctc-beam": best_paths(
            mask_ctc_beam_search(
                ctc_lp, lens, model.mask_ctc, enc, lens, beam=3, p_thr=0.99, K=2, mask_id=model.mask_ctc.mask_id
            )
        ),
    }
    # the methods that need a lang dir / an LM (ctc-hlg, modified-beam-lm, the lattice methods of
    # asr_kd.decoding.lattice_methods, ctc-decoding among them): tests/decoding/test_dec_registry.py
    lattice = {"1best", "ctc-decoding", "nbest", "nbest-rescoring", "whole-lattice-rescoring",
               "attention-decoder-rescoring-with-ngram"}  # fmt: skip
    streaming = {"streaming-greedy", "streaming-modified-beam"}  # causal encoders: test_streaming_decode.py
    assert set(expected) == set(METHODS) - {"ctc-hlg", "modified-beam-lm"} - lattice - streaming
    for method, want in expected.items():
        assert decode_batch(model, x, x_lens, method, SearchOptions(beam=3)) == want, method


@torch.no_grad()
def test_ctc_layer_decodes_the_inter_ctc_head(model, batch):
    x, x_lens = batch
    enc_out = model.encode(x, x_lens)
    lp = model.inter_ctc_head(1)(enc_out.layer_outputs[0]).log_softmax(-1)
    got = decode_batch(model, x, x_lens, "ctc-greedy", SearchOptions(ctc_layer=1))
    assert got == ctc_greedy_search(lp, enc_out.out_lens)


def test_check_method_names_what_is_missing(batch):
    ctc_only = build_asr_model(
        {
            "vocab_size": V,
            "encoder": {
                "type": "conformer",
                "input_dim": 20,
                "d_model": 16,
                "num_layers": 2,
                "num_heads": 2,
                "ffn_dim": 32,
                "conv_kernel": 3,
                "subsampling_channels": 4,
            },
            "ctc": {},
        }
    )
    with pytest.raises(ValueError, match="transducer"):
        check_method(ctc_only, "modified-beam")
    with pytest.raises(ValueError, match="unknown decoding method"):
        check_method(ctc_only, "viterbi")
    with pytest.raises(KeyError, match="inter-CTC"):
        check_method(ctc_only, "ctc-greedy", SearchOptions(ctc_layer=1))


@torch.no_grad()
def test_decode_nbest_is_the_search_nbest(model, batch):
    from asr_kd.decoding.search import NBEST_METHODS, decode_nbest

    x, x_lens = batch
    enc_out = model.encode(x, x_lens)
    ctc_lp = model.ctc(enc_out.out).log_softmax(-1)
    direct = ctc_prefix_beam_search(ctc_lp, enc_out.out_lens, beam=4)
    tokens, scores = decode_nbest(model, x, x_lens, "ctc-prefix-beam", SearchOptions(beam=4), nbest=3)
    assert len(tokens) == len(scores) == 2
    for r, toks, sc in zip(direct, tokens, scores):
        assert toks == [list(h) for h in r.tokens[:3]]
        assert sc == pytest.approx(list(r.scores[:3]))
        assert sc == sorted(sc, reverse=True)
    # passing the encoder output gives the same lists; the best path equals decode_batch's
    again = decode_nbest(model, x, x_lens, "ctc-prefix-beam", SearchOptions(beam=4), nbest=3, encoder_out=enc_out)
    assert again == (tokens, scores)
    # with an LM or a lang dir: test_dec_registry.py
    for method in (
        set(NBEST_METHODS)
        - {"modified-beam-lm", "nbest", "nbest-rescoring"}
        - {"attention-decoder-rescoring-with-ngram"}
        - {"streaming-modified-beam"}  # a causal encoder: test_dec_registry.py, test_streaming_decode.py
    ):
        toks, _ = decode_nbest(model, x, x_lens, method, SearchOptions(beam=3))
        assert [t[0] if t else [] for t in toks] == decode_batch(model, x, x_lens, method, SearchOptions(beam=3))
    with pytest.raises(ValueError, match="no n-best"):
        decode_nbest(model, x, x_lens, "ctc-greedy")


@torch.no_grad()
def test_mask_ctc_beam_nbest_and_schedule_option(model, batch):
    import copy

    from asr_kd.decoding.mask_ctc import ctc_greedy_with_confidence
    from asr_kd.decoding.search import decode_nbest

    class SpreadCtc(torch.nn.Module):
        """The random encoder barely varies over time: amplify its variation, never emit blank, so
        that each utterance has several low-confidence tokens."""

        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, enc):
            out = 30.0 * self.head(enc - enc.mean(dim=1, keepdim=True))
            out[..., 0] = -100.0
            return out

    model = copy.deepcopy(model)
    model.ctc = SpreadCtc(model.ctc)
    x, x_lens = batch
    enc_out = model.encode(x, x_lens)
    enc, lens = enc_out.out, enc_out.out_lens
    ctc_lp = model.ctc(enc).log_softmax(-1)
    _, confs = ctc_greedy_with_confidence(ctc_lp, lens)
    n_masks = [sum(c < 0.99 for c in cs) for cs in confs]
    assert min(n_masks) >= 4, n_masks  # several iterations of the espnet schedule below
    opts = SearchOptions(beam=4, iterations=3, mask_schedule="espnet")
    direct = mask_ctc_beam_search(
        ctc_lp, lens, model.mask_ctc, enc, lens, beam=4, K=3, schedule="espnet", mask_id=model.mask_ctc.mask_id
    )
    tokens, scores = decode_nbest(model, x, x_lens, "mask-ctc-beam", opts)
    assert tokens == [r.tokens for r in direct]
    assert scores == [r.scores for r in direct]
    assert all(len(t) > 1 for t in tokens)
    assert decode_batch(model, x, x_lens, "mask-ctc", opts) == mask_ctc_easy_first(
        ctc_lp, lens, model.mask_ctc, enc, lens, K=3, schedule="espnet", mask_id=model.mask_ctc.mask_id
    )


def test_decode_cli_suffix_for_mask_ctc_methods():
    from asr_kd.bin.decode import method_suffix

    assert (
        method_suffix("mask-ctc-beam", SearchOptions(beam=10, p_thr=0.99, iterations=2))
        == "mask-ctc-beam_beam-10_pthr-0.99_K-2"
    )
    assert (
        method_suffix("mask-ctc", SearchOptions(iterations=3, mask_schedule="espnet"))
        == "mask-ctc_pthr-0.99_K-3_sched-espnet"
    )
