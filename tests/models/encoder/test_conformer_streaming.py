"""Chunked streaming through ConformerEncoder.streaming_forward equals the chunk-masked full forward."""

import pytest
import torch

from asr_kd.models.encoder import conformer_encoder, stream_encoder

F = 20


def _causal() -> torch.nn.Module:
    torch.manual_seed(0)
    enc = conformer_encoder(
        input_dim=F,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        conv_kernel=5,
        dropout=0.0,
        causal=True,
        subsampling_channels=8,
    )
    return enc.double().eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    x_lens = torch.tensor([71, 46, 30, 11])
    return torch.randn(4, 71, F, dtype=torch.float64), x_lens


def _assert_rows_equal(streamed, streamed_lens, full):
    assert streamed_lens.tolist() == full.out_lens.tolist()
    for r, n in enumerate(full.out_lens.tolist()):
        torch.testing.assert_close(streamed[r, :n], full.out[r, :n], atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "chunk_size,left_context,feed",
    [
        (1, 0, "chunk"),
        (1, 3, "chunk"),
        (2, 1, "chunk"),
        (3, -1, "chunk"),
        (4, 2, "chunk"),
        (5, 0, "chunk"),
        (8, -1, "chunk"),
        (2, 1, 1),  # one input frame per call
        (3, -1, 13),  # pieces that do not line up with chunks
        (4, 2, 37),  # several chunks per call
    ],
)
def test_streaming_equals_masked_full_forward(batch, chunk_size, left_context, feed):
    enc = _causal()
    x, x_lens = batch
    feed_frames = 4 * chunk_size if feed == "chunk" else feed
    full = enc(x, x_lens, chunk_size=chunk_size, left_context=left_context)
    out, out_lens = stream_encoder(
        enc, x, x_lens, feed_frames=feed_frames, chunk_size=chunk_size, left_context=left_context
    )
    _assert_rows_equal(out, out_lens, full)


def test_streaming_differs_from_full_context(batch):
    """Control: the equality above is not trivial; without the chunk mask the outputs differ."""
    enc = _causal()
    x, x_lens = batch
    full = enc(x, x_lens)
    out, out_lens = stream_encoder(enc, x, x_lens, feed_frames=8, chunk_size=2, left_context=1)
    assert not torch.allclose(out[0, :20], full.out[0, :20], atol=1e-3)


def test_float32_streaming_close(batch):
    enc = _causal().float()
    x, x_lens = batch
    x = x.float()
    full = enc(x, x_lens, chunk_size=4, left_context=2)
    out, out_lens = stream_encoder(enc, x, x_lens, feed_frames=16, chunk_size=4, left_context=2)
    assert out_lens.tolist() == full.out_lens.tolist()
    for r, n in enumerate(out_lens.tolist()):
        torch.testing.assert_close(out[r, :n], full.out[r, :n], atol=1e-5, rtol=1e-5)


def test_chunk_by_chunk_protocol_and_cache_sizes():
    enc = _causal()
    torch.manual_seed(2)
    c, l = 3, 2
    x = torch.randn(2, 4 * c * 5 + 3, F, dtype=torch.float64)
    x_lens = torch.tensor([x.size(1), x.size(1)])
    state = enc.init_state(2, chunk_size=c, left_context=l)
    # first call: 4c + 3 input frames give exactly one chunk
    out, n, state = enc.streaming_forward(x[:, : 4 * c + 3], torch.tensor([4 * c + 3] * 2), state)
    assert n.tolist() == [c, c] and out.shape == (2, c, 32)
    pos = 4 * c + 3
    while pos < x.size(1):
        out, n, state = enc.streaming_forward(x[:, pos : pos + 4 * c], torch.tensor([4 * c] * 2), state)
        assert n.tolist() == [c, c]
        pos += 4 * c
    # the attention cache holds at most left_context chunks; the conv cache kernel - 1 frames
    assert state.attn_cache[0][0].shape == (2, 4, l * c, 8)
    assert state.attn_cache_lens.tolist() == [l * c] * 2
    assert state.conv_cache[0].shape == (2, 32, 4)
    assert state.offset.tolist() == [5 * c] * 2
    full = enc(x, x_lens, chunk_size=c, left_context=l)
    torch.testing.assert_close(out, full.out[:, -c:], atol=1e-9, rtol=0)


def test_final_flush_and_errors():
    enc = _causal()
    x = torch.randn(1, 30, F, dtype=torch.float64)  # T' = 6
    state = enc.init_state(1, chunk_size=4, left_context=-1)
    out, n, state = enc.streaming_forward(x, torch.tensor([30]), state)
    assert n.item() == 4  # one whole chunk; frames 4, 5 wait for more input
    out, n, state = enc.streaming_forward(x[:, :0], torch.tensor([0]), state, final=True)
    assert n.item() == 2
    with pytest.raises(ValueError):
        enc.streaming_forward(x[:, :4], torch.tensor([4]), state)
    non_causal = conformer_encoder(input_dim=F, d_model=32, num_layers=1, num_heads=4, ffn_dim=64, conv_kernel=5)
    with pytest.raises(ValueError):
        non_causal.streaming_forward(x, torch.tensor([30]), non_causal.init_state(1, chunk_size=2))
    with pytest.raises(ValueError):
        enc.init_state(1, chunk_size=-1)
