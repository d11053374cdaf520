"""The evaluation builders (PTB-XL, CPSC-2018, CSN) on real records shipped in the repository.

PTB-XL: ecg_id 1-300 of training/demo_data/ptbxl (WFDB format 516, FLAC-compressed) and ecg_id 3 as PhysioNet ships
it (format 16, tests/data/ptbxl). CPSC-2018: the originals A1980, A1983 and A1984 (tests/data/cpsc2018). CSN: JS20007
and JS20008 in ecg-arrhythmia's tree (tests/data/chapman) beside CinC 2021's flat copies of JS20000 and JS20001
(tests/data/cinc2021); the two sources' files of a record are byte-identical.

Each dataset is built once per module, from a temporary input folder that links the real files and adds the bad inputs
the builders must survive: a 15-lead and a 1000 Hz PTB-XL record, a truncated one, a CPSC `.mat` without its `ECG`
struct, a CPSC record in the WFDB re-release form, CSN headers with an unknown SNOMED CT code and with `#Dx:`.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import shutil
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb
from conftest import DEMO_PTBXL, FIXTURES

from builders import cpsc2018, csn, ptbxl
from builders.dataset_writing import to_schema_ecg
from builders.split_tables import SPLITS_DIR, TEST_SETS, load_split_tables

PTBXL_FORMAT16 = FIXTURES / "ptbxl" / "records500" / "00000"  # ecg_id 1-40 as PhysioNet ships them
CPSC = FIXTURES / "cpsc2018"
CHAPMAN = FIXTURES / "chapman"
LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
# Class counts of the six test sets (paper: 106 classes).
N_CLASSES = {"ptbxl_super_class": 5, "ptbxl_sub_class": 23, "ptbxl_form": 19, "ptbxl_rhythm": 12, "cpsc2018": 9,
             "csn": 38}


def _link_tree(source: Path, target: Path, pattern: str) -> None:
    for path in source.glob(pattern):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.symlink_to(path)


def _replace(path: Path) -> Path:
    """Turn a linked file into a writable one (never touching the shipped original)."""
    path.unlink()
    return path


def _load(folder: Path, config: str | None, split: str, cache: Path) -> datasets.Dataset:
    return datasets.load_dataset(str(folder), config, split=split, cache_dir=str(cache))


def _table_columns(test_set: str, split: str) -> list[str]:
    """Class columns read straight from MERL's table with pandas (independent of builders.split_tables); the shipped
    tables are checked against MERL's own in `test_shipped_tables_are_merls_unchanged_with_106_classes`."""
    layout = TEST_SETS[test_set]
    suffix = {"train": "train", "validation": "val", "test": "test"}[split]
    frame = pd.read_csv(SPLITS_DIR / layout.folder / f"{layout.prefix}_{suffix}.csv.xz")
    return list(frame.columns[layout.n_metadata_columns:])


def _assert_tables_respected(built: Path, config: str | None, test_set: str, present: set[str], broken: set[str],
                             cache: Path) -> None:
    tables = load_split_tables(test_set)
    for split, table in tables.items():
        expected = {k: v for k, v in table.labels_by_id().items() if k in present and k not in broken}
        if not expected:  # nothing of this split in the input: the writer leaves the split out
            assert split not in datasets.get_dataset_split_names(str(built), config)
            continue
        ds = _load(built, config, split, cache)
        names = ds.features["labels"].feature.names
        assert sorted(names) == sorted(_table_columns(test_set, split))
        got = {row_id: tuple(names[i] for i in labels) for row_id, labels in zip(ds["id"], ds["labels"], strict=True)}
        assert got == expected, f"{test_set}/{split}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf_cache")


# --- PTB-XL ---------------------------------------------------------------------------------------------------------

def _remove_record(records: Path, ecg_id: int) -> None:
    """Unlink a record's header and signal file(s) (format 516 splits the signals over `_hr_1.dat` and `_hr_2.dat`)."""
    for path in records.glob(f"{ecg_id:05d}_hr*"):
        path.unlink()


