"""The real trainer end to end: training/pretrain.py on a synthetic-size dataset, ECG/s including data loading.

    .venv/bin/python benchmarks/bench_end_to_end.py --device cuda            # paper model, batch 256, 10,240 ECGs
    .venv/bin/python benchmarks/bench_end_to_end.py --small                  # CPU check: tiny model, 64 ECGs

Writes, under `--workdir`: a dataset in the project's schema (the real PTB-XL fixture records of tests/data repeated
to `--rows`, 1-7 of 295 labels each, through builders/dataset_writing.py) and a randomly initialised text encoder
folder of MedCPT's shape with a word-level tokenizer (the text tower runs once per run and its weights do not change
the speed; nothing is downloaded). Then runs `python training/pretrain.py` in a subprocess for `--epochs` epochs at
global batch `--batch-size` (no accumulation) and reads the trainer's own per-epoch `ecg_per_s` (loading, transfer,
normalisation on the device, forward, backward, optimiser; not the end-of-epoch checkpoint) from metrics.jsonl. The
first epoch includes warm-up (and compilation with `--compile`); the last is the steady figure.

Appends one row (`--no-record`: prints it only) to `benchmarks/results/bench_end_to_end.jsonl` (benchmarks/common.py
`append_rows`: with the machine, torch version, date and command). One process, global batch = per-device batch,
mixed precision `auto` (bf16 on GPU); `wall_s` includes start-up, query embedding and checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import PAPER_QUERIES, REPO, SMALL_MODEL, append_rows, machine, pick_device

PTBXL = REPO / "tests" / "data" / "ptbxl" / "records500" / "00000"


def query_names(count: int) -> list[str]:
    return [f"term {i}" for i in range(count)]


def write_dataset(folder: Path, rows: int, num_queries: int) -> Path:
    """`rows` ECGs from the PTB-XL fixture records, repeated, with random multi-hot labels; kept if already there."""
    if (folder / "README.md").is_file():
        return folder
    from builders.dataset_writing import ecg_features, write_dataset_card, write_split
    from builders.wfdb_reading import read_wfdb

    records = [read_wfdb(path.with_suffix("")) for path in sorted(PTBXL.glob("*_hr.hea"))]
    if not records:
        raise FileNotFoundError(f"no PTB-XL fixture records in {PTBXL}")
    rng = np.random.default_rng(0)

    def generate():
        for i in range(rows):
            record_ = records[i % len(records)]
            labels = rng.choice(num_queries, rng.integers(1, 8), replace=False)
            yield {
                "id": str(i),
                "subject_id": str(i),
                "ecg": record_.digital,
                "adc_gain": record_.adc_gain.tolist(),
                "report": "",
                "labels": sorted(labels.tolist()),
            }

    features = ecg_features(query_names(num_queries))
    write_split(generate(), features, folder, "train")
    write_dataset_card(
        folder,
        pretty_name="Synthetic-size benchmark set",
        license="cc-by-4.0",
        citation="@article{wagner2020ptbxl}",
        features=features,
        description=f"{rows} copies of PTB-XL fixture records with random labels, for benchmarks only.",
    )
    return folder


def write_text_encoder(folder: Path, num_queries: int, small: bool) -> Path:
    """A random BERT (MedCPT's shape unless `small`) and a word-level tokenizer for the query names."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "term", *map(str, range(num_queries))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    shape = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64) if small else {}
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), **shape)).save_pretrained(folder)
    return folder


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device",
        default="auto",
        help="where to record the figure as measured (the trainer itself uses the GPU when there is one)",
    )
    parser.add_argument("--rows", type=int, default=None, help="ECGs per epoch (default 10240 GPU, 64 CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (default 256 GPU, 8 CPU)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=None, help="loader workers (default 4 GPU, 1 CPU)")
    parser.add_argument("--compile", action="store_true", help="the trainer's torch.compile option")
    parser.add_argument("--queries", type=int, default=PAPER_QUERIES)
    parser.add_argument("--small", action="store_true", help="a tiny model (CPU check)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the dataset and encoder here for reuse")
    parser.add_argument("--no-record", action="store_true", help="print the JSON line only")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    rows = args.rows or (10240 if gpu else 64)
    batch_size = args.batch_size or (256 if gpu else 8)
    workers = args.num_workers if args.num_workers is not None else (4 if gpu else 1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="supreme_e2e_"))
    data = write_dataset(workdir / f"data_{rows}_{args.queries}", rows, args.queries)
    encoder = write_text_encoder(
        workdir / ("encoder_small" if args.small else "encoder_medcpt_shape"), args.queries, args.small
    )
    output_dir = workdir / f"run_{int(time.time())}"

    command = [
        sys.executable,
        str(REPO / "training" / "pretrain.py"),
        "--data",
        str(data),
        "--text_encoder",
        str(encoder),
        "--model_config",
        json.dumps(SMALL_MODEL if args.small else {}),  # its text_config yields to --text_encoder
        "--global_batch_size",
        str(batch_size),
        "--per_device_batch_size",
        str(batch_size),
        "--max_epochs",
        str(args.epochs),
        "--patience",
        str(args.epochs + 1),
        "--mixed_precision",
        "auto",
        "--compile",
        "true" if args.compile else "false",
        "--num_workers",
        str(workers),
        "--val_split",
        "null",
        "--checkpoint_every",
        "1000000000",
        "--log_every",
        "1000000000",
        "--report_to",
        "none",
        "--output_dir",
        str(output_dir),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - start
    epochs = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if "ecg_per_s" in e]

    row = {
        **machine(device),
        "model": "small" if args.small else "paper",
        "precision": "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32",
        "batch": batch_size,
        "queries": args.queries,
        "ecgs_per_epoch": rows,
        "workers": workers,
        "compile": args.compile,
        "ecg_per_s_first_epoch": epochs[0]["ecg_per_s"],
        "ecg_per_s_last_epoch": epochs[-1]["ecg_per_s"],
        "peak_mem_gb": epochs[-1]["peak_memory_gb"],
        "wall_s": wall,
    }
    append_rows("bench_end_to_end", [row], device, dry_run=args.no_record)
    return row


if __name__ == "__main__":
    main()
