"""Modified beam search: the predictor cache (same results, fewer predictor rows), the blank penalty,
and n-gram shallow fusion (asr_kd.decoding.lm_fusion) against a brute-force fused score."""

import math

import pytest
import torch
from decoding_bruteforce import brute_force_one_sym
from test_dec_transducer import _setup

from asr_kd.decoding.lm_fusion import TokenNgramLm
from asr_kd.decoding.transducer import modified_beam_search, transducer_greedy_search
from asr_kd.lm.arpa import read_arpa
from asr_kd.lm.ngram import train_ngram, write_arpa
from asr_kd.lm.query import NgramQuery
from asr_kd.models.heads.transducer import TransducerHead

PIECES = ["<blk>", "▁a", "b", "▁c", "d"]


class Shifted(torch.nn.Module):
    """A joiner whose blank logit is lowered by ``shift`` (the reference of the blank penalty)."""

    def __init__(self, joiner, shift):
        super().__init__()
        self.j, self.shift = joiner, shift

    def enc_proj(self, x):
        return self.j.enc_proj(x)

    def pred_proj(self, x):
        return self.j.pred_proj(x)

    def forward(self, e, p):
        out = self.j(e, p).clone()
        out[:, 0] -= self.shift
        return out


def token_lm(tmp_path, order=3, seed=0, pieces=PIECES):
    g = torch.Generator().manual_seed(seed)
    sents = []
    for _ in range(200):
        n = int(torch.randint(1, 6, (1,), generator=g))
        ids = torch.randint(1, len(pieces), (n,), generator=g).tolist()
        if n > 1 and ids[0] % 2 == 0:  # a skewed distribution: "▁a" is often followed by "b"
            ids[1] = 2
        sents.append(" ".join(pieces[i] for i in ids))
    arpa = tmp_path / f"tok{order}.arpa"
    write_arpa(train_ngram(sents, order, unk="<unk>"), arpa)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{p} {i}\n" for i, p in enumerate(pieces)))
    return arpa, tokens


def _same(a, b, exact=True):
    assert [r.tokens for r in a] == [r.tokens for r in b]
    for x, y in zip(a, b):
        if exact:
            assert x.scores == y.scores
        else:
            assert x.scores == pytest.approx(y.scores, abs=1e-5)


