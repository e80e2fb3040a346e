"""Tiny deterministic model and datasets for the training tests (no corpus, no real model).

Batch schema (N = batch size): ``{"x": (N, 4) float, "y": (N,) long, "feature_lens": (N,) long,
"cut_ids": list[str]}``; ``feature_lens`` (100..149 frames, from the cut id) gives the batch its audio
duration (``Trainer`` counts ``feature_lens`` × 10 ms). ``toy_trainer`` builds the ``Trainer`` of the AMP tests.
"""

from __future__ import annotations

import random
import zlib

import torch
from torch import nn

from asr_kd.training import LossOutput, Trainer, TrainerConfig, build_optimizer


class TinyModel(nn.Module):
    """Linear -> dropout -> Linear classifier; dropout draws from the global torch RNG."""

    def __init__(self, d_in: int = 4, d_hidden: int = 8, n_out: int = 3, dropout: float = 0.1):
        super().__init__()
        self.l1 = nn.Linear(d_in, d_hidden)
        self.drop = nn.Dropout(dropout)
        self.l2 = nn.Linear(d_hidden, n_out)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.drop(torch.tanh(self.l1(x))))


def loss_fn(model, batch, step):
    """Mean cross entropy; parts for logging; num_frames = batch size; ``None`` for an empty batch."""
    if batch["x"].size(0) == 0:
        return None
    logits = model(batch["x"])
    loss = nn.functional.cross_entropy(logits, batch["y"])
    return LossOutput(loss=loss, parts={"ce": loss.detach()}, num_frames=len(batch["y"]), cut_ids=batch.get("cut_ids"))


def example(cut_id: str) -> tuple[torch.Tensor, int]:
    """A feature vector and label determined by the cut id alone."""
    g = torch.Generator().manual_seed(zlib.crc32(cut_id.encode()))
    x = torch.randn(4, generator=g)
    y = int(x[0] > 0) + int(x[1] > 0.5)
    return x, y


def num_frames(cut_id: str) -> int:
    """The "audio length" of a toy cut in 10 ms frames (100..149)."""
    return 100 + zlib.crc32(cut_id.encode()) % 50


def collate(ids: list[str], global_noise: bool) -> dict:
    xs, ys = zip(*(example(i) for i in ids))
    x = torch.stack(xs)
    if global_noise:  # "augmentation" drawn from the global torch RNG (main process only)
        x = x + 0.01 * torch.randn_like(x)
    return {
        "x": x,
        "y": torch.tensor(ys),
        "feature_lens": torch.tensor([num_frames(i) for i in ids]),
        "cut_ids": list(ids),
    }


class CutDataset(torch.utils.data.Dataset):
    """Map-style dataset in lhotse's style: ``__getitem__`` takes a whole ``CutSet`` (one batch)."""

    def __init__(self, global_noise: bool = True):
        self.global_noise = global_noise

    def __getitem__(self, cuts):
        return collate([c.id for c in cuts], self.global_noise)


def lhotse_cuts(n: int = 60):
    from lhotse import CutSet
    from lhotse.testing.dummies import dummy_cut

    return CutSet.from_cuts(dummy_cut(i, duration=1.0 + (i % 5) * 0.25) for i in range(n))


def lhotse_loader(n_cuts: int = 30, num_workers: int = 0, seed: int = 0, global_noise: bool = True):
    import warnings

    from lhotse.dataset import DynamicBucketingSampler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = DynamicBucketingSampler(
            lhotse_cuts(n_cuts),
            max_duration=6.0,
            num_buckets=2,
            shuffle=True,
            seed=seed,
            buffer_size=200,
            num_cuts_for_bins_estimate=n_cuts,
        )
    dl = torch.utils.data.DataLoader(
        CutDataset(global_noise), sampler=sampler, batch_size=None, num_workers=num_workers
    )
    return dl, sampler


class ListBatches:
    """A resumable-by-skipping loader: fixed-size batches over a list of ids, shuffled per epoch
    with ``random.Random(seed + epoch)``; has ``set_epoch`` but no ``state_dict``."""

    def __init__(self, n: int = 40, batch_size: int = 4, seed: int = 0, global_noise: bool = True):
        self.ids = [f"utt-{i:03d}" for i in range(n)]
        self.batch_size, self.seed, self.epoch, self.global_noise = batch_size, seed, 0, global_noise

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        ids = list(self.ids)
        random.Random(self.seed + self.epoch).shuffle(ids)
        for i in range(0, len(ids), self.batch_size):
            yield collate(ids[i : i + self.batch_size], self.global_noise)

    def __len__(self):
        return (len(self.ids) + self.batch_size - 1) // self.batch_size


def toy_trainer(exp_dir, amp: str, loss=loss_fn, max_steps: int = 4, device: str = "cpu") -> Trainer:
    """A ``Trainer`` of ``TinyModel`` (seeded, on ``device``) over ``ListBatches()`` with the given ``amp`` mode:
    AdamW lr 1e-2, ``max_steps`` steps, no epoch limit, no validation, tensorboard or progress bar, and no
    interval checkpoints (the one at the end is written under ``exp_dir``). ``loss``: ``loss_fn``'s signature."""
    torch.manual_seed(0)
    model = TinyModel().to(device)
    opt = build_optimizer(model.parameters(), {"lr": 1e-2})
    cfg = TrainerConfig(
        max_steps=max_steps,
        max_epochs=None,
        amp=amp,
        ckpt_interval=0,
        valid_interval=0,
        tensorboard=False,
        progress_bar=False,
    )
    return Trainer(model, opt, loss, ListBatches(), exp_dir=exp_dir, cfg=cfg)
