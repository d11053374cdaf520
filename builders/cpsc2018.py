"""Build the CPSC-2018 test set of the zero-shot benchmark as a Hub dataset.

    python -m builders.cpsc2018 --input ROOT --output DIR [--first-samples 2500]

`ROOT` holds the China Physiological Signal Challenge 2018 records in either form, found anywhere below it by name:
the originals (`A0001.mat`, a MATLAB struct `ECG` with `sex`, `age` and `data`, 12 x N in millivolts, 500 Hz, leads
I, II, III, aVR, aVL, aVF, V1-V6) or the WFDB re-release of the PhysioNet/CinC Challenge 2020 (`A0001.hea` + `.mat`).
When both are present the WFDB record is read. One config (`default`) with `train` / `validation` / `test` taken record
by record, with labels (9 classes), from MERL's split tables. `id` is the A-number; CPSC publishes no patient ids, so
`subject_id` is the A-number as well.

Originals are stored at a fixed gain of 1000 ADC units per mV (int16 covers +-32.7 mV; a sample beyond is clipped and
the record noted in the build report), so `ecg / adc_gain` is millivolts as in every other dataset of the project.
Records are 6-60 s long: the first 10 s are kept. `--first-samples 2500` keeps only the first 2500 samples (5 s) and
zero-pads to 5000: the protocol under which MERL and SuPreME report CPSC-2018 (MERL's evaluation reads the first
2500 samples of each record). It is off by default so that the dataset holds the full 10 s; build the benchmark's copy
with it on (the card records which was used).
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import numpy as np
import scipy.io

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
    stats_section,
)
from builders.dataset_writing import ecg_features, to_schema_ecg, write_dataset_card
from builders.split_tables import load_split_tables
from builders.wfdb_reading import RecordError, read_wfdb

ORIGINAL_GAIN = 1000.0  # ADC units per mV for the originals' float millivolts
ORIGINAL_FS = 500.0
EXTRA_FEATURES = {"age": datasets.Value("float32"), "sex": datasets.Value("string")}
CITATION = """@article{liu2018open,
  title={An Open Access Database for Evaluating the Algorithms of Electrocardiogram Rhythm and Morphology Abnormality
         Detection},
  author={Liu, Feifei and Liu, Chengyu and Zhao, Lina and Zhang, Xiangyu and Wu, Xiaoling and Xu, Xiaoyan and
          Liu, Yulin and Ma, Caiyun and Wei, Shoushui and He, Zhiqiang and Li, Jianqing and Yip Kwee, Eddie Ng},
  journal={Journal of Medical Imaging and Health Informatics}, volume={8}, number={7}, pages={1368--1373}, year={2018}
}
@article{perez2020classification,
  title={Classification of 12-lead ECGs: the PhysioNet/Computing in Cardiology Challenge 2020},
  author={Perez Alday, Erick A and Gu, Annie and Shah, Amit J and others},
  journal={Physiological Measurement}, volume={41}, number={12}, pages={124003}, year={2020}
}
""" + MERL_CITATION + "\n" + SUPREME_CITATION

logger = logging.getLogger(__name__)


def build(input_dir: Path, output_dir: Path, first_samples: int | None = None, overwrite: bool = False) -> dict:
    """Write CPSC-2018 to `output_dir`; returns the build statistics (also in `build_stats.json`)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    wfdb_headers = {p.stem: p for p in sorted(input_dir.rglob("A*.hea"))}
    mat_files = {p.stem: p for p in sorted(input_dir.rglob("A*.mat"))}
    tables = load_split_tables("cpsc2018")
    features = ecg_features(tables["test"].class_names, EXTRA_FEATURES)

    def load(record_id: str) -> dict:
        if record_id in wfdb_headers:
            return _load_wfdb(wfdb_headers[record_id], first_samples)
        if record_id in mat_files:
            return _load_original(mat_files[record_id], first_samples)
        raise MissingRecord(record_id)

    stats = load_stats(output_dir)
    if stats.get("first_samples", first_samples) != first_samples and not overwrite:
        raise SystemExit(f"{output_dir} was built with first_samples={stats['first_samples']}; pass --overwrite to "
                         f"rebuild it with {first_samples}")
    stats["first_samples"] = first_samples
    build_config(output_dir, None, tables, features, load, stats, overwrite)
    protocol = ("the first 2500 samples (5 s), zero-padded to 5000: MERL's and SuPreME's CPSC-2018 protocol"
                if first_samples == 2500 else
                f"the first {first_samples} samples, zero-padded to 5000" if first_samples else
                "the first 10 s (5000 samples); shorter records zero-padded")
    write_dataset_card(
        output_dir,
        pretty_name="CPSC-2018 (SuPreME zero-shot benchmark splits)",
        license="cc-by-4.0",
        citation=CITATION,
        features=features,
        description=__doc__.split("\n\n", 2)[2].replace("`ROOT` holds", "The input held"),
        extra_sections={
            "Splits and labels": SPLITS_SECTION,
            "Signals": "12 leads in the order I, II, III, aVR, aVL, aVF, V1-V6; 500 Hz; int16 ADC units, "
                       f"`ecg / adc_gain` is millivolts. This copy holds {protocol}.",
            "Licence": "CPSC-2018 was released free for research use and re-released by the PhysioNet/CinC Challenge "
                       "2020 under CC BY 4.0, which this derived dataset carries. The split tables are MIT-licensed "
                       "(MERL).",
            "Build": stats_section({"default": stats["default"]}),
        },
    )
    return stats


