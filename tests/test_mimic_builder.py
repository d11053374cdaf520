"""builders.mimic_iv_ecg end to end on a MIMIC-IV-ECG-layout fixture made of real PTB-XL waveforms and real statements."""

import csv
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from builders.mimic_iv_ecg import BuildConfig, build, count_words, index_records, main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mimic_fixture import build_mimic_fixture  # noqa: E402

SHARD = 4  # records per shard: several shards even on the fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_mimic_fixture(tmp_path_factory.mktemp("mimic"))


@pytest.fixture(scope="module")
def built(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    stats = build(BuildConfig(input=str(fixture.root), output=str(out), num_proc=2, records_per_shard=SHARD))
    return out, stats


def _by_id(dataset_dict):
    rows = {}
    for split, dataset in dataset_dict.items():
        table = dataset.data.table
        ecg = table.column("ecg").combine_chunks().storage.flatten().flatten()
        assert str(ecg.type) == "int16"
        ecg = ecg.to_numpy().reshape(len(dataset), 12, 5000)
        for i, row in enumerate(dataset.select_columns(["id", "subject_id", "labels", "adc_gain", "report"])):
            rows[row["id"]] = {**row, "ecg": ecg[i], "split": split}
    return rows


def test_build_keeps_exactly_the_good_records_with_their_samples(fixture, built):
    out, stats = built
    with open(out / "dropped.csv", encoding="utf-8") as handle:
        dropped = {row["study_id"]: row["reason"] for row in csv.DictReader(handle)}
    assert dropped == fixture.dropped
    assert stats["records"]["listed"] == 18 and stats["records"]["kept"] == len(fixture.expected) == 14
    assert stats["records"]["dropped"] == {"empty_report": 1, "short_report": 1, "truncated_signal": 1,
                                           "missing_header": 1}
    assert stats["records"]["records_with_missing_samples"] == 1 and stats["records"]["samples_filled"] == 4

    loaded = datasets.load_dataset(str(out))
    rows = _by_id(loaded)
    assert set(rows) == set(fixture.expected)
    for study, expected in fixture.expected.items():
        np.testing.assert_array_equal(rows[study]["ecg"], expected, err_msg=study)
        assert rows[study]["subject_id"] == fixture.subjects[study]
        assert rows[study]["report"] == fixture.reports[study]
        assert rows[study]["adc_gain"] == [200.0] * 12
    train = {r["subject_id"] for r in rows.values() if r["split"] == "train"}
    validation = {r["subject_id"] for r in rows.values() if r["split"] == "validation"}
    assert train and validation and not train & validation
    assert sorted(p.name for p in (out / "data").glob("*.parquet"))[0] == "train-00000-of-00004.parquet"


def test_labels_follow_the_statements(built):
    out, _ = built
    loaded = datasets.load_dataset(str(out))
    names = loaded["train"].features["labels"].feature.names
    labels = {study: {names[i] for i in row["labels"]} for study, row in _by_id(loaded).items()}
    assert "atrial fibrillation" in labels["49036311"]  # "Atrial fibrillation with rapid ventricular response"
    assert "atrial fibrillation" not in labels["41256771"]  # "Probable atrial fibrillation with rapid ..."
    assert "first degree av block" not in labels["44458630"]  # "... with borderline 1st degree A-V block"
    assert "sinus rhythm" in labels["44458630"]
    assert "first degree av block" in labels["41869720"]  # "Sinus rhythm with 1st degree A-V block"
    assert not labels["40689238"] & {"anterior myocardial infarction"}  # "Possible anterior infarct - ..."
    assert {"inferior myocardial infarction", "old myocardial infarction"} <= labels["49858911"]
    assert "acute myocardial infarction" not in labels["45315498"]  # "*** Consider acute ST elevation MI ***"
    assert {"right bundle branch block", "left anterior fascicular block"} <= labels["42706290"]
    assert "right bundle branch block" not in labels["42375321"]  # "Incomplete RBBB"
    row = loaded["train"].filter(lambda r: r["id"] == "49036311")[0] if "49036311" in loaded["train"]["id"] else \
        loaded["validation"].filter(lambda r: r["id"] == "49036311")[0]
    assert {"entity": "atrial fibrillation", "category": "Abnormal", "term": "atrial fibrillation"} in row["entities"]


def test_uncertain_findings_are_kept_apart_from_the_labels(built):
    """`uncertain_terms` holds what the report only hedges: labels can be rebuilt with another policy, no prompting."""
    out, stats = built
    loaded = datasets.load_dataset(str(out))
    rows = {row["id"]: row for split in loaded.values() for row in split}
    names = loaded["train"].features["labels"].feature.names
    hedged_af = rows["41256771"]  # "Probable atrial fibrillation with rapid ventricular response"
    assert hedged_af["uncertain_terms"] == ["atrial fibrillation"]  # the response itself is stated
    assert {"entity": "atrial fibrillation", "category": "Uncertain", "term": "atrial fibrillation"} in \
        hedged_af["entities"]
    assert "anterior myocardial infarction" in rows["40122307"]["uncertain_terms"]  # "Possible anterior infarct ..."
    assert "first degree av block" in rows["44458630"]["uncertain_terms"]  # "... borderline 1st degree A-V block"
    assert rows["49036311"]["uncertain_terms"] == []  # "Atrial fibrillation with rapid ventricular response"
    for row in rows.values():  # a term is a label or uncertain, never both
        assert not {names[i] for i in row["labels"]} & set(row["uncertain_terms"])
    # counted over records with a usable report; the two dropped for their waveform hedge nothing
    assert stats["labelling"]["records_with_uncertain_terms"] == sum(bool(r["uncertain_terms"]) for r in rows.values())


def test_card_stats_and_plot(built):
    out, stats = built
    card = (out / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "odbl"
    assert {s["name"] for s in front["dataset_info"]["splits"]} == {"train", "validation"}
    for needle in ("10.13026/4nqg-sb35", "Goldberger", "SuPreME", "ODbL", "dropped.csv"):
        assert needle in card
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["labelling"]["distinct_statements"] == 21 == stats["labelling"]["distinct_statements"]
    assert on_disk["labelling"]["labeller"] == "rules" and on_disk["run"]["llm_prompts"] == 0
    assert sum(on_disk["label_frequency"].values()) > 0 and on_disk["label_frequency"]["atrial fibrillation"] == 2
    assert (out / "label_frequency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _snapshot(out: Path) -> dict:
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and not p.relative_to(out).as_posix().startswith(".")}
    stats = json.loads(files.pop("stats.json"))
    stats.pop("run")
    return {"files": files, "stats": stats}


def test_killed_build_resumes_to_identical_output(fixture, built, tmp_path):
    out = tmp_path / "resumed"
    argv = ["--input", str(fixture.root), "--output", str(out), "--records-per-shard", str(SHARD)]
    # a forked child (it already has the imports), SIGKILLed from here once it has finished a shard: no cleanup runs
    child = multiprocessing.get_context("fork").Process(target=main, args=(argv + ["--num-proc", "1"],))
    child.start()
    deadline = time.monotonic() + 120
    while not list((out / ".work").glob("*.json")) and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    finished = len(list((out / ".work").glob("*.json")))
    assert not (out / "stats.json").exists() and finished >= 1

    stats = main(argv + ["--num-proc", "2"])
    assert stats["run"]["shards_reused"] == finished < stats["records"]["shards"]["train"] + stats["records"]["shards"][
        "validation"]
    reference, again = _snapshot(built[0]), _snapshot(out)
    assert again["stats"] == reference["stats"]
    assert again["files"].keys() == reference["files"].keys()
    for name, content in reference["files"].items():
        assert again["files"][name] == content, name


def test_words_are_counted_as_a_reader_counts_them(tmp_path):
    """"Atrial flutter/fibrillation", a real MIMIC-IV-ECG statement, is three words: a whitespace split counts two
    and would drop it under the 3-word filter."""
    assert count_words("Atrial flutter/fibrillation") == 3
    assert count_words("Sinus rhythm\nAbnormal ECG") == 4 and count_words(" / ") == 0
    (tmp_path / "record_list.csv").write_text(
        "subject_id,study_id,file_name,ecg_time,path\n"
        "1,11,11,2180-01-01 00:00:00,files/p1000/p1/s11/11\n"
        "1,12,12,2180-01-02 00:00:00,files/p1000/p1/s12/12\n"
    )
    (tmp_path / "machine_measurements.csv").write_text(
        "subject_id,study_id,report_0,report_1\n1,11,Atrial flutter/fibrillation,\n1,12,Sinus/rhythm,\n"
    )
    records, dropped = index_records(tmp_path)
    assert [r["study_id"] for r in records] == ["11"] and records[0]["report"] == "Atrial flutter/fibrillation"
    assert [(d["study_id"], d["reason"]) for d in dropped] == [("12", "short_report")]
