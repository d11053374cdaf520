"""Read one WFDB record into int16 digital samples in the canonical lead order, fast.

`wfdb.rdrecord` costs milliseconds per record, most of it in header parsing (a pandas lookup per field) rather than
in reading samples. MIMIC-IV-ECG has 800,035 records, so the common case is read here directly: the header is parsed
with wfdb's own header grammar (`wfdb.io.header.rx_record` / `rx_signal`) and a format-16 `.dat` is read with one
`np.fromfile`. The result is bit-identical to `wfdb.rdrecord(path, physical=False).d_signal` (tests/test_wfdb_reading.py
proves it on real PTB-XL records). Every other layout (CinC `.mat`, format 212, multi-segment, skew, ...) goes
through `wfdb.rdrecord`.

Stored samples follow the dataset schema (docs/dataset_schema.md): `digital / adc_gain` is millivolts. A non-zero baseline is therefore
subtracted, and WFDB's missing-sample value (-32768 in format 16) is replaced by the mean of the six neighbouring
samples (paper A.1.1), rounded back to an integer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from wfdb.io.header import rx_record, rx_signal

from modeling_supreme.processing_supreme import canonical_lead_index, fill_non_finite

# WFDB's "invalid sample" value per storage format (the WFDB spec; wfdb-python's INVALID_SAMPLE_VALUE).
_MISSING_SAMPLE = {"80": -(2**7), "508": -(2**7), "310": -(2**9), "311": -(2**9), "212": -(2**11), "16": -(2**15),
                   "61": -(2**15), "160": -(2**15), "516": -(2**15)}
_INT16 = np.iinfo(np.int16)


class RecordError(ValueError):
    """A WFDB record that cannot be read; the message names the file and the problem.

    `reason` is a short machine-readable kind, for builders that count dropped records: "missing_header",
    "bad_header", "missing_signal", "truncated_signal", "missing_leads", "bad_samples" or "unsupported".
    """

    def __init__(self, message: str, reason: str = "bad_record"):
        super().__init__(message)
        self.reason = reason


@dataclass
class EcgRecord:
    """One ECG as stored in the datasets.

    `digital`: int16 (12, n) in `CANONICAL_LEADS` order, baseline removed, so `digital / adc_gain[:, None]` is mV.
    `adc_gain`: float32 (12,) ADC units per mV. `source_leads`: the header's lead names, in the file's order.
    `n_filled`: samples that were missing (WFDB's invalid value) and were filled from their neighbours.
    """

    record_name: str
    digital: np.ndarray
    adc_gain: np.ndarray
    fs: float
    comments: list[str]
    source_leads: tuple[str, ...]
    n_filled: int = 0


@dataclass
class _Header:
    record_name: str
    fs: float
    sig_len: int | None
    n_seg: int | None
    file_name: list[str]
    fmt: list[str]
    samps_per_frame: list[int]
    skew: list[int]
    byte_offset: list[int]
    adc_gain: list[float]
    baseline: list[int]
    sig_name: list[str]
    comments: list[str]


def read_wfdb(path: str | os.PathLike, allow_missing_leads: bool = False) -> EcgRecord:
    """Read the WFDB record at `path` (with or without `.hea`) into an `EcgRecord`.

    A missing standard lead raises `RecordError`, unless `allow_missing_leads`: then it is zeros (with the median gain
    of the present leads). Extra leads are dropped.
    """
    record = Path(path)
    if record.suffix in {".hea", ".dat", ".mat"}:
        record = record.with_suffix("")
    header_path = record.with_suffix(".hea")
    header = _read_header(header_path)
    try:
        index = canonical_lead_index(header.sig_name, allow_missing=allow_missing_leads)
    except ValueError as error:
        raise RecordError(f"{header_path}: {error}", "missing_leads") from error

    if _is_plain_format16(header):
        digital = _read_format16(record.parent / header.file_name[0], header)
    else:
        digital = _read_with_wfdb(record, header_path)
    return _canonical_record(header, digital, index, header_path)


def _read_header(header_path: Path) -> _Header:
    try:
        text = header_path.read_text(encoding="latin-1")
    except OSError as error:
        raise RecordError(f"{header_path}: cannot read the header ({error.strerror or error})",
                          "missing_header" if isinstance(error, FileNotFoundError) else "bad_header") from error
    lines, comments = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line:
            lines.append(line.split("#", 1)[0])  # a comment may also end a line
    if not lines:
        raise RecordError(f"{header_path}: empty header", "bad_header")
    match = rx_record.match(lines[0])
    if match is None:
        raise RecordError(f"{header_path}: invalid record line {lines[0]!r}", "bad_header")
    fields = match.groupdict()
    n_sig = int(fields["n_sig"])
    header = _Header(
        record_name=fields["record_name"],
        fs=float(fields["fs"]) if fields["fs"] else 250.0,  # WFDB's default frequency
        sig_len=int(fields["sig_len"]) if fields["sig_len"] else None,
        n_seg=int(fields["n_seg"]) if fields["n_seg"] else None,
        file_name=[], fmt=[], samps_per_frame=[], skew=[], byte_offset=[], adc_gain=[], baseline=[], sig_name=[],
        comments=comments,
    )
    if header.n_seg is not None:
        raise RecordError(f"{header_path}: multi-segment records are not supported", "unsupported")
    if len(lines) - 1 < n_sig:
        raise RecordError(f"{header_path}: header declares {n_sig} signals but has {len(lines) - 1} signal lines",
                          "bad_header")
    for line in lines[1 : n_sig + 1]:
        match = rx_signal.match(line)
        if match is None:
            raise RecordError(f"{header_path}: invalid signal line {line!r}", "bad_header")
        s = match.groupdict()
        gain = float(s["adc_gain"]) if s["adc_gain"] else 200.0
        header.file_name.append(s["file_name"])
        header.fmt.append(s["fmt"])
        header.samps_per_frame.append(int(s["samps_per_frame"]) if s["samps_per_frame"] else 1)
        header.skew.append(int(s["skew"]) if s["skew"] else 0)
        header.byte_offset.append(int(s["byte_offset"]) if s["byte_offset"] else 0)
        header.adc_gain.append(gain if gain != 0 else 200.0)  # WFDB: a gain of 0 means 200
        # WFDB: a missing baseline defaults to the ADC zero
        baseline = s["baseline"] or s["adc_zero"] or "0"
        header.baseline.append(int(baseline))
        header.sig_name.append(s["sig_name"].strip())
    return header


def _is_plain_format16(header: _Header) -> bool:
    return (
        header.sig_len is not None
        and len(set(header.file_name)) == 1
        and all(f == "16" for f in header.fmt)
        and all(n == 1 for n in header.samps_per_frame)
        and not any(header.skew)
        and len(set(header.byte_offset)) == 1
    )


def _read_format16(dat_path: Path, header: _Header) -> np.ndarray:
    """Interleaved little-endian int16 frames → (n_sig, sig_len) int16."""
    n_sig, count = len(header.fmt), len(header.fmt) * header.sig_len
    try:
        samples = np.fromfile(dat_path, dtype="<i2", count=count, offset=header.byte_offset[0])
    except (OSError, ValueError) as error:
        raise RecordError(f"{dat_path}: cannot read the signal file ({error})",
                          "missing_signal" if isinstance(error, FileNotFoundError) else "bad_samples") from error
    if samples.size < count:
        raise RecordError(
            f"{dat_path}: truncated signal file: {samples.size} samples, the header declares "
            f"{header.sig_len} x {n_sig} = {count}", "truncated_signal"
        )
    return samples.reshape(header.sig_len, n_sig).T  # a view; the canonical reorder makes the one copy


def _read_with_wfdb(record: Path, header_path: Path) -> np.ndarray:
    import wfdb

    try:
        loaded = wfdb.rdrecord(str(record), physical=False, return_res=32)
    except Exception as error:  # wfdb raises many types for malformed files
        reason = "missing_signal" if isinstance(error, FileNotFoundError) else "bad_samples"
        raise RecordError(f"{header_path}: wfdb cannot read this record ({type(error).__name__}: {error})", reason) from error
    if loaded.d_signal is None:
        raise RecordError(f"{header_path}: wfdb read no uniform digital signal (several samples per frame?)", "unsupported")
    return loaded.d_signal.T


def _canonical_record(header: _Header, digital: np.ndarray, index: list[int | None], header_path: Path) -> EcgRecord:
    """(n_sig, n) samples in file order → the canonical twelve, baseline removed, missing samples filled."""
    present = [i for i in index if i is not None]
    rows = np.ascontiguousarray(digital[present])  # one gather: reorder and drop extra leads
    missing_values = {_MISSING_SAMPLE.get(header.fmt[i]) for i in present} - {None}
    missing = np.zeros(rows.shape, dtype=bool)
    for value in missing_values:
        missing |= rows == value
    n_filled = int(missing.sum())
    baseline = np.asarray([header.baseline[i] for i in present])
    if n_filled or baseline.any() or rows.dtype != np.int16:
        values = rows.astype(np.float64) - baseline[:, None]
        if n_filled:
            values[missing] = np.nan
            values = np.rint(fill_non_finite(values))
        if values.size and (values.min() < _INT16.min or values.max() > _INT16.max):
            raise RecordError(f"{header_path}: samples exceed the int16 range after removing the baseline", "bad_samples")
        rows = values.astype(np.int16)
    gains = np.asarray([header.adc_gain[i] for i in present], dtype=np.float32)
    if len(present) < len(index):  # allowed missing leads: zeros, with a typical gain
        out = np.zeros((len(index), rows.shape[1]), dtype=np.int16)
        out_gain = np.full(len(index), np.median(gains) if gains.size else 200.0, dtype=np.float32)
        kept = [lead for lead, i in enumerate(index) if i is not None]
        out[kept], out_gain[kept] = rows, gains
        rows, gains = out, out_gain
    return EcgRecord(
        record_name=header.record_name,
        digital=rows,
        adc_gain=gains,
        fs=header.fs,
        comments=header.comments,
        source_leads=tuple(header.sig_name),
        n_filled=n_filled,
    )
