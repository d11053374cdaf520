"""The zero-shot evaluator end to end: real PTB-XL / CPSC-2018 records built by the builders (PTB-XL ecg_id 1-300 of
training/demo_data, the CPSC-2018 originals of tests/data), a tiny random SuPreME saved with `save_pretrained`, the
CLI in a fresh offline process loading it through `AutoModel`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DEMO_PTBXL, FIXTURES, REPO
from sklearn.metrics import roc_auc_score

from builders import cpsc2018
from builders.split_tables import load_split_tables
from training.evaluate_zeroshot import evaluate_zeroshot, load_benchmark_sets, load_prompts, queries_for


@pytest.fixture(scope="module")
def built(ptbxl_super_class):
    root = ptbxl_super_class.parent  # ptbxl/ is the shared build; cpsc2018/ is written beside it
    cpsc2018.build(FIXTURES / "cpsc2018", root / "cpsc2018", first_samples=2500)
    return root


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint[2]


@pytest.fixture(scope="module")
def cli_run(built, checkpoint, tmp_path_factory):
    """The documented command, run from outside the repository, offline, in a fresh process."""
    out = tmp_path_factory.mktemp("zeroshot_out")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path_factory.mktemp("hf_datasets"))}
    command = [sys.executable, str(REPO / "training" / "evaluate_zeroshot.py"), "--model", str(checkpoint),
               "--data", str(built / "ptbxl"), str(built / "cpsc2018"), "--output", str(out), "--batch-size", "16"]
    finished = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return out, json.loads((out / "zeroshot_results.json").read_text()), finished.stderr


def test_cli_scores_each_set_with_its_prompts_and_reports_unscorable_classes(cli_run):
    out, results, log = cli_run
    sets = results["sets"]
    assert set(sets) == {"ptbxl", "cpsc2018"}  # one config each here: named by folder
    assert sets["ptbxl"]["prompt_set"] == "ptbxl_super_class" and sets["cpsc2018"]["prompt_set"] == "cpsc2018"
    assert sets["ptbxl"]["queries"]["MI"] == "myocardial infarction"
    assert sets["ptbxl"]["num_examples"] == len([k for k in load_split_tables("ptbxl_super_class")["test"].keys
                                                 if int(k) <= 300])
    # CPSC's test split here holds A1983 (NORM) and A1984 (STD): the seven other classes have no positive
    cpsc = sets["cpsc2018"]
    assert sorted(cpsc["undefined_classes"]) == sorted(["AFIB", "VPC", "1AVB", "CRBBB", "STE", "PAC", "CLBBB"])
    assert cpsc["num_classes_scored"] == 2
    assert cpsc["macro_auroc"] == pytest.approx((cpsc["auroc"]["NORM"] + cpsc["auroc"]["STD"]) / 2)
    assert "cpsc2018: no AUROC for AFIB" in log
    assert results["mean_auroc"] == pytest.approx(np.mean([s["macro_auroc"] for s in sets.values()]))

    table = (out / "zeroshot_table.md").read_text()
    assert table.startswith("| Method | PTBXL-Super | PTBXL-Sub | PTBXL-Form | PTBXL-Rhythm | CPSC2018 | CSN | Average |")
    row = table.splitlines()[2].split(" | ")
    assert row[1] == f"{100 * sets['ptbxl']['macro_auroc']:.2f}" and row[2] == "–"
    assert "| AFIB | atrial fibrillation | 0 | no AUROC" in table
    png = (out / "zeroshot_auroc.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_cli_auroc_equals_the_model_on_the_raw_records(cli_run, checkpoint):
    """Independent path: raw WFDB files through the processor and tokenised queries, scored by sklearn."""
    from transformers import AutoModel, AutoProcessor

    _, results, _ = cli_run
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    table = load_split_tables("ptbxl_super_class")["test"]
    rows = [(k, labels) for k, labels in zip(table.keys, table.labels, strict=True) if int(k) <= 300]
    paths = [str(DEMO_PTBXL / "records500" / "00000" / f"{int(k):05d}_hr") for k, _ in rows]
    queries = results["sets"]["ptbxl"]["queries"]
    inputs = processor(text=list(queries.values()), ecg=paths, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits.numpy()
    for j, cls in enumerate(queries):
        truth = np.array([cls in labels for _, labels in rows], dtype=int)
        expected = roc_auc_score(truth, logits[:, j]) if 0 < truth.sum() < len(truth) else None
        assert results["sets"]["ptbxl"]["auroc"][cls] == pytest.approx(expected, abs=1e-9), cls


def test_function_api_for_early_stopping_matches_the_cli(cli_run, built, checkpoint, tmp_path):
    from transformers import AutoModel, AutoProcessor

    _, results, _ = cli_run
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    sets = load_benchmark_sets([str(built / "ptbxl")], split="validation", cache_dir=str(tmp_path))
    validation = evaluate_zeroshot(model, processor, sets)
    assert set(validation["sets"]) == {"ptbxl"} and 0 <= validation["mean_auroc"] <= 1
    assert model.training is False  # restored as it was
    tests = evaluate_zeroshot(model, processor, load_benchmark_sets([str(built / "cpsc2018")], cache_dir=str(tmp_path)))
    assert tests["sets"]["cpsc2018"]["auroc"] == results["sets"]["cpsc2018"]["auroc"]


def test_prompt_files_cover_the_106_classes_and_ckepe_covers_them_too():
    prompts = load_prompts()
    assert sum(len(p) for p in prompts.values()) == 106
    ckepe = load_prompts([REPO / "training" / "prompts" / "CKEPE_prompt.json"])
    for name, mapping in prompts.items():
        classes = list(mapping)
        assert classes == list(load_split_tables(name)["test"].class_names)
        assert all(q.strip() and len(q.split()) <= 8 for q in mapping.values())  # concise phrases
        assert queries_for(classes, prompts) == (name, list(mapping.values()))
        assert queries_for(classes, ckepe)[0] == "CKEPE_prompt"
    assert queries_for(["sinus rhythm", "atrial fibrillation"], prompts) == (None, ["sinus rhythm",
                                                                                   "atrial fibrillation"])
