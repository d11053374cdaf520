"""`supreme export` and the exported folder: ONNX Runtime against PyTorch on real PTB-XL records, int8 calibrated on
real records, the query texts that travel with the graph, and the errors a user meets."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import FIXTURES, run_offline, tiny_config
from test_cli import run_cli

from modeling_supreme import SupremeFeatureExtractor, SupremeModel, SupremeOnnxModel, SupremeProcessor
from modeling_supreme.onnx_supreme import EXPORT_FILE, ONNX_FILE, QUANTIZED_FILE
from training.checkpoint import save_checkpoint
from training.cli import main
from training.onnx_export import FP32_TOLERANCE, export_onnx, processed_ecgs

RECORDS = FIXTURES / "ptbxl" / "records500" / "00000"
QUERIES = ["atrial fibrillation", "sinus rhythm", "sinus bradycardia", "left bundle branch block",
           "right bundle branch block", "left ventricular hypertrophy", "myocardial infarction"]


@pytest.fixture(scope="module")
def ecgs(tokenizer):
    """Six real PTB-XL ECGs through the processor (not among the first 16 records, which calibrate)."""
    processor = SupremeProcessor(SupremeFeatureExtractor(), tokenizer)
    return processor(ecg=[str(RECORDS / f"000{i}_hr") for i in range(20, 26)], return_tensors="pt")["input_values"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    """A tiny trained-shape checkpoint exported by the CLI for 7 queries, fp32 and int8 (calibrated on 16 records)."""
    torch.manual_seed(0)
    model = SupremeModel(tiny_config(initializer_range=0.15)).eval()  # wider init: logits far from 0, as trained
    processor = SupremeProcessor(SupremeFeatureExtractor(), tokenizer)
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = save_checkpoint(model, processor, root / "checkpoint")
    folder = root / "exported"
    argv = ["export", "--model", str(checkpoint), "--output", str(folder), "--int8", "--calibration", str(RECORDS),
            "--calibration-size", "16"]
    for query in QUERIES:
        argv += ["--query", query]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # a module fixture cannot use the function-scoped capsys
        main(argv)
    return model, processor, folder, printed.getvalue()


def torch_logits(model, queries, ecgs, tokenizer):
    with torch.no_grad():
        states = model.get_query_states(model.encode_queries(queries, tokenizer))
        return model(input_values=ecgs, query_states=states).logits.numpy()


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_export_round_trip_equals_pytorch_and_int8_stays_close(exported, ecgs, tokenizer, runtime):
    model, _, folder, _ = exported
    expected = torch_logits(model, QUERIES, ecgs, tokenizer)
    fp32 = SupremeOnnxModel.from_pretrained(folder, file_name=ONNX_FILE, runtime=runtime)
    np.testing.assert_allclose(fp32(ecgs).logits.numpy(), expected, atol=FP32_TOLERANCE, rtol=0)
    int8 = SupremeOnnxModel.from_pretrained(folder, runtime=runtime)  # the default: the int8 graph
    assert int8.graph.name == QUANTIZED_FILE and int8.runtime == runtime
    logits = int8(ecgs).logits.numpy()
    # a random tiny model's logits sit near one value, so only an absolute bound means something here; accuracy on a
    # trained model is benchmarks/bench_onnx.py's job
    assert np.abs(logits - expected).max() < 0.02
    assert not np.allclose(logits, expected, atol=1e-5)  # it is quantised
    # static ranges: an ECG's logits do not depend on the batch it is scored in (dynamic int8 would break this)
    np.testing.assert_allclose(int8(ecgs[2:3]).logits.numpy(), logits[2:3], atol=1e-6)
    record = json.loads((folder / EXPORT_FILE).read_text())
    assert record["queries"] == QUERIES
    assert record["graphs"]["fp32"]["max_abs_logit_error_vs_torch"] <= FP32_TOLERANCE
    assert record["graphs"]["int8"]["calibration_ecgs"] == 16


def test_a_subset_of_the_exported_queries_scores_as_in_the_full_list(exported, ecgs):
    _, _, folder, _ = exported
    onnx_model = SupremeOnnxModel.from_pretrained(folder, file_name=ONNX_FILE)
    full = onnx_model(ecgs).logits.numpy()
    asked = [QUERIES[4], QUERIES[0]]
    subset = onnx_model(ecgs, query_states=onnx_model.select_query_states(asked)).logits.numpy()
    np.testing.assert_allclose(subset, full[:, [4, 0]], atol=1e-5)


def test_a_query_that_was_not_exported_is_an_error_never_a_silent_score(exported, capsys):
    _, _, folder, _ = exported
    onnx_model = SupremeOnnxModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"exported for 7 queries, not for 'atrial flutter'"):
        onnx_model.select_query_states(["sinus rhythm", "atrial flutter"])
    status, _, err = run_cli(capsys, "classify", str(RECORDS / "00001_hr"), "--onnx", str(folder), "--query",
                             "atrial flutter")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "atrial flutter" in err, err


def test_classify_with_the_exported_folder_scores_its_queries(exported, capsys):
    _, processor, folder, export_output = exported
    assert str(folder / QUANTIZED_FILE) in export_output and "int8" in export_output
    record = str(RECORDS / "00001_hr")
    status, out, err = run_cli(capsys, "classify", record, "--onnx", str(folder), "--json")
    assert status == 0, err
    scores = json.loads(out)[0]["scores"]
    assert list(scores) == QUERIES  # no --query: every exported query
    onnx_model = SupremeOnnxModel.from_pretrained(folder)
    expected = torch.sigmoid(onnx_model(processor(ecg=record, return_tensors="pt")["input_values"]).logits[0])
    np.testing.assert_allclose(list(scores.values()), expected.numpy(), atol=1e-6)


@pytest.mark.parametrize(("damage", "runtime"), [("truncate", "onnxruntime"), ("truncate", "openvino"), ("remove", "auto")])
def test_a_corrupt_or_missing_onnx_file_gives_one_clear_line(exported, capsys, tmp_path, damage, runtime):
    _, _, folder, _ = exported
    copy = shutil.copytree(folder, tmp_path / "copy")
    graph = copy / QUANTIZED_FILE
    if damage == "truncate":
        graph.write_bytes(graph.read_bytes()[:1000])
    else:
        graph.unlink()
        (copy / ONNX_FILE).unlink()
    status, _, err = run_cli(capsys, "classify", str(RECORDS / "00001_hr"), "--onnx", str(copy), "--runtime", runtime)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("supreme: error:"), err
    assert str(graph if damage == "truncate" else copy / ONNX_FILE) in lines[0]


def test_int8_without_real_ecgs_or_over_a_checkpoint_is_refused(exported, capsys, tmp_path):
    status, _, err = run_cli(capsys, "export", "--model", str(tmp_path), "--output", str(tmp_path / "out"), "--query",
                             "x", "--int8")
    assert status == 2 and "--calibration" in err and len(err.strip().splitlines()) == 1
    checkpoint = exported[2].parent / "checkpoint"
    status, _, err = run_cli(capsys, "export", "--model", str(checkpoint), "--output", str(checkpoint), "--query", "x")
    assert status == 2 and "holds a PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1


def test_a_paper_decoder_export_for_295_queries_needs_its_whole_list(tmp_path, tokenizer, ecgs):
    """fusion_query_attention="all": the cached first-layer states are still query-only, and a query's score depends
    on the whole exported list, so only that list (in any order) may be asked."""
    torch.manual_seed(0)
    model = SupremeModel(tiny_config(fusion_query_attention="all", initializer_range=0.15)).eval()
    processor = SupremeProcessor(SupremeFeatureExtractor(), tokenizer)
    queries = [f"finding number {i}" for i in range(295)]
    export_onnx(model, processor, queries, tmp_path)
    onnx_model = SupremeOnnxModel.from_pretrained(tmp_path)
    assert onnx_model.graph.name == ONNX_FILE  # no int8 asked: the fp32 graph
    logits = onnx_model(ecgs[:2]).logits.numpy()
    assert logits.shape == (2, 295)
    np.testing.assert_allclose(logits, torch_logits(model, queries, ecgs[:2], tokenizer), atol=FP32_TOLERANCE, rtol=0)
    reordered = onnx_model(ecgs[:2], query_states=onnx_model.select_query_states(queries[::-1])).logits.numpy()
    np.testing.assert_allclose(reordered, logits[:, ::-1], atol=1e-5)
    with pytest.raises(ValueError, match="ask all 295 exported queries"):
        onnx_model.select_query_states(queries[:7])


FRESH_PROCESS = r"""
import json, sys
for name in ("modeling_supreme", "builders", "training"):
    sys.modules[name] = None
