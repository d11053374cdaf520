"""Build the PTB-XL test sets of the zero-shot benchmark as a Hub dataset.

    python -m builders.ptbxl --input PTBXL_ROOT --output DIR [--sampling-rate 100] [--folds 8]

`PTBXL_ROOT` is PhysioNet's PTB-XL download (v1.0.3: `records500/`, `records100/`, `ptbxl_database.csv`). Four configs,
one per test set: `super_class` (5 classes), `sub_class` (23), `form` (19), `rhythm` (12), each with `train` /
`validation` / `test` (PTB-XL folds 1-8 / 9 / 10) taken record by record, with labels, from MERL's split tables;
`--folds` keeps only the records of those `strat_fold`s (e.g. a validation fold carved out of 1-8). The 500 Hz records
are read (`filename_hr`), or with `--sampling-rate 100` the 100 Hz ones (`filename_lr`, stored upsampled to the
schema's 500 Hz); records a table names but the folder lacks are counted in `build_stats.json`, never fatal. `ecg` is
the digital signal at the file's gain (1000 per mV), `id` the `ecg_id`, `subject_id` the `patient_id`; `report` (German free text), `age` and `sex` come from `ptbxl_database.csv` when it is present (PTB-XL
writes age 300 for patients over 89).
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pandas as pd

from builders.benchmark_sets import (
    MERL_CITATION,
    SPLITS_SECTION,
    SUPREME_CITATION,
    MissingRecord,
    argument_parser,
    build_config,
    check_input,
    load_stats,
    record_notes,
    stats_section,
)
from builders.dataset_writing import ecg_features, to_schema_ecg, write_dataset_card
from builders.split_tables import SplitTable, load_split_tables
from builders.wfdb_reading import read_wfdb

CONFIGS = {"super_class": "ptbxl_super_class", "sub_class": "ptbxl_sub_class", "form": "ptbxl_form",
           "rhythm": "ptbxl_rhythm"}
EXTRA_FEATURES = {"age": datasets.Value("float32"), "sex": datasets.Value("string"),
                  "strat_fold": datasets.Value("int32")}
CITATION = """@article{wagner2020ptbxl,
  title={PTB-XL, a large publicly available electrocardiography dataset},
  author={Wagner, Patrick and Strodthoff, Nils and Bousseljot, Ralf-Dieter and Kreiseler, Dieter and Lunze, Fatima I
          and Samek, Wojciech and Schaeffter, Tobias},
  journal={Scientific Data}, volume={7}, number={1}, pages={154}, year={2020}
}
@article{goldberger2000physiobank,
  title={PhysioBank, PhysioToolkit, and PhysioNet},
  author={Goldberger, Ary L and others},
  journal={Circulation}, volume={101}, number={23}, pages={e215--e220}, year={2000}
}
""" + MERL_CITATION + "\n" + SUPREME_CITATION

logger = logging.getLogger(__name__)


FILENAME_COLUMN = {500: "filename_hr", 100: "filename_lr"}  # PTB-XL's two copies of every record


def build(input_dir: Path, output_dir: Path, configs=tuple(CONFIGS), overwrite: bool = False,
          sampling_rate: int = 500, folds: tuple[int, ...] | None = None) -> dict:
    """Write the PTB-XL configs to `output_dir` from the records at `sampling_rate` (500 or 100 Hz), only those of
    `folds` when given; returns the build statistics (also in `build_stats.json`)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    column = FILENAME_COLUMN[sampling_rate]
    database = _read_database(input_dir)
    # one directory scan instead of an existence check per table row (most rows when building from a subset)
    folder = "records500" if sampling_rate == 500 else "records100"
    present = {p.relative_to(input_dir).with_suffix("").as_posix() for p in input_dir.glob(f"{folder}/*/*.hea")}
    if not present:
        logger.warning("%s: no %s/*/*.hea records; every record will be counted missing", input_dir, folder)
    stats = load_stats(output_dir)
    features = {}
    for config in configs:
        tables = load_split_tables(CONFIGS[config])
        if folds is not None:
            tables = {split: _in_folds(table, folds) for split, table in tables.items()}
        metadata = {int(i): {"filename": f, "patient_id": p, "strat_fold": s} for t in tables.values()
                    for i, f, p, s in zip(t.metadata["ecg_id"], t.metadata[column], t.metadata["patient_id"],
                                          t.metadata["strat_fold"], strict=True)}
        features[config] = ecg_features(tables["test"].class_names, EXTRA_FEATURES)

        def load(record_id: str, metadata=metadata) -> dict:
            meta = metadata[int(record_id)]
            if meta["filename"] not in present:
                raise MissingRecord(record_id)
            return _load_record(input_dir, meta, int(record_id), database)

        build_config(output_dir, config, tables, features[config], load, stats, overwrite)
    write_dataset_card(
        output_dir,
        pretty_name="PTB-XL (SuPreME zero-shot benchmark splits)",
        license="cc-by-4.0",
        citation=CITATION,
        configs=list(configs),
        features=features,
        description=__doc__.split("\n\n", 2)[2].replace("`PTBXL_ROOT`", "The input"),
        extra_sections={
            "Splits and labels": SPLITS_SECTION,
            "Signals": "12 leads in the order I, II, III, aVR, aVL, aVF, V1-V6; 500 Hz; 5000 samples (10 s); int16 "
                       f"ADC units, `ecg / adc_gain` is millivolts; read from PTB-XL's {sampling_rate} Hz records"
                       + (" (polyphase-upsampled to 500 Hz)" if sampling_rate != 500 else "")
                       + (f"; only folds {', '.join(map(str, folds))}" if folds is not None else "") + ".",
            "Licence": "PTB-XL (Wagner et al., PhysioNet) is released under CC BY 4.0; this derived dataset keeps that "
                       "licence. The split tables are MIT-licensed (MERL).",
            "Build": stats_section({c: stats[c] for c in configs if c in stats}),
        },
    )
    return stats


