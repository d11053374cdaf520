"""Linear probing: the probe itself on separable features, and the CLI on real PTB-XL records (ecg_id 1-300 of
training/demo_data) with a tiny SuPreME."""

from __future__ import annotations

import json

import evaluate
import numpy as np
import pytest
import torch

from modeling_supreme import SupremeModel
from training import linear_probe
from training.evaluate_zeroshot import METRIC_DIR


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(METRIC_DIR))


def _separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose first three dimensions decide three labels; the other 13 are noise."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 16, generator=generator)
    return features, (features[:, :3] > 0).float()


def test_probe_learns_separable_labels_and_keeps_the_best_validation_epoch(metric):
    head, history = linear_probe.fit_linear_probe(_separable(200, 0), _separable(100, 1), ["A", "B", "C"], metric,
                                                  epochs=15, batch_size=16, lr=0.1)
    assert isinstance(head, torch.nn.Linear) and head.weight.shape == (3, 16)
    assert len(history["validation_auroc"]) == 15
    assert history["best_validation_auroc"] == max(history["validation_auroc"]) > 0.98
    assert history["validation_auroc"][history["best_epoch"]] == history["best_validation_auroc"]
    kept = linear_probe.score_head(head, _separable(100, 1), ["A", "B", "C"], metric)["macro_auroc"]
    assert kept == pytest.approx(history["best_validation_auroc"])
    assert linear_probe.score_head(head, _separable(100, 2), ["A", "B", "C"], metric)["macro_auroc"] > 0.98


def test_train_subset_is_seeded_sized_and_checked():
    subset = linear_probe.train_subset(1000, 0.01, seed=42)
    assert len(subset) == 10 and np.all(np.diff(subset) > 0)
    assert np.array_equal(subset, linear_probe.train_subset(1000, 0.01, seed=42))
    assert not np.array_equal(subset, linear_probe.train_subset(1000, 0.01, seed=1))
    assert len(linear_probe.train_subset(50, 0.01, seed=0)) == 1
    assert len(linear_probe.train_subset(50, 1.0, seed=0)) == 50
    with pytest.raises(ValueError, match="fraction"):
        linear_probe.train_subset(50, 1.5, seed=0)


def test_cli_probes_the_frozen_encoder_of_a_saved_checkpoint(tmp_path_factory, tiny_checkpoint, ptbxl_super_class):
    model, _, checkpoint = tiny_checkpoint
    data = ptbxl_super_class
    before = {k: v.clone() for k, v in model.ecg_model.state_dict().items()}

    out = tmp_path_factory.mktemp("probe_out")
    results = linear_probe.main(["--model", str(checkpoint), "--data", str(data), "--fraction", "0.1", "1.0",
                                 "--epochs", "3", "--output", str(out)])
    probe = results["sets"]["ptbxl"]
    assert probe["0.1"]["num_train"] == 20 and probe["1.0"]["num_train"] == 195  # 195 train records among 1-300
    for fraction in ("0.1", "1.0"):
        assert 0 <= probe[fraction]["best_epoch"] < 3
        assert list(probe[fraction]["test"]["auroc"]) == ["HYP", "NORM", "MI", "CD", "STTC"]
        assert 0 <= probe[fraction]["test"]["macro_auroc"] <= 1
    saved = json.loads((out / "linear_probe_results.json").read_text())
    assert saved["sets"]["ptbxl"]["1.0"]["test"]["macro_auroc"] == pytest.approx(probe["1.0"]["test"]["macro_auroc"])
    assert "| ptbxl |" in (out / "linear_probe_table.md").read_text()

    reloaded = SupremeModel.from_pretrained(checkpoint).ecg_model.state_dict()  # the encoder was not trained
    assert all(torch.equal(before[k], reloaded[k]) for k in before)
