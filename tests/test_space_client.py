"""The Space (`supreme app`, space/app.py) driven through gradio_client as a program reaches it: its scores are the
pipeline's, uploads of every kind are read, and each bad input is one readable message after which the next request
still works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, REPO

SHIPPED = REPO / "checkpoints" / "supreme-ptbxl"
RECORD = FIXTURES / "ptbxl" / "records500" / "00000" / "00009_hr"  # the Space's first example
EXAMPLE = "PTB-XL 9: normal ECG"
QUERIES = ["normal ECG", "atrial fibrillation", "complete left bundle branch block"]


@pytest.fixture(scope="module")
def client(space_url):
    from gradio_client import Client

    return Client(space_url, verbose=False, httpx_kwargs={"timeout": 600})  # a busy machine answers slowly


@pytest.fixture(scope="module")
def classifier():
    from transformers import pipeline

    return pipeline("zero-shot-ecg-classification", model=str(SHIPPED), trust_remote_code=True)


def classify(client, files=None, example=EXAMPLE, queries=QUERIES, sampling_rate=500, lead_names=""):
    """The page's Classify button: returns (the JSON file's scores as {query: probability}, the table's rows)."""
    from gradio_client import handle_file

    uploads = [handle_file(str(path)) for path in files] if files else None
    result = client.predict(uploads, example, sampling_rate, lead_names, "\n".join(queries), api_name="/classify")
    scores = json.loads(Path(result[6]).read_text())["scores"]
    return {row["query"]: row["probability"] for row in scores}, result[1]["data"]


def expect_message(client, words: str, **inputs) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as error:
        classify(client, **inputs)
    assert words in str(error.value), str(error.value)


def test_example_and_uploads_score_as_the_pipeline(client, classifier, tmp_path):
    expected = {item["label"]: item["score"] for item in classifier(str(RECORD), candidate_labels=QUERIES)}
    scores, table = classify(client)
    assert scores.keys() == expected.keys()
    for query, probability in expected.items():
        assert abs(scores[query] - probability) <= 1e-5, (query, scores[query], probability)
    assert [row[0] for row in table] == sorted(expected, key=expected.get, reverse=True)  # sorted, highest first

    uploaded, _ = classify(client, files=[RECORD.with_suffix(".hea"), RECORD.with_suffix(".dat")], example=None)
    assert uploaded == scores

    # an array of another rate and lead order: the processor resamples and reorders as the pipeline does
    from scipy.signal import resample_poly

    from modeling_supreme.processing_supreme import read_ecg_file

    signal, _, leads = read_ecg_file(RECORD)
    array = resample_poly(signal, 1, 2, axis=1)[::-1]
    np.save(tmp_path / "ecg.npy", array)
    expected = {item["label"]: item["score"] for item in classifier(
        array, candidate_labels=QUERIES, sampling_rate=250, lead_names=leads[::-1])}
    from_array, _ = classify(client, files=[tmp_path / "ecg.npy"], example=None, sampling_rate=250,
                             lead_names=", ".join(leads[::-1]))
    for query, probability in expected.items():
        assert abs(from_array[query] - probability) <= 1e-5, (query, from_array[query], probability)
    assert abs(from_array["normal ECG"] - scores["normal ECG"]) > 1e-6  # not silently the example again

    cpsc = FIXTURES / "cpsc2018" / "A1984.mat"
    expected = {item["label"]: item["score"] for item in classifier(str(cpsc), candidate_labels=QUERIES)}
    from_mat, _ = classify(client, files=[cpsc], example=None)
    for query, probability in expected.items():
        assert abs(from_mat[query] - probability) <= 1e-5


def test_each_bad_input_is_one_message_and_the_next_request_works(client, tmp_path):
    good, _ = classify(client)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    shutil.copy(RECORD.with_suffix(".hea"), truncated)
    (truncated / RECORD.with_suffix(".dat").name).write_bytes(RECORD.with_suffix(".dat").read_bytes()[:50_001])
    transposed = tmp_path / "transposed.npy"
    np.save(transposed, np.zeros((5000, 12)))
    unnamed = tmp_path / "unnamed.npy"
    np.save(unnamed, np.random.default_rng(0).normal(size=(12, 5000)))

    cases = {
        "truncated .dat": ("could not be read as the header describes them",
                           dict(files=sorted(truncated.iterdir()))),
        "header without its signal": ("names its signal file(s) 00009_hr.dat, which were not uploaded",
                                      dict(files=[RECORD.with_suffix(".hea")])),
        "array of the wrong shape": ("Is it (samples, leads)? Transpose it.", dict(files=[transposed])),
        "unknown lead names": ("lacks the standard lead(s) I, II, III",
                               dict(files=[unnamed], lead_names=", ".join(f"lead {i}" for i in range(12)))),
        "empty query list": ("No query", dict(queries=["", "  "])),
    }
    for words, inputs in cases.values():
        expect_message(client, words, **inputs)
        assert classify(client)[0] == good