def _in_folds(table: SplitTable, folds: tuple[int, ...]) -> SplitTable:
    """The rows of `table` whose PTB-XL `strat_fold` is one of `folds`."""
    keep = table.metadata["strat_fold"].isin(folds).to_numpy()
    return SplitTable(table.test_set, table.split, table.class_names,
                      tuple(k for k, kept in zip(table.keys, keep, strict=True) if kept),
                      tuple(labels for labels, kept in zip(table.labels, keep, strict=True) if kept),
                      table.metadata[keep].reset_index(drop=True))


def _read_database(input_dir: Path) -> pd.DataFrame | None:
    path = input_dir / "ptbxl_database.csv"
    if not path.exists():
        logger.warning("%s not found: report, age and sex are left empty", path)
        return None
    return pd.read_csv(path, index_col="ecg_id")


def _load_record(input_dir: Path, meta: dict, ecg_id: int, database: pd.DataFrame | None) -> dict:
    header = input_dir / f"{meta['filename']}.hea"
    record = read_wfdb(header)
    row = database.loc[ecg_id] if database is not None and ecg_id in database.index else None
    return {
        "id": str(ecg_id),
        "subject_id": str(int(meta["patient_id"])),
        "ecg": to_schema_ecg(record.digital, record.fs),
        "adc_gain": record.adc_gain,
        "report": "" if row is None or pd.isna(row["report"]) else str(row["report"]),
        "age": None if row is None or pd.isna(row["age"]) else float(row["age"]),
        "sex": None if row is None or pd.isna(row["sex"]) else ("male", "female")[int(row["sex"])],
        "strat_fold": int(meta["strat_fold"]),
        "notes": record_notes(record, header),
    }


def main(argv=None) -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--sampling-rate", type=int, choices=sorted(FILENAME_COLUMN), default=500,
                        help="read records500/ (filename_hr, default) or records100/ (filename_lr)")
    parser.add_argument("--folds", type=int, nargs="+", help="keep only the records of these strat_folds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    build(check_input(args.input), args.output, args.configs, args.overwrite, args.sampling_rate,
          tuple(args.folds) if args.folds else None)


if __name__ == "__main__":
    main()
