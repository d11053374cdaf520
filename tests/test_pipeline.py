"""The zero-shot pipeline, saved with a checkpoint and loaded by `pipeline(...)` in a fresh offline process."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import FIXTURES, run_offline, tiny_config

from modeling_supreme import SupremeFeatureExtractor, SupremeModel, SupremeProcessor
from modeling_supreme.pipeline_supreme import QUERY_LIST_NOTE, TASK, ZeroShotECGClassificationPipeline

RECORD = FIXTURES / "ptbxl" / "records500" / "00000" / "00002_hr"
QUERIES = ["atrial fibrillation", "sinus bradycardia", "left ventricular hypertrophy"]

FRESH_PROCESS = r"""
import json, sys
for name in ("modeling_supreme", "builders", "training"):
    sys.modules[name] = None
from transformers import pipeline
classifier = pipeline("zero-shot-ecg-classification", model=sys.argv[1], trust_remote_code=True, device="cpu")
print(json.dumps({"module": type(classifier).__module__,
                  "result": classifier(sys.argv[2], candidate_labels=json.loads(sys.argv[3]))}))
"""


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def expected_scores(model, processor, queries):
    inputs = processor(text=queries, ecg=str(RECORD), return_tensors="pt")
    with torch.no_grad():
        return dict(zip(queries, torch.sigmoid(model(**inputs).logits[0]).tolist(), strict=True))


def test_checkpoint_folder_declares_the_pipeline_and_carries_its_code(checkpoint):
    _, _, folder = checkpoint
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"][TASK]["impl"] == "pipeline_supreme.ZeroShotECGClassificationPipeline"
    for name in ("pipeline_supreme.py", "modeling_supreme.py", "processing_supreme.py", "preprocessor_config.json"):
        assert (folder / name).is_file(), name


def test_pipeline_in_process_scores_sorted_and_equal_to_the_model(checkpoint):
    model, processor, _ = checkpoint
    classifier = ZeroShotECGClassificationPipeline(model=model, processor=processor, device="cpu")
    result = classifier(str(RECORD), candidate_labels=QUERIES)
    scores = [item["score"] for item in result]
    assert scores == sorted(scores, reverse=True)
    expected = expected_scores(model, processor, QUERIES)
    for item in result:
        assert item["score"] == pytest.approx(expected[item["label"]], abs=1e-6)
    single = classifier(str(RECORD), candidate_labels="sinus bradycardia")
    assert single[0]["score"] == pytest.approx(expected["sinus bradycardia"], abs=1e-6)
    batch = classifier([str(RECORD), str(RECORD)], candidate_labels=QUERIES)
    assert len(batch) == 2 and batch[0] == batch[1]
    with pytest.raises(ValueError, match="candidate_labels"):
        classifier(str(RECORD), candidate_labels=[])


def test_pipeline_warns_when_each_score_depends_on_the_query_list(checkpoint, tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        ZeroShotECGClassificationPipeline(model=checkpoint[0], processor=checkpoint[1], device="cpu")
    assert QUERY_LIST_NOTE not in caplog.text
    torch.manual_seed(0)
    model = SupremeModel(tiny_config(fusion_query_attention="all")).eval()
    processor = SupremeProcessor(SupremeFeatureExtractor(), tokenizer)
    with caplog.at_level(logging.WARNING):
        classifier = ZeroShotECGClassificationPipeline(model=model, processor=processor, device="cpu")
    assert QUERY_LIST_NOTE in caplog.text
    expected = expected_scores(model, processor, QUERIES)
    for item in classifier(str(RECORD), candidate_labels=QUERIES):
        assert item["score"] == pytest.approx(expected[item["label"]], abs=1e-6)


def test_pipeline_loads_from_the_folder_in_a_fresh_offline_process(checkpoint, tmp_path):
    model, processor, folder = checkpoint
    result = run_offline(
        ["-c", FRESH_PROCESS, folder, RECORD, json.dumps(QUERIES)], cwd=tmp_path, HF_HOME=str(tmp_path / "hf_home")
    )
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["module"].startswith("transformers_modules.")
    expected = expected_scores(model, processor, QUERIES)
    assert {item["label"] for item in output["result"]} == set(QUERIES)
    for item in output["result"]:
        assert item["score"] == pytest.approx(expected[item["label"]], abs=1e-6)


def test_checkpoint_carries_a_card_of_its_own_with_valid_hub_metadata(checkpoint):
    from huggingface_hub import ModelCard

    model, _, folder = checkpoint
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and "ecg" in card.data.tags
    assert not card.data.eval_results  # never scored: no model-index, and not the paper's figures
    assert "77.20" not in card.text and "has not been scored" in card.text
    assert f"width {model.config.hidden_size}" in card.text  # written from this checkpoint's config
    assert "Not a medical device" in card.text
