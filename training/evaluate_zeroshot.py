"""Zero-shot AUROC of a SuPreME checkpoint on the benchmark's test sets (paper Table 2).

    python training/evaluate_zeroshot.py --model DIR_OR_REPO --data data/ptbxl data/cpsc2018 data/csn --output OUT

Every `--data` folder (or Hub repo) written by the builders is evaluated on all its configs (`DIR:CONFIG` picks one).
Each class is scored by its query: the prompt file in `training/prompts/` whose classes are the dataset's (the paper's
concise phrase per class; `--prompts` gives other files, e.g. MERL's `CKEPE_prompt.json`); a dataset that no prompt file
covers is queried with its class names. The query embeddings are computed once per set, then every ECG is scored
against them. AUROC per class comes from the shipped `evaluate` module `training/zeroshot_auroc` (offline); a set's
score is the unweighted mean over its classes, the overall score the mean over the sets. Classes whose split has no
positive (or no negative) are listed, never averaged.

Writes `OUT/zeroshot_results.json` (everything), `OUT/zeroshot_table.md` (Table 2 layout, then per-class AUROC) and
`OUT/zeroshot_auroc.png` (per-class bar chart). The pre-training script calls `evaluate_zeroshot` for early stopping.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_supreme.processing_supreme import ecg_from_digital
from training.ecg_data import class_names, ecg_dataloader, load_ecg_dataset

PROMPTS_DIR = Path(__file__).with_name("prompts")
METRIC_DIR = Path(__file__).with_name("zeroshot_auroc")
# The paper's Table 2 columns: prompt-file stem -> column title.
TABLE2_COLUMNS = {"ptbxl_super_class": "PTBXL-Super", "ptbxl_sub_class": "PTBXL-Sub", "ptbxl_form": "PTBXL-Form",
                  "ptbxl_rhythm": "PTBXL-Rhythm", "cpsc2018": "CPSC2018", "csn": "CSN"}

logger = logging.getLogger(__name__)


def load_prompts(paths: Sequence[str | Path] | None = None) -> dict[str, dict[str, str]]:
    """Prompt files -> {file stem: {class name: query}}. Default: the six benchmark files in `training/prompts/`."""
    if paths is None:
        paths = [PROMPTS_DIR / f"{name}.json" for name in TABLE2_COLUMNS]
    prompts = {}
    for path in map(Path, paths):
        mapping = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"{path}: a prompt file maps each class name to one query string")
        prompts[path.stem] = mapping
    return prompts


def queries_for(classes: Sequence[str], prompts: Mapping[str, Mapping[str, str]]) -> tuple[str | None, list[str]]:
    """(prompt set name, one query per class): the first prompt set with exactly these classes, else the first that
    covers them all, else (None, the class names themselves)."""
    wanted = set(classes)
    exact = [name for name, mapping in prompts.items() if set(mapping) == wanted]
    covering = [name for name, mapping in prompts.items() if wanted <= set(mapping)]
    for name in exact + covering:
        return name, [prompts[name][c] for c in classes]
    return None, list(classes)


@torch.no_grad()
def zeroshot_logits(model, tokenizer, dataset: datasets.Dataset, queries: Sequence[str], batch_size: int = 64,
                    normalization: str = "minmax") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Score every ECG of `dataset` against `queries`.

    Returns logits (num_examples, num_queries), multi-hot labels (num_examples, num_queries) and the record ids.
    The query side is computed once (`encode_queries`, `get_query_states`); ECGs travel as int16 and are normalised
    on the model's device.
    """
    was_training = model.training
    model.eval()
    device = model.device
    query_states = model.get_query_states(model.encode_queries(list(queries), tokenizer))  # once per set
    logits, labels, ids = [], [], []
    batches = ecg_dataloader(dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    total = math.ceil(len(dataset) / batch_size) if hasattr(dataset, "__len__") else None  # streaming: unknown
    for batch in tqdm(batches, total=total, desc="zero-shot", unit="batch", leave=False, disable=None):
        values = ecg_from_digital(batch["ecg"].to(device), batch["adc_gain"].to(device), normalization,
                                  model.config.sampling_rate)
        logits.append(model(input_values=values, query_states=query_states).logits.float().cpu())
        labels.append(batch["labels"])
        ids += batch["id"]
    model.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy().astype(np.int64), ids


def evaluate_zeroshot(model, processor, datasets_by_name: Mapping[str, datasets.Dataset],
                      prompts: Mapping[str, Mapping[str, str]] | None = None, batch_size: int = 64,
                      metric: evaluate.EvaluationModule | None = None) -> dict:
    """Zero-shot AUROC of `model` on each dataset (name -> labelled split in the builders' schema).

    `model` is the bare `SupremeModel` (in a distributed run: `accelerator.unwrap_model(model)`); each call scores
    the whole split in this process, so call it on the main process. `processor` supplies the tokenizer and the
    normalisation method. The metric keeps its inputs in memory (no cache files shared between processes). Returns
    `{"sets": {name: {"macro_auroc", "auroc", "undefined_classes", "num_positives", "num_classes_scored",
    "num_examples", "prompt_set", "queries"}}, "mean_auroc": mean of the sets' macro AUROC}`.
    """
    prompts = load_prompts() if prompts is None else prompts
    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True) if metric is None else metric
    normalization = getattr(processor.feature_extractor, "normalization", "minmax")
    sets = {}
    for name, dataset in datasets_by_name.items():
        classes = class_names(dataset)
        prompt_set, queries = queries_for(classes, prompts)
        if prompt_set is None:
            logger.warning("%s: no prompt file covers its classes; querying with the class names", name)
        logits, labels, _ = zeroshot_logits(model, processor.tokenizer, dataset, queries, batch_size, normalization)
        result = metric.compute(predictions=logits, references=labels, class_names=classes)
        if result["undefined_classes"]:
            logger.warning("%s: no AUROC for %s (no positive or no negative example); left out of the mean", name,
                           ", ".join(result["undefined_classes"]))
        sets[name] = {**result, "num_examples": len(labels), "prompt_set": prompt_set,
                      "queries": dict(zip(classes, queries, strict=True))}
    scores = [s["macro_auroc"] for s in sets.values() if not math.isnan(s["macro_auroc"])]
    return {"sets": sets, "mean_auroc": float(np.mean(scores)) if scores else float("nan")}


