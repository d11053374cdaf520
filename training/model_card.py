"""A checkpoint's model card (its `README.md`), written from that checkpoint: its config and processor, the data it
was trained on and the results it was scored on. Nothing in it is a figure the checkpoint did not produce."""

from __future__ import annotations

from pathlib import Path

import yaml

from builders.benchmark_sets import SUPREME_CITATION

PAPER = ("*SuPreME: A Supervised Pre-training Framework for Multimodal ECG Representation Learning* (Cai, Jiang, "
         "Huang, Liu, Arcucci; Findings of EMNLP 2025)")


def trainable_weights(model) -> int:
    """Weights outside the frozen text tower: what training changed."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("text_model."))


def model_card(model, feature_extractor, name: str, training: dict, results: list[dict] | None = None,
               notes: str = "") -> str:
    """Markdown with Hub front matter.

    Args:
        model: the checkpoint's `SupremeModel` (its config and weight count are read).
        feature_extractor: its `SupremeFeatureExtractor` (sampling rate, length, normalisation).
        name: the model's name (card title, `model-index`).
        training: `{"dataset", "records", "licence", "labels", "recipe", "hardware", "time"}` (each optional; the
            card says "not recorded" for a missing one), `dataset_id` (a Hub dataset) and `licence_id` (the card's
            licence, default MIT) optional.
        results: rows `{"task", "dataset", "split", "value", "name", "table"}`; `value` a macro AUROC in [0, 1],
            `table` (optional) a Markdown table shown under Results.
        notes: Markdown appended before the citation (limitations specific to this checkpoint).
    """
    config, results = model.config, results or []
    training = {key: training.get(key) or "not recorded" for key in
                ("dataset", "records", "licence", "labels", "recipe", "hardware", "time")} | {
        key: training[key] for key in ("dataset_id", "licence_id", "path") if training.get(key)}
    records = f"{training['records']:,}" if isinstance(training["records"], int) else training["records"]
    text_encoder = config.text_encoder_name_or_path or getattr(config.text_config, "_name_or_path", "") or "a BERT"
    if Path(text_encoder).is_dir():  # a local folder: its name, not this machine's path
        text_encoder = "/".join(Path(text_encoder).parts[-2:])
    front = {
        "license": training.get("licence_id", "mit"),
        "library_name": "transformers",
        "pipeline_tag": "zero-shot-classification",
        "tags": ["ecg", "electrocardiogram", "cardiology", "zero-shot-classification", "multimodal", "custom_code"],
        "datasets": [training["dataset_id"]] if training.get("dataset_id") else [],
        "metrics": ["roc_auc"],
    }
    if results:
        front["model-index"] = [{"name": name, "results": [
            {"task": {"type": "zero-shot-classification", "name": row["task"]},
             "dataset": {"type": row.get("dataset_type", "ptb-xl"), "name": row["dataset"], "split": row["split"]},
             "metrics": [{"type": "roc_auc", "name": row["name"], "value": round(100 * row["value"], 2)}]}
            for row in results]}]
    tokens = config.num_leads * config.num_patches
    fusion = ("each query attends only to itself in the CFN: a query's score does not depend on the other queries "
              "asked with it" if config.fusion_query_attention == "self" else
              "queries attend to each other in the CFN (the paper's decoder): a query's score depends on the whole "
              "list asked with it")
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "", f"# {name}", "",
        f"SuPreME scores a 12-lead ECG against free-text cardiac queries (\"atrial fibrillation\", \"left bundle branch "
        f"block\"): one probability per query, no fine-tuning. The architecture is that of {PAPER}; this checkpoint was "
        f"trained on {records} ECGs of {training['dataset']} ({training['labels']}).", "",
        "## Use", "",
        "```python",
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("zero-shot-ecg-classification", model="{training.get("path", "THIS_FOLDER")}", '
        "trust_remote_code=True)",
        'classifier("path/to/wfdb_record", candidate_labels=["atrial fibrillation", "sinus rhythm"])',
        "```", "",
        "The processor reads WFDB records, CinC `.mat` + `.hea`, CPSC-2018 `.mat` and `(leads, samples)` arrays in mV "
        "with their sampling rate; from the command line: `supreme classify RECORD --query \"...\"`.", "",
        "## Model", "",
        "| | |", "|---|---|",
        f"| input | 12 leads (I, II, III, aVR, aVL, aVF, V1-V6) resampled to {feature_extractor.sampling_rate} Hz, "
        f"{feature_extractor.num_samples} samples ({feature_extractor.num_samples / feature_extractor.sampling_rate:g}"
        f" s, cropped or zero-padded), normalised `{feature_extractor.normalization}` |",
        f"| ECG encoder | 1D ViT: patches of {config.patch_size} samples, {tokens} tokens, {config.num_hidden_layers} "
        f"blocks of width {config.hidden_size} ({config.num_attention_heads} heads, MLP {config.intermediate_size}) |",
        f"| query encoder | `{text_encoder}` ({config.text_config.hidden_size}-d, frozen, [CLS] vector)"
        + (", loaded by reference: the folder holds no copy of its weights (`text_encoder_name_or_path`"
           + (f"; the installed `{config.text_encoder_package}` package is tried first, so it loads offline"
              if config.text_encoder_package else "") + ")" if config.text_encoder_name_or_path else "") + " |",
        f"| Cardiac Fusion Network | {config.fusion_num_layers} decoder layer(s), width {config.projection_dim}, "
        f"{config.fusion_num_attention_heads} heads; {fusion} |",
        f"| trained weights | {trainable_weights(model):,} (the frozen text tower aside) |", "",
        "## Training", "",
        f"- data: {training['dataset']}, {records} ECGs (licence: {training['licence']})",
        f"- labels: {training['labels']}",
        f"- recipe: {training['recipe']}",
        f"- hardware and time: {training['hardware']}, {training['time']}", "",
    ]
    lines += ["## Results", ""]
    if not results:
        lines += ["This checkpoint has not been scored: run `training/evaluate_zeroshot.py` on it. (The paper's own "
                  "figures, for its ViT-tiny + MedCPT pre-trained on MIMIC-IV-ECG, are in the project's model_card.md; "
                  "they are not this checkpoint's.)", ""]
    for row in results:
        if row.get("table"):
            lines += [row["table"], ""]
    lines += [notes, "", "Not a medical device: research use only.", "", "## Citation", "", "```bibtex", SUPREME_CITATION,
              "```", ""]
    return "\n".join(lines)

