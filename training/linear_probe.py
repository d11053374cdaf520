"""Linear probing: one linear layer on the frozen SuPreME ECG encoder, trained on 1 %, 10 % or 100 % of a train split.

    python training/linear_probe.py --model DIR_OR_REPO --data data/ptbxl --fraction 0.01 0.1 1.0 --output OUT

The paper's downstream settings: AdamW (lr 1e-3; weight decay not published, 0.01 here, AdamW's default), cosine
annealing over all steps, batch 16, 100 epochs; the epoch with the best validation macro AUROC is kept and scored on
the test split. The encoder is frozen, so its pooled vector (`model.ecg_model(...).pooler_output`, (N, hidden_size)) is
computed once per split and every epoch trains on those features: 100 epochs cost seconds after one encoder pass.
The train subset of a fraction is a seeded random choice of records (at least one); MERL drew its subsets with another
generator, so they are not the same records. `--data DIR` probes every config of the dataset, `DIR:CONFIG` one.

Writes `OUT/linear_probe_results.json` and `OUT/linear_probe_table.md` (test macro AUROC x 100 per set and fraction).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from torch import nn

from modeling_supreme.processing_supreme import ecg_from_digital
from training.ecg_data import class_names, ecg_dataloader, load_ecg_dataset
from training.evaluate_zeroshot import METRIC_DIR, json_safe

SPLITS = ("train", "validation", "test")
logger = logging.getLogger(__name__)


@torch.no_grad()
def encode(encoder, dataset: datasets.Dataset, normalization: str = "minmax", batch_size: int = 64
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen pooled features (num_examples, hidden_size) float32 and multi-hot labels (num_examples, num_classes)."""
    encoder.eval()
    device = encoder.device
    features, labels = [], []
    for batch in ecg_dataloader(dataset, batch_size=batch_size, shuffle=False, drop_last=False):
        values = ecg_from_digital(batch["ecg"].to(device), batch["adc_gain"].to(device), normalization,
                                  encoder.config.sampling_rate)
        features.append(encoder(values).pooler_output.float().cpu())
        labels.append(batch["labels"])
    return torch.cat(features), torch.cat(labels)


def train_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random `fraction` of `n` train records (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * n))
    return np.sort(np.random.default_rng(seed).permutation(n)[:count])


