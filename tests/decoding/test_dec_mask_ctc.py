import math

import pytest
import torch

from asr_kd.decoding.ctc import ctc_greedy_search
from asr_kd.decoding.mask_ctc import ctc_greedy_with_confidence, mask_ctc_easy_first

V, MASK = 6, 6  # tokens 1..5, blank 0, <mask> = V


def _ctc(frames, N_T=None):
    """frames: per utterance a list of (token, prob) per frame -> (N, T', V) log probs, lens."""
    T = max(len(f) for f in frames)
    lp = torch.full((len(frames), T, V), 1e-6)
    for n, fr in enumerate(frames):
        for t, (tok, p) in enumerate(fr):
            lp[n, t] = (1 - p) / (V - 1)
            lp[n, t, tok] = p
    return lp.log(), torch.tensor([len(f) for f in frames])


class ToyMLM(torch.nn.Module):
    """Predicts ``answer[n][l]`` with probability ``conf[n][l]``; records its inputs."""

    def __init__(self, answer, conf):
        super().__init__()
        self.answer, self.conf, self.calls = answer, conf, []

    def forward(self, memory, memory_lens, ys_masked):
        self.calls.append(ys_masked.clone())
        N, L = ys_masked.shape
        out = torch.full((N, L, V), -20.0)
        for i in range(N):
            n = int(memory[i, 0, 0])  # the utterance index is stored in the memory
            for l in range(L):
                if l < len(self.answer[n]):
                    p = self.conf[n][l]
                    out[i, l] = math.log((1 - p) / (V - 1))
                    out[i, l, self.answer[n][l]] = math.log(p)
                    out[i, l, 0] = 5.0  # blank is never predicted even if the MLM likes it
        return out


def _enc(N, T=8):
    enc = torch.zeros(N, T, 2)
    enc[:, :, 0] = torch.arange(N, dtype=torch.float)[:, None]
    return enc, torch.full((N,), T)


def test_confidence_is_max_over_segment():
    lp, lens = _ctc([[(1, 0.5), (1, 0.9), (0, 0.9), (2, 0.6), (3, 0.7), (3, 0.4)]])
    toks, conf = ctc_greedy_with_confidence(lp, lens)
    assert toks == [[1, 2, 3]]
    assert conf[0] == pytest.approx([0.9, 0.6, 0.7], rel=1e-4)
    assert toks == ctc_greedy_search(lp, lens)


def test_easy_first_fills_in_confidence_order():
    # utterance 0: tokens 1 2 3 4 5, confident: 1 (0.999) and 5 (0.995); masked: 2 3 4
    frames0 = [(1, 0.999), (0, 0.9), (2, 0.5), (3, 0.6), (0, 0.9), (4, 0.3), (5, 0.995)]
    # utterance 1: tokens 2 3, both confident -> untouched, never sent to the MLM
    frames1 = [(2, 0.999), (3, 0.999)]
    lp, lens = _ctc([frames0, frames1])
    # MLM answers: position 1 -> 5 (0.4), position 2 -> 4 (0.9), position 3 -> 1 (0.7);
    # at kept positions it disagrees with CTC, which must not matter
    mlm = ToyMLM([[3, 5, 4, 1, 2], [4, 4]], [[0.9, 0.4, 0.9, 0.7, 0.9], [0.9, 0.9]])
    enc, enc_lens = _enc(2)
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, p_thr=0.99, K=2, mask_id=MASK)
    assert out == [[1, 5, 4, 1, 5], [2, 3]]
    # 3 masks, K=2: round 0 fills ceil(3/2)=2 (positions 2 then 3), round 1 fills position 1
    assert len(mlm.calls) == 2
    assert mlm.calls[0].shape[0] == 1  # only utterance 0 had masks
    assert mlm.calls[0][0].tolist() == [1, MASK, MASK, MASK, 5]
    assert mlm.calls[1][0].tolist() == [1, MASK, 4, 1, 5]


def test_k_one_fills_all_at_once_and_k_large_one_by_one():
    frames = [(1, 0.5), (0, 0.9), (2, 0.6), (0, 0.9), (3, 0.7)]
    lp, lens = _ctc([frames])
    enc, enc_lens = _enc(1)
    mlm = ToyMLM([[4, 5, 4]], [[0.5, 0.9, 0.7]])
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, K=1, mask_id=MASK)
    assert out == [[4, 5, 4]] and len(mlm.calls) == 1
    mlm = ToyMLM([[4, 5, 4]], [[0.5, 0.9, 0.7]])
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, K=10, mask_id=MASK)
    assert out == [[4, 5, 4]]
    assert [c[0].tolist() for c in mlm.calls] == [
        [MASK, MASK, MASK], [MASK, 5, MASK], [MASK, 5, 4]
    ]


def test_threshold_keeps_everything_and_empty_outputs():
    frames = [(1, 0.5), (0, 0.9), (2, 0.6)]
    lp, lens = _ctc([frames, [(0, 0.9)]])
    enc, enc_lens = _enc(2)
    mlm = ToyMLM([[4, 4], []], [[0.9, 0.9], []])
    out = mask_ctc_easy_first(lp, lens, mlm, enc, enc_lens, p_thr=0.0, mask_id=MASK)
    assert out == [[1, 2], []] and mlm.calls == []
    out = mask_ctc_easy_first(lp, torch.tensor([0, 0]), mlm, enc, enc_lens, mask_id=MASK)
    assert out == [[], []]
