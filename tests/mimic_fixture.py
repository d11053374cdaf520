"""A small MIMIC-IV-ECG v1.0 in its exact layout, built in a temporary folder from real data.

Waveforms are real PTB-XL records (tests/data/ptbxl) rewritten as MIMIC stores them: leads in MIMIC's order (aVF
before aVL), 200 ADC units per mV, WFDB format 16, `files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}` with a
`# <subject_id>: ...` header comment. Reports are real MIMIC-IV-ECG machine statements (tests/data/
mimic_statements.jsonl, plus the summary lines "Abnormal ECG", "Normal ECG", "Borderline ECG"), capitalised as the
machines print them, one statement per `report_N` column. Some records are broken on purpose; `FixtureInfo` says how.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from builders.mimic_layout import MIMIC_LEADS, MIMIC_MISSING, MimicStudy, mimic_digital, write_mimic_layout
from modeling_supreme.processing_supreme import CANONICAL_LEADS, fill_non_finite

DATA = Path(__file__).resolve().parent / "data"
SUMMARY_STATEMENTS = {"abnormal ecg", "normal ecg", "borderline ecg"}
_UPPER = {"ecg", "rbbb", "lbbb", "lvh", "st", "qrs", "mi", "v3", "v4", "a-v", "pac(s)", "pvc(s)", "v3/v4"}

# (study_id, subject_id, PTB-XL ecg_id, statements, how the record is broken)
RECORDS = [
    ("40689238", "10000032", 1, ["sinus rhythm", "possible anterior infarct - age undetermined", "abnormal ecg"], None),
    ("44458630", "10000032", 2, ["sinus rhythm with borderline 1st degree a-v block", "borderline ecg"], None),
    ("49036311", "10000032", 3, ["atrial fibrillation with rapid ventricular response", "abnormal ecg"], None),
    ("41256771", "10000117", 4, ["probable atrial fibrillation with rapid ventricular response", "abnormal ecg"], None),
    ("45090959", "10000117", 5, ["sinus rhythm", "normal ecg"], None),
    ("40447866", "10000117", 6, ["sinus bradycardia", "inferior infarct - age undetermined", "abnormal ecg"], None),
    ("48446569", "10000560", 7, ["right bundle branch block", "abnormal ecg"], None),
    ("42706290", "10000560", 8, ["rbbb with left anterior fascicular block", "abnormal ecg"], None),
    ("43530225", "10000560", 9, ["left bundle branch block", "abnormal ecg"], None),
    ("46162740", "10001217", 10, [], "empty_report"),
    ("44210311", "10001217", 11, ["sinus rhythm"], "short_report"),
    ("47230124", "10001217", 12, ["sinus rhythm with pac(s)", "normal ecg"], "truncated_signal"),
    ("40910233", "10001401", 13, ["sinus tachycardia", "abnormal ecg"], "missing_header"),
    ("41869720", "10001401", 14, ["sinus rhythm with 1st degree a-v block",
                                  "qrs changes v3/v4 may be due to lvh but cannot rule out anterior infarct",
                                  "abnormal ecg"], "missing_samples"),
    ("45315498", "10001401", 15, ["*** consider acute st elevation mi ***", "abnormal ecg"], None),
    ("42375321", "10002013", 16, ["atrial fibrillation with slow ventricular response", "incomplete rbbb",
                                  "abnormal ecg"], None),
    ("49858911", "10002013", 17, ["sinus rhythm", "inferior infarct, old", "abnormal ecg"], None),
    ("40122307", "10002013", 18, ["sinus rhythm", "possible anterior infarct - age undetermined", "abnormal ecg"], None),
]
DROPPED = {"empty_report", "short_report", "truncated_signal", "missing_header"}


@dataclass
class FixtureInfo:
    root: Path
    dropped: dict[str, str] = field(default_factory=dict)  # study_id → drop reason
    expected: dict[str, np.ndarray] = field(default_factory=dict)  # study_id → int16 (12, 5000), canonical order
    subjects: dict[str, str] = field(default_factory=dict)  # study_id → subject_id
    reports: dict[str, str] = field(default_factory=dict)  # study_id → report as the builder joins it


def capitalise(statement: str) -> str:
    """"sinus rhythm with pac(s)" → "Sinus rhythm with PAC(s)", as the ECG machines print statements."""
    words = [w.upper() if w in _UPPER else w for w in statement.split(" ")]
    text = " ".join(words)
    index = next((i for i, c in enumerate(text) if c.isalpha()), None)
    return text if index is None else text[:index] + text[index].upper() + text[index + 1:]


def _known_statements() -> set[str]:
    lines = (DATA / "mimic_statements.jsonl").read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["statement"] for line in lines} | SUMMARY_STATEMENTS


def build_mimic_fixture(root: str | Path) -> FixtureInfo:
    """Write the fixture under `root` and return what a correct build must produce."""
    root = Path(root)
    known = _known_statements()
    info = FixtureInfo(root)
    studies = []
    for n, (study_id, subject, ecg_id, statements, broken) in enumerate(RECORDS):
        unknown = [s for s in statements if s not in known]
        assert not unknown, f"not real MIMIC-IV-ECG statements: {unknown}"
        reports = [capitalise(s) for s in statements]
        digital = _mimic_digital(ecg_id)
        if broken == "missing_samples":
            digital[100:103, 1] = MIMIC_MISSING  # a short gap in lead II
            digital[4000, 7] = MIMIC_MISSING  # one sample of V2
        studies.append(MimicStudy(subject, study_id, digital, reports, f"2180-07-{n + 1:02d} 09:{n:02d}:00"))
        info.subjects[study_id] = subject
        info.reports[study_id] = "\n".join(reports)
        if broken in DROPPED:
            info.dropped[study_id] = broken
        else:
            info.expected[study_id] = _expected(digital)
    write_mimic_layout(root, studies)
    for study, (_, _, _, _, broken) in zip(studies, RECORDS, strict=True):
        record = root / study.relative_path
        if broken == "truncated_signal":
            dat = record.with_suffix(".dat")
            dat.write_bytes(dat.read_bytes()[: 12 * 2 * 3000])
        elif broken == "missing_header":
            record.with_suffix(".hea").unlink()
    return info


def _mimic_digital(ecg_id: int) -> np.ndarray:
    """PTB-XL record `ecg_id` (mV, canonical order) → MIMIC digital samples (5000, 12) in MIMIC's lead order."""
    record = wfdb.rdrecord(str(DATA / "ptbxl" / "records500" / "00000" / f"{ecg_id:05d}_hr"))
    return mimic_digital(record.p_signal.T)


def _expected(digital: np.ndarray) -> np.ndarray:
    """What the dataset must hold: canonical lead order; WFDB's missing value filled from six neighbours."""
    canonical = digital[:, [MIMIC_LEADS.index(lead) for lead in CANONICAL_LEADS]].T.astype(np.float64)
    canonical[canonical == MIMIC_MISSING] = np.nan
    return np.rint(fill_non_finite(canonical)).astype(np.int16)
