"""Rel-pos attention: relative shift, masking, key/value cache; mask helpers and chunk sampling."""

import random

import torch

from asr_kd.models.encoder.attention import RelPositionMultiHeadAttention, rel_positional_encoding, rel_shift
from asr_kd.models.encoder.masks import chunk_attention_mask, lengths_to_mask, sample_chunk_size, sample_left_context


def test_rel_shift_matches_naive_indexing():
    tq, tk = 5, 8
    r = tq + tk - 1
    x = torch.randn(2, 3, tq, r)
    got = rel_shift(x, tk)
    for i in range(tq):
        for j in range(tk):
            dist = tk - tq + i - j  # query i sits at key slot tk - tq + i
            col = tk - 1 - dist  # column c holds distance tk - 1 - c
            torch.testing.assert_close(got[:, :, i, j], x[:, :, i, col])


def test_rel_positional_encoding_rows_are_distances():
    pe = rel_positional_encoding(3, 5, 8)
    assert pe.shape == (7, 8)
    ref = rel_positional_encoding(1, 1, 8)  # distance 0 only
    torch.testing.assert_close(pe[4], ref[0])  # row c = distance k_len - 1 - c = 0 at c = 4
    torch.testing.assert_close(pe[4 - 2], rel_positional_encoding(1, 3, 8)[0])  # distance 2


def test_chunk_mask_pattern():
    m = chunk_attention_mask(6, chunk_size=2, left_context=1)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)
    assert chunk_attention_mask(4, -1).all()
    assert torch.equal(chunk_attention_mask(4, 1, -1), torch.ones(4, 4).tril().bool())
    assert torch.equal(
        lengths_to_mask(torch.tensor([2, 0, 3]), 3), torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    )


def test_weights_sum_to_one_and_vanish_on_blocked_keys():
    torch.manual_seed(0)
    mha = RelPositionMultiHeadAttention(16, 4).eval()
    t = 7
    x = torch.randn(2, t, 16)
    valid = lengths_to_mask(torch.tensor([7, 4]), t)
    mask = valid.unsqueeze(1) & chunk_attention_mask(t, 3, 0).unsqueeze(0)
    res = mha(x, rel_positional_encoding(t, t, 16), mask, need_qkv=True)
    assert res.out.shape == (2, t, 16)
    assert res.weights.shape == (2, 4, t, t)
    assert all(z.shape == (2, 4, t, 4) for z in res.qkv)
    blocked = ~mask.unsqueeze(1).expand_as(res.weights)
    assert torch.all(res.weights[blocked] == 0)
    # rows with an allowed key sum to 1 (every valid query allows itself); rows with none are all 0
    has_key = mask.any(-1).unsqueeze(1).expand(2, 4, t)
    assert has_key[valid.unsqueeze(1).expand(2, 4, t)].all()
    torch.testing.assert_close(res.weights.sum(-1), has_key.float())
    assert not has_key[1, :, 6].any()  # padded frame 6 of row 1 sits in a chunk of padding only


def test_kv_cache_equals_attention_over_the_whole_sequence():
    torch.manual_seed(0)
    mha = RelPositionMultiHeadAttention(16, 2).double().eval()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full = mha(x, rel_positional_encoding(9, 9, 16, dtype=torch.float64))
    first = mha(x[:, :5], rel_positional_encoding(5, 5, 16, dtype=torch.float64))
    rest = mha(x[:, 5:], rel_positional_encoding(4, 9, 16, dtype=torch.float64), cache=first.kv)
    torch.testing.assert_close(rest.out, full.out[:, 5:])
    torch.testing.assert_close(rest.weights, full.weights[:, :, 5:])


def test_fully_masked_rows_give_zero_weights_and_finite_grads():
    mha = RelPositionMultiHeadAttention(8, 2)
    x = torch.randn(1, 3, 8, requires_grad=True)
    mask = torch.tensor([[[1, 0, 0], [0, 0, 0], [1, 1, 0]]], dtype=torch.bool)
    res = mha(x, rel_positional_encoding(3, 3, 8), mask)
    assert torch.all(res.weights[0, :, 1] == 0)
    res.out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_dynamic_chunk_sampling():
    rng = random.Random(0)
    draws = [sample_chunk_size(8, rng) for _ in range(2000)]
    full = sum(d == -1 for d in draws) / len(draws)
    assert 0.45 < full < 0.55
    assert set(d for d in draws if d != -1) == set(range(1, 9))
    assert all(sample_chunk_size(8, random.Random(1), full_context_prob=0.0) > 0 for _ in range(10))
    lefts = [sample_left_context(3, rng) for _ in range(500)]
    assert set(lefts) == {-1, 0, 1, 2, 3}
    # reproducible given the rng
    assert [sample_chunk_size(16, random.Random(7)) for _ in range(3)] == [sample_chunk_size(16, random.Random(7))] * 3
