"""ECG/s of training/ecg_data.py from local Parquet to CPU tensors, against `datasets`' torch formatter.

    .venv/bin/python benchmarks/bench_loader.py [--rows 4096] [--batch-size 256] [--device auto] [--records DIR]
                                                [--no-record]

Builds a local dataset in the project's schema from the 300 real PTB-XL records of training/demo_data/ptbxl (or the
WFDB records of `--records DIR`), repeated to `--rows`, then times: `load_dataset` preparing the Arrow cache from
Parquet (once per dataset), a shuffled epoch with 0, 2 and N DataLoader workers, a streaming pass straight over the
Parquet shards, and the plain `datasets` path (`with_format("torch")` + DataLoader) for comparison. Each loader figure is the best of `--repeats` epochs, with the
Arrow cache in the page cache (as in training after the first epoch). One row per figure, appended to
`benchmarks/results/bench_loader.jsonl` (benchmarks/common.py `append_rows`: with the machine, torch version, date
and command; `--no-record`: printed only). Workers are threads; streaming decodes the nested Parquet lists on every
pass.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import append_rows, pick_device, synchronize  # noqa: E402
from builders.dataset_writing import ecg_features, write_dataset_card, write_split  # noqa: E402
from builders.wfdb_reading import read_wfdb  # noqa: E402
from training.ecg_data import ecg_dataloader, load_ecg_dataset  # noqa: E402

PTBXL = REPO / "training" / "demo_data" / "ptbxl" / "records500" / "00000"  # ecg_id 1-300, shipped


def build(folder: Path, n_rows: int, records_dir: Path = PTBXL) -> None:
    records = [read_wfdb(p.with_suffix("")) for p in sorted(records_dir.glob("*.hea"))]
    if not records:
        raise SystemExit(f"no WFDB records (*.hea) in {records_dir}")
    rng = np.random.default_rng(0)
    names = [f"class_{i}" for i in range(295)]  # the paper's 295 standard terms

    def rows():
        for i in range(n_rows):
            record = records[i % len(records)]
            yield {
                "id": str(i),
                "subject_id": str(i // 2),
                "ecg": record.digital,
                "adc_gain": record.adc_gain.tolist(),
                "report": "",
                "labels": sorted(rng.choice(295, rng.integers(1, 8), replace=False).tolist()),
            }

    features = ecg_features(names)
    groups_per_shard = math.ceil(math.ceil(n_rows / 100) / 4)  # 4 shards of 100-row groups (~121 kB a row in Arrow)
    write_split(rows(), features, folder, "train", max_shard_bytes=int((groups_per_shard + 0.5) * 100 * 121_000))
    write_dataset_card(
        folder, pretty_name="bench", license="cc-by-4.0", citation="-", features=features, description="benchmark data"
    )


def ecg_per_s(make_loader, repeats: int, device: torch.device) -> float:
    """Best of `repeats` passes: ECGs per second until every batch is on `device` (int16, non-blocking from pinned
    memory on a GPU)."""
    best = 0.0
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for batch in make_loader():
            ecg = batch["ecg"].to(device, non_blocking=True)
            batch["labels"].to(device, non_blocking=True)
            n += len(ecg)
        synchronize(device)
        best = max(best, n / (time.perf_counter() - start))
    return best


def _shown(path: Path) -> str:
    """`path` relative to the repository where it lies inside it (the description names no local folders)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="where batches end up: auto (cuda if present), cpu, cuda")
    parser.add_argument("--records", type=Path, default=PTBXL,
                        help="folder of WFDB records to repeat (default: training/demo_data/ptbxl/records500/00000)")
    parser.add_argument("--no-record", action="store_true", help="print the rows only, append nothing")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    device = pick_device(args.device)
    n_cpu = len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "ds", Path(tmp) / "cache"
        build(folder, args.rows, args.records)
        parquet_mb = sum(p.stat().st_size for p in folder.rglob("*.parquet")) / 1e6
        start = time.perf_counter()
        ds = load_ecg_dataset(folder, cache_dir=str(cache))
        results = [
            ("load_dataset: Parquet -> Arrow cache (once per dataset)", 0, args.rows / (time.perf_counter() - start))
        ]
        for workers in sorted({0, 2, n_cpu}):
            results.append(
                (
                    "ecg_dataloader, shuffled epoch",
                    workers,
                    ecg_per_s(
                        lambda w=workers: ecg_dataloader(ds, args.batch_size, shuffle=True, num_workers=w),
                        args.repeats,
                        device,
                    ),
                )
            )
        stream = load_ecg_dataset(folder, streaming=True)
        results.append(
            (
                "ecg_dataloader, streaming Parquet, in order",
                0,
                ecg_per_s(lambda: ecg_dataloader(stream, args.batch_size, shuffle=False), args.repeats, device),
            )
        )
        results.append(
            (
                "ecg_dataloader, streaming Parquet, shuffle buffer 1000",
                2,
                ecg_per_s(lambda: ecg_dataloader(stream, args.batch_size, shuffle=True, num_workers=2), 1, device),
            )
        )
        torch_ds = ds.with_format("torch", columns=["ecg", "adc_gain", "labels"]).select(range(min(args.rows, 1024)))
        results.append(
            (
                "datasets torch formatter + DataLoader (int16 widened to int64)",
                0,
                ecg_per_s(
                    lambda: torch.utils.data.DataLoader(torch_ds, batch_size=args.batch_size, collate_fn=_stack),
                    2,
                    device,
                ),
            )
        )

    rows = [
        {
            "path": name,
            "workers": workers,
            "ecg_per_s": round(rate),
            "rows": args.rows,
            "batch": args.batch_size,
            "repeats": args.repeats,
            "device": str(device),
            "records": _shown(args.records),
            "parquet_kb_per_ecg": round(parquet_mb / args.rows * 1e3, 1),
            "datasets": datasets.__version__,
            "pyarrow": pyarrow.__version__,
        }
        for name, workers, rate in results
    ]
    append_rows("bench_loader", rows, device, dry_run=args.no_record)


def _stack(rows: list[dict]) -> dict:
    """The plain path's collate: stacked ECGs and multi-hot labels, as ecg_dataloader yields them."""
    labels = torch.zeros(len(rows), 295)
    for i, row in enumerate(rows):
        labels[i, row["labels"]] = 1.0
    return {"ecg": torch.stack([row["ecg"] for row in rows]), "labels": labels}


if __name__ == "__main__":
    main()
