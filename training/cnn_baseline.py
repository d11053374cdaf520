"""The supervised reference: a small 1D ResNet trained end to end on the labelled ECGs, no pre-training.

Of the kind the PTB-XL benchmark (Strodthoff et al. 2021) compares: a stem convolution (kernel 7, stride 2) with batch
norm, ReLU and max pooling; stages of basic residual blocks (two kernel-5 convolutions), halving the time axis
between stages; global average and max pooling concatenated; dropout; one linear layer giving one logit per class.
Trained on multi-label targets with BCE-with-logits, AdamW and a one-cycle schedule, each ECG rotated in time by a
random offset every time it is seen.

The benchmark's CNNs reach about 0.93 macro AUROC on PTB-XL with much larger models and 50+ epochs on a GPU; this one
is sized for 2 CPU cores (15,000 ECGs of 12 x 1000 samples at 100 Hz, 10 epochs, in about 10 minutes), so expect it to
fall short of that. Inputs are float32 `(n, 12, 1000)`, already z-scored per lead by the caller.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.augmentation import random_time_shift

WIDTHS = (32, 64, 128)  # channels per stage; sized so an epoch of 15,000 ECGs takes under a minute on 2 CPU cores
BLOCKS_PER_STAGE = 1
KERNEL_SIZE = 5
DROPOUT = 0.5


class BasicBlock1d(nn.Module):
    """Two kernel-5 convolutions with a residual connection; a strided 1x1 projection where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        padding = KERNEL_SIZE // 2
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, KERNEL_SIZE, stride, padding, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(out_channels, out_channels, KERNEL_SIZE, 1, padding, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm1d(out_channels))  # fmt: skip
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet1d(nn.Module):
    """(batch, leads, samples) → (batch, num_classes) logits."""

    def __init__(self, num_classes: int, in_channels: int = 12, widths: tuple[int, ...] = WIDTHS,
                 blocks_per_stage: int = BLOCKS_PER_STAGE, dropout: float = DROPOUT) -> None:  # fmt: skip
        super().__init__()
        # The stem quarters the time axis at once: 1000 samples at 100 Hz → 250, where the convolutions are cheap.
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                blocks.append(BasicBlock1d(channels, width, 2 if stage > 0 and block == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*blocks)
        # Average pooling sees the whole record's rhythm and morphology, max pooling a finding in a single beat.
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))


def train_cnn(x_train: np.ndarray, y_train: np.ndarray, *, epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
              weight_decay: float = 1e-2, seed: int = 0, threads: int | None = None, progress: bool = True,
              widths: tuple[int, ...] = WIDTHS) -> nn.Module:  # fmt: skip
    """Train a `ResNet1d` on `x_train` `(n, 12, samples)` float32 and 0/1 targets `y_train` `(n, num_classes)`.

    Deterministic given `seed` (and the thread count); the caller's global torch RNG is left as it was. Returns the
    model in eval mode, on the CPU.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    x = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.float32))
    if x.ndim != 3 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"expected x (n, leads, samples) and y (n, classes), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    shuffler = np.random.default_rng(seed)
    steps_per_epoch = -(-len(x) // batch_size)
    with torch.random.fork_rng(devices=[]):  # seeds init, dropout and shifts without touching the caller's RNG
        torch.manual_seed(seed)
        model = ResNet1d(y.shape[1], x.shape[1], widths)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        # One-cycle: a warm-up lets the large peak rate work with batch norm; the anneal settles it in few epochs.
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
        loss_fn = nn.BCEWithLogitsLoss()
        model.train()
        bar = tqdm(range(epochs), desc="cnn baseline", unit="epoch", disable=not progress)
        for _ in bar:
            order = torch.from_numpy(shuffler.permutation(len(x)))
            total = 0.0
            for start in range(0, len(x), batch_size):
                batch = order[start : start + batch_size]
                if len(batch) < 2:
                    continue  # batch norm cannot train on a single ECG
                # A finding can fall anywhere in the 10 s: rotate each ECG so the network cannot tie it to a position.
                logits = model(random_time_shift(x[batch]))
                loss = loss_fn(logits, y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(batch)
            bar.set_postfix(loss=f"{total / len(x):.4f}")
    return model.eval()


@torch.no_grad()
def cnn_scores(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits `(n, num_classes)` float32 of `model` for ECGs `x` `(n, 12, samples)`, in eval mode."""
    model.eval()
    values = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    chunks = [model(values[start : start + batch_size]) for start in range(0, len(values), batch_size)]
    if not chunks:
        return np.zeros((0, model.head[-1].out_features), np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)
