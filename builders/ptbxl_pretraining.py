"""PTB-XL as a SuPreME pre-training corpus, through the MIMIC-IV-ECG builder's own labelling.

    python -m builders.ptbxl_pretraining --input PTBXL_ROOT --output DIR [--sampling-rate 100] [--folds 1 2 3 4 5 6 7]
        [--taxonomy] [--leave-out CLBBB WPW ...] [--labeller rules] [--text-encoder MODEL]

1. Each record of `ptbxl_database.csv` (those of `--folds`) becomes a MIMIC-IV-ECG study in `DIR_mimic_layout`, its
   machine report the English descriptions of its SCP-ECG statements ("Sinus rhythm", "Normal ECG", ...), its
   waveform read from `records100/` (`filename_lr`) or `records500/` (`filename_hr`) and stored at 500 Hz.
2. PTB-XL grades each diagnostic statement with the cardiologist's likelihood (15, 35, 50, 80, 100). A statement
   graded below `--min-likelihood` (default 50) is written hedged, "Possible <description>", so the labeller treats
   it as the paper treats "possible"/"probable": dropped from `labels`, kept in `uncertain_terms`. 50 is the
   threshold because below it the cardiologist rated the finding less likely present than absent (15 and 35: 1,716
   of the 25,634 graded statements of folds 1-8), while 50 and 80 still assert it (the PTB-XL benchmark's labels
   count every likelihood as positive).
3. `--taxonomy` also states the diagnostic class and subclass (PTB-XL's own grouping, `scp_statements.csv`) of each
   diagnostic statement: an anteroseptal infarct's report gains "Anterior myocardial infarction" and "Myocardial
   infarction", a first-degree AV block's "AV block" and "Conduction disturbance". The umbrella terms PTB-XL's
   super- and subclass tasks query then exist as labels; a class stated only through hedged statements is hedged.
4. `--leave-out` drops the statements of those SCP codes from every report (and the classes only they imply): the
   classes never reach the labels, so they can be queried zero-shot afterwards (the ECGs stay).
5. `python -m builders.mimic_iv_ecg` labels the reports and writes `DIR` (Parquet shards, dataset card,
   `stats.json`): the project's pre-training schema, whatever labeller is chosen.

Records the table names but the folder lacks are counted and reported (`missing.txt` in the layout folder), never fatal.
A rerun reuses the written studies.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builders.mimic_layout import MimicStudy, mimic_digital, write_mimic_record, write_mimic_tables
from builders.ptbxl import FILENAME_COLUMN

MIN_LIKELIHOOD = 50
HEDGE = "Possible"  # a hedge word the rules labeller and the LLM prompt both read as uncertain
# The names of PTB-XL's diagnostic classes (Wagner et al. 2020) and of the subclasses that group several statements;
# the other subclasses are one statement each, already stated by its description. NORM is its one statement.
CLASS_NAMES = {"MI": "Myocardial infarction", "STTC": "ST-T changes", "CD": "Conduction disturbance",
               "HYP": "Hypertrophy"}
SUBCLASS_NAMES = {"AMI": "Anterior myocardial infarction", "IMI": "Inferior myocardial infarction",
                  "ISCA": "Ischemic in anterior leads", "ISCI": "Ischemic in inferior leads", "_AVB": "AV block",
                  "LAFB/LPFB": "Fascicular block", "STTC": "ST-T changes"}

logger = logging.getLogger(__name__)


@dataclass
class PtbxlRecord:
    ecg_id: int
    patient_id: str
    fold: int
    path: Path  # the WFDB record, without extension
    codes: dict[str, float]  # SCP-ECG statement code -> likelihood (0 for form and rhythm statements)


def read_ptbxl(folder: Path, sampling_rate: int = 500) -> tuple[list[PtbxlRecord], dict[str, str]]:
    """The records of a PTB-XL-layout folder (paths at `sampling_rate`) and SCP code → English description."""
    import pandas as pd

    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found: a PTB-XL folder holds ptbxl_database.csv, scp_statements.csv and "
                "records500/ or records100/"
            )
    if sampling_rate not in FILENAME_COLUMN:
        raise ValueError(f"PTB-XL records come at {sorted(FILENAME_COLUMN)} Hz, not {sampling_rate}")
    descriptions = pd.read_csv(folder / "scp_statements.csv", index_col=0)["description"].to_dict()
    database = pd.read_csv(folder / "ptbxl_database.csv", index_col="ecg_id")
    records = []
    for ecg_id, row in database.iterrows():
        codes = {code: float(likelihood) for code, likelihood in ast.literal_eval(row.scp_codes).items()}
        unknown = [code for code in codes if code not in descriptions]
        if unknown:
            raise ValueError(
                f"{folder / 'ptbxl_database.csv'}: ecg_id {ecg_id} has SCP code(s) {unknown} that "
                f"{folder / 'scp_statements.csv'} does not describe"
            )
        path = folder / row[FILENAME_COLUMN[sampling_rate]]
        records.append(PtbxlRecord(int(ecg_id), str(int(row.patient_id)), int(row.strat_fold), path, codes))
    return records, descriptions


def read_taxonomy(folder: Path) -> dict[str, list[str]]:
    """Diagnostic SCP code → the names of its class and subclass (`CLASS_NAMES`, `SUBCLASS_NAMES`) where named."""
    import pandas as pd

    table = pd.read_csv(folder / "scp_statements.csv", index_col=0)
    table = table[table["diagnostic"] == 1]
    return {code: [name for name in (CLASS_NAMES.get(row.diagnostic_class), SUBCLASS_NAMES.get(row.diagnostic_subclass))
                   if name] for code, row in table.iterrows()}


def _stated(text: str, hedged: bool) -> str:
    return f"{HEDGE} {text[0].lower()}{text[1:]}" if hedged else text[0].upper() + text[1:]


def machine_statements(
    record: PtbxlRecord,
    descriptions: dict[str, str],
    min_likelihood: float = MIN_LIKELIHOOD,
    leave_out: frozenset[str] = frozenset(),
    taxonomy: dict[str, list[str]] | None = None,
) -> list[str]:
    """The record's SCP statements as machine statements: capitalised descriptions, hedged when graded low; with
    `taxonomy` (`read_taxonomy`), then the classes they belong to, hedged when every statement implying them is."""
    statements, classes = [], {}
    for code, likelihood in record.codes.items():
        if code in leave_out:
            continue
        hedged = 0 < likelihood < min_likelihood  # 0: a form or rhythm statement, which PTB-XL does not grade
        statements.append(_stated(descriptions[code], hedged))
        for name in (taxonomy or {}).get(code, []):
            classes[name] = classes.get(name, True) and hedged
    implied = [_stated(name, hedged) for name, hedged in classes.items()]
    return statements + [s for s in implied if s.lower() not in {t.lower() for t in statements}]


def study_ids(record: PtbxlRecord) -> tuple[str, str]:
    """(subject_id, study_id) in MIMIC's 8-digit form, derived from PTB-XL's patient_id and ecg_id."""
    return f"1{int(record.patient_id):07d}", f"4{record.ecg_id:07d}"


def ecg_id_of(study_id: str) -> int:
    """The PTB-XL ecg_id a corpus row's `id` (the MIMIC study id) came from."""
    return int(study_id) - 40_000_000


