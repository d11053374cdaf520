"""The `supreme` command and the attention plots, on real PTB-XL records and a saved tiny checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, tiny_config
from matplotlib.image import imread

from modeling_supreme import SupremeFeatureExtractor, SupremeModel, SupremeProcessor
from modeling_supreme.pipeline_supreme import QUERY_LIST_NOTE
from training.attention_plots import DPI, PANEL_SIZE, plot_cross_attention
from training.checkpoint import save_checkpoint
from training.cli import main

RECORDS = [str(FIXTURES / "ptbxl" / "records500" / "00000" / f"0000{i}_hr") for i in (1, 2)]
SUPREME = Path(sys.executable).with_name("supreme")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def run_cli(capsys, *argv):
    """main(argv) in this process: (exit status, stdout, stderr)."""
    try:
        main(list(argv))
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_console_script_help():
    for argv in (["--help"], ["classify", "--help"], ["build", "ptbxl", "--help"], ["train", "--help"]):
        result = subprocess.run([str(SUPREME), *argv], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        assert "usage:" in result.stdout


@pytest.mark.parametrize(
    ("argv", "script"),
    [
        (["explain", "--help"], "supreme explain"),
        (["export", "--help"], "supreme export"),
        (["evaluate", "--help"], "evaluate_zeroshot.py"),
        (["probe", "--help"], "linear_probe.py"),
        (["build", "mimic-iv-ecg", "--help"], "builders.mimic_iv_ecg"),
        (["build", "csn", "--help"], "csn.py"),
    ],
)
def test_every_command_has_help(capsys, argv, script):
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0 and out.startswith("usage:") and script in out.splitlines()[0]


def test_classify_real_records_prints_each_querys_probability(checkpoint, capsys):
    model, processor, folder = checkpoint
    queries = ["atrial fibrillation", "sinus bradycardia"]
    status, out, err = run_cli(
        capsys, "classify", *RECORDS, "--model", str(folder), "--query", queries[0], "--query", queries[1], "--json"
    )
    assert status == 0 and QUERY_LIST_NOTE not in err, err
    results = json.loads(out)
    assert [r["record"] for r in results] == RECORDS
    inputs = processor(text=queries, ecg=RECORDS, return_tensors="pt")
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits)
    for row, result in zip(expected, results, strict=True):
        assert list(result["scores"]) == queries
        np.testing.assert_allclose(list(result["scores"].values()), row.numpy(), atol=1e-6)

    status, out, _ = run_cli(capsys, "classify", RECORDS[0], "--model", str(folder), "--query", queries[0])
    assert status == 0 and out.splitlines()[0] == RECORDS[0]
    assert out.splitlines()[1].split()[-1] == f"{expected[0, 0].item():.4f}"


@pytest.mark.parametrize(
    ("make_argv", "message"),
    [
        (lambda folder, tmp: ["classify", str(tmp / "missing_hr"), "--model", folder, "--query", "x"], "no such file"),
        (lambda folder, tmp: ["classify", str(tmp / "notes.txt"), "--model", folder, "--query", "x"], "not an ECG"),
        (lambda folder, tmp: ["classify", RECORDS[0], "--model", folder], "at least one query"),
        (lambda folder, tmp: ["classify", RECORDS[0], "--model", str(tmp), "--query", "x"], "cannot load"),
        (lambda folder, tmp: ["build", "nonsense"], "usage: supreme build"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line(checkpoint, capsys, tmp_path, make_argv, message):
    (tmp_path / "notes.txt").write_text("not an ECG")
    status, out, err = run_cli(capsys, *make_argv(str(checkpoint[2]), tmp_path))
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("supreme: error:") and message in lines[0], err


def test_attention_plot_has_one_panel_per_query_and_depends_on_the_query(checkpoint, tmp_path):
    model, processor, _ = checkpoint
    both = plot_cross_attention(model, processor, RECORDS[0], ["atrial fibrillation", "normal ecg"], tmp_path / "b.png")
    image = imread(both)
    assert image.shape[:2] == (int(PANEL_SIZE[1] * DPI * 2), int(PANEL_SIZE[0] * DPI))
    first = imread(plot_cross_attention(model, processor, RECORDS[0], "atrial fibrillation", tmp_path / "1.png"))
    second = imread(plot_cross_attention(model, processor, RECORDS[0], "left bundle branch block", tmp_path / "2.png"))
    assert first.shape == second.shape == (int(PANEL_SIZE[1] * DPI), int(PANEL_SIZE[0] * DPI), 4)
    assert np.abs(first - second).sum() > 0


def test_explain_command_writes_the_png(checkpoint, capsys, tmp_path):
    output = tmp_path / "explain.png"
    status, out, err = run_cli(
        capsys, "explain", RECORDS[1], "--model", str(checkpoint[2]), "--query", "sinus rhythm", "--output", str(output)
    )
    assert status == 0, err
    assert out.strip() == str(output) and imread(output).shape[:2] == (400, 1200)


def test_a_model_whose_queries_attend_to_each_other_says_so(tokenizer, capsys, tmp_path):
    torch.manual_seed(0)
    model = SupremeModel(tiny_config(fusion_query_attention="all")).eval()
    folder = str(save_checkpoint(model, SupremeProcessor(SupremeFeatureExtractor(), tokenizer), tmp_path / "all"))
    queries = ["--query", "sinus rhythm", "--query", "atrial fibrillation"]
    status, out, err = run_cli(capsys, "classify", RECORDS[0], "--model", folder, *queries, "--json")
    assert status == 0 and f"supreme: note: {QUERY_LIST_NOTE}" in err
    assert list(json.loads(out)[0]["scores"]) == ["sinus rhythm", "atrial fibrillation"]
    output = tmp_path / "explain.png"
    status, out, err = run_cli(capsys, "explain", RECORDS[0], "--model", folder, *queries, "--output", str(output))
    assert status == 0 and QUERY_LIST_NOTE in err and out.strip() == str(output)
    assert imread(output).shape[:2] == (800, 1200)


def test_classify_without_a_model_uses_the_shipped_one(capsys):
    from training.cli import DEFAULT_MODEL

    record = str(FIXTURES / "ptbxl" / "records100" / "00000" / "00001_lr")  # a normal ECG, at 100 Hz
    status, out, err = run_cli(capsys, "classify", record, "--query", "normal ECG", "--query", "atrial fibrillation",
                               "--json")
    assert status == 0, err
    scores = json.loads(out)[0]["scores"]
    assert DEFAULT_MODEL.name == "supreme-ptbxl"
    assert scores["normal ECG"] > 0.5 > scores["atrial fibrillation"]
