"""The PTB-XL recipe choices, measured on the validation fold: each candidate is the shipped recipe
(`training/configs/ptbxl_cpu.yaml`) with a few keys changed, trained for a short fixed number of epochs on the study's
corpus and scored zero-shot (concise prompts) on the validation fold's four tasks.

    python -m training.ptbxl_study --ptbxl PTBXL_DIR --output DIR --stages corpus eval   # the data, once
    python benchmarks/ptbxl_recipe_search.py --study DIR --candidates 500hz 100hz_p25 100hz_p50 --epochs 3
    python benchmarks/ptbxl_recipe_search.py --study DIR --candidates 500hz --epochs 10 --threads 1 &   # round 2:
    python benchmarks/ptbxl_recipe_search.py --study DIR --candidates 100hz_p50 --epochs 24 --threads 1  # same hour

Appends one JSON line per candidate (machine, date, command, epochs, training ECG/s, AUROCs) to
`benchmarks/results/ptbxl_recipe_search.jsonl` (benchmarks/common.py `append_rows`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import append_rows  # noqa: E402
from training import ptbxl_study  # noqa: E402

CANDIDATES = {  # model_config keys set over the recipe's
    # the paper's rate and patch (0.25 s, 40 per lead: 480 tokens), PTB-XL's 100 Hz records upsampled: the recipe
    "500hz": {"sampling_rate": 500, "num_samples": 5000, "patch_size": 125},
    # native 100 Hz with the same 0.25 s patches and 480 tokens: the same cost, the rate alone differs
    "100hz_p25": {"sampling_rate": 100, "num_samples": 1000, "patch_size": 25},
    # native 100 Hz, 0.5 s patches, 240 tokens: about 2.5 times as fast
    "100hz_p50": {"sampling_rate": 100, "num_samples": 1000, "patch_size": 50},
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, type=Path, help="ptbxl_study output with its corpus and eval sets")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--corpus", default="corpus",
                        help="the study's pre-training corpus to train on (corpus_taxonomy: built with --taxonomy)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    study = args.study.resolve()
    plan = json.loads((study / "results.json").read_text())["folds"]
    for name in args.candidates:
        architecture = {**yaml.safe_load(ptbxl_study.RECIPE.read_text())["model_config"], **CANDIDATES[name]}
        overrides = ["--data", str(study / args.corpus), "--max_epochs", str(args.epochs), "--patience",
                     str(args.epochs), "--warmup_steps", "100",
                     "--model_config", yaml.safe_dump(architecture, default_flow_style=True).strip()]
        model = ptbxl_study.pretrain(study / "recipe_search", f"{name}_e{args.epochs}" + ("" if args.corpus == "corpus" else f"_{args.corpus}"), overrides, args.threads)
        epochs = [json.loads(line) for line in (model.parent / "metrics.jsonl").read_text().splitlines()]
        epochs = [e for e in epochs if "train_loss" in e]  # one summary per epoch (a resumed run logs on)
        scores = ptbxl_study.zero_shot(model, study, plan, "validation")["concise"]
        row = {"benchmark": "ptbxl_recipe_search", "candidate": name, "corpus": args.corpus, "epochs": args.epochs,
               "model_config": CANDIDATES[name], "threads": args.threads,
               "ecg_per_s": round(sum(e["ecg_per_s"] for e in epochs) / len(epochs), 1),
               "validation_folds": plan["validation"], "mean_auroc": scores["mean_auroc"],
               **{task: scores["tasks"][task]["macro_auroc"] for task in ptbxl_study.TASKS}}
        append_rows("ptbxl_recipe_search", [row])  # adds "machine", "torch", "load_avg_1min", "date", "command"


if __name__ == "__main__":
    main()
