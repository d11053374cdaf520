"""What a person uploads → one ECG (signal in mV, sampling rate, lead names), or a `ValueError` that says, in one
sentence, what is wrong with the files and what to upload instead."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from modeling_supreme.processing_supreme import read_ecg_file

RECORD_SUFFIXES = {".hea", ".dat", ".mat"}
ARRAY_SUFFIXES = {".npy", ".csv"}


def read_uploaded_ecg(paths: list[str], sampling_rate: float | None, lead_names: list[str]):
    """Uploaded files → (signal (leads, samples) in mV, sampling rate, lead names, description).

    A WFDB record (`.hea` with its `.dat` files or CinC `.mat`), a CPSC-2018 `.mat`, or one `.npy` / `.csv` array of
    leads × samples (its rate and lead names come from the page). Gradio keeps each upload in a folder of its own, so
    a record's files are put back side by side, under their own names, before WFDB reads them.
    """
    files = [Path(path) for path in paths]
    unknown = sorted({file.name for file in files if file.suffix.lower() not in RECORD_SUFFIXES | ARRAY_SUFFIXES})
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: not an ECG file. Upload a WFDB record (.hea with its .dat or .mat), a CPSC-2018 "
            ".mat, or a .npy / .csv array of leads × samples."
        )
    arrays = [file for file in files if file.suffix.lower() in ARRAY_SUFFIXES]
    if arrays:
        if len(files) != 1:
            raise ValueError("Upload one .npy or .csv array on its own (one ECG: leads × samples).")
        return read_array(arrays[0], sampling_rate, lead_names)
    with tempfile.TemporaryDirectory(prefix="supreme-upload-") as folder:
        for file in files:
            shutil.copyfile(file, Path(folder) / file.name)
        return read_record(Path(folder), [file.name for file in files])


def read_record(folder: Path, names: list[str]):
    """The one record among the uploaded `names` in `folder`: a header and its signal files, else a .mat."""
    headers = [name for name in names if name.lower().endswith(".hea")]
    if len(headers) > 1:
        raise ValueError(f"{len(headers)} headers uploaded ({', '.join(headers)}): upload one record at a time.")
    if headers:
        header = folder / headers[0]
        _check_signal_files(header, names)
        signal, rate, leads = _read(header, f"{headers[0]}: its samples could not be read as the header describes "
                                    "them; is a signal file truncated or from another record?")
        return signal, rate, leads, f"uploaded WFDB record {header.stem}"
    mats = [name for name in names if name.lower().endswith(".mat")]
    if not mats:
        raise ValueError(
            "A .dat file holds samples only: upload it together with its .hea header (select both files at once)."
        )
    if len(mats) > 1:
        raise ValueError(f"{len(mats)} .mat files uploaded ({', '.join(mats)}): upload one record at a time.")
    signal, rate, leads = _read(folder / mats[0], f"{mats[0]}: not a CPSC-2018 .mat, and no .hea header was uploaded "
                                "with it; a CinC/PhysioNet .mat needs its .hea")
    return signal, rate, leads, f"uploaded CPSC-2018 file {mats[0]}"


def _read(path: Path, explanation: str):
    """`read_ecg_file`, its error restated for the page: `explanation`, then the library's own reason."""
    try:
        return read_ecg_file(path)
    except ValueError as error:
        raise ValueError(f"{explanation} ({_reason(error)})") from None


def _check_signal_files(header: Path, names: list[str]) -> None:
    """The files the header names must have been uploaded with it (a header alone is only a description)."""
    import wfdb

    try:
        description = wfdb.rdheader(str(header.with_suffix("")))
    except Exception as error:  # wfdb raises many types for malformed headers
        raise ValueError(f"{header.name}: not a readable WFDB header ({_reason(error)})") from None
    missing = sorted({name for name in description.file_name or [] if name not in names})
    if missing:
        raise ValueError(
            f"{header.name} names its signal file(s) {', '.join(missing)}, which were not uploaded: select the header "
            "and its signal files together."
        )


def read_array(path: Path, sampling_rate: float | None, lead_names: list[str]):
    if not sampling_rate or sampling_rate <= 0:
        raise ValueError("An array carries no sampling rate: give it (in Hz) under 'Array files'.")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            array = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path.name}: not a numeric array ({_reason(error)})") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path.name}: an array of shape {array.shape}; expected numbers as (leads, samples).")
    if array.shape[0] != len(lead_names):
        hint = " Is it (samples, leads)? Transpose it." if array.shape[1] == len(lead_names) else ""
        raise ValueError(
            f"{path.name}: {array.shape[0]} rows but {len(lead_names)} lead names; expected (leads, samples).{hint}"
        )
    return array.astype(np.float64), float(sampling_rate), lead_names, f"uploaded array {path.name}"


def _reason(error: Exception) -> str:
    """The library's own words, first line, without the temporary folder's path."""
    return str(error).splitlines()[0].split(": ", 1)[-1] if str(error) else type(error).__name__


def check_leads(lead_names: list[str]) -> None:
    """The model reads the standard twelve leads, matched by name (any case); others are ignored."""
    from modeling_supreme.processing_supreme import CANONICAL_LEADS, canonical_lead_index

    index = canonical_lead_index(lead_names, allow_missing=True)
    missing = [lead for lead, position in zip(CANONICAL_LEADS, index, strict=True) if position is None]
    if missing:
        raise ValueError(
            f"The ECG lacks the standard lead(s) {', '.join(missing)}: its leads are named "
            f"{', '.join(map(str, lead_names))}. The model reads the 12 leads {', '.join(CANONICAL_LEADS)} (any case)."
        )
