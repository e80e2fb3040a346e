"""Chunk-by-chunk transducer decoding (asr_kd.decoding.streaming) equals simulated streaming (the
chunk-masked full forward, then the offline search) in tokens, for every streaming encoder type, several
chunk sizes / left contexts, ragged batches and feature pieces of odd sizes; start-up errors for
encoders and chunk settings that cannot stream; the not-trained-for-streaming warning's measurement."""

from __future__ import annotations

import logging
import math

import kaldialign
import pytest
import torch

from asr_kd.decoding.search import SearchOptions, decode_batch, decode_nbest, get_decoding_method, prepare_decoding
from asr_kd.decoding.streaming import (
    ChunkStats,
    StreamingTransducerDecoder,
    chunk_training,
    measure_streaming_mismatch,
    simulate_streaming,
    stream_decode,
    warn_if_not_trained_for_streaming,
)
from asr_kd.models.asr_model import build_asr_model
from asr_kd.models.encoder import MissingCapabilityError
from asr_kd.testing.encoders import tiny_encoder_config

F, V = 20, 12
X_LENS = [97, 61, 30, 9]  # 9 input frames: a single encoder frame


def _model(encoder_type: str, causal: bool = True):
    """A tiny random transducer whose joiner sees the encoder frames standardised (a random Zipformer's
    output barely varies in time; without this every frame would emit the same token)."""
    torch.manual_seed(0)
    cfg = {**tiny_encoder_config(encoder_type, input_dim=F), "causal": causal}
    m = build_asr_model({"vocab_size": V, "encoder": cfg, "transducer": {"d_pred": 8, "d_joint": 16}})
    m = m.double().eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        out = m.encoder(torch.randn(1, 200, F, generator=g, dtype=torch.float64), torch.tensor([200])).out[0]
        mu, sd = out.mean(0), out.std(0)
        j = m.transducer.joiner
        j.enc_proj.weight.mul_(3.0 / sd[None])
        j.enc_proj.bias.sub_(j.enc_proj.weight @ mu)
        j.output.weight.mul_(3.0)
    return m


@pytest.fixture(scope="module")
def models():
    return {}


def _get(models, encoder_type):
    if encoder_type not in models:
        models[encoder_type] = _model(encoder_type)
    return models[encoder_type]


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(len(X_LENS), max(X_LENS), F, generator=g, dtype=torch.float64), torch.tensor(X_LENS)


# the tiny Zipformer's slowest stack groups 4 frames at 50 Hz: chunk sizes are multiples of 2
SETTINGS = [(2, 0), (2, 1), (4, 2), (6, -1)]


@pytest.mark.parametrize("chunk_size,left_context", SETTINGS)
def test_chunked_greedy_equals_simulated_streaming(encoder_type, models, batch, chunk_size, left_context):
    m = _get(models, encoder_type)
    x, x_lens = batch
    want = simulate_streaming(m.encoder, m.transducer, x, x_lens, chunk_size=chunk_size, left_context=left_context)
    got = stream_decode(m.encoder, m.transducer, x, x_lens, chunk_size=chunk_size, left_context=left_context)
    assert got == want
    assert sum(map(len, got)) > 10 and len({t for h in got for t in h}) > 3  # not a trivial output


@pytest.mark.parametrize("chunk_size,left_context", SETTINGS[1:3])
def test_chunked_modified_beam_equals_simulated_streaming(encoder_type, models, batch, chunk_size, left_context):
    m = _get(models, encoder_type)
    x, x_lens = batch
    kw = dict(chunk_size=chunk_size, left_context=left_context, search="modified-beam", beam=3)
    want = simulate_streaming(m.encoder, m.transducer, x, x_lens, **kw)
    got = stream_decode(m.encoder, m.transducer, x, x_lens, **kw)
    for g, w in zip(got, want):
        assert g.tokens == w.tokens  # every hypothesis, in order: the beam was carried across chunks
        assert g.scores == pytest.approx(w.scores, abs=1e-9)
    assert any(len(r.tokens) > 1 for r in got)


