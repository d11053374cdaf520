"""Records/s of the MIMIC-IV-ECG builder's reading + writing, against wfdb.rdrecord; LLM prompts per record.

    .venv/bin/python benchmarks/bench_mimic_builder.py [--records 2000] [--num-proc 2]

Writes `--records` ECGs in MIMIC-IV-ECG's layout (the 300 real PTB-XL waveforms of training/demo_data/ptbxl, cycled,
rewritten as MIMIC stores them; reports drawn from the real statements of mimic_statements.jsonl, weighted by how
many MIMIC records carry each), then measures, on this machine:

- `wfdb.rdrecord(physical=False)` alone, records/s per core (CPU time);
- `builders.wfdb_reading.read_wfdb` alone, records/s per core;
- reading + writing Parquet shards (the builder's shard worker, one process), records/s per core;
- the whole build (`rules` labeller) with `--num-proc` processes, records/s wall clock;
- LLM prompts per record: distinct statements / records, on the 18-record test fixture, on this sample, and at
  MIMIC-IV-ECG scale (about 3,100 distinct statements over 800,035 records in MIMIC-IV-ECG v1.0; checked against the 546 real
  statements' record counts).

Appends one row to `benchmarks/results/bench_mimic_builder.jsonl` (benchmarks/common.py `append_rows`: with the
machine, torch version, date and command; `--no-record`: printed only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import wfdb  # noqa: E402
from mimic_fixture import MIMIC_LEADS, build_mimic_fixture, capitalise  # noqa: E402

from builders.mimic_iv_ecg import BuildConfig, _shard_task, build, index_records, write_record_shard  # noqa: E402
from builders.wfdb_reading import read_wfdb  # noqa: E402
from modeling_supreme.processing_supreme import CANONICAL_LEADS  # noqa: E402

PTBXL = REPO / "training" / "demo_data" / "ptbxl" / "records500" / "00000"  # ecg_id 1-300, shipped
MIMIC_DISTINCT_STATEMENTS, MIMIC_RECORDS = 3100, 800_035  # MIMIC-IV-ECG v1.0 machine_measurements.csv


def make_records(root: Path, n: int, seed: int = 0) -> None:
    """`n` MIMIC-layout records: PTB-XL waveforms (cycled) at MIMIC's gain and lead order, sampled real statements."""
    sources = []
    for header in sorted(PTBXL.glob("*_hr.hea")):
        mv = wfdb.rdrecord(str(header.with_suffix(""))).p_signal
        mv = mv[:, [CANONICAL_LEADS.index(lead) for lead in MIMIC_LEADS]]
        sources.append(np.clip(np.round(mv * 200), -32767, 32767).astype("<i2"))
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "mimic_statements.jsonl").read_text().splitlines()]
    weights = np.array([r["n_records"] for r in rows], dtype=np.float64)
    rng = np.random.default_rng(seed)
    listing, measurements = ["subject_id,study_id,file_name,ecg_time,path"], []
    header_cols = ["subject_id", "study_id", "cart_id", "ecg_time"] + [f"report_{i}" for i in range(18)]
    measurements.append(",".join(header_cols))
    for i in range(n):
        subject, study = f"{10000000 + i // 4}", f"{40000000 + i}"
        relative = f"files/p{subject[:4]}/p{subject}/s{study}/{study}"
        folder = root / relative.rsplit("/", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        signal = sources[i % len(sources)]
        signal.tofile(folder / f"{study}.dat")
        lines = [f"{study} 12 500 5000"] + [
            f"{study}.dat 16 200.0(0)/mV 16 0 {signal[0, j]} 0 0 {lead}" for j, lead in enumerate(MIMIC_LEADS)
        ]
        (folder / f"{study}.hea").write_text("\n".join(lines + [f"# <subject_id>: {subject}"]) + "\n")
        picks = rng.choice(len(rows), size=int(rng.integers(1, 4)), replace=False, p=weights / weights.sum())
        statements = [capitalise(rows[k]["statement"]) for k in picks] + ["Abnormal ECG"]
        reports = [f'"{s}"' for s in statements] + [""] * (18 - len(statements))
        listing.append(f"{subject},{study},{study},2180-01-01 00:00:00,{relative}")
        measurements.append(",".join([subject, study, "1", "2180-01-01 00:00:00"] + reports))
    (root / "record_list.csv").write_text("\n".join(listing) + "\n")
    (root / "machine_measurements.csv").write_text("\n".join(measurements) + "\n")


def per_core(fn, items) -> float:
    """Items per CPU second of `fn` over `items` (process time: other users of a shared machine do not count)."""
    start = time.process_time()
    for item in items:
        fn(item)
    return len(items) / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--no-record", action="store_true", help="print the row only, append nothing")
    args = parser.parse_args()
    from common import append_rows  # benchmarks/common.py

    work = Path(tempfile.mkdtemp(prefix="bench_mimic_"))
    try:
        root = work / "mimic"
        make_records(root, args.records)
        records, _ = index_records(root)
        paths = [root / r["path"] for r in records]
        sample = paths[: min(300, len(paths))]
        per_core(read_wfdb, sample[:20])  # warm the page cache and imports
        rdrecord = per_core(lambda p: wfdb.rdrecord(str(p), physical=False), sample)
        fast = per_core(read_wfdb, paths)

        for r in records:
            r["labels"], r["entities"] = [], []
        task = _shard_task(root, work / "out1", "train", 0, records, ["abnormal ecg"])
        Path(task["parquet"]).parent.mkdir(parents=True, exist_ok=True)
        start = time.process_time()
        write_record_shard(task)
        read_write = len(records) / (time.process_time() - start)
        kb = Path(task["parquet"]).stat().st_size / len(records) / 1000

        start = time.perf_counter()
        stats = build(
            BuildConfig(input=str(root), output=str(work / "out2"), num_proc=args.num_proc, records_per_shard=500)
        )
        wall = stats["records"]["kept"] / (time.perf_counter() - start)

        fixture = build_mimic_fixture(work / "fixture")
        fixture_stats = build(BuildConfig(input=str(fixture.root), output=str(work / "out3"), num_proc=1))
        rows = [json.loads(line) for line in (REPO / "tests/data/mimic_statements.jsonl").read_text().splitlines()]
        occurrences = sum(r["n_records"] for r in rows)

        def ratio(s):
            return s["labelling"]["distinct_statements"] / (
                s["records"]["kept"]
                + s["records"]["dropped"].get("truncated_signal", 0)
                + s["records"]["dropped"].get("missing_header", 0)
            )

        result = {
            "records": len(records),
            "wfdb_rdrecord_per_core": round(rdrecord),
            "read_wfdb_per_core": round(fast),
            "read_and_write_per_core": round(read_write),
            "parquet_kb_per_record": round(kb, 1),
            f"build_wall_records_per_s_{args.num_proc}_proc": round(wall),
            "prompts_per_record_fixture": round(ratio(fixture_stats), 3),
            "prompts_per_record_sample": round(ratio(stats), 4),
            "prompts_per_record_mimic": round(MIMIC_DISTINCT_STATEMENTS / MIMIC_RECORDS, 4),
            "jsonl_statements": len(rows),
            "jsonl_prompts_per_statement_occurrence": round(len(rows) / occurrences, 5),
        }
        append_rows("bench_mimic_builder", [result], dry_run=args.no_record)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
