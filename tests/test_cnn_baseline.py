"""The supervised 1D ResNet baseline: it learns two findings planted in noise, and a seed fixes its result."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from training.cnn_baseline import cnn_scores, train_cnn

LEAD_II, LEAD_V1 = 1, 6


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 12-lead 'ECGs' with a beat train in every lead; class 0: a 5 Hz sine on lead II; class 1: V1 inverted."""
    rng = np.random.default_rng(seed)
    time = np.arange(1000)
    labels = (rng.random((n, 2)) < 0.5).astype(np.float32)
    x = rng.standard_normal((n, 12, 1000)).astype(np.float32)
    for i in range(n):
        beats = np.zeros(1000, np.float32)
        beats[rng.integers(0, 80) :: 80] = 4.0  # one sharp beat every 0.8 s at 100 Hz, random phase
        x[i] += np.convolve(beats, np.hanning(7), mode="same")
        if labels[i, 0]:
            x[i, LEAD_II] += 2 * np.sin(2 * np.pi * 5 * time / 100 + rng.uniform(0, 2 * np.pi))
        if labels[i, 1]:
            x[i, LEAD_V1] -= 2 * np.convolve(beats, np.hanning(7), mode="same")
    return x, labels


def test_learns_planted_findings():
    x_train, y_train = _synthetic(256, 0)
    x_test, y_test = _synthetic(128, 1)
    model = train_cnn(x_train, y_train, epochs=3, batch_size=32, seed=0, threads=1, progress=False)
    scores = cnn_scores(model, x_test)
    assert scores.shape == (128, 2) and scores.dtype == np.float32
    for k in range(2):
        assert roc_auc_score(y_test[:, k], scores[:, k]) > 0.9, k


def test_same_seed_same_scores():
    x, y = _synthetic(64, 2)
    first, second = (cnn_scores(train_cnn(x, y, epochs=1, batch_size=32, seed=3, threads=1, progress=False), x)
                     for _ in range(2))  # fmt: skip
    np.testing.assert_array_equal(first, second)