def _write_study(task: tuple[PtbxlRecord, list[str], str]) -> str | None:
    """Write one record as a MIMIC study (unless already there); None, or why it could not be read."""
    import wfdb

    from modeling_supreme.processing_supreme import canonical_lead_index, resample

    record, statements, root = task
    subject, study = study_ids(record)
    target = MimicStudy(subject, study, np.empty(0), statements)
    if (Path(root) / f"{target.relative_path}.hea").is_file():
        return None
    try:
        source = wfdb.rdrecord(str(record.path))
    except (OSError, ValueError) as error:
        return f"{record.path}: {error}"
    signal = np.nan_to_num(source.p_signal.T)[canonical_lead_index(source.sig_name)]
    target.digital = mimic_digital(resample(signal, source.fs, 500))
    write_mimic_record(root, target)
    return None


def write_corpus_layout(
    records: list[PtbxlRecord],
    descriptions: dict[str, str],
    root: Path,
    min_likelihood: float = MIN_LIKELIHOOD,
    leave_out: frozenset[str] = frozenset(),
    num_proc: int = 1,
    taxonomy: dict[str, list[str]] | None = None,
) -> dict:
    """Step 1-3: the records in MIMIC-IV-ECG's layout under `root`; returns counts (written, missing, unreadable)."""
    from tqdm.auto import tqdm

    present = [r for r in records if r.path.with_suffix(".hea").is_file()]
    missing = [r for r in records if not r.path.with_suffix(".hea").is_file()]
    root.mkdir(parents=True, exist_ok=True)
    if missing:
        (root / "missing.txt").write_text("".join(f"{r.ecg_id}\t{r.path}\n" for r in missing))
        logger.warning("%d of %d records named by ptbxl_database.csv are not in the folder (listed in %s)",
                       len(missing), len(records), root / "missing.txt")
    tasks = [(r, machine_statements(r, descriptions, min_likelihood, leave_out, taxonomy), str(root)) for r in present]
    pool = ProcessPoolExecutor(num_proc) if num_proc > 1 else None  # one worker: this process, no start-up cost
    results = pool.map(_write_study, tasks, chunksize=64) if pool else map(_write_study, tasks)
    errors, written = [], []
    for (record, statements, _), error in zip(tasks, tqdm(results, total=len(tasks), desc="MIMIC layout", unit="ECG"),
                                              strict=True):
        if error:
            errors.append(error)
            logger.warning("skipped %s", error)
        else:
            written.append((record, statements))
    if pool:
        pool.shutdown()
    write_mimic_tables(root, [MimicStudy(*study_ids(r), np.empty(0), statements) for r, statements in written])
    return {"in_table": len(records), "written": len(written), "missing": len(missing), "unreadable": errors}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="PTB-XL folder (ptbxl_database.csv, records*/)")
    parser.add_argument("--output", required=True, type=Path, help="pre-training dataset folder to write")
    parser.add_argument("--sampling-rate", type=int, choices=sorted(FILENAME_COLUMN), default=500,
                        help="read records500/ (default) or records100/")
    parser.add_argument("--folds", type=int, nargs="+", help="only the records of these strat_folds (default: all)")
    parser.add_argument("--min-likelihood", type=float, default=MIN_LIKELIHOOD,
                        help=f"diagnostic statements graded below this are uncertain (default {MIN_LIKELIHOOD})")
    parser.add_argument("--leave-out", nargs="+", default=[], metavar="SCP_CODE",
                        help="SCP codes whose statements are dropped from every report (unseen-condition studies)")
    parser.add_argument("--taxonomy", action="store_true",
                        help="also state each diagnostic statement's PTB-XL class and subclass (see above)")
    parser.add_argument("--layout", type=Path, help="where to write the MIMIC layout (default: OUTPUT_mimic_layout); "
                        "studies already there are reused, the report tables rewritten")
    parser.add_argument("--num-proc", type=int, default=max(1, (os.cpu_count() or 2)), help="processes")
    args, builder_args = parser.parse_known_args(argv)  # the rest goes to builders.mimic_iv_ecg
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    records, descriptions = read_ptbxl(args.input, args.sampling_rate)
    unknown = sorted(set(args.leave_out) - set(descriptions))
    if unknown:
        parser.error(f"--leave-out: {unknown} are not SCP codes of {args.input / 'scp_statements.csv'}")
    if args.folds:
        records = [r for r in records if r.fold in set(args.folds)]
    layout = args.layout or args.output.with_name(args.output.name + "_mimic_layout")
    taxonomy = read_taxonomy(args.input) if args.taxonomy else None
    counts = write_corpus_layout(records, descriptions, layout, args.min_likelihood, frozenset(args.leave_out),
                                 args.num_proc, taxonomy)
    print(f"{counts['written']} of {counts['in_table']} records written in MIMIC-IV-ECG's layout to {layout} "
          f"({counts['missing']} missing from the folder, {len(counts['unreadable'])} unreadable)", flush=True)
    subprocess.run([sys.executable, "-m", "builders.mimic_iv_ecg", "--input", str(layout), "--output",
                    str(args.output), "--num-proc", str(args.num_proc), "--min-words", "1", *builder_args],
                   check=True)


if __name__ == "__main__":
    main()
