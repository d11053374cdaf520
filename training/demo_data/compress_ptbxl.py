"""Write a PTB-XL folder's 500 Hz records losslessly FLAC-compressed (WFDB format 516): how `ptbxl/` here was made.

    python training/demo_data/compress_ptbxl.py --input PTBXL_FOLDER --output training/demo_data/ptbxl

Every record `PTBXL_FOLDER/ptbxl_database.csv` lists is written: for `ptbxl/` here, a PTB-XL 1.0.3 folder whose table
keeps the rows of ecg_id 1-300.

The layout stays PTB-XL's (`ptbxl_database.csv`, `scp_statements.csv`, `records500/NNNNN/NNNNN_hr.hea`), so every
reader of PTB-XL reads it unchanged; `wfdb.rdrecord` decodes format 516 (with `soundfile`, a wfdb dependency) to the
same digital samples, bit for bit (checked here for every record). One record takes ~36 kB instead of 120 kB. FLAC
holds at most 8 channels per file, so each record's twelve leads are split over `NNNNN_hr_1.dat` and `_2.dat`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb


def compress_record(source: Path, target: Path) -> None:
    record = wfdb.rdrecord(str(source), physical=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        target.name,
        fs=record.fs,
        units=record.units,
        sig_name=record.sig_name,
        d_signal=record.d_signal,
        fmt=["516"] * record.n_sig,
        adc_gain=record.adc_gain,
        baseline=record.baseline,
        comments=record.comments,
        write_dir=str(target.parent),
    )
    if not np.array_equal(wfdb.rdrecord(str(target), physical=False).d_signal, record.d_signal):
        raise RuntimeError(f"{target}: FLAC round trip changed the samples")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="PTB-XL folder (ptbxl_database.csv, records500/)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    database = pd.read_csv(args.input / "ptbxl_database.csv", index_col="ecg_id")
    for filename in database["filename_hr"]:
        compress_record(args.input / filename, args.output / filename)
    for name in ("ptbxl_database.csv", "scp_statements.csv", "LICENSE.txt"):
        shutil.copyfile(args.input / name, args.output / name)
    print(f"{len(database)} records written to {args.output}")


if __name__ == "__main__":
    main()
