"""builders.wfdb_reading: the fast format-16 reader against wfdb itself, on real PTB-XL and CinC records."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from builders.wfdb_reading import RecordError, read_wfdb
from modeling_supreme.processing_supreme import CANONICAL_LEADS, canonical_lead_index

DATA = Path(__file__).resolve().parent / "data"
PTBXL = sorted((DATA / "ptbxl" / "records500" / "00000").glob("*_hr.hea"))
CINC = sorted((DATA / "cinc2021").glob("*.hea"))
MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def _reference(header: Path) -> tuple[np.ndarray, wfdb.Record]:
    record = wfdb.rdrecord(str(header.with_suffix("")), physical=False)
    return record.d_signal.T[canonical_lead_index(record.sig_name)], record


@pytest.mark.parametrize("header", PTBXL + CINC, ids=lambda p: p.stem)
def test_bit_identical_to_wfdb_rdrecord(header):
    expected, reference = _reference(header)
    ecg = read_wfdb(header)
    assert ecg.digital.dtype == np.int16 and ecg.digital.shape == (12, reference.sig_len)
    np.testing.assert_array_equal(ecg.digital, expected)
    np.testing.assert_array_equal(ecg.adc_gain, np.asarray(reference.adc_gain)[canonical_lead_index(reference.sig_name)])
    assert ecg.fs == reference.fs
    assert ecg.comments == reference.comments
    assert ecg.source_leads == tuple(reference.sig_name)
    assert ecg.record_name == reference.record_name
    assert ecg.n_filled == 0


def _write(tmp_path, name, signal_mv, leads, fmt="16", gain=200.0, baseline=0, comments=None):
    d_signal = np.round(signal_mv * gain).astype(np.int64) + baseline
    wfdb.wrsamp(name, fs=500, units=["mV"] * len(leads), sig_name=list(leads), d_signal=d_signal,
                fmt=[fmt] * len(leads), adc_gain=[gain] * len(leads), baseline=[baseline] * len(leads),
                comments=comments or [], write_dir=str(tmp_path))
    return tmp_path / f"{name}.hea"


@pytest.fixture(scope="module")
def ptbxl_mv():
    record = wfdb.rdrecord(str(PTBXL[0].with_suffix("")))
    return record.p_signal  # (5000, 12) mV in PTB-XL's (canonical) order


def test_mimic_lead_order_is_reordered_by_name(tmp_path, ptbxl_mv):
    canonical = list(CANONICAL_LEADS)
    mimic = ptbxl_mv[:, [canonical.index(lead) for lead in MIMIC_ORDER]]
    header = _write(tmp_path, "40689238", mimic, MIMIC_ORDER, comments=["10000032: ECG"])
    ecg = read_wfdb(header.with_suffix(""))  # a record path without extension works too
    np.testing.assert_array_equal(ecg.digital, np.round(ptbxl_mv * 200).astype(np.int16).T)
    assert ecg.source_leads == tuple(MIMIC_ORDER)
    assert ecg.comments == ["10000032: ECG"]
    np.testing.assert_array_equal(ecg.adc_gain, np.full(12, 200, dtype=np.float32))


def test_other_formats_go_through_wfdb(tmp_path, ptbxl_mv):
    header = _write(tmp_path, "r212", ptbxl_mv[:, :12], CANONICAL_LEADS, fmt="212", gain=200.0)
    expected, _ = _reference(header)
    np.testing.assert_array_equal(read_wfdb(header).digital, expected)


def test_baseline_is_removed(tmp_path, ptbxl_mv):
    header = _write(tmp_path, "based", ptbxl_mv, CANONICAL_LEADS, baseline=100)
    ecg = read_wfdb(header)
    np.testing.assert_array_equal(ecg.digital, np.round(ptbxl_mv * 200).astype(np.int16).T)


def test_missing_samples_are_filled_from_six_neighbours(tmp_path):
    signal = np.tile(np.arange(40, dtype=np.int64)[:, None] * 10, (1, 12))
    signal[[0, 20], 3] = -32768  # WFDB format 16's missing value, at an edge and inside
    signal[:, 7] = -32768  # a lead that is entirely missing
    wfdb.wrsamp("gaps", fs=500, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), d_signal=signal, fmt=["16"] * 12,
                adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    ecg = read_wfdb(tmp_path / "gaps.hea")
    assert ecg.n_filled == 2 + 40
    assert ecg.digital[3, 20] == round(np.mean([170, 180, 190, 210, 220, 230]))
    assert ecg.digital[3, 0] == round(np.mean([10, 20, 30]))
    assert not ecg.digital[7].any()
    np.testing.assert_array_equal(np.delete(ecg.digital[3], [0, 20]), np.delete(signal[:, 3], [0, 20]))


@pytest.fixture()
def copied(tmp_path):
    for suffix in (".hea", ".dat"):
        shutil.copy(PTBXL[0].with_suffix(suffix), tmp_path / PTBXL[0].with_suffix(suffix).name)
    return tmp_path / PTBXL[0].name


def test_truncated_dat_names_the_file(copied):
    dat = copied.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:50_000])
    with pytest.raises(RecordError, match=r"00001_hr\.dat.*truncated") as error:
        read_wfdb(copied)
    assert error.value.reason == "truncated_signal"


def test_missing_header_names_the_file(copied):
    copied.unlink()
    with pytest.raises(RecordError, match=r"00001_hr\.hea") as error:
        read_wfdb(copied)
    assert error.value.reason == "missing_header"


def test_missing_lead(copied):
    text = copied.read_text().replace(" V6\n", " X6\n")
    copied.write_text(text)
    with pytest.raises(RecordError, match=r"00001_hr\.hea.*V6"):
        read_wfdb(copied)
    ecg = read_wfdb(copied, allow_missing_leads=True)
    assert not ecg.digital[11].any() and ecg.digital[10].any()
    assert ecg.adc_gain[11] == 1000


def test_corrupt_header(copied):
    copied.write_text("this is not a header\n")
    with pytest.raises(RecordError, match=r"00001_hr\.hea"):
        read_wfdb(copied)
