"""The zero-shot benchmark's split tables (MERL, MIT licence), shipped in `builders/splits/`.

Each table lists the records of one split of one test set and has one 0/1 column per class. They define the benchmark
that SuPreME reports: the builders take records, splits, labels and class names from here and from nowhere else.

    >>> tables = load_split_tables("ptbxl_form")
    >>> tables["test"].class_names[:3], len(tables["test"].keys)
    (('PAC', 'DIG', 'HVOLT'), 880)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS_DIR = Path(__file__).with_name("splits")
# Hub split name -> the tables' file suffix.
SPLIT_SUFFIXES = {"train": "train", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class _TableLayout:
    folder: str
    prefix: str
    n_metadata_columns: int  # the class columns follow these (MERL's own readers slice the tables the same way)
    key_column: str


# Test set name -> where its tables are and how to read them. The names are those of the builders' configs.
TEST_SETS = {
    "ptbxl_super_class": _TableLayout("ptbxl/super_class", "ptbxl_super_class", 6, "ecg_id"),
    "ptbxl_sub_class": _TableLayout("ptbxl/sub_class", "ptbxl_sub_class", 6, "ecg_id"),
    "ptbxl_form": _TableLayout("ptbxl/form", "ptbxl_form", 6, "ecg_id"),
    "ptbxl_rhythm": _TableLayout("ptbxl/rhythm", "ptbxl_rhythm", 6, "ecg_id"),
    "cpsc2018": _TableLayout("icbeb", "icbeb", 7, "filename"),
    "csn": _TableLayout("chapman", "chapman", 3, "ecg_path"),
}


@dataclass(frozen=True)
class SplitTable:
    """One split of one test set.

    `keys[i]` is row i's record id in its source (PTB-XL ecg_id as a string, CPSC A-number, CSN JS-number);
    `labels[i]` its positive classes, in `class_names` order; `metadata` the table's non-class columns, row-aligned.
    """

    test_set: str
    split: str
    class_names: tuple[str, ...]
    keys: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    metadata: pd.DataFrame

    def labels_by_id(self) -> dict[str, tuple[str, ...]]:
        """Record id -> positive classes."""
        return dict(zip(self.keys, self.labels, strict=True))


def record_key(test_set: str, value) -> str:
    """A table's key cell -> the record id used in the built dataset's `id` column."""
    if test_set == "csn":
        return Path(str(value)).stem  # "/chapman/WFDBRecords/18/186/JS18048.mat" -> "JS18048"
    if test_set == "cpsc2018":
        return str(value)
    return str(int(value))


def load_split_table(test_set: str, split: str, class_names: tuple[str, ...] | None = None) -> SplitTable:
    """Read one table; `class_names` (default: the table's own column order) fixes the order of the class columns."""
    layout = _layout(test_set)
    if split not in SPLIT_SUFFIXES:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLIT_SUFFIXES)}")
    path = SPLITS_DIR / layout.folder / f"{layout.prefix}_{SPLIT_SUFFIXES[split]}.csv.xz"
    frame = pd.read_csv(path)
    table_classes = tuple(frame.columns[layout.n_metadata_columns :])
    if class_names is None:
        class_names = table_classes
    elif set(class_names) != set(table_classes):
        raise ValueError(f"{path}: class columns {sorted(table_classes)} differ from {sorted(class_names)}")
    values = frame[list(class_names)].to_numpy()
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{path}: class columns must hold only 0/1")
    keys = tuple(record_key(test_set, v) for v in frame[layout.key_column])
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate record ids in column {layout.key_column!r}")
    labels = tuple(tuple(c for c, v in zip(class_names, row, strict=True) if v == 1) for row in values)
    metadata = frame.iloc[:, : layout.n_metadata_columns].reset_index(drop=True)
    return SplitTable(test_set, split, tuple(class_names), keys, labels, metadata)


def load_split_tables(test_set: str) -> dict[str, SplitTable]:
    """All three splits of `test_set`, with the test table's class order for every split (the order the benchmark
    scores in; the PTB-XL sub-class train table lists its columns in another order)."""
    test = load_split_table(test_set, "test")
    tables = {split: load_split_table(test_set, split, test.class_names) for split in ("train", "validation")}
    tables["test"] = test
    return tables


def class_names(test_set: str) -> list[str]:
    """The classes of `test_set`, in the test table's column order: these are the dataset's `ClassLabel` names."""
    return list(load_split_table(test_set, "test").class_names)


def _layout(test_set: str) -> _TableLayout:
    if test_set not in TEST_SETS:
        raise ValueError(f"unknown test set {test_set!r}; expected one of {list(TEST_SETS)}")
    return TEST_SETS[test_set]
