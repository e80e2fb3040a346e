"""Token-probability KD for transducers on the teacher's one-best alignment (the baseline of streaming KD).

The teacher (a full-context transducer, same vocabulary and output frame rate as the student) scores the
reference's whole (T', U) lattice; its most likely alignment of the reference (:func:`best_alignment`,
a Viterbi pass over blank / label moves) visits ``T'_n + S_n`` lattice nodes (t, u), one per emitted
symbol (``S_n`` labels and ``T'_n`` blanks, the last one ending the utterance). At each of those nodes the
student's joiner distribution is pulled towards the teacher's:

    loss = tau^2 * sum_n sum_{(t, u) on the path} KL(softmax(z_T(t, u) / tau) || softmax(z_S(t, u) / tau))

over the full vocabulary (blank included). Chosen over the pruned-lattice variant (the KL on the student's
pruned RNN-T ranges) because it needs no second simple-loss pass, only ``T' + S`` student joiner
evaluations, and it is the same set of nodes whatever the student's pruning does early in training.

Config (``kd.methods``; ``kd.teacher: {type: asr, checkpoint: <transducer>}``)::

    - {name: transducer_kd, weight: 0.5, temperature: 1.0}

Loss (batch sum): ``transducer_kd``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from asr_kd.kd.methods import KdContext, KdMethod, _common_frames, _teacher_field, register_kd_method

__all__ = ["TransducerKd", "best_alignment", "alignment_mask"]


def best_alignment(blank_lp: Tensor, label_lp: Tensor, t_lens: Tensor, s_lens: Tensor) -> tuple[Tensor, Tensor]:
    """Viterbi alignment of the reference through a transducer lattice.

    Moves: from node (t, u) a blank goes to (t + 1, u) (from ``(T_n - 1, S_n)`` it ends the utterance), the
    label ``y_{u+1}`` goes to (t, u + 1). Per row t the path enters at ``start[t]`` (the blank from row
    t - 1) and leaves at ``end[t] >= start[t]`` (its blank), emitting labels ``start[t] + 1 .. end[t]`` in
    row t, so the path's nodes of row t are ``u in start[t] .. end[t]``.

    Args:
        blank_lp: (N, T, U) log-prob of blank at (t, u), U = S_max + 1.
        label_lp: (N, T, U) log-prob of label ``y_{u+1}`` at (t, u) (column ``u = S_n`` unused).
        t_lens: (N,) frames T_n >= 1; s_lens: (N,) labels S_n.
    Returns:
        ``(start, end)``, each (N, T) int64 (0 on rows ``t >= T_n``).
    """
    n, t_max, u_max = blank_lp.shape
    dt = torch.float64
    blank_lp, label_lp = blank_lp.to(dt), label_lp.to(dt)
    neg = torch.tensor(float("-inf"), dtype=dt, device=blank_lp.device)
    u_idx = torch.arange(u_max, device=blank_lp.device)
    u_ok = u_idx[None, :] <= s_lens[:, None].to(u_idx.device)  # (N, U)
    # C[t, u] = sum_{j < u} label_lp[t, j]: the score of emitting labels j+1..u within a row
    cum = torch.cat([blank_lp.new_zeros(n, t_max, 1), label_lp[:, :, :-1].cumsum(-1)], dim=-1)
    arg = torch.zeros(n, t_max, u_max, dtype=torch.long, device=blank_lp.device)
    enter = torch.where(u_idx[None, :] == 0, torch.zeros((), dtype=dt, device=blank_lp.device), neg).expand(n, -1)
    for t in range(t_max):
        c = cum[:, t]
        best, idx = torch.cummax(torch.where(u_ok, enter - c, neg), dim=-1)
        alpha = torch.where(u_ok, c + best, neg)  # best score of reaching (t, u); rows t >= T_n unused
        arg[:, t] = idx
        enter = alpha + blank_lp[:, t]  # entering row t + 1 at u by a blank from (t, u)
    back = arg.cpu().tolist()
    start = [[0] * t_max for _ in range(n)]
    end = [[0] * t_max for _ in range(n)]
    for b in range(n):
        u = int(s_lens[b])
        for t in range(int(t_lens[b]) - 1, -1, -1):
            end[b][t] = u
            u = back[b][t][u]
            start[b][t] = u
    dev = blank_lp.device
    return torch.tensor(start, dtype=torch.long, device=dev), torch.tensor(end, dtype=torch.long, device=dev)


def alignment_mask(start: Tensor, end: Tensor, t_lens: Tensor, u_max: int) -> Tensor:
    """(N, T, U) bool: the path's nodes, ``start[n, t] <= u <= end[n, t]`` on rows ``t < T_n``."""
    u = torch.arange(u_max, device=start.device)[None, None, :]
    rows = torch.arange(start.size(1), device=start.device)[None, :] < t_lens[:, None].to(start.device)
    return (u >= start[..., None]) & (u <= end[..., None]) & rows[..., None]