def test_greedy_with_several_symbols_per_frame(encoder_type, models, batch):
    m = _get(models, encoder_type)
    x, x_lens = batch
    kw = dict(chunk_size=2, left_context=1, max_sym_per_frame=3)
    assert stream_decode(m.encoder, m.transducer, x, x_lens, **kw) == simulate_streaming(
        m.encoder, m.transducer, x, x_lens, **kw
    )


@pytest.mark.parametrize("feed_frames", [1, 7, 13, 50])
def test_feature_pieces_of_odd_sizes_give_the_same_tokens(encoder_type, models, batch, feed_frames):
    m = _get(models, encoder_type)
    x, x_lens = batch
    kw = dict(chunk_size=2, left_context=1, search="modified-beam", beam=2)
    want = [r.tokens for r in simulate_streaming(m.encoder, m.transducer, x, x_lens, **kw)]
    got = stream_decode(m.encoder, m.transducer, x, x_lens, feed_frames=feed_frames, **kw)
    assert [r.tokens for r in got] == want


def test_ragged_pieces_per_stream_and_a_separate_final_flush(encoder_type, models, batch):
    """Each call gives each stream a random number of frames (0 allowed); streams end at different calls,
    and the flush comes in an empty call after the last frames."""
    m = _get(models, encoder_type)
    x, x_lens = batch
    want = simulate_streaming(m.encoder, m.transducer, x, x_lens, chunk_size=4, left_context=1)
    dec = StreamingTransducerDecoder(m.encoder, m.transducer, x.size(0), chunk_size=4, left_context=1)
    g = torch.Generator().manual_seed(3)
    pos = [0] * x.size(0)
    partial_seen = [[] for _ in pos]
    while not bool(dec.finished.all()):
        take = [int(torch.randint(0, 12, (1,), generator=g)) for _ in pos]
        take = [0 if bool(dec.finished[r]) else min(t, X_LENS[r] - pos[r]) for r, t in enumerate(take)]
        width = max(take)
        piece = torch.zeros(x.size(0), width, F, dtype=x.dtype)
        for r, t in enumerate(take):
            piece[r, :t] = x[r, pos[r] : pos[r] + t]
            pos[r] += t
        # a stream whose frames are all in is flushed one call later, in a call of its own
        done = [pos[r] == X_LENS[r] and take[r] == 0 and not bool(dec.finished[r]) for r in range(len(pos))]
        dec.accept(piece, torch.tensor(take), final=torch.tensor(done))
        for r, h in enumerate(dec.partial()):
            assert h[: len(partial_seen[r])] == partial_seen[r]  # greedy partial results only grow
            partial_seen[r] = h
    assert dec.results() == want
    assert dec.num_frames.tolist() == m.encoder.subsampled_lengths(x_lens).tolist()


def test_streaming_differs_from_full_context(models, batch):
    """Control: the equalities above are not between two full-context decodings."""
    m = _get(models, "conformer")
    x, x_lens = batch
    full = simulate_streaming(m.encoder, m.transducer, x, x_lens, chunk_size=-1)
    assert stream_decode(m.encoder, m.transducer, x, x_lens, chunk_size=2, left_context=0) != full


def test_results_need_every_stream_finished(models, batch):
    m = _get(models, "conformer")
    x, x_lens = batch
    dec = StreamingTransducerDecoder(m.encoder, m.transducer, 2, chunk_size=2)
    dec.accept(x[:2, :40], torch.tensor([40, 40]), final=torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"streams \[1\] were not finished"):
        dec.results()
    with pytest.raises(ValueError, match="already finalised"):
        dec.accept(x[:2, 40:50], torch.tensor([10, 10]))
    with pytest.raises(ValueError, match="3 rows for a decoder of 2 streams"):
        dec.accept(x[:3, :4], torch.tensor([4, 4, 4]))


# ------------------------------------------------------------------ timing