@pytest.fixture(scope="module")
def ptbxl_built(tmp_path_factory):
    source = DEMO_PTBXL
    root = tmp_path_factory.mktemp("ptbxl_in")
    _link_tree(source, root, "records500/*/*")
    shutil.copy(source / "ptbxl_database.csv", root)
    records = root / "records500" / "00000"
    train = load_split_tables("ptbxl_super_class")["train"].keys
    fifteen, fast, truncated = (int(k) for k in train[:3])

    original = wfdb.rdrecord(str(source / "records500" / "00000" / f"{fifteen:05d}_hr"), physical=False)
    extra = original.d_signal[:, :3] // 2  # Frank leads stand-ins
    _remove_record(records, fifteen)
    wfdb.wrsamp(f"{fifteen:05d}_hr", fs=500, units=["mV"] * 15, sig_name=original.sig_name + ["vx", "vy", "vz"],
                d_signal=np.concatenate([original.d_signal, extra], axis=1), fmt=["16"] * 15,
                adc_gain=[1000.0] * 15, baseline=[0] * 15, write_dir=str(records))

    slow = wfdb.rdrecord(str(source / "records500" / "00000" / f"{fast:05d}_hr"), physical=False)
    upsampled = np.rint(scipy.signal.resample_poly(slow.d_signal.astype(float), 2, 1, axis=0)).astype(np.int16)
    _remove_record(records, fast)
    wfdb.wrsamp(f"{fast:05d}_hr", fs=1000, units=["mV"] * 12, sig_name=slow.sig_name, d_signal=upsampled,
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(records))

    # the truncated one in PhysioNet's own format 16 (tests/data holds ecg_id 1-40 so), cut in half
    _remove_record(records, truncated)
    shutil.copy(PTBXL_FORMAT16 / f"{truncated:05d}_hr.hea", records)
    content = (PTBXL_FORMAT16 / f"{truncated:05d}_hr.dat").read_bytes()
    (records / f"{truncated:05d}_hr.dat").write_bytes(content[: len(content) // 2])

    out = tmp_path_factory.mktemp("ptbxl_out")
    stats = ptbxl.build(root, out)
    present = {str(int(p.name[:5])) for p in records.glob("*_hr.hea")}
    return out, stats, present, {"15-lead": fifteen, "1000 Hz": fast, "truncated": truncated}


@pytest.mark.parametrize("config", list(ptbxl.CONFIGS))
def test_ptbxl_records_land_in_their_split_with_the_tables_labels(ptbxl_built, cache, config):
    out, _, present, special = ptbxl_built
    _assert_tables_respected(out, config, ptbxl.CONFIGS[config], present, {str(special["truncated"])}, cache)


def test_ptbxl_bad_records_are_reported_and_the_rest_built(ptbxl_built, cache):
    out, stats, _, special = ptbxl_built
    train = stats["super_class"]["train"]
    truncated = [e for e in train["errors"] if e.startswith(f"{special['truncated']}:")]
    assert len(truncated) == 1 and f"{special['truncated']:05d}_hr.dat" in truncated[0] and "truncated" in truncated[0]
    notes = "\n".join(train["notes"])
    assert f"{special['15-lead']:05d}_hr.hea: dropped non-standard lead(s) vx, vy, vz" in notes
    assert f"{special['1000 Hz']:05d}_hr.hea: resampled from 1000 Hz to 500 Hz" in notes
    assert train["built"] + len(train["missing"]) + len(train["errors"]) == train["in_table"] == 17084
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "wagner2020ptbxl" in card and "missing from input" in card

    ds = _load(out, "super_class", "train", cache)
    assert ds.features["ecg"].dtype == "int16" and ds.features["ecg"].shape == (12, 5000)
    ds = ds.with_format("numpy")  # widens to int64 when read; stored as int16
    rows = {row_id: i for i, row_id in enumerate(ds["id"])}
    original = {k: wfdb.rdrecord(str(DEMO_PTBXL / "records500" / "00000" / f"{special[k]:05d}_hr"),
                                 physical=False).d_signal.T for k in ("15-lead", "1000 Hz")}
    fifteen = ds[rows[str(special["15-lead"])]]
    np.testing.assert_array_equal(fifteen["ecg"], original["15-lead"])  # extra leads dropped by name, order kept
    resampled = ds[rows[str(special["1000 Hz"])]]["ecg"].astype(float)
    error = np.abs(resampled - original["1000 Hz"])[:, 100:-100]  # polyphase filter edges aside
    assert error.max() <= 0.02 * np.abs(original["1000 Hz"]).max() + 2


# --- CPSC-2018 ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpsc_built(tmp_path_factory):
    source = CPSC
    root = tmp_path_factory.mktemp("cpsc_in")
    _link_tree(source, root, "A*.mat")
    shutil.copy(source / "REFERENCE.csv", root)
    # A1983 without its ECG struct; A1984 as the WFDB re-release (.hea + .mat holding `val`, 1000 per mV)
    _replace(root / "A1983.mat")
    scipy.io.savemat(root / "A1983.mat", {"val": np.zeros((12, 5000), np.int16)})
    data = scipy.io.loadmat(source / "A1984.mat", squeeze_me=True, struct_as_record=False)["ECG"].data
    digital = np.rint(data * 1000).astype(np.int16)
    _replace(root / "A1984.mat")
    scipy.io.savemat(root / "A1984.mat", {"val": digital}, format="4")
    header = [f"A1984 12 500 {digital.shape[1]}"] + [
        f"A1984.mat 16x1+24 1000.0(0)/mV 16 0 {digital[i, 0]} 0 0 {lead}" for i, lead in enumerate(
            ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"])]
    (root / "A1984.hea").write_text("\n".join(header + ["# Age: 23", "# Sex: Male", "# Dx: 164884008"]) + "\n")

    out = tmp_path_factory.mktemp("cpsc_out")
    stats = cpsc2018.build(root, out, first_samples=2500)
    return out, stats


def test_cpsc_records_land_in_their_split_with_the_tables_labels(cpsc_built, cache):
    out, stats = cpsc_built
    present = {"A1980", "A1983", "A1984"}  # train, test, test: no validation record, so no validation split
    _assert_tables_respected(out, None, "cpsc2018", present, {"A1983"}, cache)
    errors = stats["default"]["test"]["errors"]
    assert len(errors) == 1 and "A1983.mat: no 'ECG' struct" in errors[0] and "['val']" in errors[0]
    assert "first 2500 samples" in (out / "README.md").read_text()


def test_cpsc_originals_in_mv_and_wfdb_rerelease_agree(cpsc_built, cache):
    out, _ = cpsc_built
    test = _load(out, None, "test", cache).with_format("numpy")
    train = _load(out, None, "train", cache).with_format("numpy")
    rows = {**{r: train[i] for i, r in enumerate(train["id"])}, **{r: test[i] for i, r in enumerate(test["id"])}}
    for record_id in ("A1980", "A1984"):  # an original and a WFDB re-release
        row = rows[record_id]
        millivolts = scipy.io.loadmat(CPSC / f"{record_id}.mat", squeeze_me=True,
                                      struct_as_record=False)["ECG"].data
        np.testing.assert_allclose(row["ecg"][:, :2500] / row["adc_gain"][:, None], millivolts[:, :2500], atol=5e-4)
        assert not row["ecg"][:, 2500:].any()  # the benchmark's protocol: first 2500 samples, zero-padded
    assert rows["A1980"]["sex"] == "male" and rows["A1980"]["age"] == 52


def test_to_schema_ecg_crops_pads_and_resamples():
    x = np.arange(12 * 7000, dtype=np.int16).reshape(12, 7000) % 1000
    np.testing.assert_array_equal(to_schema_ecg(x, 500), x[:, :5000])
    short = to_schema_ecg(x[:, :3000], 500)
    assert short.dtype == np.int16 and not short[:, 3000:].any()
    assert to_schema_ecg(np.ones((12, 2500), np.int16), 250).shape == (12, 5000)


# --- CSN ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def csn_built(tmp_path_factory):
    """ecg-arrhythmia's tree for JS20007-08 and CinC 2021's flat copies for JS20000-01, in one input folder."""
    root = tmp_path_factory.mktemp("csn_in")
    (root / "ConditionNames_SNOMED-CT.csv").symlink_to(CHAPMAN / "ConditionNames_SNOMED-CT.csv")
    tree = root / "WFDBRecords" / "20" / "206"
    for path in (CHAPMAN / "WFDBRecords" / "20" / "206").glob("JS*.*"):
        tree.mkdir(parents=True, exist_ok=True)
        (tree / path.name).symlink_to(path)
    for path in (FIXTURES / "cinc2021").glob("JS*.*"):
        (root / "cinc2021" / path.name).parent.mkdir(exist_ok=True)
        (root / "cinc2021" / path.name).symlink_to(path)
    # JS20007: "#Dx:" spelling; JS20008: a code that is in no SNOMED CT table
    for name, edit in (("JS20007", lambda t: t.replace("# Dx:", "#Dx:")),
                       ("JS20008", lambda t: t.replace("# Dx: ", "# Dx: 999999999,"))):
        header = tree / f"{name}.hea"
        text = header.read_text()
        _replace(header).write_text(edit(text))
    out = tmp_path_factory.mktemp("csn_out")
    return out, csn.build(root, out)


def test_csn_records_land_in_their_split_with_the_tables_labels(csn_built, cache):
    out, stats = csn_built
    present = {"JS20000", "JS20001", "JS20007", "JS20008"}
    _assert_tables_respected(out, None, "csn", present, set(), cache)
    # JS20001 (CinC copy), JS20007 and JS20008 (ecg-arrhythmia tree); JS20000 is in none of MERL's CSN tables
    assert stats["default"]["train"]["built"] == 3
    assert not any(row_id == "JS20000" for table in load_split_tables("csn").values() for row_id in table.keys)


def test_csn_header_codes_both_spellings_and_unknown_code_reported(csn_built, cache):
    out, stats = csn_built
    ds = _load(out, None, "train", cache)
    rows = {r["id"]: r for r in ds}
    assert rows["JS20007"]["snomed_codes"] == ["284470004", "426177001", "59931005", "164934002"]
    assert rows["JS20007"]["report"].startswith("atrial premature beats; Sinus Bradycardia")
    assert rows["JS20008"]["snomed_codes"][0] == "999999999"
    assert "SNOMED CT 999999999" in rows["JS20008"]["report"]
    notes = stats["default"]["train"]["notes"]
    assert any("JS20008.hea: SNOMED CT code(s) 999999999 in no SNOMED CT table" in n for n in notes)
    assert stats["unknown_snomed_codes"]["train"] == {"999999999": 1}
    assert "999999999 (1)" in (out / "README.md").read_text()


# --- the tables themselves ------------------------------------------------------------------------------------------

# SHA-256 of each of MERL's split tables (the CSV text, xz-decompressed), taken from the copy of
# cheliu-computation/MERL-ICML2024's finetune/data_split/ the shipped tables were made from.
MERL_TABLES_SHA256 = {
    "chapman/chapman_test.csv.xz": "a51df50676226bd7697845fc15036356a56af9379c3efaa917f1dbff274d1236",
    "chapman/chapman_train.csv.xz": "8cb268dd4a1e87ea527c4ad57f23baafc4ba72c08edf0ffe2d13cbf6aa299572",
    "chapman/chapman_val.csv.xz": "2f611e3447008d36eaa10a33675127d57c90a156894577167a7932057a7ef8a8",
    "icbeb/icbeb_test.csv.xz": "ef85abba57aedba8bf857cf843457b5732f68adfd27b0f45af408870d4210a7f",
    "icbeb/icbeb_train.csv.xz": "013fa62513598e7a141d5ea810f73b6b75cdddbab25e11bcbbcdf84a18f000de",
    "icbeb/icbeb_val.csv.xz": "17fc4f6f95aa818e147ff3b6d5c314c9ae4301989469a0488aaa19638d3e44c8",
    "ptbxl/form/ptbxl_form_test.csv.xz": "533fc6f96c4dde42cd7e1722a0180ee405a8b22ca75225f5700fd7012049b17c",
    "ptbxl/form/ptbxl_form_train.csv.xz": "4b2b1d0c3398b897f15a4902f993137ecb24563a223251b6319fb64ac4fd2da7",
    "ptbxl/form/ptbxl_form_val.csv.xz": "50c614246753bda0e123528e4d79fad861e870ae17105c136c6a0776996ff6c5",
    "ptbxl/rhythm/ptbxl_rhythm_test.csv.xz": "da18b3ecf6c8260a9986437d3a38dd522eb1aab8f5e4439d7bbaf28d172240b0",
    "ptbxl/rhythm/ptbxl_rhythm_train.csv.xz": "ed76e6459be242953504d2a702a383bd0593b53bc2fffa941aadb11c6d192d32",
    "ptbxl/rhythm/ptbxl_rhythm_val.csv.xz": "a6386ab392844d7cccd358f2fac8aeb0dcff0240be0a3b0e1188807d2e3ad390",
    "ptbxl/sub_class/ptbxl_sub_class_test.csv.xz": "2394d07f10150a9853fa985d30959a348c2553207367860042d48d3108a4c013",
    "ptbxl/sub_class/ptbxl_sub_class_train.csv.xz": "6df73dd4a5f638525c8a346614dbf5a8992d8862efeacc8d2b11efc6addcce9a",
    "ptbxl/sub_class/ptbxl_sub_class_val.csv.xz": "b79acabc92088e400273392adb87e16be3c74695572a174efe7359f97eca1c8c",
    "ptbxl/super_class/ptbxl_super_class_test.csv.xz": "1646fae11e3fad3f7a98a34f4af5ab0c86e64ad06eba6861cad26831a5f0f617",
    "ptbxl/super_class/ptbxl_super_class_train.csv.xz": "81c0b53f7500107cfcf3433ad7cfcbc4622d300171f9cfc8ddeeccd5e6ee53a5",
    "ptbxl/super_class/ptbxl_super_class_val.csv.xz": "d852fcc62edcdd4785f64cddeb24ef1c84435350bc34ccbef9b3fedfc3bd63b1",
}


def test_shipped_tables_are_merls_unchanged_with_106_classes():
    shipped = {p.relative_to(SPLITS_DIR).as_posix(): hashlib.sha256(lzma.decompress(p.read_bytes())).hexdigest()
               for p in SPLITS_DIR.rglob("*.csv.xz")}
    assert shipped == MERL_TABLES_SHA256
    assert (SPLITS_DIR / "LICENSE").read_text().startswith("MIT License")
    for test_set, n in N_CLASSES.items():
        tables = load_split_tables(test_set)
        for split, table in tables.items():
            assert len(table.class_names) == n
            assert sorted(table.class_names) == sorted(_table_columns(test_set, split))
    assert sum(N_CLASSES.values()) == 106


def test_build_resumes_without_redoing_finished_splits(ptbxl_built, caplog):
    out, _, _, _ = ptbxl_built
    shard = next((out / "form").glob("test-*.parquet"))
    before = shard.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="builders.benchmark_sets"):
        ptbxl.build(DEMO_PTBXL, out, configs=("form",))
    assert shard.stat().st_mtime_ns == before
    assert "form/test: already built" in caplog.text
