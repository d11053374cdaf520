"""A simple supervised baseline on the same data: per-lead summary features + one logistic regression per class.

What this much data permits without a ViT: the demo (`training/demo.py`) trains it on the pre-training records and
their labels and scores the same held-out records as SuPreME. It is supervised, so it scores only the classes it was
trained on, under their own names; SuPreME answers free-text queries.

Features of one ECG (in mV at 500 or 100 Hz, band-passed 0.5-40 Hz), 100 in all:

- per lead (12 x 8): standard deviation; 1st, 5th, 50th, 95th and 99th percentiles; mean and maximum absolute
  first difference (slope);
- rhythm (4): heart rate, RR-interval coefficient of variation, mean successive RR difference over mean RR, and the
  number of beats, from the peaks of the summed absolute slope of all leads.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

MIN_BEAT_GAP_S = 0.3  # no two R peaks closer than 300 ms (200 bpm)


def summary_features(millivolts: np.ndarray, sampling_rate: int = 500) -> np.ndarray:
    """(batch_size, 12, samples) ECGs in mV at `sampling_rate` → (batch_size, 100) features (the module docstring)."""
    band_pass = butter(2, [0.5, 40.0], btype="band", fs=sampling_rate, output="sos")
    signal = sosfiltfilt(band_pass, np.asarray(millivolts, dtype=np.float64), axis=-1)
    slope = np.abs(np.diff(signal, axis=-1))
    per_lead = np.concatenate(
        [signal.std(-1), *np.percentile(signal, [1, 5, 50, 95, 99], axis=-1), slope.mean(-1), slope.max(-1)], axis=-1
    )
    return np.concatenate([per_lead, np.stack([_rhythm(s, sampling_rate) for s in slope.sum(1)])], axis=-1)


def _rhythm(energy: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Heart rate, RR variation, successive RR difference and beat count from one ECG's summed absolute slope."""
    gap = int(MIN_BEAT_GAP_S * sampling_rate)
    peaks, _ = find_peaks(energy, distance=gap, height=0.4 * np.percentile(energy, 98))
    if len(peaks) < 3:  # no usable rhythm: a flat or very short trace
        return np.array([0.0, 0.0, 0.0, float(len(peaks))])
    rr = np.diff(peaks) / sampling_rate
    return np.array([60.0 / rr.mean(), rr.std() / rr.mean(), np.abs(np.diff(rr)).mean() / rr.mean(), len(peaks)])


class SummaryFeatureBaseline:
    """Standardised features → one L2-regularised, class-balanced logistic regression per class."""

    def __init__(self, regularization: float = 0.1):
        self.regularization = regularization
        self.models: dict[int, object] = {}

    def fit(self, features: np.ndarray, labels: np.ndarray) -> SummaryFeatureBaseline:
        """features (n, 100), multi-hot labels (n, classes); classes without a positive or a negative are skipped."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        for k in range(labels.shape[1]):
            if 0 < labels[:, k].sum() < len(labels):
                model = make_pipeline(
                    StandardScaler(), LogisticRegression(C=self.regularization, class_weight="balanced", max_iter=2000)
                )
                self.models[k] = model.fit(features, labels[:, k])
        return self

    def decision_function(self, features: np.ndarray, classes: list[int]) -> np.ndarray:
        """Scores (n, len(classes)) for the given training-class indices; NaN for a class it could not train."""
        scores = np.full((len(features), len(classes)), np.nan)
        for j, k in enumerate(classes):
            if k in self.models:
                scores[:, j] = self.models[k].decision_function(features)
        return scores
