"""SuPreME preprocessing: raw 12-lead ECGs in, normalised `input_values` out; plus the processor joining it to a tokenizer.

The steps, in order, are those of the SuPreME paper (appendix A.1.1) and MERL, whose convention it inherits:

1. leads reordered by name (case-insensitive) to I, II, III, aVR, aVL, aVF, V1-V6; extra leads dropped;
2. NaN/Inf replaced by the mean of the six neighbouring finite samples (three on each side);
3. polyphase resampling to the model's rate (`sampling_rate`: 500 Hz in the paper, 100 Hz for the PTB-XL model);
4. cropped or zero-padded to `num_samples` (10 s);
5. one min-max over the whole record, to [0, 1].

`ecg_from_digital` runs steps 3 and 5 (after the ADC gain) on the int16 samples the datasets store at 500 Hz, so the
trainer can ship int16 and normalise on the GPU; it is the same arithmetic as the feature extractor's.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from transformers import BatchFeature, FeatureExtractionMixin, ProcessorMixin

CANONICAL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
NORMALIZATIONS = ("minmax", "zscore", "none")
_FILL_NEIGHBOURS = 3  # finite samples taken on each side of a gap
_EPS = 1e-8
STORED_SAMPLING_RATE = 500  # the rate of the datasets' `ecg` column (docs/dataset_schema.md)


def canonical_lead_index(lead_names, allow_missing: bool = False) -> list[int | None]:
    """Position in `lead_names` of each canonical lead (`None` for a missing one when `allow_missing`).

    Names match case-insensitively (PTB-XL writes "AVL", CSN "aVL"); leads outside the standard twelve (Frank leads,
    rhythm strips) are ignored. Raises `ValueError` naming the missing leads.
    """
    positions = {}
    for position, name in enumerate(lead_names):
        positions.setdefault(str(name).strip().lower(), position)
    index = [positions.get(lead.lower()) for lead in CANONICAL_LEADS]
    missing = [lead for lead, position in zip(CANONICAL_LEADS, index, strict=True) if position is None]
    if missing and not allow_missing:
        raise ValueError(
            f"ECG lacks the standard lead(s) {', '.join(missing)}; it has {', '.join(map(str, lead_names))}. "
            "Pass allow_missing_leads=True to zero-fill missing leads."
        )
    return index


def fill_non_finite(x: np.ndarray) -> np.ndarray:
    """Replace NaN/Inf in `x` (leads, samples) by the mean of the six nearest finite samples of the same lead.

    The six are the three nearest finite samples before the gap and the three after it (fewer at the record's edges).
    A lead with no finite sample becomes zeros. Returns a float copy; `x` is not modified.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    finite = np.isfinite(x)
    if finite.all():
        return x
    for lead in np.flatnonzero(~finite.all(axis=1)):
        valid = np.flatnonzero(finite[lead])
        if valid.size == 0:
            x[lead] = 0.0
            continue
        gaps = np.flatnonzero(~finite[lead])
        cumulative = np.concatenate([[0.0], np.cumsum(x[lead, valid])])
        k = np.searchsorted(valid, gaps)  # number of finite samples before each gap sample
        lo = np.maximum(k - _FILL_NEIGHBOURS, 0)
        hi = np.minimum(k + _FILL_NEIGHBOURS, valid.size)
        x[lead, gaps] = (cumulative[hi] - cumulative[lo]) / (hi - lo)
    return x


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling of `x` along its last axis from `fs_in` to `fs_out` Hz."""
    if fs_in <= 0:
        raise ValueError(f"sampling rate must be positive, got {fs_in}")
    if fs_in == fs_out:
        return x
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop (keeping the start) or zero-pad (at the end) the last axis of `x` to `n` samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad)


def normalize_ecg(x: torch.Tensor, method: str = "minmax") -> torch.Tensor:
    """Per-record normalisation of `x` (batch_size, leads, samples).

    `"minmax"`: one min and max over all leads of a record, to [0, 1] (MERL, SuPreME); `"zscore"`: zero mean and unit
    variance per lead; `"none"`: unchanged.
    """
    if method == "minmax":
        low = x.amin(dim=(-2, -1), keepdim=True)
        high = x.amax(dim=(-2, -1), keepdim=True)
        return (x - low) / (high - low + _EPS)
    if method == "zscore":
        return (x - x.mean(dim=-1, keepdim=True)) / (x.std(dim=-1, keepdim=True) + _EPS)
    if method == "none":
        return x
    raise ValueError(f"unknown normalization {method!r}; expected one of {NORMALIZATIONS}")


def ecg_from_digital(
    digital: torch.Tensor, adc_gain: torch.Tensor, method: str = "minmax", sampling_rate: int = STORED_SAMPLING_RATE
) -> torch.Tensor:
    """Stored int16 samples (batch_size, 12, samples at 500 Hz) and ADC gains (batch_size, 12) → model
    `input_values` float32 at `sampling_rate` (the model's `config.sampling_rate`).

    Gain and normalisation run on the tensors' device; a model at another rate gets the feature extractor's
    polyphase resampling (on the CPU), so training and inference see the same signal.
    """
    millivolts = digital.to(torch.float32) / adc_gain.to(torch.float32).unsqueeze(-1)
    if sampling_rate != STORED_SAMPLING_RATE:
        resampled = resample(millivolts.cpu().numpy(), STORED_SAMPLING_RATE, sampling_rate)
        millivolts = torch.from_numpy(resampled.astype(np.float32)).to(millivolts.device)
    return normalize_ecg(millivolts, method)


def read_ecg_file(path: str | os.PathLike) -> tuple[np.ndarray, float, list[str]]:
    """Read one ECG file into (signal in mV (leads, samples), sampling rate, lead names).

    Accepts a WFDB record (`.hea` with `.dat` or CinC `.mat`; with or without the extension) and a CPSC-2018 original
    `.mat` (a MATLAB struct `ECG` with `data` in mV at 500 Hz in the standard lead order).
    """
    path = Path(path)
    if path.is_file() and path.suffix not in {".hea", ".dat", ".mat"}:
        raise ValueError(f"{path}: not an ECG record (expected a WFDB .hea/.dat/.mat record or a CPSC-2018 .mat)")
    record = path.with_suffix("") if path.suffix in {".hea", ".dat", ".mat"} else path
    if record.with_suffix(".hea").is_file():
        import wfdb

        try:
            header = wfdb.rdrecord(str(record))
        except Exception as error:  # wfdb raises many types for malformed files
            raise ValueError(f"{path}: not a readable WFDB record ({error})") from error
        return _physical_signal(header), float(header.fs), list(header.sig_name)
    if path.suffix == ".mat" and path.is_file():
        from scipy.io import loadmat

        try:
            content = loadmat(str(path), squeeze_me=False)
        except Exception as error:
            raise ValueError(f"{path}: not a readable MATLAB file ({error})") from error
        if "ECG" not in content:
            raise ValueError(f"{path}: no WFDB header beside it and no CPSC-2018 struct 'ECG' inside it")
        data = np.asarray(content["ECG"]["data"][0, 0], dtype=np.float64)
        return data, 500.0, list(CANONICAL_LEADS)
    raise ValueError(f"{path}: no such ECG record (looked for {record.with_suffix('.hea')} and a CPSC-2018 .mat)")


def _physical_signal(record) -> np.ndarray:
    """(leads, samples) in physical units from a `wfdb.Record`, whichever of p_signal / d_signal it holds."""
    if record.p_signal is not None:
        return np.asarray(record.p_signal, dtype=np.float64).T
    if record.d_signal is not None:
        digital = np.asarray(record.d_signal, dtype=np.float64)
        gain = np.asarray(record.adc_gain, dtype=np.float64)
        baseline = np.asarray(record.baseline, dtype=np.float64)
        return ((digital - baseline) / gain).T
    raise ValueError(f"WFDB record {record.record_name!r} holds no samples")


class SupremeFeatureExtractor(FeatureExtractionMixin):
    r"""Turns raw 12-lead ECGs into the `input_values` (batch_size, 12, num_samples) float32 that SuPreME expects.

    Args:
        sampling_rate (`int`, defaults to 500): rate the model was trained at; inputs are resampled to it.
        num_samples (`int`, defaults to 5000): samples per lead after cropping or zero-padding (10 s at 500 Hz).
        normalization (`str`, defaults to `"minmax"`): `"minmax"` (one min-max over the record, to [0, 1], as SuPreME
            and MERL), `"zscore"` (per lead) or `"none"`. A checkpoint trained otherwise records it here.
        allow_missing_leads (`bool`, defaults to `False`): zero-fill missing standard leads instead of raising.
        min_duration_samples (`int`, defaults to 125): inputs shorter than this (one ViT patch at the target rate,
            after resampling) are refused.
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        sampling_rate: int = 500,
        num_samples: int = 5000,
        normalization: str = "minmax",
        allow_missing_leads: bool = False,
        min_duration_samples: int = 125,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")
        self.sampling_rate = sampling_rate
        self.num_samples = num_samples
        self.normalization = normalization
        self.allow_missing_leads = allow_missing_leads
        self.min_duration_samples = min_duration_samples

    def __call__(
        self,
        ecg,
        sampling_rate: float | None = None,
        lead_names: list[str] | None = None,
        allow_missing_leads: bool | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one ECG or a batch.

        Args:
            ecg: a `(leads, samples)` array, a `(batch, leads, samples)` array or a list of arrays; a `wfdb.Record`; a
                path to a WFDB record or CPSC `.mat`; or a list of records/paths. Arrays are in physical units (mV).
            sampling_rate: rate of array inputs (records and paths carry their own). Required for arrays.
            lead_names: lead names of array inputs, in their order; defaults to the canonical order.
        """
        allow_missing = self.allow_missing_leads if allow_missing_leads is None else allow_missing_leads
        signals = [
            self._preprocess_one(*item, allow_missing) for item in self._as_items(ecg, sampling_rate, lead_names)
        ]
        values = torch.from_numpy(np.stack(signals).astype(np.float32))
        values = normalize_ecg(values, self.normalization)
        return BatchFeature(data={"input_values": values.numpy()}, tensor_type=return_tensors)

    def _as_items(self, ecg, sampling_rate, lead_names):
        """Yield (signal (leads, samples), rate, lead names, source description) for every ECG in the input."""
        if isinstance(ecg, np.ndarray | torch.Tensor):
            array = np.asarray(ecg)
            if array.ndim == 2:
                ecg = [array]
            elif array.ndim == 3:
                ecg = list(array)
            else:
                raise ValueError(
                    f"ECG array must be (leads, samples) or (batch, leads, samples); got shape {array.shape}"
                )
        elif not isinstance(ecg, list | tuple):
            ecg = [ecg]
        if len(ecg) == 0:
            raise ValueError("no ECG given")
        for position, item in enumerate(ecg):
            source = f"ECG {position}"
            if isinstance(item, str | os.PathLike):
                signal, fs, names = read_ecg_file(item)
                yield signal, fs, names, str(item)
            elif hasattr(item, "sig_name") and hasattr(item, "fs"):  # wfdb.Record
                yield _physical_signal(item), float(item.fs), list(item.sig_name), f"record {item.record_name}"
            else:
                array = np.asarray(item, dtype=np.float64)
                if array.ndim != 2:
                    raise ValueError(f"{source}: expected a (leads, samples) array, got shape {array.shape}")
                if sampling_rate is None:
                    raise ValueError(f"{source}: sampling_rate is required for array input")
                names = list(lead_names) if lead_names is not None else list(CANONICAL_LEADS)
                if len(names) != array.shape[0]:
                    raise ValueError(
                        f"{source}: {array.shape[0]} leads but {len(names)} lead names; is the array (samples, leads)?"
                    )
                yield array, float(sampling_rate), names, source

    def _preprocess_one(self, signal, fs, names, source, allow_missing) -> np.ndarray:
        """Steps 1-4 of the module docstring for one record; normalisation follows over the batch tensor."""
        try:
            index = canonical_lead_index(names, allow_missing=allow_missing)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        if not np.isfinite(signal).any():
            raise ValueError(f"{source}: every sample is NaN or infinite")
        ordered = np.zeros((len(CANONICAL_LEADS), signal.shape[1]))
        for row, position in enumerate(index):
            if position is not None:
                ordered[row] = signal[position]
        ordered = resample(fill_non_finite(ordered), fs, self.sampling_rate)
        if ordered.shape[1] < self.min_duration_samples:
            raise ValueError(
                f"{source}: {ordered.shape[1]} samples at {self.sampling_rate} Hz is shorter than one patch "
                f"({self.min_duration_samples} samples)"
            )
        return fit_length(ordered, self.num_samples)


class SupremeProcessor(ProcessorMixin):
    r"""Joins [`SupremeFeatureExtractor`] (ECGs) and a BERT tokenizer (free-text cardiac queries).

    `processor(text=queries, ecg=signals, sampling_rate=500, lead_names=names, return_tensors="pt")` returns one
    `BatchFeature` with `input_values` and, for the queries, `input_ids` and `attention_mask`.

    Args:
        feature_extractor ([`SupremeFeatureExtractor`]): the ECG preprocessing.
        tokenizer ([`PreTrainedTokenizerBase`]): the text encoder's tokenizer (MedCPT-Query-Encoder's by default).
        query_max_length (`int`, defaults to 64): queries are truncated to this many tokens (cardiac phrases are short).
    """

    def __init__(self, feature_extractor, tokenizer, query_max_length: int = 64, **kwargs):
        self.query_max_length = query_max_length
        super().__init__(feature_extractor, tokenizer, **kwargs)

    def __call__(
        self,
        text: str | list[str] | None = None,
        ecg=None,
        sampling_rate: float | None = None,
        lead_names: list[str] | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        if text is None and ecg is None:
            raise ValueError("give at least one of `text` (queries) or `ecg`")
        data = {}
        if text is not None:
            queries = [text] if isinstance(text, str) else list(text)
            if not queries:
                raise ValueError("the query list is empty")
            data.update(
                self.tokenizer(
                    queries,
                    padding=True,
                    truncation=True,
                    max_length=self.query_max_length,
                    return_tensors=return_tensors,
                )
            )
        if ecg is not None:
            data.update(
                self.feature_extractor(
                    ecg, sampling_rate=sampling_rate, lead_names=lead_names, return_tensors=return_tensors, **kwargs
                )
            )
        return BatchFeature(data=data, tensor_type=return_tensors)


SupremeFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
SupremeProcessor.register_for_auto_class("AutoProcessor")
