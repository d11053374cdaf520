"""The PTB-XL study's bookkeeping: its splits, labels, other hospitals' records and report (the training runs it
drives are tested through `training/pretrain.py` and the builders)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES

from training.ptbxl_study import TASKS, fold_plan, other_hospital_records, report, task_labels


def test_fold_plan_follows_the_benchmark_when_it_can():
    assert fold_plan(set(range(1, 11))) == {"train": [1, 2, 3, 4, 5, 6, 7, 8], "validation": [9], "test": [10]}
    assert fold_plan(set(range(1, 9))) == {"train": [1, 2, 3, 4, 5, 6, 7], "validation": [8], "test": []}
    with pytest.raises(SystemExit, match="fold 8"):
        fold_plan({1, 2, 3})


def test_task_labels_come_from_merls_tables():
    classes, labels, known = task_labels("super_class", np.array([1, 8, 10**7]))
    assert classes == ["HYP", "NORM", "MI", "CD", "STTC"]
    assert known.tolist() == [True, True, False]  # an id no table lists is unknown, not negative
    assert labels[0].tolist() == [0, 1, 0, 0, 0]  # ecg_id 1: NORM
    assert labels[2].sum() == 0


def test_other_hospitals_records_and_their_codes():
    records, names = other_hospital_records([FIXTURES / "cinc2021", FIXTURES / "cpsc2018"])
    assert [path.name for path, _ in records] == ["E07500", "E07501", "JS20000", "JS20001", "A1980.mat", "A1983.mat",
                                                  "A1984.mat"]
    cpsc = dict((path.name, codes) for path, codes in records)
    assert all(codes for codes in cpsc.values())  # every record has its conditions
    assert names["426783006"] == "sinus rhythm"


def test_report_lays_out_every_section():
    per_task = {task: {"macro_auroc": 0.8, "auroc": {}} for task in TASKS}
    results = {
        "folds": {"train": [1, 2], "validation": [8], "test": []},
        "zero_shot_validation": {"main": {"concise": {"mean_auroc": 0.8, "tasks": per_task}}},
        "baselines_validation": {"cnn": {**per_task, "mean_auroc": 0.9}},
        "linear_probe_validation": {**{t: {"1": {"macro_auroc": 0.7}} for t in TASKS}, "mean_auroc": {"1": 0.7}},
        "unseen_validation": {"queries": {"WPW": "Wolf-Parkinson-White syndrome"}, "positives": {"WPW": 8},
                              "unseen": {"macro_auroc": 0.6, "auroc": {"WPW": 0.6}},
                              "main": {"macro_auroc": 0.9, "auroc": {"WPW": 0.9}}},
    }
    text = report(results)
    assert "| main | concise | 0.800 | 0.800 | 0.800 | 0.800 | 0.800 |" in text
    assert "| cnn | 0.800 | 0.800 | 0.800 | 0.800 | 0.900 |" in text
    assert "| WPW | Wolf-Parkinson-White syndrome | 8 | 0.600 | 0.900 |" in text
