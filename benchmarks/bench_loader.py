"""ECG/s of training/ecg_data.py from local Parquet to CPU tensors, against `datasets`' torch formatter.

    .venv/bin/python benchmarks/bench_loader.py [--rows 4096] [--batch-size 256] [--append benchmarks/RESULTS.md]

Builds a local dataset in the project's schema from the 300 real PTB-XL records of ../shared/data (repeated to
`--rows`), then times: `load_dataset` preparing the Arrow cache from Parquet (once per dataset), a shuffled epoch with
0, 2 and N DataLoader workers, a streaming pass straight over the Parquet shards, and the plain `datasets` path
(`with_format("torch")` + DataLoader) for comparison. Each loader figure is the best of `--repeats` epochs, with the
Arrow cache in the page cache (as in training after the first epoch).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
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

from builders.dataset_writing import ecg_features, write_dataset_card, write_split  # noqa: E402
from builders.wfdb_reading import read_wfdb  # noqa: E402
from training.ecg_data import ecg_dataloader, load_ecg_dataset  # noqa: E402

PTBXL = REPO.parent / "shared" / "data" / "ptbxl" / "records500" / "00000"


def build(folder: Path, n_rows: int) -> None:
    records = [read_wfdb(p.with_suffix("")) for p in sorted(PTBXL.glob("*_hr.hea"))]
    rng = np.random.default_rng(0)
    names = [f"class_{i}" for i in range(295)]  # the paper's 295 standard terms

    def rows():
        for i in range(n_rows):
            record = records[i % len(records)]
            yield {"id": str(i), "subject_id": str(i // 2), "ecg": record.digital, "adc_gain": record.adc_gain.tolist(),
                   "report": "", "labels": sorted(rng.choice(295, rng.integers(1, 8), replace=False).tolist())}

    features = ecg_features(names)
    write_split(rows(), features, folder, "train", max_shard_bytes=n_rows * 120_000 // 4 + 1)  # 4 shards
    write_dataset_card(folder, pretty_name="bench", license="cc-by-4.0", citation="-", features=features,
                       description="benchmark data")


def ecg_per_s(make_loader, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for batch in make_loader():
            n += len(batch["ecg"])
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", type=Path, help="append the results section to this Markdown file")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    n_cpu = os.cpu_count()

    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "ds", Path(tmp) / "cache"
        build(folder, args.rows)
        parquet_mb = sum(p.stat().st_size for p in folder.rglob("*.parquet")) / 1e6
        start = time.perf_counter()
        ds = load_ecg_dataset(folder, cache_dir=str(cache))
        prepare = args.rows / (time.perf_counter() - start)
        results = [("`load_dataset` Parquet -> Arrow cache (once per dataset)", prepare)]
        for workers in sorted({0, 2, n_cpu}):
            rate = ecg_per_s(lambda w=workers: ecg_dataloader(ds, args.batch_size, shuffle=True, num_workers=w),
                             args.repeats)
            results.append((f"`ecg_dataloader`, shuffled epoch, {workers} workers", rate))
        stream = load_ecg_dataset(folder, streaming=True)
        results.append(("`ecg_dataloader`, streaming Parquet, in order, 0 workers",
                        ecg_per_s(lambda: ecg_dataloader(stream, args.batch_size, shuffle=False), args.repeats)))
        results.append(("`ecg_dataloader`, streaming Parquet, shuffle buffer 1000, 2 workers",
                        ecg_per_s(lambda: ecg_dataloader(stream, args.batch_size, shuffle=True, num_workers=2), 1)))
        torch_ds = ds.with_format("torch", columns=["ecg", "adc_gain", "labels"]).select(range(min(args.rows, 1024)))
        baseline = ecg_per_s(lambda: torch.utils.data.DataLoader(torch_ds, batch_size=args.batch_size,
                                                                 collate_fn=lambda rows: {"ecg": rows}), 1)
        results.append(("`datasets` torch formatter + DataLoader (int16 widened to int64), 0 workers", baseline))

    lines = [
        f"## Data loader (`benchmarks/bench_loader.py`), {datetime.date.today().isoformat()}",
        "",
        f"Machine: {platform.node()}, {n_cpu} CPU cores ({platform.processor() or platform.machine()}), no GPU. "
        f"Python {platform.python_version()}, torch {torch.__version__}, datasets {datasets.__version__}, "
        f"pyarrow {pyarrow.__version__}. {args.rows} real PTB-XL ECGs (12 x 5000 int16, repeated) in "
        f"{parquet_mb:.0f} MB of zstd Parquet, 295 classes, batch {args.batch_size}, CPU tensors (no pinning).",
        "",
        "| path | ECG/s |",
        "|---|---:|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in results],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(("\n" if args.append.exists() and args.append.stat().st_size else "# Benchmark results\n\n") + text)


if __name__ == "__main__":
    main()
