"""Build the Chapman-Shaoxing-Ningbo (CSN) test set of the zero-shot benchmark as a Hub dataset.

    python -m builders.csn --input ROOT --output DIR

`ROOT` is PhysioNet's ecg-arrhythmia 1.0.0 download (`WFDBRecords/<nn>/<nnn>/JSxxxxx.{hea,mat}` and
`ConditionNames_SNOMED-CT.csv`) or any folder holding the same JS records, e.g. the PhysioNet/CinC Challenge 2021
copies (with `dx_mapping_*.csv`): records are found anywhere below it by name. One config (`default`) with `train` /
`validation` / `test` taken record by record, with labels (38 classes), from MERL's split tables. `id` is the JS-number;
CSN publishes no patient ids, so `subject_id` is the JS-number as well. `age` and `sex` come from the header comments;
`snomed_codes` are the header's `Dx:` codes (written `# Dx:` or `#Dx:`), and `report` their names from the SNOMED CT
tables found in `ROOT` (ecg-arrhythmia's `ConditionNames_SNOMED-CT.csv` first, then CinC's `dx_mapping_*.csv`). A code
in no table is kept in `snomed_codes`, named by its number in `report`, and listed in the build report with the file
that holds it; the labels never depend on it (they are the split table's).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd

from builders.benchmark_sets import (
    MERL_CITATION,
    SPLITS_SECTION,
    SUPREME_CITATION,
    MissingRecord,
    argument_parser,
    as_age,
    as_sex,
    build_config,
    check_input,
    header_fields,
    load_stats,
    record_notes,
    save_stats,
    stats_section,
)
from builders.dataset_writing import ecg_features, to_schema_ecg, write_dataset_card
from builders.split_tables import load_split_tables
from builders.wfdb_reading import read_wfdb

EXTRA_FEATURES = {"age": datasets.Value("float32"), "sex": datasets.Value("string"),
                  "snomed_codes": datasets.List(datasets.Value("string"))}
CITATION = """@article{zheng2020optimal,
  title={Optimal multi-stage arrhythmia classification approach},
  author={Zheng, Jianwei and Fu, Guohua and Anderson, Kyle and Chu, Huimin and Rakovski, Cyril},
  journal={Scientific Reports}, volume={10}, number={1}, pages={2898}, year={2020}
}
@article{zheng2020chapman,
  title={A 12-lead electrocardiogram database for arrhythmia research covering more than 10,000 patients},
  author={Zheng, Jianwei and Zhang, Jianming and Danioko, Sidy and Yao, Hai and Guo, Hangyuan and Rakovski, Cyril},
  journal={Scientific Data}, volume={7}, number={1}, pages={48}, year={2020}
}
""" + MERL_CITATION + "\n" + SUPREME_CITATION

logger = logging.getLogger(__name__)


def build(input_dir: Path, output_dir: Path, overwrite: bool = False) -> dict:
    """Write CSN to `output_dir`; returns the build statistics (also in `build_stats.json`)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    headers = {}
    for path in sorted(input_dir.rglob("JS*.hea")):
        headers.setdefault(path.stem, path)  # the first copy wins when a folder holds two layouts
    names = snomed_names(input_dir)
    tables = load_split_tables("csn")
    features = ecg_features(tables["test"].class_names, EXTRA_FEATURES)
    unknown: Counter[str] = Counter()

    def load(record_id: str) -> dict:
        if record_id not in headers:
            raise MissingRecord(record_id)
        return _load_record(headers[record_id], names, unknown)

    stats = load_stats(output_dir)
    for split, table in tables.items():  # one split at a time, to count unknown codes per split
        unknown.clear()
        before = stats.get("default", {}).get(split)
        build_config(output_dir, None, {split: table}, features, load, stats, overwrite)
        if stats["default"][split] is not before:  # built now, not skipped as done
            stats.setdefault("unknown_snomed_codes", {})[split] = dict(unknown.most_common())
            save_stats(output_dir, stats)
    total = sum((Counter(c) for c in stats.get("unknown_snomed_codes", {}).values()), Counter())
    unknown_text = ("No header code was missing from the SNOMED CT tables." if not total else
                    "Header codes in no SNOMED CT table (records holding them): "
                    + ", ".join(f"{code} ({n})" for code, n in total.most_common()) + ".")
    write_dataset_card(
        output_dir,
        pretty_name="Chapman-Shaoxing-Ningbo (SuPreME zero-shot benchmark splits)",
        license="cc-by-4.0",
        citation=CITATION,
        features=features,
        description=__doc__.split("\n\n", 2)[2].replace("`ROOT` is", "The input was").replace("`ROOT`", "the input"),
        extra_sections={
            "Splits and labels": SPLITS_SECTION + " The CSN labels were derived by MERL from the records' diagnosis "
                                                  "abbreviations and are kept as they are.",
            "Signals": "12 leads in the order I, II, III, aVR, aVL, aVF, V1-V6; 500 Hz; 5000 samples (10 s); int16 "
                       "ADC units at the files' gain (1000 per mV), `ecg / adc_gain` is millivolts.",
            "Licence": "ecg-arrhythmia (Chapman University, Shaoxing People's Hospital, Ningbo First Hospital; "
                       "PhysioNet) is released under CC BY 4.0; this derived dataset keeps that licence. The split "
                       "tables are MIT-licensed (MERL).",
            "Build": stats_section({"default": stats["default"]}) + "\n\n" + unknown_text,
        },
    )
    return stats


def snomed_names(input_dir: Path) -> dict[str, str]:
    """SNOMED CT code -> condition name from the tables found below `input_dir` (CSN's own names win)."""
    names: dict[str, str] = {}
    for path in sorted(input_dir.rglob("ConditionNames_SNOMED-CT.csv")):
        table = pd.read_csv(path, encoding="utf-8-sig", dtype=str)
        for code, name in zip(table["Snomed_CT"], table["FullName"], strict=True):
            names.setdefault(code.strip(), " ".join(name.split()))  # the CSN table has non-breaking spaces
    for path in sorted(input_dir.rglob("dx_mapping_*.csv")):
        table = pd.read_csv(path, dtype=str)
        for code, name in zip(table["SNOMEDCTCode"], table["Dx"], strict=True):
            names.setdefault(code.strip(), " ".join(name.split()))
    if not names:
        logger.warning("%s: no ConditionNames_SNOMED-CT.csv or dx_mapping_*.csv; reports will list codes only",
                       input_dir)
    return names


def _load_record(header: Path, names: dict[str, str], unknown: Counter) -> dict:
    record = read_wfdb(header)
    fields = header_fields(record.comments)
    codes = [code.strip() for code in fields.get("dx", "").split(",") if code.strip()]
    notes = record_notes(record, header)
    missing = [code for code in codes if code not in names]
    if missing:
        notes.append(f"{header}: SNOMED CT code(s) {', '.join(missing)} in no SNOMED CT table")
        unknown.update(missing)
    return {
        "id": header.stem,
        "subject_id": header.stem,
        "ecg": to_schema_ecg(record.digital, record.fs),
        "adc_gain": record.adc_gain,
        "report": "; ".join(names.get(code, f"SNOMED CT {code}") for code in codes),
        "age": as_age(fields.get("age")),
        "sex": as_sex(fields.get("sex")),
        "snomed_codes": codes,
        "notes": notes,
    }


def main(argv=None) -> None:
    args = argument_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    build(check_input(args.input), args.output, args.overwrite)


if __name__ == "__main__":
    main()