@pytest.mark.parametrize("beam", [1, 3, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cache_gives_the_uncached_results_with_fewer_predictor_rows(seed, beam):
    pred, joiner, enc = _setup(V=5, N=3, T=7, seed=seed)
    lens = torch.tensor([7, 3, 5])
    s_on, s_off = {}, {}
    on = modified_beam_search(pred, joiner, enc, lens, beam, cache=True, stats=s_on)
    off = modified_beam_search(pred, joiner, enc, lens, beam, cache=False, stats=s_off)
    _same(on, off)
    assert s_on["predictor_rows"] < s_off["predictor_rows"]
    assert s_on["predictor_calls"] <= s_off["predictor_calls"] == 7  # one batched call per frame at most
    # uncached: one row per hypothesis per frame
    if beam == 1:
        assert s_off["predictor_rows"] == int(lens.sum())


def test_cache_with_real_heads():
    torch.manual_seed(0)
    head = TransducerHead(6, 7, d_pred=8, d_joint=8, context_size=2).double()
    enc = torch.randn(2, 9, 6, dtype=torch.float64)
    lens = torch.tensor([9, 6])
    s_on, s_off = {}, {}
    on = modified_beam_search(head.predictor, head.joiner, enc, lens, 4, cache=True, stats=s_on)
    off = modified_beam_search(head.predictor, head.joiner, enc, lens, 4, cache=False, stats=s_off)
    _same(on, off, exact=False)
    assert s_on["predictor_rows"] < s_off["predictor_rows"]


@pytest.mark.parametrize("penalty", [0.7, -0.5])
def test_blank_penalty_is_a_shifted_blank_logit(penalty):
    pred, joiner, enc = _setup(V=4, N=2, T=6, seed=4)
    lens = torch.tensor([6, 4])
    ref_j = Shifted(joiner, penalty)
    _same(
        modified_beam_search(pred, joiner, enc, lens, 3, blank_penalty=penalty),
        modified_beam_search(pred, ref_j, enc, lens, 3),
    )
    got = transducer_greedy_search(pred, joiner, enc, lens, 2, blank_penalty=penalty)
    assert got == transducer_greedy_search(pred, ref_j, enc, lens, 2)
    plain = transducer_greedy_search(pred, joiner, enc, lens, 2)
    if penalty > 0:
        assert sum(map(len, got)) >= sum(map(len, plain))


def test_lm_scale_zero_is_the_plain_search(tmp_path):
    arpa, tokens = token_lm(tmp_path)
    lm = TokenNgramLm.from_files(arpa, tokens)
    pred, joiner, enc = _setup(V=5, N=3, T=6, seed=5)
    lens = torch.tensor([6, 4, 5])
    _same(
        modified_beam_search(pred, joiner, enc, lens, 4, lm=lm, lm_scale=0.0),
        modified_beam_search(pred, joiner, enc, lens, 4),
    )


@pytest.mark.parametrize("lm_scale", [0.5, 1.5])
@pytest.mark.parametrize("order", [2, 3])
def test_fusion_with_a_large_beam_is_the_brute_force_fused_score(tmp_path, order, lm_scale):
    arpa, tokens = token_lm(tmp_path, order=order, seed=order)
    lm = TokenNgramLm.from_files(arpa, tokens)
    ref_lm = read_arpa(arpa)  # the independent scorer: ArpaLM.score on the piece strings
    V, T = 5, 4
    pred, joiner, enc = _setup(V=V, N=2, T=T, seed=order)
    lens = torch.tensor([4, 3])
    res = modified_beam_search(pred, joiner, enc, lens, beam=10_000, lm=lm, lm_scale=lm_scale)
    for n in range(2):
        am = brute_force_one_sym(pred, joiner, enc[n], int(lens[n]), V)

        def lm_ln(y):
            return ref_lm.score([PIECES[v] for v in y]) * math.log(10)

        fused = {y: a + lm_scale * lm_ln(y) for y, a in am.items()}
        assert len(res[n]) == len(fused)
        for toks, s, lm_lp in zip(res[n].tokens, res[n].scores, res[n].components["lm"]):
            assert s == pytest.approx(fused[tuple(toks)], abs=1e-6)
            assert lm_lp == pytest.approx(lm_ln(tuple(toks)), abs=1e-6)
        assert tuple(res[n].best) == max(fused, key=fused.get)
        assert res[n].scores == sorted(res[n].scores, reverse=True)


def test_fusion_small_beam_scores_and_preference(tmp_path):
    arpa, tokens = token_lm(tmp_path, order=3, seed=9)
    lm = TokenNgramLm.from_files(arpa, tokens)
    ref_lm = read_arpa(arpa)
    pred, joiner, enc = _setup(V=5, N=2, T=8, seed=9)
    lens = torch.tensor([8, 6])
    plain = modified_beam_search(pred, joiner, enc, lens, 3)
    fused = modified_beam_search(pred, joiner, enc, lens, 3, lm=lm, lm_scale=2.0)
    for p, f in zip(plain, fused):
        lm_ln = [ref_lm.score([PIECES[v] for v in y]) * math.log(10) for y in f.tokens]
        assert f.components["lm"] == pytest.approx(lm_ln, abs=1e-6)
        plain_lm = ref_lm.score([PIECES[v] for v in p.best]) * math.log(10)
        assert f.components["lm"][0] >= plain_lm - 1e-9  # the LM pulls towards likelier text
    assert any(p.best != f.best for p, f in zip(plain, fused))


def test_word_level_lm_is_refused(tmp_path):
    arpa = tmp_path / "words.arpa"
    write_arpa(train_ngram(["THE CAT", "A DOG", "THE DOG"], 2), arpa)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{p} {i}\n" for i, p in enumerate(PIECES)))
    with pytest.raises(ValueError, match="token-level ARPA"):
        TokenNgramLm.from_files(arpa, tokens)


def test_lm_vocab_must_match_the_model(tmp_path):
    arpa, tokens = token_lm(tmp_path)
    lm = TokenNgramLm(NgramQuery.from_arpa(arpa), PIECES + ["e"])
    pred, joiner, enc = _setup(V=5, N=1, T=3)
    with pytest.raises(ValueError, match="6 tokens, the model's joiner 5"):
        modified_beam_search(pred, joiner, enc, torch.tensor([3]), 2, lm=lm, lm_scale=0.5)


def test_registered_method_needs_an_lm_and_a_matching_token_table(tmp_path):
    from asr_kd.decoding.search import SearchOptions, prepare_decoding
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.testing.encoders import tiny_encoder_config

    model = build_asr_model(
        {"vocab_size": 5, "encoder": tiny_encoder_config("conformer", 8), "transducer": {"d_pred": 8, "d_joint": 8}}
    ).eval()
    with pytest.raises(ValueError, match="needs a token-level ARPA"):
        prepare_decoding(model, "modified-beam-lm", SearchOptions(lang_dir=tmp_path))
    arpa, tokens = token_lm(tmp_path)
    prepared = prepare_decoding(model, "modified-beam-lm", SearchOptions(lang_dir=tmp_path, lm_arpa=arpa))
    assert isinstance(prepared.state, TokenNgramLm) and prepared.state.vocab_size == 5
    tokens.write_text("".join(f"{p} {i}\n" for i, p in enumerate([*PIECES, "e"])))
    with pytest.raises(ValueError, match="the model has 5 tokens but the LM's token table"):
        prepare_decoding(model, "modified-beam-lm", SearchOptions(lang_dir=tmp_path, lm_arpa=arpa))


@pytest.mark.parametrize("unk", ["<unk>", None])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_lm_rows_are_the_query_scores(tmp_path, order, unk):
    g = torch.Generator().manual_seed(order)
    pieces = [*PIECES, "e", "▁f", "<sos/eos>"]  # "<sos/eos>" is not in the LM: the unknown word / OOV
    sents = [" ".join(pieces[i] for i in torch.randint(1, 7, (4,), generator=g).tolist()) for _ in range(60)]
    arpa = tmp_path / "lm.arpa"
    write_arpa(train_ngram(sents, order, unk=unk), arpa)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{p} {i}\n" for i, p in enumerate(pieces)))
    lm = TokenNgramLm.from_files(arpa, tokens)
    q = NgramQuery.from_arpa(arpa)
    states = {lm.begin_state(), ()}
    for s in sents[:20]:
        st = lm.begin_state()
        for w in s.split():
            st = q.score(st, w)[1]
            states.add(st)
    for st in states:
        row = lm.logprobs(st)
        want = [0.0] + [q.score(st, p)[0] * math.log(10) for p in pieces[1:]]
        assert row.tolist() == pytest.approx(want, abs=1e-9), st
