"""training/ecg_data.py against the plain `datasets` path, on real PTB-XL records written in the project's schema."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pretrain_fixture import write_ptbxl_dataset

from training.ecg_data import class_names, ecg_dataloader, load_ecg_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_ptbxl_dataset(tmp_path_factory.mktemp("ptbxl_ds"), splits=(("train", 1.0),))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def ds(folder, cache):
    return load_ecg_dataset(folder, split="train", cache_dir=cache)


@pytest.fixture(scope="module")
def reference(ds):
    """Every row through `datasets`' own numpy formatter: the values the fast path must reproduce."""
    rows = ds.with_format("numpy")[:]
    names = class_names(ds)
    labels = np.zeros((len(ds), len(names)), np.float32)
    for i, positives in enumerate(ds["labels"]):
        labels[i, positives] = 1
    return {"ecg": rows["ecg"], "adc_gain": rows["adc_gain"], "labels": labels, "id": list(ds["id"])}


def _concat(batches):
    return {"ecg": torch.cat([b["ecg"] for b in batches]).numpy(), "adc_gain": torch.cat([b["adc_gain"] for b in batches]),
            "labels": torch.cat([b["labels"] for b in batches]).numpy(), "id": [i for b in batches for i in b["id"]]}


def test_same_values_and_int16_as_datasets(ds, reference):
    batches = list(ecg_dataloader(ds, batch_size=16, shuffle=False))  # 40 rows: 16, 16, 8; all held at once
    assert [len(b["id"]) for b in batches] == [16, 16, 8]
    got = _concat(batches)
    assert batches[0]["ecg"].dtype == torch.int16 and batches[0]["ecg"].shape == (16, 12, 5000)
    assert batches[0]["adc_gain"].dtype == torch.float32 and batches[0]["labels"].dtype == torch.float32
    assert got["id"] == reference["id"]
    np.testing.assert_array_equal(got["ecg"], reference["ecg"])
    np.testing.assert_array_equal(got["adc_gain"].numpy(), reference["adc_gain"])
    np.testing.assert_array_equal(got["labels"], reference["labels"])
    assert set(np.unique(got["ecg"][:, 0]).tolist()) != {0}  # real signals, not an empty buffer


def test_batches_held_by_views_are_never_overwritten(ds, reference):
    loader = ecg_dataloader(ds, batch_size=4, shuffle=False)
    first_rows = [batch["ecg"][0] for batch in loader]  # only a view of each batch survives the loop
    np.testing.assert_array_equal(torch.stack(first_rows).numpy(), reference["ecg"][::4])


def test_shuffle_is_seeded_per_epoch_and_covers_every_row(ds):
    def ids(epoch, seed=0):
        return [i for b in ecg_dataloader(ds, 8, shuffle=True, seed=seed, epoch=epoch, drop_last=False) for i in b["id"]]

    assert ids(0) == ids(0)
    assert ids(0) != ids(1) and ids(0) != ids(0, seed=1)
    assert sorted(ids(1)) == sorted(ds["id"])
    assert len(ecg_dataloader(ds, 8, shuffle=True)) == 5 and len(ecg_dataloader(ds, 16, shuffle=True)) == 2


def test_processes_get_disjoint_rows_and_equal_step_counts(ds):
    train = [list(ecg_dataloader(ds, 6, shuffle=True, seed=3, num_processes=2, process_index=r)) for r in (0, 1)]
    assert len(train[0]) == len(train[1]) == 3  # 40 // 12 global batches, the same on both processes
    seen = [{i for b in batches for i in b["id"]} for batches in train]
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 18

    evaluation = [{i for b in ecg_dataloader(ds, 6, shuffle=False, num_processes=3, process_index=r) for i in b["id"]}
                  for r in range(3)]
    assert sum(map(len, evaluation)) == 40 and set().union(*evaluation) == set(ds["id"])


def test_start_batch_resumes_the_same_epoch(ds, reference):
    full = list(ecg_dataloader(ds, 8, shuffle=True, seed=5, epoch=2))
    resumed = list(ecg_dataloader(ds, 8, shuffle=True, seed=5, epoch=2, start_batch=3))
    assert len(resumed) == len(full) - 3
    for a, b in zip(full[3:], resumed, strict=True):
        assert a["id"] == b["id"]
        assert torch.equal(a["ecg"], b["ecg"]) and torch.equal(a["labels"], b["labels"])


def test_worker_processes_give_the_same_batches(ds):
    serial = list(ecg_dataloader(ds, 8, shuffle=True, seed=1))
    parallel = list(ecg_dataloader(ds, 8, shuffle=True, seed=1, num_workers=2))
    for a, b in zip(serial, parallel, strict=True):
        assert a["id"] == b["id"] and torch.equal(a["ecg"], b["ecg"]) and torch.equal(a["adc_gain"], b["adc_gain"])


def test_selected_and_shuffled_datasets_map_rows_through_their_indices(ds, reference):
    subset = ds.select([7, 3, 30]).shuffle(seed=0)  # an indices mapping over the unchanged Arrow table
    got = _concat(list(ecg_dataloader(subset, 2, shuffle=False)))
    rows = [reference["id"].index(i) for i in got["id"]]
    assert sorted(rows) == [3, 7, 30]
    np.testing.assert_array_equal(got["ecg"], reference["ecg"][rows])
    np.testing.assert_array_equal(got["labels"], reference["labels"][rows])


def test_streaming_matches_and_splits(folder, reference):
    stream = load_ecg_dataset(folder, split="train", streaming=True)
    got = _concat(list(ecg_dataloader(stream, 16, shuffle=False)))
    assert got["id"] == reference["id"]
    np.testing.assert_array_equal(got["ecg"], reference["ecg"])
    np.testing.assert_array_equal(got["labels"], reference["labels"])

    ranks = [[i for b in ecg_dataloader(stream, 4, shuffle=True, seed=2, num_processes=2, process_index=r,
                                        drop_last=False) for i in b["id"]] for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == sorted(reference["id"])
    assert ranks[0] != sorted(ranks[0], key=reference["id"].index)  # shuffled, not in file order
    threaded = [i for b in ecg_dataloader(stream, 4, shuffle=False, num_workers=2) for i in b["id"]]
    assert sorted(threaded) == sorted(reference["id"])  # two threads, one split each, every row once
    resumed = [i for b in ecg_dataloader(stream, 4, shuffle=True, seed=2, num_processes=2, process_index=1,
                                         drop_last=False, start_batch=2) for i in b["id"]]
    assert resumed == ranks[1][8:]


def test_missing_dataset_and_missing_labels_say_what_to_fix(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="no_such_dataset"):
        load_ecg_dataset(tmp_path / "no_such_dataset", cache_dir=cache)
    unlabelled = load_ecg_dataset(write_ptbxl_dataset(tmp_path / "unlabelled", with_labels=False,
                                                      splits=(("train", 1.0),)), cache_dir=cache)
    with pytest.raises(ValueError, match="no 'labels' column"):
        class_names(unlabelled)
    batch = next(iter(ecg_dataloader(unlabelled, 4, shuffle=False)))
    assert "labels" not in batch and batch["ecg"].shape == (4, 12, 5000)
