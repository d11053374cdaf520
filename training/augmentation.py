"""Training-time augmentation of normalised ECG batches, on the device (`augment` in the pre-training config).

The paper pre-trains on 771,500 ECGs without augmentation; these are for small-data runs (`cpu_small.yaml`), where
199 ECGs are seen hundreds of times. Each one keeps every label true:

- `time_shift`: rotate each ECG in time by its own random offset (a random crop of the record repeated end to end), so
  the model cannot tie a finding to where in the 10 s it happens to fall. All twelve leads move together. The seam
  joins two arbitrary points of the cardiac cycle: one irregular interval in every shifted ECG.
- `time_shift_pad`: move each ECG by its own random offset of up to a quarter of the record either way, without
  wrapping round: the samples shifted out are dropped and the gap is filled with zeros (the normalised baseline), so
  every interval the model sees is one the heart produced.
- `time_mask`: zero one window of each ECG (all leads, up to a tenth of the record, at a random place), so that no
  finding can be read from one beat alone ("time out" in Mehari & Strodthoff's study of ECG augmentations).
- `lead_mask`: zero each lead of each ECG with probability 0.2, so that no finding can be read from one lead alone.
  A finding seen in few leads (an infarct in V1-V3) can be masked out of a positive ECG: a noisy label, not a false
  finding.
"""

from __future__ import annotations

import torch


def check_augmentations(names) -> list[str]:
    """The list of augmentation names, or ValueError naming the unknown ones."""
    names = list(names or [])
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; available: {list(AUGMENTATIONS)}")
    return names


def random_time_shift(values: torch.Tensor) -> torch.Tensor:
    """values (batch_size, leads, samples) → each ECG rotated by a uniform random number of samples."""
    batch_size, leads, samples = values.shape
    offsets = torch.randint(0, samples, (batch_size, 1, 1), device=values.device)
    index = (torch.arange(samples, device=values.device) + offsets) % samples
    return torch.gather(values, 2, index.expand(batch_size, leads, samples))


def random_time_shift_pad(values: torch.Tensor, max_fraction: float = 0.25) -> torch.Tensor:
    """values (batch_size, leads, samples) → each ECG moved by a uniform offset in ±max_fraction · samples, zero-filled."""
    batch_size, leads, samples = values.shape
    limit = int(max_fraction * samples)
    offsets = torch.randint(-limit, limit + 1, (batch_size, 1, 1), device=values.device)
    index = torch.arange(samples, device=values.device) - offsets  # output sample t reads input sample t - offset
    inside = (index >= 0) & (index < samples)
    shifted = torch.gather(values, 2, index.clamp(0, samples - 1).expand(batch_size, leads, samples))
    return shifted * inside


def random_time_mask(values: torch.Tensor, max_fraction: float = 0.1) -> torch.Tensor:
    """values (batch_size, leads, samples) → each ECG with one window of up to max_fraction · samples set to zero."""
    batch_size, _, samples = values.shape
    lengths = torch.randint(0, int(max_fraction * samples) + 1, (batch_size, 1, 1), device=values.device)
    starts = (torch.rand(batch_size, 1, 1, device=values.device) * (samples - lengths + 1)).long()
    time = torch.arange(samples, device=values.device)
    return values * ~((time >= starts) & (time < starts + lengths))


def random_lead_mask(values: torch.Tensor, probability: float = 0.2) -> torch.Tensor:
    """values (batch_size, leads, samples) → each lead of each ECG set to zero with `probability`."""
    keep = torch.rand(values.shape[0], values.shape[1], 1, device=values.device) >= probability
    return values * keep


AUGMENTATIONS = {"time_shift": random_time_shift, "time_shift_pad": random_time_shift_pad,
                 "time_mask": random_time_mask, "lead_mask": random_lead_mask}  # fmt: skip


def augment(values: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Apply the named augmentations, in order, to a batch of model inputs."""
    for name in names:
        values = AUGMENTATIONS[name](values)
    return values
