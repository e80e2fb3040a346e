"""Chunk / dynamic chunk training from the config (training.chunk) reaching the encoder, on every encoder
type: only chunk sizes the encoder can use are drawn, and others fail at start-up naming the field."""

from __future__ import annotations

import random

import pytest
import torch

from asr_kd.models.encoder import Encoder, EncoderOutput, build_encoder
from asr_kd.testing.encoders import tiny_encoder_config, tiny_encoder_types
from asr_kd.training import LossOutput, Trainer, TrainerConfig, build_optimizer, seed_everything
from asr_kd.training.asr_task import AsrLossFn, ChunkConfig


# ------------------------------------------------------------------------------------------ config
def test_unknown_keys_are_rejected_naming_the_known_ones():
    with pytest.raises(ValueError) as e:
        ChunkConfig.from_dict({"dynamic": True, "max_chunks": 16})
    msg = str(e.value)
    assert "'max_chunks'" in msg and "training.chunk" in msg
    assert all(k in msg for k in ("dynamic", "chunk_size", "left_context", "max_chunk", "full_context_prob"))
    assert "chunk_multiple" not in msg  # set from the encoder, not a config key
    with pytest.raises(ValueError, match="unknown key 'chunk_multiple'"):
        ChunkConfig.from_dict({"dynamic": True, "chunk_multiple": 2})


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"dynamic": True, "chunk_size": 8}, "with dynamic: true set max_chunk"),
        ({"max_chunk": 8}, "only apply with dynamic: true"),
        ({"dynamic": "yes"}, "true or false"),
        ({"chunk_size": 0}, "-1 .full context. or >= 1"),
        ({"dynamic": True, "max_chunk": 0}, "max_chunk must be an integer >= 1"),
        ({"dynamic": True, "full_context_prob": 1.5}, "probability"),
        ({"dynamic": True, "left_context": 2, "max_left_chunks": 3}, "not both"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_invalid_chunk_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        ChunkConfig.from_dict(cfg)


def test_dynamic_sampling_is_reproducible_and_uses_the_mask_samplers():
    from asr_kd.models.encoder.masks import sample_chunk_size, sample_left_context

    cfg = ChunkConfig.from_dict({"dynamic": True, "max_chunk": 4, "max_left_chunks": 2}, seed=3)
    assert cfg.seed == 3
    draws = [cfg.sample(s) for s in range(400)]
    assert draws == [cfg.sample(s) for s in range(400)]  # a pure function of (seed, rank, step)
    assert draws != [cfg.sample(s, rank=1) for s in range(400)]
    assert draws != [ChunkConfig(dynamic=True, max_chunk=4, max_left_chunks=2, seed=4).sample(s) for s in range(400)]
    chunks = [d["chunk_size"] for d in draws]
    assert set(chunks) == {-1, 1, 2, 3, 4} and 0.4 < chunks.count(-1) / 400 < 0.6
    assert {d["left_context"] for d in draws if d["chunk_size"] > 0} == {-1, 0, 1, 2}
    assert all(d["left_context"] == -1 for d in draws if d["chunk_size"] < 0)
    # the draw is masks.sample_chunk_size / sample_left_context on an RNG seeded by (seed, rank, step)
    rng = random.Random("asr_kd.chunk:3:0:17")
    c = sample_chunk_size(4, rng, full_context_prob=0.5)
    expected = {"chunk_size": c, "left_context": sample_left_context(2, rng, unlimited_prob=0.5) if c > 0 else -1}
    assert cfg.sample(17) == expected
    assert cfg.eval_kwargs() == {"chunk_size": -1, "left_context": -1}
    fixed = ChunkConfig.from_dict({"chunk_size": 8, "left_context": 2})
    assert fixed.sample(5) == fixed.eval_kwargs() == {"chunk_size": 8, "left_context": 2}


# ------------------------------------------------------------------------------------------ the loop
V, F = 12, 8


def tiny_asr_model(encoder_type="conformer"):
    from asr_kd.models.asr_model import build_asr_model

    torch.manual_seed(0)
    return build_asr_model({"vocab_size": V, "encoder": tiny_encoder_config(encoder_type, F), "ctc": {}})


def batches(n=4):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        lens = torch.tensor([48, 40])
        out.append(
            {
                "inputs": torch.randn(2, 48, F, generator=g),
                "feature_lens": lens,
                "supervisions": {"tokens": [[1, 2, 3], [4, 5]], "cut_id": [f"c{i}a", f"c{i}b"]},
            }
        )
    return out


class EncoderSpy:
    def __init__(self, model):
        self.calls = []
        model.encoder.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append(
            {
                "chunk_size": kwargs.get("chunk_size"),
                "left_context": kwargs.get("left_context"),
                "training": module.training,
            }
        )


def make(exp_dir, loss_fn, max_steps, valid=False, encoder_type="conformer"):
    seed_everything(0)
    model = tiny_asr_model(encoder_type)
    spy = EncoderSpy(model)
    opt = build_optimizer(model.named_parameters(), {"name": "adamw", "lr": 1e-3})
    cfg = TrainerConfig(
        max_steps=max_steps,
        max_epochs=None,
        log_interval=0,
        valid_interval=0,
        ckpt_interval=0,
        tensorboard=False,
        progress_bar=False,
    )
    t = Trainer(model, opt, loss_fn, batches(), valid_dl=batches(1) if valid else None, exp_dir=exp_dir, cfg=cfg)
    return t, spy


def test_dynamic_chunks_reach_the_encoder_and_resume_exactly(tmp_path, encoder_type):
    chunk = ChunkConfig(dynamic=True, max_chunk=5, max_left_chunks=2, seed=5)
    # the loss function is not checked against the model here: its first call binds the encoder's sizes
    straight, spy = make(
        tmp_path / "a", AsrLossFn(normalize="frames", chunk=chunk), max_steps=7, valid=True, encoder_type=encoder_type
    )
    straight.fit()
    bound = chunk.for_encoder(straight.model.encoder)
    assert straight.loss_fn.chunk == bound
    train_calls = [c for c in spy.calls if c["training"]]
    drawn = [{k: c[k] for k in ("chunk_size", "left_context")} for c in train_calls]
    assert drawn == [bound.sample(s) for s in range(7)]
    assert len({c["chunk_size"] for c in train_calls}) > 1
    assert all(c["chunk_size"] % bound.chunk_multiple == 0 for c in train_calls if c["chunk_size"] > 0)
    valid_calls = [c for c in spy.calls if not c["training"]]
    assert valid_calls and all(c["chunk_size"] == -1 and c["left_context"] == -1 for c in valid_calls)

    first, _ = make(tmp_path / "b", AsrLossFn(normalize="frames", chunk=chunk), max_steps=3, encoder_type=encoder_type)
    first.fit()
    second, spy2 = make(
        tmp_path / "b", AsrLossFn(normalize="frames", chunk=chunk), max_steps=7, encoder_type=encoder_type
    )
    assert second.resume()
    second.fit()
    assert [c for c in spy2.calls if c["training"]] == train_calls[3:]
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k


def test_fixed_chunk_and_config_mapping(tmp_path):
    loss = AsrLossFn(normalize="frames", chunk={"chunk_size": 4, "left_context": 1})
    t, spy = make(None, loss, max_steps=2, valid=True)
    t.fit()
    t.validate()
    assert {(c["chunk_size"], c["left_context"]) for c in spy.calls} == {(4, 1)}
    with pytest.raises(ValueError, match="both"):
        AsrLossFn(chunk={"chunk_size": 4}, model_kwargs={"chunk_size": 2})
    t, spy = make(None, AsrLossFn(normalize="frames"), max_steps=1)  # no chunk config: the model's defaults
    t.fit()
    assert spy.calls[0]["chunk_size"] == -1


class ReadsModelKwargs(AsrLossFn):
    """Like the KD loss: calls the model with ``self.model_kwargs`` instead of the step's draw."""

    def __call__(self, model, batch, step):
        x, x_lens, tokens, _ = self.unpack(batch)
        losses = model(x, x_lens, tokens, **self.model_kwargs)
        return LossOutput(loss=losses["ctc"] / losses["num_frames"], num_frames=float(losses["num_frames"]))


def test_subclasses_reading_model_kwargs_get_the_step_draw(tmp_path):
    chunk = ChunkConfig(dynamic=True, max_chunk=3, seed=9)
    loss = ReadsModelKwargs(chunk=chunk)
    t, spy = make(None, loss, max_steps=6, valid=True)
    t.fit()
    train = [(c["chunk_size"], c["left_context"]) for c in spy.calls if c["training"]]
    assert train == [(chunk.sample(s)["chunk_size"], chunk.sample(s)["left_context"]) for s in range(6)]
    assert loss.model_kwargs == {"chunk_size": -1, "left_context": -1}  # outside a step: evaluation settings
    t.validate()
    assert (spy.calls[-1]["chunk_size"], spy.calls[-1]["training"]) == (-1, False)


# ------------------------------------------------------------------------------------------ the encoder's sizes
class NoChunksEncoder(Encoder):
    """An encoder without the ``chunked`` capability (Linear over stacked frames, T' = T // 4)."""

    subsampling_factor = 4
    capabilities = frozenset({"truncate"})

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(4 * F, 8)

    output_dim = 8
    num_layers = 1

    def subsampled_lengths(self, x_lens):
        return x_lens // 4

    def forward(self, x, x_lens, *, chunk_size=-1, left_context=-1, return_attn=False, return_qkv=False):
        n, t, f = x.shape
        h = self.inp(x[:, : t // 4 * 4].reshape(n, t // 4, 4 * f))
        return EncoderOutput(out=h, out_lens=self.subsampled_lengths(x_lens), layer_outputs=[h])


def test_fixed_chunk_sizes_the_encoder_cannot_use_fail_naming_the_field(encoder_type):
    enc = build_encoder(tiny_encoder_config(encoder_type, F)).eval()
    m = enc.chunk_multiple
    assert m >= 1
    if encoder_type == "zipformer":  # half the slowest stack's factor (4)
        assert m == 2
    x, x_lens = torch.randn(1, 64, F), torch.tensor([64])
    for c in range(1, 9):
        cfg = ChunkConfig.from_dict({"chunk_size": c, "left_context": 1})
        if c % m == 0:
            assert cfg.for_encoder(enc).chunk_multiple == m
            enc(x, x_lens, chunk_size=c, left_context=1)  # the encoder takes it
        else:
            with pytest.raises(ValueError, match=rf"^training.chunk.chunk_size = {c}: .*multiple of {m}"):
                cfg.for_encoder(enc)
            with pytest.raises(ValueError):  # which is what the encoder itself would have said mid-training
                enc(x, x_lens, chunk_size=c, left_context=1)
    assert ChunkConfig().for_encoder(enc).chunk_multiple == m  # full context: any encoder


def test_dynamic_chunk_training_draws_only_sizes_the_encoder_can_use(encoder_type):
    enc = build_encoder(tiny_encoder_config(encoder_type, F))
    m = enc.chunk_multiple
    unbound = ChunkConfig.from_dict({"dynamic": True, "max_chunk": 7, "max_left_chunks": 2}, seed=3)
    cfg = unbound.for_encoder(enc)
    assert cfg.chunk_multiple == m
    draws = [cfg.sample(s) for s in range(400)]
    chunks = {d["chunk_size"] for d in draws}
    assert chunks == {-1} | set(range(m, 8, m))
    for c in chunks - {-1}:
        enc.check_chunk_size(c)
    # m * (the draw of a config with max_chunk // m): the same RNG stream, so m = 1 draws what it always did
    scaled = ChunkConfig(dynamic=True, max_chunk=7 // m, max_left_chunks=2, seed=3)
    for s, d in enumerate(draws):
        ref = scaled.sample(s)
        assert d == ({**ref, "chunk_size": m * ref["chunk_size"]} if ref["chunk_size"] > 0 else ref)
    if m == 1:
        assert draws == [unbound.sample(s) for s in range(400)]


def test_dynamic_max_chunk_below_the_encoders_multiple_fails_naming_the_field():
    coarse = [k for k in tiny_encoder_types() if build_encoder(tiny_encoder_config(k, F)).chunk_multiple > 1]
    assert coarse  # the Zipformer
    for kind in coarse:
        enc = build_encoder(tiny_encoder_config(kind, F))
        m = enc.chunk_multiple
        with pytest.raises(
            ValueError,
            match=rf"^training.chunk.max_chunk = {m - 1}: {type(enc).__name__} uses chunks "
            rf"of multiples of {m} output frames; set max_chunk >= {m}",
        ):
            ChunkConfig.from_dict({"dynamic": True, "max_chunk": m - 1}).for_encoder(enc)


def test_chunks_on_an_encoder_without_the_chunked_capability():
    enc = NoChunksEncoder()
    with pytest.raises(
        ValueError,
        match=r"^training.chunk.chunk_size = 4: chunk_size=4 needs an encoder with the "
        r"'chunked' capability, but NoChunksEncoder declares only \['truncate'\]",
    ):
        ChunkConfig(chunk_size=4).for_encoder(enc)
    with pytest.raises(
        ValueError,
        match=r"^training.chunk.dynamic: NoChunksEncoder cannot train on chunks: "
        r"chunk_size=8 needs an encoder with the 'chunked' capability",
    ):
        ChunkConfig(dynamic=True, max_chunk=8).for_encoder(enc)
    assert ChunkConfig(chunk_size=-1).for_encoder(enc).chunk_multiple == 1


def test_loss_functions_check_the_chunk_config_at_start_up(encoder_type, tmp_path):
    from asr_kd.kd import build_kd_loss_fn

    model = tiny_asr_model(encoder_type)
    m = model.encoder.chunk_multiple
    if m == 1:  # any chunk size
        loss = AsrLossFn(chunk={"chunk_size": 3})
        loss.check_model(model)
        assert loss.chunk == ChunkConfig(chunk_size=3)
        return
    bad = {"chunk_size": m + 1}  # not a multiple
    with pytest.raises(ValueError, match=rf"^training.chunk.chunk_size = {m + 1}: .*multiple of {m}"):
        AsrLossFn(chunk=bad).check_model(model)
    from asr_kd.models.asr_model import build_asr_model

    kd_model = build_asr_model(
        {"vocab_size": V, "encoder": tiny_encoder_config(encoder_type, F), "ctc": {}, "inter_ctc": {"layers": [1]}}
    )
    with pytest.raises(ValueError, match=rf"^training.chunk.chunk_size = {m + 1}"):  # KD losses check when built
        build_kd_loss_fn({"methods": [{"name": "self_kd"}]}, kd_model, chunk=bad)
    kd_loss = build_kd_loss_fn({"methods": [{"name": "self_kd"}]}, kd_model, chunk={"dynamic": True, "max_chunk": 4})
    assert kd_loss.chunk.chunk_multiple == m
    # unchecked, the loss function refuses at its first call, before any update
    t, spy = make(None, AsrLossFn(normalize="frames", chunk=bad), max_steps=2, encoder_type=encoder_type)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"^training.chunk.chunk_size = {m + 1}"):
        t.fit()
    assert spy.calls == [] and all(torch.equal(v, t.model.state_dict()[k]) for k, v in before.items())
