"""How a labeller's decisions compare with a public study's reading of 546 real MIMIC-IV-ECG statements.

`tests/data/mimic_statements.jsonl` gives, for each statement, the study's status for up to six classes (NSR, AF,
IAVB, LBBB, RBBB, MI_OLD): definite, age undetermined, hedged, borderline or excluded. A statement-class pair agrees
when the labeller's positive terms contain one of the class's standard terms exactly when the study counts the class
as stated. The same table compares two labellers (`reference=`): then a pair agrees when both decide alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .rules import RulesExtractor

_MI = "myocardial infarction"
# How the study's six classes read in our standard terms.
STUDY_CLASSES = {
    "NSR": {"sinus rhythm"},
    "AF": {"atrial fibrillation"},
    "IAVB": {"first degree av block", "prolonged pr interval"},
    "LBBB": {"left bundle branch block", "complete left bundle branch block"},
    "RBBB": {"right bundle branch block", "complete right bundle branch block"},
    "MI_OLD": {"old " + _MI, _MI, "inferior " + _MI, "anterior " + _MI, "anteroseptal " + _MI, "septal " + _MI,
               "lateral " + _MI, "anterolateral " + _MI, "inferolateral " + _MI, "extensive " + _MI,
               "posterior " + _MI, "inferoposterior " + _MI, "inferoposterolateral " + _MI},
}
# The study's status → whether the class should be a label: stated findings yes; hedged, borderline and excluded no.
STUDY_POSITIVE = {"definite": True, "age_undetermined": True, "hedged": False, "borderline": False, "excluded": False}


def read_study(statements_path: str | Path) -> list[dict]:
    """The rows of mimic_statements.jsonl: {"statement", "n_records", "status": {class: status}}."""
    return [json.loads(line) for line in Path(statements_path).read_text(encoding="utf-8").splitlines() if line]


def agreement_with_study(study: str | Path | list[dict], labels: Callable[[str], set[str]] | None = None,
                         reference: Callable[[str], set[str]] | None = None) -> dict:
    """Per class: statement-class pairs and records where `labels(statement)` (the positive standard terms; default:
    the rules labeller's) decides as the study does, or as `reference(statement)` does when given. `study`: the path
    of mimic_statements.jsonl or rows `read_study` returned.

    Returns {class: {"statements", "agree", "agreement", "records", "records_agree", "record_agreement",
    "disagreements": [statements]}} plus "overall".
    """
    labels = labels or RulesExtractor().labels
    result: dict[str, dict] = {}
    for row in read_study(study) if isinstance(study, (str, Path)) else study:
        terms = labels(row["statement"])
        other = reference(row["statement"]) if reference is not None else None
        for name, status in row["status"].items():
            entry = result.setdefault(name, {"statements": 0, "agree": 0, "records": 0, "records_agree": 0,
                                             "disagreements": []})
            expected = STUDY_POSITIVE[status] if other is None else bool(other & STUDY_CLASSES[name])
            agree = bool(terms & STUDY_CLASSES[name]) == expected
            entry["statements"] += 1
            entry["records"] += row["n_records"]
            entry["agree"] += agree
            entry["records_agree"] += row["n_records"] * agree
            if not agree:
                entry["disagreements"].append(f"{row['statement']} ({status})")
    total = {"statements": 0, "agree": 0, "records": 0, "records_agree": 0}
    for entry in result.values():
        for key in total:
            total[key] += entry[key]
    result["overall"] = total
    for entry in result.values():
        entry["agreement"] = entry["agree"] / entry["statements"]
        entry["record_agreement"] = entry["records_agree"] / entry["records"]
    return result


# `benchmarks/bench_labelling.py` on the 546 statements (grammar on, entities mapped with all-MiniLM-L6-v2; the
# bench's sections of benchmarks/RESULTS.md have the details): a reference point for dataset cards built with an LLM.
# Too slow for a test to recompute (36 minutes of one CPU thread on a loaded machine).
LLM_AGREEMENT = {"model": "SmolLM2-135M-Instruct", "statements": 0.544, "with_rules_first": 0.768}
