"""Write ECGs in MIMIC-IV-ECG v1.0's folder layout, so that `builders.mimic_iv_ecg` can read them.

MIMIC-IV-ECG itself cannot be shipped; the demo (PTB-XL records as a small pre-training corpus) and the tests write
real waveforms the way MIMIC stores them: `record_list.csv`, `machine_measurements.csv` with `report_0` … `report_17`,
and `files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}` in WFDB format 16 at 200 ADC units per mV, leads in MIMIC's
order (aVF before aVL), with a `# <subject_id>: ...` header comment.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

from modeling_supreme.processing_supreme import CANONICAL_LEADS

MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
MIMIC_GAIN = 200.0  # ADC units per mV
MIMIC_MISSING = -32768  # WFDB format 16's missing-sample value
NUM_REPORT_COLUMNS = 18


@dataclass
class MimicStudy:
    """One ECG to write. `digital` is (5000, 12) int in MIMIC's lead order at MIMIC_GAIN; see `mimic_digital`."""

    subject_id: str
    study_id: str
    digital: np.ndarray
    statements: list[str]
    ecg_time: str = "2180-07-01 09:00:00"

    @property
    def relative_path(self) -> str:
        return f"files/p{self.subject_id[:4]}/p{self.subject_id}/s{self.study_id}/{self.study_id}"


def mimic_digital(millivolts: np.ndarray) -> np.ndarray:
    """(12, samples) in mV, canonical lead order → (samples, 12) digital values in MIMIC's lead order and gain."""
    reordered = millivolts[[CANONICAL_LEADS.index(lead) for lead in MIMIC_LEADS]].T
    return np.clip(np.round(reordered * MIMIC_GAIN), -32767, 32767).astype(np.int64)


def write_mimic_layout(root: str | Path, studies: list[MimicStudy]) -> Path:
    """Write `studies` under `root` in MIMIC-IV-ECG's layout; returns `root`."""
    for study in studies:
        write_mimic_record(root, study)
    return write_mimic_tables(root, studies)


def write_mimic_record(root: str | Path, study: MimicStudy) -> None:
    """The study's WFDB record (`.hea` + `.dat`) under `root/files/...`."""
    if len(study.statements) > NUM_REPORT_COLUMNS:
        raise ValueError(f"study {study.study_id}: {len(study.statements)} statements, MIMIC has 18 report columns")
    folder = Path(root) / study.relative_path.rsplit("/", 1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        study.study_id,
        fs=500,
        units=["mV"] * 12,
        sig_name=list(MIMIC_LEADS),
        d_signal=study.digital,
        fmt=["16"] * 12,
        adc_gain=[MIMIC_GAIN] * 12,
        baseline=[0] * 12,
        comments=[f"<subject_id>: {study.subject_id}"],
        write_dir=str(folder),
    )


def write_mimic_tables(root: str | Path, studies: list[MimicStudy]) -> Path:
    """`record_list.csv` and `machine_measurements.csv` for `studies` (their `digital` is not read)."""
    root = Path(root)
    record_rows, measurement_rows = [], []
    for n, study in enumerate(studies):
        if len(study.statements) > NUM_REPORT_COLUMNS:
            raise ValueError(f"study {study.study_id}: {len(study.statements)} statements, MIMIC has 18 report columns")
        record_rows.append(
            {
                "subject_id": study.subject_id,
                "study_id": study.study_id,
                "file_name": study.study_id,
                "ecg_time": study.ecg_time,
                "path": study.relative_path,
            }
        )
        reports = list(study.statements) + [""] * (NUM_REPORT_COLUMNS - len(study.statements))
        measurement_rows.append(
            {
                "subject_id": study.subject_id,
                "study_id": study.study_id,
                "cart_id": str(6848296 + n),
                "ecg_time": study.ecg_time,
                **{f"report_{i}": text for i, text in enumerate(reports)},
                "bandwidth": "0.005-150 Hz",
                "filtering": "60 Hz notch Baseline filter",
                # Interval columns the builder does not read: plausible constants keep the file well-formed.
                "rr_interval": "700",
                "p_onset": "40",
                "p_end": "128",
                "qrs_onset": "170",
                "qrs_end": "258",
                "t_end": "518",
                "p_axis": "58",
                "qrs_axis": "30",
                "t_axis": "44",
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    _write_csv(root / "record_list.csv", record_rows)
    _write_csv(root / "machine_measurements.csv", measurement_rows)
    return root


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
