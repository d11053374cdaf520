"""builders.dataset_writing: Parquet shards + dataset card that `datasets.load_dataset(folder, config)` reads back."""

from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from builders.dataset_writing import ecg_features, write_dataset_card, write_split
from builders.wfdb_reading import read_wfdb

DATA = Path(__file__).resolve().parent / "data"
CLASSES = ["sinus rhythm", "atrial fibrillation", "left bundle branch block"]
EXTRA = {"entities": datasets.List({"entity": datasets.Value("string"), "category": datasets.Value("string")})}


@pytest.fixture(scope="module")
def records():
    return [read_wfdb(p) for p in sorted((DATA / "ptbxl" / "records500" / "00000").glob("*_hr.hea"))[:6]]


def _rows(records, prefix):
    for i, ecg in enumerate(records):
        yield {"id": f"{prefix}{i}", "subject_id": str(i // 2), "ecg": ecg.digital, "adc_gain": ecg.adc_gain,
               "report": f"report {i}", "labels": [CLASSES[i % 3]] if i % 2 else [i % 3, 2],
               "entities": [{"entity": CLASSES[i % 3], "category": "Abnormal"}]}


def _ecg_int16(dataset) -> np.ndarray:
    column = dataset.data.table.column("ecg").combine_chunks().storage  # through Arrow: int16 stays int16
    values = column.flatten().flatten()
    assert str(values.type) == "int16"
    return values.to_numpy().reshape(len(dataset), 12, 5000)


def test_round_trip_through_load_dataset(tmp_path, records):
    features = ecg_features(CLASSES, EXTRA)
    train = write_split(_rows(records[:4], "t"), features, tmp_path, "train", "rhythm", rows_per_group=3)
    test = write_split(_rows(records[4:], "v"), features, tmp_path, "test", "rhythm")
    assert [p.name for p in train] == ["train-00000-of-00001.parquet"]
    assert [p.name for p in test] == ["test-00000-of-00001.parquet"] and test[0].parent.name == "rhythm"
    assert pq.ParquetFile(train[0]).metadata.num_row_groups == 2  # 4 rows, 3 per group
    card = write_dataset_card(tmp_path, pretty_name="Fixture", license="cc-by-4.0", citation="@misc{f, title={F}}",
                              configs=["rhythm"], features=features, description="Six PTB-XL records.",
                              extra_sections={"Labels": "Three rhythm classes."})
    front = yaml.safe_load(card.read_text().split("---")[1])
    assert front["license"] == "cc-by-4.0"
    assert front["configs"][0]["config_name"] == "rhythm"
    assert {s["name"]: s["num_examples"] for s in front["dataset_info"]["splits"]} == {"train": 4, "test": 2}
    assert "## Labels" in card.read_text() and "@misc{f" in card.read_text()

    loaded = datasets.load_dataset(str(tmp_path), "rhythm")
    assert loaded["train"].features == features
    assert loaded["train"].features["labels"].feature.names == CLASSES
    assert loaded["train"]["id"] == ["t0", "t1", "t2", "t3"]
    np.testing.assert_array_equal(_ecg_int16(loaded["train"]), np.stack([r.digital for r in records[:4]]))
    np.testing.assert_array_equal(_ecg_int16(loaded["test"]), np.stack([r.digital for r in records[4:]]))
    row = loaded["train"][1]
    assert row["labels"] == [CLASSES.index(CLASSES[1])] and row["entities"][0]["entity"] == CLASSES[1]
    assert loaded["train"][0]["labels"] == [0, 2]
    assert np.asarray(row["adc_gain"], dtype=np.float32).tolist() == [1000.0] * 12


def test_shards_stay_under_the_limit_and_rewrites_replace_them(tmp_path, records):
    features = ecg_features(CLASSES, EXTRA)
    shards = write_split(_rows(records, "r"), features, tmp_path, "train", max_shard_bytes=300_000, rows_per_group=2)
    assert [p.name for p in shards] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in shards) == 6
    again = write_split(_rows(records[:1], "s"), features, tmp_path, "train")
    assert sorted((tmp_path / "data").glob("train-*.parquet")) == again
    assert write_split([], features, tmp_path, "validation") == []
    write_dataset_card(tmp_path, pretty_name="F", license="odbl", citation="@misc{x}", features=features,
                       description="d")
    loaded = datasets.load_dataset(str(tmp_path))
    assert loaded["train"]["id"] == ["s0"] and list(loaded) == ["train"]


def test_schema_rejects_wrong_shapes_and_clashing_extras(tmp_path, records):
    features = ecg_features(CLASSES)
    row = next(_rows(records, "x"))
    row.pop("entities")
    row["ecg"] = row["ecg"][:, :2500]
    with pytest.raises(ValueError, match="ecg"):
        write_split([row], features, tmp_path, "train")
    with pytest.raises(ValueError, match="report"):
        ecg_features(CLASSES, {"report": datasets.Value("string")})
    row["ecg"] = records[0].digital
    for labels in ([3], ["no such class"]):
        row["labels"] = labels
        with pytest.raises(ValueError):
            write_split([row], features, tmp_path, "train")


def test_card_refuses_values_yaml_cannot_write_and_names_the_field(tmp_path, records):
    features = ecg_features([np.str_(name) for name in CLASSES])  # what a numpy-built class list carries
    write_split(_rows(records[:2], "t"), ecg_features(CLASSES, EXTRA), tmp_path, "train")
    with pytest.raises(TypeError, match=r"dataset card\.dataset_info\.features.*numpy\.str_"):
        write_dataset_card(tmp_path, pretty_name="x", license="mit", citation="", features=features, description="x")
    assert not (tmp_path / "README.md").exists()
