"""A saved SuPreME folder loads through the Auto classes in a fresh, offline process, from the copied remote code."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES, run_offline, tiny_config

from modeling_supreme import SupremeFeatureExtractor, SupremeModel, SupremeProcessor

RECORD = FIXTURES / "ptbxl" / "records500" / "00000" / "00001_hr"

FRESH_PROCESS = r"""
import json, sys, torch
# The project's own packages must not be needed: make importing them fail.
for name in ("modeling_supreme", "builders", "training"):
    sys.modules[name] = None
from transformers import AutoConfig, AutoModel, AutoProcessor
folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
queries = json.load(open(folder + "/queries.json"))
inputs = processor(text=queries, ecg=sys.argv[2], return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
torch.save({"logits": logits, "input_values": inputs["input_values"]}, folder + "/loaded.pt")
print(json.dumps({
    "model": type(model).__module__, "processor": type(processor).__module__,
    "feature_extractor": type(processor.feature_extractor).__module__, "config": type(config).__module__,
    "tokenizer": type(processor.tokenizer).__name__,
    "query_self_attention": type(model.fusion.layers[0].self_attn).__name__,
}))
"""


@pytest.mark.parametrize("query_attention", ["self", "all"])
def test_save_and_load_through_auto_classes_in_fresh_offline_process(tmp_path, tokenizer, query_attention):
    torch.manual_seed(0)
    model = SupremeModel(tiny_config(fusion_query_attention=query_attention)).eval()
    processor = SupremeProcessor(SupremeFeatureExtractor(), tokenizer)
    folder = tmp_path / "supreme"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    queries = ["atrial fibrillation", "left bundle branch block", "sinus rhythm"]
    (folder / "queries.json").write_text(json.dumps(queries))

    config = json.loads((folder / "config.json").read_text())
    assert config["fusion_query_attention"] == query_attention
    assert config["auto_map"]["AutoConfig"] == "configuration_supreme.SupremeConfig"
    assert config["auto_map"]["AutoModel"] == "modeling_supreme.SupremeModel"
    for name in ("configuration_supreme.py", "modeling_supreme.py", "processing_supreme.py"):
        assert (folder / name).is_file(), name

    inputs = processor(text=queries, ecg=str(RECORD), return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = run_offline(["-c", FRESH_PROCESS, folder, RECORD], cwd=outside, HF_HOME=str(tmp_path / "hf_home"))
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    for part in ("model", "processor", "feature_extractor", "config"):
        assert modules[part].startswith("transformers_modules."), modules
    assert modules["query_self_attention"] == type(model.fusion.layers[0].self_attn).__name__
    loaded = torch.load(folder / "loaded.pt")
    assert torch.equal(loaded["input_values"], inputs["input_values"])
    assert (loaded["logits"] - expected).abs().max().item() <= 1e-6