def table2_markdown(results: dict, method: str) -> str:
    """The paper's Table 2 layout (AUROC x 100): one row, the six benchmark columns first, then any other set."""
    sets = results["sets"]
    by_column = {}
    for name, s in sets.items():
        by_column[TABLE2_COLUMNS.get(s["prompt_set"], name)] = s["macro_auroc"]
    columns = list(TABLE2_COLUMNS.values()) + [c for c in by_column if c not in TABLE2_COLUMNS.values()]

    def cell(value):
        return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"

    lines = ["| Method | " + " | ".join(columns) + " | Average |", "|---" * (len(columns) + 2) + "|",
             f"| {method} | " + " | ".join(cell(by_column.get(c)) for c in columns)
             + f" | {cell(results['mean_auroc'])} |", ""]
    missing = [c for c in TABLE2_COLUMNS.values() if c not in by_column]
    if missing:
        lines += [f"Not evaluated: {', '.join(missing)}; the average is over the {len(sets)} set(s) evaluated.", ""]
    for name, s in sets.items():
        lines += [f"### {name} ({s['num_examples']} ECGs, macro AUROC {cell(s['macro_auroc'])})", "",
                  "| class | query | positives | AUROC |", "|---|---|---|---|"]
        for cls, value in s["auroc"].items():
            lines.append(f"| {cls} | {s['queries'][cls]} | {s['num_positives'][cls]} | "
                         f"{'no AUROC (no positive or no negative)' if value is None else f'{100 * value:.2f}'} |")
        lines.append("")
    return "\n".join(lines)


def plot_per_class(results: dict, path: Path) -> None:
    """One horizontal bar per class, one panel per set; classes without AUROC are drawn empty and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = results["sets"]
    heights = [max(len(s["auroc"]), 1) for s in sets.values()]
    figure, axes = plt.subplots(len(sets), 1, figsize=(7, 0.25 * sum(heights) + 1.2 * len(sets)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for axis, (name, s) in zip(axes[:, 0], sets.items(), strict=True):
        names = list(s["auroc"])
        values = [np.nan if v is None else v for v in s["auroc"].values()]
        axis.barh(range(len(names)), np.nan_to_num(values, nan=0.0), color="tab:blue")
        axis.set_yticks(range(len(names)), [n if v is not None else f"{n} (no AUROC)" for n, v in
                                            zip(names, s["auroc"].values(), strict=True)], fontsize=7)
        axis.invert_yaxis()
        axis.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
        axis.set_xlim(0, 1)
        axis.set_title(f"{TABLE2_COLUMNS.get(s['prompt_set'], name)}: macro AUROC {s['macro_auroc']:.3f}", fontsize=9)
    axes[-1, 0].set_xlabel("AUROC")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def load_benchmark_sets(specs: Sequence[str], split: str = "test", **load_kwargs) -> dict[str, datasets.Dataset]:
    """`DIR` (every config) or `DIR:CONFIG` -> {name: dataset split}; names are `DIR-name/CONFIG` (`DIR-name` for a
    dataset with one config). A config without `split` (e.g. built from a subset of the records) is skipped with a
    warning; none left is an error."""
    loaded = {}
    for spec in specs:
        path, _, config = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
        configs = [config] if config else datasets.get_dataset_config_names(path)
        for name in configs:
            key = f"{Path(path).name}/{name}" if len(configs) > 1 or config else Path(path).name
            if split not in datasets.get_dataset_split_names(path, name):
                logger.warning("%s: no %r split (built from a subset of the records?); skipped", key, split)
                continue
            loaded[key] = load_ecg_dataset(path, None if name == "default" else name, split=split, **load_kwargs)
    if not loaded:
        raise ValueError(f"none of {list(specs)} has a {split!r} split")
    return loaded


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo (loaded with trust_remote_code)")
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders or Hub repos, optionally DIR:CONFIG")
    parser.add_argument("--prompts", nargs="+", type=Path, help="prompt JSON files (default: training/prompts/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", help="row label in the table (default: the model's folder name)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    sets = load_benchmark_sets(args.data, args.split)
    results = evaluate_zeroshot(model, processor, sets, load_prompts(args.prompts), args.batch_size)
    results.update(model=args.model, split=args.split)

    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "zeroshot_results.json").write_text(json.dumps(json_safe(results), indent=2))
    method = args.name or Path(args.model.rstrip("/")).name
    (args.output / "zeroshot_table.md").write_text(table2_markdown(results, method))
    plot_per_class(results, args.output / "zeroshot_auroc.png")
    logger.info("mean AUROC over %d set(s): %.4f; written to %s", len(sets), results["mean_auroc"], args.output)
    return results


def json_safe(value):
    """NaN -> None, recursively (JSON has no NaN: a set without any scorable class gets null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


if __name__ == "__main__":
    main()
