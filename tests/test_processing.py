"""The preprocessing (modeling_supreme/processing_supreme.py) on real records: PTB-XL WFDB, CinC-2021 .mat/.hea, a CPSC-2018 .mat struct."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import wfdb
from conftest import FIXTURES
from scipy.io import loadmat
from scipy.signal import resample_poly

from modeling_supreme import SupremeFeatureExtractor, SupremeProcessor
from modeling_supreme.processing_supreme import CANONICAL_LEADS, ecg_from_digital, fill_non_finite

PTBXL = FIXTURES / "ptbxl" / "records500" / "00000" / "00001_hr"
CINC = FIXTURES / "cinc2021" / "JS20000"
CPSC_LONG = FIXTURES / "cpsc2018" / "A1984.mat"
MIMIC_ORDER = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.fixture(scope="module")
def extractor():
    return SupremeFeatureExtractor()


@pytest.fixture(scope="module")
def ptbxl():
    record = wfdb.rdrecord(str(PTBXL))
    return record.p_signal.T, record.sig_name


def expected_minmax(signal):
    return (signal - signal.min()) / (signal.max() - signal.min() + 1e-8)


def test_ptbxl_path_record_and_array_agree(extractor, ptbxl):
    signal, names = ptbxl
    assert names[4] == "AVL"  # PTB-XL's upper-case spelling, matched case-insensitively
    from_path = extractor(str(PTBXL), return_tensors="pt")["input_values"]
    from_record = extractor(wfdb.rdrecord(str(PTBXL)), return_tensors="pt")["input_values"]
    from_array = extractor(signal, sampling_rate=500, lead_names=names, return_tensors="pt")["input_values"]
    assert from_path.shape == (1, 12, 5000) and from_path.dtype == torch.float32
    assert torch.equal(from_path, from_record) and torch.equal(from_path, from_array)
    np.testing.assert_allclose(from_path[0].numpy(), expected_minmax(signal), atol=1e-6)
    assert from_path.min() == 0 and abs(from_path.max().item() - 1) < 1e-6


def test_cinc_mat_with_header(extractor):
    values = extractor(str(CINC) + ".hea")["input_values"]
    record = wfdb.rdrecord(str(CINC))
    np.testing.assert_allclose(values[0], expected_minmax(record.p_signal.T), atol=1e-6)


def test_cpsc_struct_longer_than_ten_seconds_is_cropped(extractor):
    data = loadmat(str(CPSC_LONG))["ECG"]["data"][0, 0]
    assert data.shape[1] > 5000
    values = extractor(str(CPSC_LONG))["input_values"]
    assert values.shape == (1, 12, 5000)
    np.testing.assert_allclose(values[0], expected_minmax(data[:, :5000]), atol=1e-6)


def test_mimic_lead_order_gives_the_canonical_result(extractor, ptbxl):
    signal, _ = ptbxl
    canonical = extractor(signal, sampling_rate=500, lead_names=CANONICAL_LEADS)["input_values"]
    order = [CANONICAL_LEADS.index(name) for name in MIMIC_ORDER]
    mimic = extractor(signal[order], sampling_rate=500, lead_names=MIMIC_ORDER)["input_values"]
    np.testing.assert_array_equal(mimic, canonical)


def test_extra_leads_are_dropped(extractor, ptbxl):
    signal, _ = ptbxl
    frank = np.vstack([signal, signal[:3] * 0.5])
    names = list(CANONICAL_LEADS) + ["vx", "vy", "vz"]
    with_frank = extractor(frank, sampling_rate=500, lead_names=names)["input_values"]
    np.testing.assert_array_equal(with_frank, extractor(signal, sampling_rate=500)["input_values"])


def test_a_1000_hz_copy_gives_the_500_hz_result_within_resampling_error(extractor, ptbxl):
    signal, names = ptbxl
    at_500 = extractor(signal, sampling_rate=500, lead_names=names)["input_values"]
    at_1000 = extractor(resample_poly(signal, 2, 1, axis=-1), sampling_rate=1000, lead_names=names)["input_values"]
    assert at_1000.shape == at_500.shape
    error = np.abs(at_1000 - at_500)[..., 50:-50]  # polyphase filters ring at the record's edges
    assert error.max() < 0.02 and error.mean() < 1e-3


def test_short_record_is_zero_padded_in_mv_before_normalisation(extractor, ptbxl):
    signal, _ = ptbxl
    values = extractor(signal[:, :2500], sampling_rate=500)["input_values"][0]
    padded = np.pad(signal[:, :2500], ((0, 0), (0, 2500)))
    np.testing.assert_allclose(values, expected_minmax(padded), atol=1e-6)


def test_batches_of_arrays_and_paths(extractor, ptbxl):
    signal, names = ptbxl
    batch = extractor([str(PTBXL), str(CINC)], return_tensors="pt")["input_values"]
    stacked = extractor(np.stack([signal, signal]), sampling_rate=500, lead_names=names)["input_values"]
    assert batch.shape == (2, 12, 5000) and stacked.shape == (2, 12, 5000)
    np.testing.assert_array_equal(stacked[0], stacked[1])


def test_non_finite_samples_take_the_mean_of_six_neighbours():
    lead = np.arange(20, dtype=float)
    lead[10] = np.nan
    lead[11] = np.inf
    filled = fill_non_finite(np.stack([lead, np.full(20, np.nan)]))
    expected = np.mean([7, 8, 9, 12, 13, 14])
    assert filled[0, 10] == pytest.approx(expected) and filled[0, 11] == pytest.approx(expected)
    assert filled[0, 0] == 0 and filled[0, 19] == 19
    assert (filled[1] == 0).all(), "an all-NaN lead becomes zeros"
    edge = np.arange(10, dtype=float)
    edge[0] = np.nan
    assert fill_non_finite(edge[None])[0, 0] == pytest.approx(np.mean([1, 2, 3]))


def test_nan_in_a_real_record_is_filled_not_propagated(extractor, ptbxl):
    signal, names = ptbxl
    broken = signal.copy()
    broken[3, 1000:1010] = np.nan
    broken[7] = np.nan
    values = extractor(broken, sampling_rate=500, lead_names=names)["input_values"]
    assert np.isfinite(values).all()


def test_digital_samples_normalised_on_device_equal_the_extractor(extractor):
    record = wfdb.rdrecord(str(PTBXL), physical=False)
    digital = torch.from_numpy(record.d_signal.T.astype(np.int16))[None]
    gain = torch.tensor(record.adc_gain, dtype=torch.float32)[None]
    on_device = ecg_from_digital(digital, gain)
    torch.testing.assert_close(on_device, extractor(str(PTBXL), return_tensors="pt")["input_values"], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda fe, s: fe(s, sampling_rate=500, lead_names=[f"X{i}" for i in range(12)]), "lacks the standard lead"),
        (lambda fe, s: fe(s[:11], sampling_rate=500, lead_names=CANONICAL_LEADS[:11]), "lacks the standard lead.*V6"),
        (lambda fe, s: fe(s[0], sampling_rate=500), r"\(leads, samples\)"),
        (lambda fe, s: fe(s[:, :100], sampling_rate=500), "shorter than one patch"),
        (lambda fe, s: fe(np.full_like(s, np.nan), sampling_rate=500), "every sample is NaN"),
        (lambda fe, s: fe(s, lead_names=CANONICAL_LEADS), "sampling_rate is required"),
        (lambda fe, s: fe(s.T, sampling_rate=500), "5000 leads but 12 lead names"),
        (lambda fe, s: fe("/no/such/record"), "no such ECG record"),
        (lambda fe, s: fe([]), "no ECG given"),
    ],
)
def test_bad_input_raises_a_clear_value_error(extractor, ptbxl, call, message):
    with pytest.raises(ValueError, match=message):
        call(extractor, ptbxl[0])


def test_missing_lead_can_be_zero_filled_when_allowed(extractor, ptbxl):
    signal, _ = ptbxl
    values = extractor(signal[:11], sampling_rate=500, lead_names=CANONICAL_LEADS[:11], allow_missing_leads=True)
    assert (values["input_values"][0, 11] == values["input_values"][0, 11, 0]).all()


def test_processor_joins_queries_and_ecgs(extractor, tokenizer, ptbxl):
    processor = SupremeProcessor(extractor, tokenizer)
    out = processor(text=["atrial fibrillation", "normal ecg"], ecg=str(PTBXL), return_tensors="pt")
    assert set(out) == {"input_values", "input_ids", "attention_mask", "token_type_ids"}
    assert out["input_ids"].shape[0] == 2 and out["input_values"].shape == (1, 12, 5000)
    assert set(processor(text="sinus rhythm")) == {"input_ids", "attention_mask", "token_type_ids"}
    with pytest.raises(ValueError, match="at least one"):
        processor()
    with pytest.raises(ValueError, match="empty"):
        processor(text=[])


def test_a_file_that_is_not_an_ecg_is_named_in_the_error(extractor, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an ECG")
    with pytest.raises(ValueError, match="notes.txt: not an ECG record"):
        extractor(str(notes))
    garbage = tmp_path / "garbage.hea"
    garbage.write_text("this is not a header\n")
    with pytest.raises(ValueError, match="garbage.hea: not a readable WFDB record"):
        extractor(str(garbage))