def _load_wfdb(header: Path, first_samples: int | None) -> dict:
    record = read_wfdb(header)
    fields = header_fields(record.comments)
    return {
        "id": header.stem,
        "subject_id": header.stem,
        "ecg": to_schema_ecg(record.digital, record.fs, first_samples),
        "adc_gain": record.adc_gain,
        "report": "",
        "age": as_age(fields.get("age")),
        "sex": as_sex(fields.get("sex")),
        "notes": record_notes(record, header),
    }


def _load_original(path: Path, first_samples: int | None) -> dict:
    """An original CPSC-2018 `.mat`: struct `ECG` with `data` (12, N) float mV, `sex`, `age`."""
    try:
        contents = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises several types for corrupt files
        raise RecordError(f"{path}: not a readable MATLAB file ({type(error).__name__}: {error})") from error
    if "ECG" not in contents:
        keys = sorted(k for k in contents if not k.startswith("__"))
        raise RecordError(f"{path}: no 'ECG' struct (the file holds {keys or 'no variables'}); a CPSC-2018 original "
                          "has ECG.data (12 x N, mV), ECG.sex and ECG.age")
    ecg = contents["ECG"]
    data = getattr(ecg, "data", None)
    if data is None:
        raise RecordError(f"{path}: the 'ECG' struct has no field 'data'")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != 12:
        raise RecordError(f"{path}: ECG.data has shape {data.shape}, expected (12, samples)")
    digital = np.rint(data * ORIGINAL_GAIN)
    notes = []
    limit = np.iinfo(np.int16)
    clipped = int(((digital < limit.min) | (digital > limit.max)).sum())
    if clipped:
        notes.append(f"{path}: {clipped} samples beyond +-32.7 mV clipped")
    digital = np.clip(digital, limit.min, limit.max)
    return {
        "id": path.stem,
        "subject_id": path.stem,
        "ecg": to_schema_ecg(digital, ORIGINAL_FS, first_samples),
        "adc_gain": np.full(12, ORIGINAL_GAIN, dtype=np.float32),
        "report": "",
        "age": as_age(getattr(ecg, "age", None)),
        "sex": as_sex(getattr(ecg, "sex", None)),
        "notes": notes,
    }


def main(argv=None) -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--first-samples", type=int, default=None,
                        help="keep only the first N samples (at 500 Hz) and zero-pad to 5000; 2500 is the benchmark's "
                             "CPSC-2018 protocol (default: keep the first 10 s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    build(check_input(args.input), args.output, args.first_samples, args.overwrite)


if __name__ == "__main__":
    main()
