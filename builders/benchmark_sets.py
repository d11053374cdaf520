"""What the three evaluation builders (PTB-XL, CPSC-2018, CSN) share: build a dataset split by split from its
MERL split table, fit every ECG to the schema's 12 x 5000 int16 at 500 Hz, and report what could not be built.

A builder supplies one function, `load(record_id) -> row` (the schema's columns except `labels`), that raises
`MissingRecord` when the input lacks the record and `RecordError` (or any `ValueError`) when the record is broken.
`build_config` then writes each split with exactly the table's labels; missing and broken records are listed in
`build_stats.json` and in the dataset card, and never stop the build. A split that a previous run finished (recorded in
`build_stats.json`) is skipped unless `overwrite`, so an interrupted build resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np

from builders.dataset_writing import SAMPLING_RATE, write_split
from builders.split_tables import SplitTable
from modeling_supreme.processing_supreme import CANONICAL_LEADS

logger = logging.getLogger(__name__)

STATS_FILE = "build_stats.json"

MERL_CITATION = """@inproceedings{liu2024zero,
  title={Zero-Shot ECG Classification with Multimodal Learning and Test-time Clinical Knowledge Enhancement},
  author={Liu, Che and Wan, Zhongwei and Ouyang, Cheng and Shah, Anand and Bai, Wenjia and Arcucci, Rossella},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2024}
}"""
SUPREME_CITATION = """@inproceedings{cai2025supreme,
  title={SuPreME: A Supervised Pre-training Framework for Multimodal ECG Representation Learning},
  author={Cai, Mingsheng and Jiang, Jiuming and Huang, Wenhao and Liu, Che and Arcucci, Rossella},
  booktitle={Findings of the Association for Computational Linguistics: EMNLP 2025},
  year={2025}
}"""
SPLITS_SECTION = (
    "Records, splits, labels and class names are exactly those of the split tables published with MERL "
    "(Liu et al., ICML 2024; repository `cheliu-computation/MERL-ICML2024`, MIT licence), which SuPreME's zero-shot "
    "benchmark uses; the tables ship in `builders/splits/` of the SuPreME repository. `labels` lists the classes "
    "whose column is 1. The class order is the test table's."
)


class MissingRecord(LookupError):
    """The input folder does not hold this record (reported, never fatal)."""


@dataclass
class SplitStats:
    """What one split of one config came out as. `missing`/`errors`/`notes` name records (and files)."""

    in_table: int = 0
    built: int = 0
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def record_notes(record, path) -> list[str]:
    """What was changed to fit a WFDB record (`EcgRecord`) into the schema, for the build report."""
    canonical = {lead.lower() for lead in CANONICAL_LEADS}
    notes = []
    extra = [lead for lead in record.source_leads if lead.lower() not in canonical]
    if extra:
        notes.append(f"{path}: dropped non-standard lead(s) {', '.join(extra)}")
    if record.fs != SAMPLING_RATE:
        notes.append(f"{path}: resampled from {record.fs:g} Hz to {SAMPLING_RATE:g} Hz")
    return notes


def build_config(
    out_dir: Path,
    config_name: str | None,
    tables: Mapping[str, SplitTable],
    features: datasets.Features,
    load: Callable[[str], dict],
    stats: dict,
    overwrite: bool = False,
) -> None:
    """Write every split of `tables` to `out_dir` (config folder `config_name`, or `data/`), updating `stats`
    (`stats[config][split]` is a `SplitStats` dict) and saving it to `build_stats.json` after each split."""
    key = config_name or "default"
    for split, table in tables.items():
        done = stats.get(key, {}).get(split)
        if done is not None and not overwrite:
            logger.info("%s/%s: already built (%d records), skipped; pass --overwrite to rebuild", key, split,
                        done["built"])
            continue
        split_stats = SplitStats(in_table=len(table.keys))
        write_split(_rows(table, load, split_stats, f"{key}/{split}"), features, out_dir, split, config_name)
        stats.setdefault(key, {})[split] = asdict(split_stats)
        save_stats(out_dir, stats)
        logger.info("%s/%s: %d of %d records built, %d missing from the input, %d unreadable", key, split,
                    split_stats.built, split_stats.in_table, len(split_stats.missing), len(split_stats.errors))


def _rows(table: SplitTable, load: Callable[[str], dict], stats: SplitStats, where: str):
    for record_id, labels in zip(table.keys, table.labels, strict=True):
        try:
            row = load(record_id)
        except MissingRecord:
            stats.missing.append(record_id)
            continue
        except ValueError as error:  # RecordError and the builders' own checks; the message names the file
            stats.errors.append(f"{record_id}: {error}")
            logger.warning("%s: skipped %s: %s", where, record_id, error)
            continue
        for note in row.pop("notes", ()):
            stats.notes.append(f"{record_id}: {note}")
            logger.info("%s: %s: %s", where, record_id, note)
        row["labels"] = list(labels)
        stats.built += 1
        yield row


def load_stats(out_dir: Path) -> dict:
    path = Path(out_dir) / STATS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def save_stats(out_dir: Path, stats: dict) -> None:
    path = Path(out_dir) / STATS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))  # no indent: json's C encoder, fast with tens of thousands of ids
    tmp.replace(path)


def stats_section(stats: dict, max_listed: int = 20) -> str:
    """The card's "Build" section: records per split, and the ids that are missing or unreadable."""
    lines = ["| config | split | in table | built | missing from input | unreadable |", "|---|---|---|---|---|---|"]
    listed = []
    for config, splits in stats.items():
        for split, s in splits.items():
            lines.append(f"| {config} | {split} | {s['in_table']} | {s['built']} | {len(s['missing'])} | "
                         f"{len(s['errors'])} |")
            for kind, items in (("missing", s["missing"]), ("unreadable", s["errors"]), ("note", s["notes"])):
                if items:
                    shown = ", ".join(items[:max_listed]) if kind == "missing" else "; ".join(items[:max_listed])
                    more = f" (and {len(items) - max_listed} more)" if len(items) > max_listed else ""
                    listed.append(f"- {config}/{split}, {kind} ({len(items)}): {shown}{more}")
    text = "\n".join(lines)
    if listed:
        text += "\n\n" + "\n".join(listed)
    return text + f"\n\nEvery id is listed in `{STATS_FILE}` beside this card."


def header_fields(comments: list[str]) -> dict[str, str]:
    """`# Age: 74` style header comments -> {"age": "74"}."""
    fields = {}
    for comment in comments:
        key, sep, value = comment.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def as_age(value) -> float | None:
    """An age from a header field or a MATLAB scalar; None when absent or not a number."""
    try:
        number = float(np.asarray(value).item()) if value is not None else None
    except (TypeError, ValueError):
        return None
    return None if number is None or np.isnan(number) else number


def as_sex(value) -> str | None:
    """The sex as "male" or "female" from the sources' spellings (Male, M, female, ...); None otherwise."""
    text = str(np.asarray(value).item() if value is not None else "").strip().lower()
    return {"male": "male", "m": "male", "female": "female", "f": "female"}.get(text)


def argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", required=True, type=Path, help="the source's download folder")
    parser.add_argument("--output", required=True, type=Path, help="dataset folder to write (Parquet + README.md)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild splits that a previous run finished")
    return parser


def check_input(path: Path) -> Path:
    if not Path(path).is_dir():
        raise SystemExit(f"--input {path}: not a folder")
    return Path(path)
