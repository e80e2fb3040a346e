"""Chunk-by-chunk (true streaming) transducer decoding with caches, and the decoding methods
``streaming-greedy`` / ``streaming-modified-beam`` of the registry.

A :class:`StreamingTransducerDecoder` holds, for a batch of N streams, the causal encoder's streaming
state (``Encoder.init_state``: attention-key/value and convolution caches, the front end's frame
buffer) and the transducer search state (:class:`~asr_kd.decoding.transducer.GreedyStreams`: each
stream's last tokens and predictor output; :class:`~asr_kd.decoding.transducer.BeamStreams`: each
stream's hypotheses with their scores). Each :meth:`~StreamingTransducerDecoder.accept` takes the next
feature frames of every stream (any number, 0 for a stream with nothing new or already finished),
runs ``Encoder.streaming_forward`` and advances the search over the encoder frames that became
available; ``final`` flushes a stream's last partial chunk. The tokens equal *simulated streaming*
(:func:`simulate_streaming`: the whole utterance through ``encoder.forward(chunk_size=c,
left_context=l)``, i.e. the chunk masks, then the offline search), because the encoder's streaming path
reproduces the chunked forward and the searches are resumable.

Usage::

    from asr_kd.decoding.streaming import StreamingTransducerDecoder, stream_decode

    dec = StreamingTransducerDecoder(model.encoder, model.transducer, 1, chunk_size=4, left_context=4)
    for piece in feature_pieces:                 # (1, Tc, F) each, e.g. 16 frames = one 160 ms chunk
        dec.accept(piece, torch.tensor([piece.size(1)]))
        print(dec.partial())                     # tokens so far
    dec.accept(piece[:, :0], torch.tensor([0]), final=True)
    hyps = dec.results()                         # N token lists (greedy) or N NBest (modified beam)

    hyps = stream_decode(model.encoder, model.transducer, x, x_lens, chunk_size=4, left_context=4)

Units: ``chunk_size`` in encoder output frames (4 = 160 ms at 25 Hz), ``left_context`` in chunks (-1 =
all), feature pieces in input (10 ms) frames; one chunk needs ``encoder.subsampling_factor *
chunk_size`` of them (plus the front end's look-ahead before the first chunk).

Timing (:class:`ChunkStats`): the compute time of every ``accept`` call (encoder + search); per-chunk
latency = a call's time divided by the chunks it emitted (calls that emitted none only add to the
total), summarised as mean / p50 / p95 milliseconds, and the compute RTF = total time / audio seconds.

Start-up checks (:func:`check_streaming`): the encoder must stream (a causal encoder); the chunk size
and left context must suit its subsampling (``Encoder.check_chunk_size``). A model that streams but was
trained with full context decodes worse streaming than offline; :func:`warn_if_not_trained_for_streaming`
measures that mismatch on a few utterances and logs it as a warning.

Dimension legend (docs/DESIGN.md): N streams, T input frames, F feature bins, T' encoder frames,
D encoder dim, J joiner dim.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from asr_kd.decoding.common import NBest
from asr_kd.decoding.search import DecodingMethod, register_decoding_method
from asr_kd.decoding.transducer import BeamStreams, GreedyStreams, modified_beam_search, transducer_greedy_search

__all__ = [
    "SEARCHES",
    "ChunkStats",
    "StreamingMismatch",
    "StreamingTransducerDecoder",
    "check_streaming",
    "chunk_training",
    "measure_streaming_mismatch",
    "simulate_streaming",
    "stream_decode",
    "warn_if_not_trained_for_streaming",
]

log = logging.getLogger(__name__)

#: search names of :class:`StreamingTransducerDecoder` (``search=``)
SEARCHES = ("greedy", "modified-beam")


def check_streaming(encoder: Any, chunk_size: int, left_context: int, who: str = "streaming decoding") -> None:
    """Raise a clear error when ``encoder`` cannot stream with these settings.

    ``MissingCapabilityError`` (a ``ValueError``) for an encoder without the ``streaming`` capability
    (e.g. built with ``causal: false``); ``ValueError`` for ``chunk_size <= 0`` or a chunk size / left
    context the encoder's subsampling cannot use (``Encoder.check_chunk_size``).
    """
    has = getattr(encoder, "has", None)
    if has is None or not has("streaming"):
        causal = getattr(encoder, "causal", None)
        why = (
            "its encoder was built with causal: false (full-context convolutions), so it cannot run chunk by "
            "chunk; decode it offline (transducer-greedy / modified-beam) or train a causal model "
            "(model.encoder.causal: true, training.chunk)"
            if causal is False
            else "its encoder has no streaming state (no 'streaming' capability)"
        )
        from asr_kd.models.encoder.base import MissingCapabilityError  # noqa: PLC0415

        raise MissingCapabilityError(f"{who}: {type(encoder).__name__} cannot stream: {why}")
    if chunk_size is None or isinstance(chunk_size, bool) or int(chunk_size) <= 0:
        raise ValueError(
            f"{who} needs a chunk size > 0 in encoder frames (--chunk-size; e.g. 4 = 160 ms at "
            f"{1000 * getattr(encoder, 'subsampling_factor', 4) // 100} ms per frame), got {chunk_size}"
        )
    if left_context is None or int(left_context) < -1:
        raise ValueError(f"{who}: left context must be -1 (all) or >= 0 chunks, got {left_context}")
    check = getattr(encoder, "check_chunk_size", None)
    if check is not None:
        try:
            check(int(chunk_size), int(left_context))
        except ValueError as e:
            raise ValueError(f"{who}: chunk size {chunk_size} / left context {left_context}: {e}") from e


@dataclass
class ChunkStats:
    """Compute time of streaming ``accept`` calls (see the module docstring).

    Attributes:
        call_seconds: per call, its wall time (encoder + search).
        call_chunks: per call, the chunks it emitted (new encoder frames of the stream that got most,
            divided by ``chunk_size``, rounded up; 0 while the front end is still buffering).
        streams: per call, the streams in the batch.
        audio_seconds: input audio fed so far (all streams), from the feature frames.
    """

    call_seconds: list[float] = field(default_factory=list)
    call_chunks: list[int] = field(default_factory=list)
    streams: list[int] = field(default_factory=list)
    audio_seconds: float = 0.0

    def add(self, seconds: float, chunks: int, streams: int, audio_seconds: float) -> None:
        self.call_seconds.append(float(seconds))
        self.call_chunks.append(int(chunks))
        self.streams.append(int(streams))
        self.audio_seconds += float(audio_seconds)

    def chunk_latencies(self) -> list[float]:
        """Seconds per chunk of each call that emitted chunks (its time / its chunks)."""
        return [s / c for s, c in zip(self.call_seconds, self.call_chunks) if c > 0]

    def summary(self) -> dict[str, float]:
        """``chunk_ms_mean`` / ``chunk_ms_p50`` / ``chunk_ms_p95`` (per-chunk latency), ``num_chunks``,
        ``num_calls``, ``streams_mean`` (batch size per call), ``compute_s`` and ``compute_rtf``."""
        lat = sorted(self.chunk_latencies())
        total = sum(self.call_seconds)
        out = {
            "num_calls": len(self.call_seconds),
            "num_chunks": sum(self.call_chunks),
            "streams_mean": round(sum(self.streams) / max(len(self.streams), 1), 2),
            "compute_s": round(total, 4),
            "compute_rtf": round(total / self.audio_seconds, 5) if self.audio_seconds > 0 else math.nan,
        }
        if lat:
            out["chunk_ms_mean"] = round(1000 * sum(lat) / len(lat), 3)
            out["chunk_ms_p50"] = round(1000 * _percentile(lat, 50), 3)
            out["chunk_ms_p95"] = round(1000 * _percentile(lat, 95), 3)
        return out


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of an ascending list."""
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class StreamingTransducerDecoder:
    """Chunk-by-chunk transducer decoding of N streams (see the module docstring).

    Args:
        encoder: a streaming encoder (``causal=True``), in eval mode.
        transducer: the transducer head (``predictor``, ``joiner``; :class:`~asr_kd.models.heads.TransducerHead`).
        num_streams: N.
        chunk_size: encoder frames per chunk (> 0, accepted by the encoder's ``check_chunk_size``).
        left_context: visible chunks to the left (-1 = all).
        search: ``"greedy"`` or ``"modified-beam"`` (:data:`SEARCHES`).
        beam: modified beam search's beam (as :func:`~asr_kd.decoding.transducer.modified_beam_search`).
        max_sym_per_frame: greedy search's symbols per frame.
        blank_penalty, lm, lm_scale, cache: as in the offline searches (``lm`` only for modified beam).
        device: where the states live (default: the encoder's parameters').
        stats: a :class:`ChunkStats` to record the calls' times in (default: a new one, ``self.stats``).
        frame_shift: seconds per input frame (for the audio seconds of the RTF).
    """

    def __init__(
        self,
        encoder: Any,
        transducer: Any,
        num_streams: int,
        *,
        chunk_size: int,
        left_context: int = -1,
        search: str = "greedy",
        beam: int = 4,
        max_sym_per_frame: int = 1,
        blank_penalty: float = 0.0,
        lm: Any = None,
        lm_scale: float = 0.0,
        cache: bool = True,
        device: torch.device | str | None = None,
        stats: ChunkStats | None = None,
        frame_shift: float = 0.01,
    ):
        if search not in SEARCHES:
            raise ValueError(f"unknown streaming search {search!r}; choose from {SEARCHES}")
        check_streaming(encoder, chunk_size, left_context)
        if device is None:
            device = next(encoder.parameters()).device
        self.encoder, self.transducer = encoder, transducer
        self.num_streams, self.chunk_size, self.left_context = int(num_streams), int(chunk_size), int(left_context)
        self.search_name, self.frame_shift = search, float(frame_shift)
        self.state = encoder.init_state(num_streams, device, chunk_size=self.chunk_size, left_context=self.left_context)
        p, j = transducer.predictor, transducer.joiner
        if search == "greedy":
            if lm is not None:
                raise ValueError("LM shallow fusion needs search='modified-beam'")
            self.search: GreedyStreams | BeamStreams = GreedyStreams(
                p, j, num_streams, device, max_sym_per_frame=max_sym_per_frame, blank_penalty=blank_penalty
            )
        else:
            self.search = BeamStreams(
                p, j, num_streams, device, beam=beam, lm=lm, lm_scale=lm_scale, blank_penalty=blank_penalty, cache=cache
            )
        self.stats = stats if stats is not None else ChunkStats()
        #: (N,) encoder frames decoded so far per stream
        self.num_frames = torch.zeros(num_streams, dtype=torch.long)

    @property
    def finished(self) -> Tensor:
        """(N,) bool: streams that were flushed with ``final``."""
        return self.state.finished

    @torch.no_grad()
    def accept(self, x: Tensor, x_lens: Tensor, *, final: bool | Tensor = False) -> Tensor:
        """Feed the next feature frames of every stream and decode the encoder frames they complete.

        Args:
            x: (N, Tc, F) next frames (Tc may be 0); x_lens: (N,) valid frames per stream (0 for a
                stream with nothing new; finished streams must pass 0).
            final: bool or (N,) bool: these streams end with this call (their last partial chunk is
                decoded).

        Returns:
            (N,) new encoder frames decoded per stream in this call.
        """
        if x.size(0) != self.num_streams:
            raise ValueError(f"accept: {x.size(0)} rows for a decoder of {self.num_streams} streams")
        x_lens = x_lens.to(torch.long)
        if bool((x_lens < 0).any()) or bool((x_lens > x.size(1)).any()):
            raise ValueError(f"accept: x_lens {x_lens.tolist()} out of 0..{x.size(1)} (the piece's frames)")
        t0 = time.perf_counter()
        out, out_lens, self.state = self.encoder.streaming_forward(x, x_lens, self.state, final=final)
        if out.size(1) > 0 and bool((out_lens > 0).any()):
            self.search.advance(self.transducer.joiner.enc_proj(out), out_lens)  # (N, C, J)
        seconds = time.perf_counter() - t0
        out_lens = out_lens.cpu()
        self.num_frames += out_lens
        chunks = -(-int(out_lens.max()) // self.chunk_size) if self.num_streams else 0
        self.stats.add(seconds, chunks, self.num_streams, float(x_lens.sum()) * self.frame_shift)
        return out_lens

    def partial(self) -> list[list[int]]:
        """Each stream's best tokens so far."""
        if isinstance(self.search, GreedyStreams):
            return [list(h) for h in self.search.hyps]
        return self.search.best()

    def results(self) -> list[list[int]] | list[NBest]:
        """N token lists (greedy) or N :class:`NBest` (modified beam, best first). Raises ``ValueError``
        when a stream was not finished with ``final`` (its last partial chunk would be missing)."""
        if not bool(self.finished.all()):
            open_ = (~self.finished).nonzero().flatten().tolist()
            raise ValueError(f"streams {open_} were not finished: call accept(..., final=...) for them first")
        if isinstance(self.search, GreedyStreams):
            return [list(h) for h in self.search.hyps]
        return self.search.results()


@torch.no_grad()
def stream_decode(
    encoder: Any,
    transducer: Any,
    x: Tensor,
    x_lens: Tensor,
    *,
    chunk_size: int,
    left_context: int = -1,
    feed_frames: int | None = None,
    search: str = "greedy",
    stats: ChunkStats | None = None,
    **search_options: Any,
) -> list[list[int]] | list[NBest]:
    """Decode a batch as N live streams: feed ``x`` in pieces of ``feed_frames`` input frames to a
    :class:`StreamingTransducerDecoder`; each stream is finalised in the call holding its last frame.

    Args:
        x: (N, T, F) features; x_lens: (N,) valid frames.
        feed_frames: input frames per call (default ``encoder.subsampling_factor * chunk_size``: one chunk
            per call once the front end's look-ahead is buffered).
        search, stats, search_options: see :class:`StreamingTransducerDecoder`.

    Returns:
        what :meth:`StreamingTransducerDecoder.results` returns.
    """
    if feed_frames is None:
        feed_frames = int(getattr(encoder, "subsampling_factor", 4)) * int(chunk_size)
    if feed_frames < 1:
        raise ValueError(f"feed_frames must be >= 1, got {feed_frames}")
    n = x.size(0)
    dec = StreamingTransducerDecoder(
        encoder,
        transducer,
        n,
        chunk_size=chunk_size,
        left_context=left_context,
        search=search,
        stats=stats,
        device=x.device,
        **search_options,
    )
    x_lens = x_lens.to(x.device)
    for start in range(0, max(x.size(1), 1), feed_frames):
        piece = x[:, start : start + feed_frames]
        lens = (x_lens - start).clamp(0, piece.size(1))
        dec.accept(piece, lens, final=x_lens <= start + feed_frames)
    return dec.results()


@torch.no_grad()
def simulate_streaming(
    encoder: Any,
    transducer: Any,
    x: Tensor,
    x_lens: Tensor,
    *,
    chunk_size: int,
    left_context: int = -1,
    search: str = "greedy",
    beam: int = 4,
    max_sym_per_frame: int = 1,
    blank_penalty: float = 0.0,
    **beam_options: Any,
) -> list[list[int]] | list[NBest]:
    """Simulated streaming: the whole utterances through ``encoder(x, x_lens, chunk_size=chunk_size,
    left_context=left_context)`` (chunk masks, no caches), then the offline search. ``chunk_size=-1``:
    full-context decoding. The reference :func:`stream_decode` must equal (in tokens)."""
    if search not in SEARCHES:
        raise ValueError(f"unknown streaming search {search!r}; choose from {SEARCHES}")
    enc = encoder(x, x_lens, chunk_size=chunk_size, left_context=left_context)
    p, j = transducer.predictor, transducer.joiner
    if search == "greedy":
        return transducer_greedy_search(
            p, j, enc.out, enc.out_lens, max_sym_per_frame=max_sym_per_frame, blank_penalty=blank_penalty
        )
    return modified_beam_search(p, j, enc.out, enc.out_lens, beam, blank_penalty=blank_penalty, **beam_options)


# ----------------------------------------------------------------------------------------------
# a model trained without chunks: measure what streaming costs
# ----------------------------------------------------------------------------------------------


def chunk_training(config: Mapping[str, Any] | None) -> str | None:
    """How the model of an experiment ``config`` (as ``load_asr_model`` returns it) was trained for
    streaming: a description of its ``training.chunk`` section (fixed chunk or dynamic chunks), or
    None when it was trained with full context (no section, or a fixed ``chunk_size`` of -1)."""
    chunk = ((config or {}).get("training") or {}).get("chunk")
    if not chunk:
        return None
    if chunk.get("dynamic", False):
        return f"dynamic chunks up to {chunk.get('max_chunk', 32)} frames"
    size = int(chunk.get("chunk_size", -1))
    if size <= 0:
        return None
    return f"chunk_size {size}, left_context {chunk.get('left_context', -1)}"


@dataclass
class StreamingMismatch:
    """Streaming vs full-context decoding of the same utterances (greedy search).

    Attributes:
        num_utts: utterances compared.
        token_mismatch: token error rate (%) of the streaming tokens against the full-context ones
            (edit distance / full-context tokens).
        utts_differ: utterances whose token sequences differ.
        encoder_rel_diff: ``||streaming - full|| / ||full||`` of the encoder outputs over the valid frames.
    """

    num_utts: int
    token_mismatch: float
    utts_differ: int
    encoder_rel_diff: float


@torch.no_grad()
def measure_streaming_mismatch(
    encoder: Any,
    transducer: Any,
    x: Tensor,
    x_lens: Tensor,
    *,
    chunk_size: int,
    left_context: int = -1,
) -> StreamingMismatch:
    """Decode ``x`` (N, T, F) with full context and with streaming (``chunk_size`` / ``left_context``,
    computed as simulated streaming, which streaming equals) and compare (:class:`StreamingMismatch`)."""
    from asr_kd.decoding.wer import compute_wer  # noqa: PLC0415

    full = encoder(x, x_lens)
    chunked = encoder(x, x_lens, chunk_size=chunk_size, left_context=left_context)
    p, j = transducer.predictor, transducer.joiner
    ref = transducer_greedy_search(p, j, full.out, full.out_lens)
    hyp = transducer_greedy_search(p, j, chunked.out, chunked.out_lens)
    wer = compute_wer([(str(i), r, h) for i, (r, h) in enumerate(zip(ref, hyp))], compute_cer=False)
    mask = full.valid_mask().unsqueeze(-1)
    num = float(((chunked.out - full.out) * mask).norm())
    den = float((full.out * mask).norm())
    return StreamingMismatch(
        num_utts=len(ref),
        token_mismatch=wer.wer if math.isfinite(wer.wer) else (0.0 if not any(hyp) else 100.0),
        utts_differ=sum(r != h for r, h in zip(ref, hyp)),
        encoder_rel_diff=num / den if den > 0 else 0.0,
    )


def warn_if_not_trained_for_streaming(
    model: Any,
    config: Mapping[str, Any] | None,
    x: Tensor,
    x_lens: Tensor,
    *,
    chunk_size: int,
    left_context: int = -1,
    who: str = "streaming decoding",
) -> StreamingMismatch:
    """Measure the streaming / full-context mismatch on ``x`` (a few utterances) and log it: a WARNING
    when ``config`` says the model was trained with full context (:func:`chunk_training`), INFO
    otherwise. Returns the measurement."""
    m = measure_streaming_mismatch(
        model.encoder, model.transducer, x, x_lens, chunk_size=chunk_size, left_context=left_context
    )
    trained = chunk_training(config)
    what = (
        f"on {m.num_utts} utterances, streaming (chunk {chunk_size}, left context {left_context}) vs full-context "
        f"greedy tokens: {m.token_mismatch:.1f}% token mismatch, {m.utts_differ}/{m.num_utts} utterances differ; "
        f"encoder outputs differ by {100 * m.encoder_rel_diff:.1f}% (relative L2)"
    )
    if trained is None:
        log.warning(
            "%s: this model was not trained for streaming (no chunked training in its config: training.chunk "
            "absent or full context), so streaming decoding is expected to be worse than offline; %s",
            who,
            what,
        )
    else:
        log.info("%s: model trained with %s; %s", who, trained, what)
    return m


# ----------------------------------------------------------------------------------------------
# the registry's decoding methods
# ----------------------------------------------------------------------------------------------


class _StreamingMethod(DecodingMethod):
    """Shared part of the streaming methods: chunk-by-chunk decoding from the features
    (``opts.chunk_size``, ``opts.left_context``, ``opts.feed_frames``); the prepared state is the
    run's :class:`ChunkStats` (per-chunk latency, compute RTF)."""

    from_features = True
    search_name = "greedy"

    def check(self, model, opts):
        super().check(model, opts)
        check_streaming(model.encoder, opts.chunk_size, opts.left_context, who=f"decoding method {self.name!r}")
        if opts.feed_frames is not None and opts.feed_frames < 1:
            raise ValueError(f"decoding method {self.name!r}: feed_frames must be >= 1, got {opts.feed_frames}")

    def prepare(self, model, opts, resources):
        return ChunkStats()

    def _search_options(self, opts) -> dict[str, Any]:
        return {"blank_penalty": opts.blank_penalty}

    def decode_features(self, model, x, x_lens, opts, state):
        return stream_decode(
            model.encoder,
            model.transducer,
            x,
            x_lens,
            chunk_size=opts.chunk_size,
            left_context=opts.left_context,
            feed_frames=opts.feed_frames,
            search=self.search_name,
            stats=state,
            **self._search_options(opts),
        )

    def search(self, model, enc_out, opts, state):
        raise ValueError(
            f"decoding method {self.name!r} decodes features chunk by chunk (PreparedDecoding.decode(x, x_lens)); "
            "it cannot search a full-sequence encoder output"
        )


@register_decoding_method("streaming-greedy", requires=("transducer",))
class StreamingGreedy(_StreamingMethod):
    """Chunk-by-chunk greedy transducer search (``opts.chunk_size``, ``opts.left_context``,
    ``opts.max_sym_per_frame``, ``opts.blank_penalty``); tokens equal ``transducer-greedy`` on the
    chunk-masked encoder output."""

    suffix_options = ("chunk_size", "left_context", "feed_frames", "blank_penalty")
    search_name = "greedy"

    def _search_options(self, opts):
        return {"blank_penalty": opts.blank_penalty, "max_sym_per_frame": opts.max_sym_per_frame}


@register_decoding_method("streaming-modified-beam", nbest=True, requires=("transducer",), default_beam=4)
class StreamingModifiedBeam(_StreamingMethod):
    """Chunk-by-chunk modified beam search (``opts.beam``, chunk options, ``opts.blank_penalty``,
    ``opts.decoder_cache``); hypotheses and scores equal ``modified-beam`` on the chunk-masked encoder
    output (the hypotheses are carried across chunks)."""

    suffix_options = ("beam", "chunk_size", "left_context", "feed_frames", "blank_penalty")
    search_name = "modified-beam"

    def _search_options(self, opts):
        return {"blank_penalty": opts.blank_penalty, "beam": opts.beam, "cache": opts.decoder_cache}