from transformers import AutoModel, pipeline
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
classifier = pipeline("zero-shot-ecg-classification", model=sys.argv[1], trust_remote_code=True, device="cpu")
print(json.dumps({"class": type(model).__name__, "graph": model.graph.name,
                  "result": classifier(sys.argv[2], candidate_labels=json.loads(sys.argv[3]))}))
"""


def test_the_folder_loads_through_automodel_and_the_pipeline_in_a_fresh_offline_process(exported, tmp_path):
    _, processor, folder, _ = exported
    record, asked = str(RECORDS / "00003_hr"), [QUERIES[1], QUERIES[5]]
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS)
    output = json.loads(run_offline([script, folder, record, json.dumps(asked)], cwd=tmp_path).stdout)
    assert output["class"] == "SupremeOnnxModel" and output["graph"] == QUANTIZED_FILE
    onnx_model = SupremeOnnxModel.from_pretrained(folder)
    states = onnx_model.select_query_states(asked)
    values = processor(ecg=record, return_tensors="pt")["input_values"]
    expected = dict(zip(asked, torch.sigmoid(onnx_model(values, query_states=states).logits[0]).tolist(), strict=True))
    assert {item["label"]: pytest.approx(expected[item["label"]], abs=1e-6) for item in output["result"]} == expected


def test_processed_ecgs_names_a_folder_without_records(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        processed_ecgs(SupremeFeatureExtractor(), [tmp_path], 4)


def test_exported_card_is_its_checkpoints_card_and_says_what_the_folder_is(exported):
    model, _, folder, _ = exported
    card = (folder / "README.md").read_text()
    assert f"width {model.config.hidden_size}" in card  # the source checkpoint's generated card, carried over
    assert "exported to ONNX by `supreme export`" in card and "scores only those queries" in card
    assert "77.20" not in card and "model-index" not in card  # never scored: no results, no paper figures
