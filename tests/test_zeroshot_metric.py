"""The shipped `evaluate` metric equals scikit-learn per class and reports classes it cannot score."""

from pathlib import Path

import evaluate
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
PREDICTIONS = ROOT / "tests" / "data" / "zeroshot_auroc" / "predictions.csv"


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(ROOT / "training" / "zeroshot_auroc"))


@pytest.fixture(scope="module")
def fixed():
    frame = pd.read_csv(PREDICTIONS)
    classes = [c.removeprefix("label_") for c in frame.columns if c.startswith("label_")]
    scores = frame[[f"score_{c}" for c in classes]].to_numpy()
    labels = frame[[f"label_{c}" for c in classes]].to_numpy()
    return classes, scores, labels


def test_equals_sklearn_per_class_and_reports_undefined(metric, fixed):
    classes, scores, labels = fixed
    result = metric.compute(predictions=scores, references=labels, class_names=classes)

    scorable = [j for j in range(len(classes)) if 0 < labels[:, j].sum() < len(labels)]
    assert [classes[j] for j in scorable] == ["AFIB", "CLBBB", "NORM", "PAC", "STE"]
    for j in scorable:
        assert result["auroc"][classes[j]] == pytest.approx(roc_auc_score(labels[:, j], scores[:, j]), abs=1e-9)
    expected_macro = np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in scorable])
    assert result["macro_auroc"] == pytest.approx(expected_macro, abs=1e-9)

    assert result["undefined_classes"] == ["NO_POSITIVE", "NO_NEGATIVE"]
    assert result["auroc"]["NO_POSITIVE"] is None and result["auroc"]["NO_NEGATIVE"] is None
    assert result["num_positives"]["NO_POSITIVE"] == 0
    assert result["num_classes_scored"] == 5


def test_batches_add_up_to_one_compute(metric, fixed):
    classes, scores, labels = fixed
    for start in range(0, len(scores), 10):
        metric.add_batch(predictions=scores[start : start + 10], references=labels[start : start + 10])
    batched = metric.compute(class_names=classes)
    whole = metric.compute(predictions=scores, references=labels, class_names=classes)
    assert batched == whole


def test_bad_inputs_are_named(metric):
    with pytest.raises(ValueError, match="0/1"):
        metric.compute(predictions=[[0.1], [0.2]], references=[[2], [0]])
    with pytest.raises(ValueError, match="2 class names for 1 columns"):
        metric.compute(predictions=[[0.1], [0.2]], references=[[1], [0]], class_names=["A", "B"])
