"""Small datasets in the dataset schema (docs/dataset_schema.md) built from the real PTB-XL records in tests/data (for the loader and trainer).

Labels are the records' SCP-ECG codes (`scp_codes` of ptbxl_database.csv); the class names are the codes that occur,
sorted. Written with the builders' own `ecg_features` / `write_split` / `write_dataset_card`, so
`datasets.load_dataset(folder)` reads it exactly as it reads a built dataset.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from builders.dataset_writing import ecg_features, write_dataset_card, write_split
from builders.wfdb_reading import read_wfdb

PTBXL = Path(__file__).resolve().parent / "data" / "ptbxl"


def ptbxl_rows(with_labels: bool = True) -> tuple[list[dict], list[str]]:
    """Rows (schema dicts, labels as class names) of the PTB-XL fixture records, and the sorted class names."""
    table = pd.read_csv(PTBXL / "ptbxl_database.csv", index_col="ecg_id")
    rows = []
    for ecg_id, meta in table.iterrows():
        record = read_wfdb(PTBXL / meta["filename_hr"])
        row = {"id": str(ecg_id), "subject_id": str(int(meta["patient_id"])), "ecg": record.digital,
               "adc_gain": record.adc_gain.tolist(), "report": str(meta["report"])}
        if with_labels:
            row["labels"] = sorted(ast.literal_eval(meta["scp_codes"]))
        rows.append(row)
    names = sorted({code for row in rows for code in row.get("labels", [])})
    return rows, names


def write_ptbxl_dataset(out_dir: Path, *, with_labels: bool = True, splits=(("train", 0.75), ("validation", 0.25)),
                        rows_per_group: int = 8) -> Path:
    """Write the PTB-XL fixture records as a dataset folder with the given (split, fraction) parts; returns the folder.

    Small row groups give several Arrow chunks per split, as real Hub datasets have.
    """
    rows, names = ptbxl_rows(with_labels)
    features = ecg_features(names)
    if not with_labels:
        del features["labels"]
    start = 0
    for i, (split, fraction) in enumerate(splits):
        stop = len(rows) if i == len(splits) - 1 else start + round(fraction * len(rows))
        write_split(rows[start:stop], features, out_dir, split, rows_per_group=rows_per_group)
        start = stop
    write_dataset_card(out_dir, pretty_name="PTB-XL fixture", license="cc-by-4.0", citation="@article{wagner2020ptbxl}",
                       features=features, description="40 PTB-XL 1.0.3 records for tests (CC BY 4.0).")
    return out_dir
