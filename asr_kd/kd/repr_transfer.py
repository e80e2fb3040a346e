"""``lm_repr_transfer``: multiple representation transfer from BERT-family models into a transducer
(arXiv 2309.04031). The teacher side (layer mapping, alignment, context, stored fields) is
:mod:`asr_kd.kd.repr`.

**Student states** (label-synchronous, one per BPE token u of the reference): the transducer's
prediction-network output after token u, ``p_u`` (N, S, P), is the query of one multi-head attention over
the encoder frames (N, T', D), so each state mixes what the predictor knows (the last tokens) with the
acoustics it attends to:

    s_u = LayerNorm(W_q p_u + MHA(W_q p_u, W_k h, W_v h))         (N, S, d_state)

**Regression networks** R_{m,l} (one per teacher model m and mapped teacher layer l: Linear d_state ->
d_hidden, GELU, Linear -> D_m) read the state of the BPE token aligned to each WordPiece position j
(:func:`asr_kd.kd.repr.align_tokens`) and predict the teacher's hidden state there:

    loss_{m,l} = sum_n sum_{j < L_n} mean_d dist(R_{m,l}(s_{n, a(j)}), h^{m,l}_{n,j})     dist = |.| or (.)^2

named ``repr_<m>_l<l>`` (batch sums, divided by the task's normaliser); the total is the transducer loss
+ ``weight`` * sum of them. With K stored variants (context augmentation) each utterance uses variant
``randint(K)`` from a generator seeded with ``seed + step``.

The attention, the projections and every R live in the student's ``kd_aux`` (training only: dropped by
export, averaging and decoding, as interAED-KD's decoders); the predictor and encoder get the gradients.

Config::

    kd:
      teacher: {type: offline_repr, models: [minilm, mpnet]}
      methods:
        - name: lm_repr_transfer
          weight: 1.0
          lang_dir: data/lang_bpe_128            # the student's BPE (its pieces are aligned)
          loss: l1                               # or mse
          teachers:
            - {name: minilm, mapping: uniform, heads: 3}                      # model_dir: the MiniLM package
            - {name: mpnet, model_dir: exp/teachers/mpnet, mapping: uniform, heads: 3, proj_dim: null}

Start-up checks (``ValueError`` naming the teacher and manifest): the stored layers must include the
mapped ones, the stored dim must be R's output dim, the stored vocabulary the teacher folder's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from asr_kd.kd.methods import KdContext, KdMethod, register_kd_method

__all__ = ["LmReprTransfer", "TokenStates", "regression_loss"]

log = logging.getLogger(__name__)

LOSSES = ("l1", "mse")


def regression_loss(pred: Tensor, target: Tensor, mask: Tensor, kind: str = "l1") -> Tensor:
    """``sum over masked positions of mean_d dist(pred, target)``: pred, target (N, L, D), mask (N, L) bool;
    ``kind`` ``"l1"`` (|.|) or ``"mse"`` ((.)^2). The target gets no gradient."""
    if kind not in LOSSES:
        raise ValueError(f"regression loss must be one of {LOSSES}, got {kind!r}")
    if pred.shape != target.shape:
        raise ValueError(f"regression output {tuple(pred.shape)} vs teacher {tuple(target.shape)}")
    d = pred.float() - target.detach().float()
    per = d.abs() if kind == "l1" else d.pow(2)
    return (per.mean(-1) * mask.to(per.dtype)).sum()


class TokenStates(nn.Module):
    """Label-synchronous student states: predictor outputs (N, S, P) attend over encoder frames (N, T', D)
    -> (N, S, d_state) (module docstring)."""

    def __init__(self, d_pred: int, d_enc: int, d_state: int = 256, heads: int = 4):
        super().__init__()
        self.q = nn.Linear(d_pred, d_state)
        self.kv = nn.Linear(d_enc, d_state)
        self.att = nn.MultiheadAttention(d_state, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_state)

    def forward(self, pred: Tensor, enc: Tensor, enc_lens: Tensor) -> Tensor:
        q = self.q(pred)
        kv = self.kv(enc)
        pad = torch.arange(enc.size(1), device=enc.device)[None, :] >= enc_lens[:, None]
        ctx, _ = self.att(q, kv, kv, key_padding_mask=pad, need_weights=False)
        return self.norm(q + ctx)


class _TeacherSpec:
    """One teacher model of the method: its tokenizer, depth, dim and mapped layers."""

    def __init__(self, cfg: Mapping[str, Any], index: int):
        from transformers import AutoConfig

        from asr_kd.kd.repr import map_layers
        from asr_kd.kd.wordpiece import WordPieceVocab

        cfg = dict(cfg)
        known = {"name", "model_dir", "mapping", "heads", "seed", "layers", "proj_dim"}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"teachers[{index}]: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if "name" not in cfg:
            raise ValueError(f"teachers[{index}] has no 'name' (the stored kd_repr_<name> fields)")
        self.name = str(cfg["name"])
        model_dir = cfg.get("model_dir")
        if model_dir is None:
            from asr_kd.kd.hf import default_model_dir

            model_dir = default_model_dir()
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            from asr_kd.kd.repr import ReprTeacherError

            raise ReprTeacherError(f"teacher {self.name}: {self.model_dir} has no config.json (not a model folder)")
        config = AutoConfig.from_pretrained(str(self.model_dir), local_files_only=True, trust_remote_code=False)
        self.num_layers = int(config.num_hidden_layers)
        self.proj_dim = cfg.get("proj_dim")
        self.dim = int(self.proj_dim or config.hidden_size)
        if cfg.get("layers") is not None:
            self.layers = [int(k) for k in cfg["layers"]]
            bad = [k for k in self.layers if not 1 <= k <= self.num_layers]
            if bad:
                raise ValueError(f"teacher {self.name}: layers {bad} out of range 1..{self.num_layers}")
            self.mapping = "explicit"
        else:
            self.mapping = str(cfg.get("mapping", "uniform"))
            self.layers = map_layers(self.mapping, self.num_layers, int(cfg.get("heads", 1)), int(cfg.get("seed", 0)))
        self.vocab = WordPieceVocab(self.model_dir)
        fp = self.vocab.fingerprint()
        self.fingerprint = {"size": fp["size"], "sha256": fp["sha256"]}
        self._align: dict[tuple[str, tuple[int, ...]], tuple[list[int], list[int]]] = {}

    def check_info(self, info: Mapping[str, Any], where: str) -> None:
        """Refuse stored representations this spec cannot regress (module docstring)."""
        stored = [int(k) for k in info.get("layers", [])]
        missing = [k for k in self.layers if k not in stored]
        if missing:
            raise ValueError(
                f"teacher {self.name}: {where} stores layers {stored} of {info.get('model_dir')}, the {self.mapping} "
                f"mapping needs {self.layers} (missing {missing}): dump them (asr_kd.bin.dump_repr --layers)"
            )
        if int(info.get("dim", -1)) != self.dim:
            raise ValueError(
                f"teacher {self.name}: the representation dim {info.get('dim')} of {where} does not match the "
                f"regression networks' output dim {self.dim} ({self.model_dir}, proj_dim {self.proj_dim})"
            )
        voc = info.get("vocab") or {}
        if voc.get("sha256") != self.fingerprint["sha256"] or int(voc.get("size", -1)) != self.fingerprint["size"]:
            from asr_kd.data.tokenizer import VocabMismatchError

            raise VocabMismatchError(
                f"vocabulary mismatch: {where} was dumped with {voc.get('size')} WordPiece units "
                f"({info.get('model_dir')}), teacher {self.name} tokenizes with {self.fingerprint['size']} "
                f"({self.model_dir})"
            )

    def alignment(self, text: str, bpe_pieces: Sequence[str], stored_ids: Sequence[int]) -> list[int]:
        """``wp_to_bpe`` of one utterance (cached), after checking the stored ids are this tokenizer's."""
        from asr_kd.kd.repr import align_tokens, wordpiece_spans

        key = (text, tuple(bpe_pieces))
        if key not in self._align:
            ids, wid, offs = wordpiece_spans(self.vocab, [text])[0]
            al = align_tokens(bpe_pieces, wid, offs, self.vocab._words(text))
            self._align[key] = (ids, al.wp_to_bpe)
        ids, wp_to_bpe = self._align[key]
        if list(ids) != list(stored_ids):
            raise ValueError(
                f"teacher {self.name}: the stored WordPiece ids of {text!r} are not what {self.model_dir} gives "
                f"({list(stored_ids)[:8]} vs {list(ids)[:8]})"
            )
        return wp_to_bpe


@register_kd_method("lm_repr_transfer")
class LmReprTransfer(KdMethod):
    """Regress BERT-family hidden states from label-synchronous transducer states (module docstring).

    Args:
        teachers: per teacher model ``{name, model_dir, mapping | layers, heads, seed, proj_dim}``.
        lang_dir: the student's lang dir (its ``bpe.model``: the pieces that are aligned).
        loss: ``"l1"`` or ``"mse"``.
        d_state, att_heads: the student states (:class:`TokenStates`).
        d_hidden: the hidden width of each R.
        seed: variant choice (``seed + step``).

    Losses: ``repr_<name>_l<layer>`` per teacher model and mapped layer.
    """

    needs_teacher = frozenset({"extra"})

    def __init__(
        self,
        model: nn.Module,
        *,
        teachers: Sequence[Mapping[str, Any]] = ({"name": "minilm"},),
        lang_dir: str | Path = "data/lang_bpe_500",
        loss: str = "l1",
        d_state: int = 256,
        att_heads: int = 4,
        d_hidden: int = 256,
        seed: int = 0,
    ):
        super().__init__()
        from asr_kd.data.tokenizer import Tokenizer

        head = getattr(model, "transducer", None)
        if head is None:
            raise ValueError("lm_repr_transfer needs a transducer student (model.transducer): its predictor states")
        if loss not in LOSSES:
            raise ValueError(f"lm_repr_transfer: loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.seed = int(seed)
        if isinstance(teachers, Mapping):
            teachers = [teachers]
        if not teachers:
            raise ValueError("lm_repr_transfer: teachers must not be empty")
        self.specs = [_TeacherSpec(t, i) for i, t in enumerate(teachers)]
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"lm_repr_transfer: teacher names {names} repeat")
        self.tokenizer = Tokenizer.from_dir(lang_dir)
        if int(self.tokenizer.vocab_size) != int(head.vocab_size):
            raise ValueError(
                f"lm_repr_transfer: {lang_dir} has {self.tokenizer.vocab_size} pieces, the student {head.vocab_size}"
            )
        self.states = TokenStates(head.predictor.d_pred, int(model.encoder.output_dim), d_state, att_heads)
        self.regressors = nn.ModuleDict()
        for s in self.specs:
            for k in s.layers:
                self.regressors[f"{s.name}_l{k}"] = nn.Sequential(
                    nn.Linear(d_state, d_hidden), nn.GELU(), nn.Linear(d_hidden, s.dim)
                )
        log.info(
            "lm_repr_transfer: %s",
            "; ".join(f"{s.name} ({s.num_layers} layers, D {s.dim}): {s.mapping} -> {s.layers}" for s in self.specs),
        )

    # ------------------------------------------------------------------ start-up checks
    def check_teacher(self, teacher: Any) -> None:
        from asr_kd.kd.repr import OfflineReprTeacher

        if not isinstance(teacher, OfflineReprTeacher):
            raise ValueError(f"lm_repr_transfer needs kd.teacher {{type: offline_repr}}, got {type(teacher).__name__}")
        missing = [s.name for s in self.specs if s.name not in teacher.models]
        if missing:
            raise ValueError(f"lm_repr_transfer: teachers {missing} are not in kd.teacher.models {teacher.models}")

    def check_offline_cuts(self, cuts: Any, manifest: Any = None) -> bool:
        """The first cut's stored info of each teacher against this method (layers, dim, vocabulary)."""
        from itertools import islice

        from asr_kd.kd.repr import repr_fields

        checked = False
        for cut in islice(cuts, 1):
            for s in self.specs:
                arr_f, _, info_f = repr_fields(s.name)
                custom = cut.custom or {}
                if arr_f not in custom:
                    raise ValueError(
                        f"teacher {s.name}: {manifest or 'the manifest'} (cut {cut.id}) has no {arr_f}: "
                        "dump it with asr_kd.bin.dump_repr"
                    )
                s.check_info(custom.get(info_f) or {}, f"{manifest or 'the manifest'} (cut {cut.id})")
                checked = True
        return checked

    # ------------------------------------------------------------------ loss
    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.ctc import pad_token_lists
        from asr_kd.models.heads.transducer import prepend_blank

        model, enc = ctx.model, ctx.enc
        device = enc.out.device
        t = ctx.teacher.extra.get("repr") if ctx.teacher is not None else None
        if t is None:
            raise ValueError("lm_repr_transfer needs the stored representations (kd.teacher: offline_repr)")
        tokens = [list(map(int, y)) for y in ctx.tokens]
        targets, _ = pad_token_lists(tokens, pad=model.blank_id, device=device)
        pred = model.transducer.predictor(prepend_blank(targets, model.blank_id))[:, 1:]  # (N, S, P): after u
        states = self.states(pred, enc.out, enc.out_lens)  # (N, S, d_state)
        texts = list(ctx.batch["supervisions"]["text"])
        pieces = [[self.tokenizer.id_to_piece(i) for i in y] for y in tokens]
        n = len(tokens)
        g = random.Random(self.seed + int(ctx.step))
        out: dict[str, Tensor] = {}
        for s in self.specs:
            rec = t[s.name]
            hidden, lens = rec["hidden"], rec["lens"].to(device)  # (N, L, K, n_l, D)
            if hidden.size(-1) != s.dim:
                raise ValueError(f"teacher {s.name}: stored dim {hidden.size(-1)}, R outputs {s.dim}")
            stored_layers = [int(k) for k in rec["info"][0]["layers"]] if rec["info"] else s.layers
            lmax = hidden.size(1)
            index = torch.zeros(n, lmax, dtype=torch.int64)
            for i in range(n):
                a = s.alignment(" ".join(texts[i].split()), pieces[i], rec["ids"][i])
                index[i, : len(a)] = torch.tensor(a, dtype=torch.int64)
            index = index.to(device)
            gathered = states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.size(-1)))  # (N, L, d_state)
            variant = torch.tensor([g.randrange(hidden.size(2)) for _ in range(n)], device=device)
            chosen = hidden[torch.arange(n, device=device), :, variant]  # (N, L, n_l, D)
            mask = torch.arange(lmax, device=device)[None, :] < lens[:, None]
            for k in s.layers:
                target = chosen[:, :, stored_layers.index(k)]
                pred_k = self.regressors[f"{s.name}_l{k}"](gathered)
                out[f"repr_{s.name}_l{k}"] = regression_loss(pred_k, target, mask, self.loss)
        return out