def test_chunk_stats_summary_by_hand():
    st = ChunkStats()
    for secs, chunks in [(0.001, 0), (0.010, 1), (0.030, 2), (0.020, 1), (0.040, 1)]:
        st.add(secs, chunks, 1, 0.16)
    s = st.summary()
    lat = sorted([0.010, 0.015, 0.020, 0.040])  # per chunk; the buffering call has no chunk
    assert s["num_chunks"] == 5 and s["num_calls"] == 5
    assert s["chunk_ms_mean"] == pytest.approx(1000 * sum(lat) / 4, abs=1e-3)
    assert s["chunk_ms_p50"] == pytest.approx(1000 * (lat[1] + lat[2]) / 2, abs=1e-3)
    assert s["chunk_ms_p95"] == pytest.approx(1000 * (lat[2] + 0.85 * (lat[3] - lat[2])), abs=1e-3)
    assert s["compute_rtf"] == pytest.approx(0.101 / 0.8, abs=1e-5)


def test_stream_decode_records_one_chunk_per_call(models, batch):
    m = _get(models, "zipformer")
    x, x_lens = batch
    st = ChunkStats()
    stream_decode(m.encoder, m.transducer, x[:1], x_lens[:1], chunk_size=2, left_context=1, stats=st)
    assert st.audio_seconds == pytest.approx(X_LENS[0] * 0.01)
    t_out = int(m.encoder.subsampled_lengths(x_lens[:1]))
    assert sum(st.call_chunks) == math.ceil(t_out / 2)
    assert max(st.call_chunks) <= 2  # one chunk's features per call (the last call may flush two)
    assert len(st.call_seconds) == math.ceil(X_LENS[0] / 8) and all(s > 0 for s in st.call_seconds)


# ------------------------------------------------------------------ registry and start-up checks


def test_registry_methods_decode_features_chunk_by_chunk(models, batch):
    m = _get(models, "zipformer")
    x, x_lens = batch
    opts = SearchOptions(chunk_size=2, left_context=1, beam=3)
    want = simulate_streaming(m.encoder, m.transducer, x, x_lens, chunk_size=2, left_context=1)
    assert decode_batch(m, x, x_lens, "streaming-greedy", opts) == want
    beam = simulate_streaming(
        m.encoder, m.transducer, x, x_lens, chunk_size=2, left_context=1, search="modified-beam", beam=3
    )
    tokens, scores = decode_nbest(m, x, x_lens, "streaming-modified-beam", opts)
    assert tokens == [r.tokens for r in beam]
    assert [s for row in scores for s in row] == pytest.approx([s for r in beam for s in r.scores])
    prepared = prepare_decoding(m, "streaming-greedy", opts)
    prepared.decode(x, x_lens)
    assert prepared.state.summary()["num_chunks"] > 0  # the prepared state collects the timings
    assert (
        get_decoding_method("streaming-modified-beam").suffix(opts) == "streaming-modified-beam_beam-3_chunk-2_left-1"
    )
    assert (
        get_decoding_method("streaming-greedy").suffix(SearchOptions(chunk_size=4))
        == "streaming-greedy_chunk-4_left-all"
    )
    with pytest.raises(ValueError, match="chunk by chunk"):
        prepared.search(m.encode(x, x_lens))


def test_non_causal_model_is_refused_at_start_up(batch):
    m = _model("zipformer", causal=False)
    with pytest.raises(MissingCapabilityError, match="causal: false"):
        prepare_decoding(m, "streaming-greedy", SearchOptions(chunk_size=2))
    with pytest.raises(MissingCapabilityError, match="causal: false"):
        StreamingTransducerDecoder(m.encoder, m.transducer, 1, chunk_size=2)


@pytest.mark.parametrize(
    "kind,chunk_size,left_context,match",
    [
        ("zipformer", 1, 1, "must be a multiple of 2"),  # 2 frames at 50 Hz; the slowest stack groups 4
        ("zipformer", 3, 1, "must be a multiple of 2"),
        ("zipformer", -1, 1, "needs a chunk size > 0"),
        ("conformer", 0, 1, "needs a chunk size > 0"),
        ("conformer", 2, -3, "left context must be -1"),
    ],
)
def test_bad_chunk_settings_are_refused_at_start_up(models, kind, chunk_size, left_context, match):
    m = _get(models, kind)
    for method in ("streaming-greedy", "streaming-modified-beam"):
        with pytest.raises(ValueError, match=match):
            prepare_decoding(m, method, SearchOptions(chunk_size=chunk_size, left_context=left_context))