@register_kd_method("transducer_kd")
class TransducerKd(KdMethod):
    """KL between teacher and student joiner distributions on the teacher's one-best alignment
    (module docstring).

    Args:
        temperature: tau of both softmaxes (the loss is times tau^2).
    """

    needs_teacher = frozenset({"encoder_out"})

    def __init__(self, model: nn.Module, *, temperature: float = 1.0):
        super().__init__()
        if getattr(model, "transducer", None) is None:
            raise ValueError("transducer_kd needs a student with a transducer head (model.transducer)")
        self.temperature = float(temperature)
        if self.temperature <= 0:
            raise ValueError(f"transducer_kd: temperature must be > 0, got {temperature}")
        self.out_rate = int(model.encoder.subsampling_factor)
        self.vocab_size = int(model.vocab_size)
        self._teacher: list[nn.Module] = []  # the teacher's AsrModel, kept out of this module's parameters

    def check_teacher(self, teacher: Any) -> None:
        """An online ASR teacher with a transducer head, the student's vocabulary and output rate."""
        model = getattr(teacher, "model", None)
        if model is None or getattr(model, "transducer", None) is None:
            raise ValueError(
                "transducer_kd needs an online transducer teacher (kd.teacher: {type: asr, checkpoint: ...} of a "
                f"model with a transducer head), got {type(teacher).__name__}"
            )
        rate = int(model.encoder.subsampling_factor)
        if rate != self.out_rate:
            raise ValueError(
                f"transducer_kd: the teacher's output runs at {rate} input frames per frame and the student's at "
                f"{self.out_rate}; lattice-node KD needs the same frame rate"
            )
        if int(model.vocab_size) != self.vocab_size:
            raise ValueError(f"transducer_kd: teacher vocabulary {model.vocab_size} != student {self.vocab_size}")
        self._teacher = [model]

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.ctc import pad_token_lists
        from asr_kd.models.heads.transducer import prepend_blank

        if not self._teacher:
            raise ValueError("transducer_kd: no teacher bound (check_teacher)")
        t_head = self._teacher[0].transducer
        s_head = ctx.model.transducer
        t_enc = _teacher_field(ctx, "extra").get("encoder_out") if ctx.teacher is not None else None
        if t_enc is None:
            raise ValueError("transducer_kd needs the teacher's encoder output (an online asr teacher)")
        enc = ctx.enc
        lens = _common_frames("transducer_kd", enc.out_lens, ctx.teacher.lens, self.out_rate, ctx.teacher.subsampling)
        frames = min(enc.out.size(1), t_enc.size(1))
        device = enc.out.device
        targets, s_lens = pad_token_lists(ctx.tokens, pad=s_head.blank_id, device=device)
        targets = targets.to(torch.int64)
        tau = self.temperature
        with torch.no_grad():
            t_logits = t_head.full_logits(t_enc[:, :frames].to(device), targets).float()  # (N, T, U, V)
            t_lp = t_logits.log_softmax(-1)
            blank_lp = t_lp[..., t_head.blank_id]
            lab = torch.cat([targets, targets.new_zeros(targets.size(0), 1)], dim=1)  # (N, U)
            label_lp = t_lp.gather(-1, lab[:, None, :, None].expand(-1, frames, -1, 1)).squeeze(-1)
            start, end = best_alignment(blank_lp, label_lp, lens, s_lens)
            mask = alignment_mask(start, end, lens, t_lp.size(2))  # (N, T, U)
            nodes = mask.nonzero(as_tuple=True)
            t_node = (t_logits[nodes] / tau).log_softmax(-1)  # (M, V)
        pred = s_head.predictor(prepend_blank(targets, s_head.blank_id))  # (N, U, P)
        e = s_head.joiner.enc_proj(enc.out[:, :frames])[nodes[0], nodes[1]]  # (M, J)
        p = s_head.joiner.pred_proj(pred)[nodes[0], nodes[2]]
        s_node = (s_head.joiner(e, p).float() / tau).log_softmax(-1)
        kl = (t_node.exp() * (t_node - s_node)).sum()
        return {"transducer_kd": (tau**2) * kl}