def fit_linear_probe(train: tuple[torch.Tensor, torch.Tensor], validation: tuple[torch.Tensor, torch.Tensor],
                     class_list: Sequence[str], metric: evaluate.EvaluationModule, epochs: int = 100,
                     batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 42
                     ) -> tuple[nn.Linear, dict]:
    """Train `nn.Linear(hidden_size, num_classes)` on (features, labels); return the layer of the best validation
    macro AUROC and the history (`best_epoch`, `best_validation_auroc`, `validation_auroc` per epoch)."""
    features, labels = train
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], labels.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(features) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    loss_function = nn.BCEWithLogitsLoss()
    best, history = None, {"validation_auroc": [], "best_epoch": None, "best_validation_auroc": -math.inf}
    for epoch in range(epochs):
        head.train()
        for rows in torch.randperm(len(features), generator=generator).split(batch_size):
            loss = loss_function(head(features[rows]), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        score = score_head(head, validation, class_list, metric)["macro_auroc"]
        history["validation_auroc"].append(score)
        if best is None or score > history["best_validation_auroc"]:  # NaN (nothing scorable) never wins after epoch 0
            best, history["best_epoch"], history["best_validation_auroc"] = copy.deepcopy(head), epoch, score
    return best, history


@torch.no_grad()
def score_head(head: nn.Linear, data: tuple[torch.Tensor, torch.Tensor], class_list: Sequence[str],
               metric: evaluate.EvaluationModule) -> dict:
    head.eval()
    features, labels = data
    return metric.compute(predictions=head(features).numpy(), references=labels.numpy().astype(np.int64),
                          class_names=list(class_list))


def linear_probe(encoder, splits: dict[str, datasets.Dataset], fractions: Sequence[float], normalization: str = "minmax",
                 epochs: int = 100, batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 0.01,
                 seed: int = 42, metric: evaluate.EvaluationModule | None = None) -> dict:
    """Probe `encoder` (a frozen `SupremeECGModel`) on `splits` (train / validation / test) for each train fraction.

    Returns `{fraction: {"num_train", "best_epoch", "validation_macro_auroc", "test": <metric result>}}`.
    """
    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True) if metric is None else metric
    class_list = class_names(splits["train"])
    encoder.requires_grad_(False)
    encoded = {split: encode(encoder, splits[split], normalization) for split in SPLITS}
    results = {}
    for fraction in fractions:
        rows = torch.from_numpy(train_subset(len(encoded["train"][0]), fraction, seed))
        subset = (encoded["train"][0][rows], encoded["train"][1][rows])
        head, history = fit_linear_probe(subset, encoded["validation"], class_list, metric, epochs, batch_size, lr,
                                         weight_decay, seed)
        results[str(fraction)] = {
            "num_train": len(rows),
            "best_epoch": history["best_epoch"],
            "validation_macro_auroc": history["best_validation_auroc"],
            "validation_auroc_per_epoch": history["validation_auroc"],
            "test": score_head(head, encoded["test"], class_list, metric),
        }
        logger.info("fraction %s: %d train records, best epoch %d, test macro AUROC %.4f", fraction, len(rows),
                    history["best_epoch"], results[str(fraction)]["test"]["macro_auroc"])
    return results


def load_splits(spec: str, **load_kwargs) -> dict[str, dict[str, datasets.Dataset]]:
    """`DIR` (every config) or `DIR:CONFIG` -> {set name: {split: dataset}}."""
    path, _, config = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    configs = [config] if config else datasets.get_dataset_config_names(path)
    sets = {}
    for name in configs:
        key = f"{Path(path).name}/{name}" if len(configs) > 1 or config else Path(path).name
        sets[key] = {split: load_ecg_dataset(path, None if name == "default" else name, split=split, **load_kwargs)
                     for split in SPLITS}
    return sets


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo (loaded with trust_remote_code)")
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders or Hub repos, optionally DIR:CONFIG")
    parser.add_argument("--fraction", nargs="+", type=float, default=[1.0], help="train fractions, e.g. 0.01 0.1 1.0")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
    encoder = getattr(model, "ecg_model", model).to(args.device)
    normalization = AutoFeatureExtractor.from_pretrained(args.model, trust_remote_code=True).normalization
    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True)
    results = {"model": args.model, "settings": {k: v for k, v in vars(args).items() if k not in ("model", "output")},
               "sets": {}}
    for spec in args.data:
        for name, splits in load_splits(spec).items():
            logger.info("%s: probing", name)
            results["sets"][name] = linear_probe(encoder, splits, args.fraction, normalization, args.epochs,
                                                 args.batch_size, args.lr, args.weight_decay, args.seed, metric)
    results["settings"]["output"] = str(args.output)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "linear_probe_results.json").write_text(json.dumps(json_safe(results), indent=2))
    (args.output / "linear_probe_table.md").write_text(_table(results, args.fraction))
    return results


def _table(results: dict, fractions: Sequence[float]) -> str:
    lines = ["| set | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |", "|---" * (len(fractions) + 1) + "|"]
    for name, by_fraction in results["sets"].items():
        cells = [by_fraction[str(f)]["test"]["macro_auroc"] for f in fractions]
        lines.append(f"| {name} | " + " | ".join("–" if math.isnan(c) else f"{100 * c:.2f}" for c in cells) + " |")
    return "\n".join(lines) + "\n\nTest macro AUROC x 100 of the linear layer with the best validation macro AUROC.\n"


if __name__ == "__main__":
    main()