# ------------------------------------------------------------------ not trained for streaming


def test_chunk_training_reads_the_training_config():
    assert chunk_training(None) is None
    assert chunk_training({"training": {}}) is None
    assert chunk_training({"training": {"chunk": {"chunk_size": -1}}}) is None
    assert "chunk_size 4" in chunk_training({"training": {"chunk": {"chunk_size": 4, "left_context": 4}}})
    assert "dynamic" in chunk_training({"training": {"chunk": {"dynamic": True, "max_chunk": 16}}})


def test_mismatch_warning_states_the_measured_mismatch(models, batch, caplog):
    m = _get(models, "conformer")
    x, x_lens = batch
    with caplog.at_level(logging.INFO, logger="asr_kd.decoding.streaming"):
        got = warn_if_not_trained_for_streaming(m, {"training": {}}, x, x_lens, chunk_size=2, left_context=0)
    # the measurement by hand: token edit distance of streaming vs full-context greedy tokens
    full = simulate_streaming(m.encoder, m.transducer, x, x_lens, chunk_size=-1)
    stream = stream_decode(m.encoder, m.transducer, x, x_lens, chunk_size=2, left_context=0)
    errors = sum(kaldialign.edit_distance(f, s)["total"] for f, s in zip(full, stream))
    want = 100.0 * errors / sum(map(len, full))
    assert got.token_mismatch == pytest.approx(want) and want > 0
    assert got.utts_differ == sum(f != s for f, s in zip(full, stream)) and got.num_utts == len(X_LENS)
    with torch.no_grad():
        enc_full = m.encoder(x, x_lens)
        enc_chunk = m.encoder(x, x_lens, chunk_size=2, left_context=0)
    diff = [(enc_chunk.out[r, :n] - enc_full.out[r, :n]) for r, n in enumerate(enc_full.out_lens.tolist())]
    ref = [enc_full.out[r, :n] for r, n in enumerate(enc_full.out_lens.tolist())]
    rel = torch.cat(diff).norm() / torch.cat(ref).norm()
    assert got.encoder_rel_diff == pytest.approx(float(rel))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "not trained for streaming" in msg and f"{want:.1f}% token mismatch" in msg
    assert f"{got.utts_differ}/{len(X_LENS)} utterances differ" in msg

    caplog.clear()
    trained = {"training": {"chunk": {"chunk_size": 2, "left_context": 0}}}
    with caplog.at_level(logging.INFO, logger="asr_kd.decoding.streaming"):
        warn_if_not_trained_for_streaming(m, trained, x, x_lens, chunk_size=2, left_context=0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "trained with chunk_size 2" in caplog.text


def test_mismatch_is_zero_for_an_unlimited_chunk(models, batch):
    """Control of the measurement: one chunk covering every utterance is full context."""
    m = _get(models, "conformer")
    x, x_lens = batch
    got = measure_streaming_mismatch(m.encoder, m.transducer, x, x_lens, chunk_size=1000, left_context=-1)
    assert got.token_mismatch == 0.0 and got.utts_differ == 0 and got.encoder_rel_diff < 1e-12


def test_empty_and_too_short_utterances(encoder_type, models):
    """Streams of 0 and 5 input frames (no encoder frame) decode to what simulated streaming gives."""
    m = _get(models, encoder_type)
    g = torch.Generator().manual_seed(2)
    x, x_lens = torch.randn(3, 40, F, generator=g, dtype=torch.float64), torch.tensor([40, 5, 0])
    for search in ("greedy", "modified-beam"):
        kw = dict(chunk_size=2, left_context=1, search=search)
        got = stream_decode(m.encoder, m.transducer, x, x_lens, **kw)
        want = simulate_streaming(m.encoder, m.transducer, x, x_lens, **kw)
        if search == "greedy":
            assert got == want and got[2] == []
        else:
            assert [r.tokens for r in got] == [r.tokens for r in want] and got[2].tokens == [[]]
