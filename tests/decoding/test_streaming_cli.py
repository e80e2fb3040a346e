"""The decode CLI's streaming methods end to end on a toy causal transducer: recogs equal simulated
streaming of the same features, results rows carry the per-chunk latency, the not-trained-for-streaming
warning states the measured mismatch, bad chunk settings fail at start-up before any result is written."""

import ast
import json

import pytest
import torch

from asr_kd.testing.recipe import TOY_MODEL, make_toy_recipe

CAUSAL_TRANSDUCER = {
    "encoder": {**TOY_MODEL["encoder"], "num_layers": 2, "causal": True},
    "transducer": {"d_pred": 16, "d_joint": 16},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from asr_kd.bin import train

    root = tmp_path_factory.mktemp("recipe")
    conf = make_toy_recipe(root, model=CAUSAL_TRANSDUCER)
    exp = root / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "2"]) == 0
    return exp


def _recogs(path):
    lines = path.read_text().splitlines()
    return {ref.split(":\t")[0]: ast.literal_eval(hyp.split("hyp=")[1]) for ref, hyp in zip(lines[::2], lines[1::2])}


def test_streaming_methods_decode_like_simulated_streaming(trained, capsys):
    from lhotse import CutSet

    from asr_kd.bin import decode
    from asr_kd.data.features import make_fbank
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.decoding.streaming import simulate_streaming
    from asr_kd.training.asr_task import load_asr_model

    args = ["--exp-dir", str(trained), "--chunk-size", "2", "--left-context", "1", "--res-dir", "dec_stream"]
    assert decode.main([*args, "--method", "streaming-greedy", "--method", "streaming-modified-beam"]) == 0
    res = trained / "dec_stream"
    rows = [json.loads(line) for line in (res / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == [
        "streaming-greedy_chunk-2_left-1",
        "streaming-modified-beam_beam-4_chunk-2_left-1",
    ]
    for r in rows:
        assert r["num_utts"] == 2 and r["num_chunks"] > 0 and r["rtf"] > 0 and r["compute_rtf"] > 0
        assert 0 < r["chunk_ms_p50"] <= r["chunk_ms_p95"] and r["chunk_ms_mean"] > 0
    out = capsys.readouterr().out
    assert "streaming-greedy_chunk-2_left-1: WER" in out and "ms mean" in out and "p95" in out
    # trained without training.chunk: a warning with the measured mismatch, in the decode log
    log = (res / "decode.log").read_text()
    assert "WARNING" in log and "not trained for streaming" in log and "% token mismatch" in log

    # the same utterances by hand: features, chunk-masked forward, offline search
    model, config = load_asr_model(trained / "checkpoint-2.pt")
    tok = Tokenizer.from_dir(config["data"]["lang_dir"])
    cuts = CutSet.from_file(f"{config['data']['manifest_dir']}/toy_cuts_test.jsonl.gz")
    for r, search in zip(rows, ("greedy", "modified-beam")):
        recogs = _recogs(res / f"recogs-test-{r['method']}.txt")
        for cut in cuts:
            feats = torch.from_numpy(make_fbank(80).extract(cut.load_audio(), cut.sampling_rate)).float()
            hyp = simulate_streaming(
                model.encoder,
                model.transducer,
                feats.unsqueeze(0),
                torch.tensor([feats.size(0)]),
                chunk_size=2,
                left_context=1,
                search=search,
            )[0]
            tokens = hyp if search == "greedy" else hyp.best
            assert recogs[cut.id] == tok.decode(tokens).split()


@pytest.mark.parametrize(
    "extra,match",
    [
        ([], "needs a chunk size > 0"),  # --chunk-size not given
        (["--chunk-size", "2", "--left-context", "-4"], "left context must be -1"),
        (["--chunk-size", "2", "--feed-frames", "0"], "feed_frames must be >= 1"),
    ],
)
def test_bad_streaming_settings_fail_at_start_up(trained, extra, match):
    from asr_kd.bin import decode

    res = trained / "dec_bad"
    with pytest.raises(ValueError, match=match):
        decode.main(["--exp-dir", str(trained), "--method", "streaming-greedy", "--res-dir", "dec_bad", *extra])
    assert not (res / "results.jsonl").exists()


def test_a_model_trained_with_chunks_gets_no_warning(tmp_path):
    """The checkpoint's stored config (training.chunk) is what the start-up check reads."""
    import yaml

    from asr_kd.bin import decode, train

    conf = make_toy_recipe(tmp_path, model=CAUSAL_TRANSDUCER)
    cfg = yaml.safe_load(conf.read_text())
    cfg["training"]["chunk"] = {"chunk_size": 2, "left_context": 1}
    conf.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert train.main(["--config", str(conf), "--exp-dir", str(exp), "--max-steps", "2"]) == 0
    argv = ["--exp-dir", str(exp), "--method", "streaming-greedy", "--chunk-size", "2", "--left-context", "1"]
    assert decode.main(argv) == 0
    log = (exp / "decode" / "decode.log").read_text()
    assert "trained with chunk_size 2, left_context 1" in log and "% token mismatch" in log
    assert "not trained for streaming" not in log and "WARNING" not in log
