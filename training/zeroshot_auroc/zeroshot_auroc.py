"""Per-class AUROC and its macro mean: the zero-shot benchmark's metric, as an `evaluate` module loaded by path.

`evaluate.load("roc_auc")` fetches its script from the Hub; this module ships with the repository so the benchmark
scores offline:

    >>> import evaluate
    >>> auroc = evaluate.load("training/zeroshot_auroc")
    >>> auroc.compute(predictions=[[0.9, 0.2], [0.1, 0.4]], references=[[1, 0], [0, 0]], class_names=["AF", "LBBB"])
    {'macro_auroc': 1.0, 'auroc': {'AF': 1.0, 'LBBB': None}, ...}

AUROC is the Mann-Whitney statistic computed from average ranks, so tied scores count one half, exactly as
scikit-learn's `roc_auc_score`. A class whose references hold no positive or no negative has no AUROC: it is `None` in
`auroc`, listed in `undefined_classes`, and left out of `macro_auroc`, which is the unweighted mean over the classes
that have one (`num_classes_scored` says how many).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from scipy.stats import rankdata

_DESCRIPTION = """Per-class area under the ROC curve for multi-label scores, and the unweighted mean over classes.
Classes without a positive or without a negative reference are reported as undefined, never averaged."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (num_examples, num_classes) scores, higher meaning more likely positive (logits or probabilities).
    references: (num_examples, num_classes) 0/1 labels.
    class_names: optional list of num_classes names (default "0", "1", ...).
Returns:
    macro_auroc: mean AUROC over the classes that have one (NaN when none has).
    auroc: class name -> AUROC, None where undefined.
    undefined_classes: class names without a positive or without a negative reference.
    num_positives: class name -> number of positive references.
    num_classes_scored: number of classes in macro_auroc.
"""

_CITATION = """@article{hanley1982meaning,
  title={The meaning and use of the area under a receiver operating characteristic (ROC) curve},
  author={Hanley, James A and McNeil, Barbara J},
  journal={Radiology}, volume={143}, number={1}, pages={29--36}, year={1982}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ZeroshotAuroc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references, class_names=None):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references)
        if scores.ndim != 2 or scores.shape != labels.shape:
            raise ValueError(f"predictions {scores.shape} and references {labels.shape} must be equal 2-D shapes")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("references must be 0/1")
        if not np.isfinite(scores).all():
            raise ValueError("predictions hold NaN or Inf")
        names = [str(i) for i in range(scores.shape[1])] if class_names is None else list(class_names)
        if len(names) != scores.shape[1]:
            raise ValueError(f"{len(names)} class names for {scores.shape[1]} columns")

        auroc = {name: class_auroc(scores[:, j], labels[:, j]) for j, name in enumerate(names)}
        defined = [value for value in auroc.values() if value is not None]
        return {
            "macro_auroc": float(np.mean(defined)) if defined else float("nan"),
            "auroc": auroc,
            "undefined_classes": [name for name, value in auroc.items() if value is None],
            "num_positives": {name: int(labels[:, j].sum()) for j, name in enumerate(names)},
            "num_classes_scored": len(defined),
        }


def class_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """AUROC of one class from (num_examples,) scores and 0/1 labels; None without both a positive and a negative."""
    positive = labels == 1
    n_positive = int(positive.sum())
    n_negative = labels.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    ranks = rankdata(scores)  # average ranks: a tie between a positive and a negative counts one half
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))
