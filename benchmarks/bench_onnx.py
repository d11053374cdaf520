"""CPU deployment: PyTorch fp32, ONNX fp32 and ONNX int8 (`supreme export`) against the plain model, in one process.

    .venv/bin/python benchmarks/bench_onnx.py --plain FILE         # latency: paper shapes, batch 1 and 16, 2 threads
    .venv/bin/python benchmarks/bench_onnx.py --plain FILE --model DIR --data DIR:CONFIG --splits validation test
    .venv/bin/python benchmarks/bench_onnx.py --skip-latency --model DIR --data DIR:CONFIG   # accuracy only

Latency: the paper's shapes with random weights (speed does not depend on their values), 295 queries, and the plain
model `Ref(cfg)` of `--plain FILE` (a Python file defining `Ref` and `cfg`: the same shapes written the obvious way,
queries projected on every call; it is not part of this repository, and the latency rows refuse to run without it)
beside them. Every variant is called in turn, round after round; `ratio_to_plain` is the median over rounds of
(variant time / plain model time in the same round), so a load change on a shared machine moves both. ONNX variants
run through `SupremeOnnxModel`, the class users load (tensor conversion included); int8 ranges are calibrated on real
PTB-XL ECGs (`--calibration`, default: the 300 records of training/demo_data/ptbxl). `--runtimes onnxruntime,openvino`
also times OpenVINO on the same graphs.

Accuracy (`--model`: a trained checkpoint; `--data`: held-out ECGs in the builders' schema, e.g. PTB-XL folds 9-10):
the checkpoint is exported as `supreme export --int8` does (calibrated on `--calibration` ECGs, never the held-out
ones) and every held-out ECG is scored by PyTorch fp32, ONNX fp32 and ONNX int8. Rows: per-class AUROC of each, the
largest |AUROC difference| to PyTorch, and the logits' relative error ||onnx - torch|| / ||torch||.

Appends its rows (`--no-record`: prints them only) to `benchmarks/results/bench_onnx.jsonl` (benchmarks/common.py
`append_rows`: with the machine, torch version, date and command); `table` is "latency" or "accuracy". Latency:
`ratio_to_plain_median` = median over rounds of variant time / plain-model time in the same round,
`ratio_to_plain_best` = best / best; int8 = static QDQ of the linear layers calibrated on `calibration_ecgs` ECGs;
`rel_err_vs_pytorch` is on the timed batch (random weights: a proxy). Accuracy: `max_abs_auroc_delta_vs_pytorch` is
over the classes with positives and negatives, then over those with at least FREQUENT (10) positives (with one positive,
one swapped pair moves AUROC by 1/negatives).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import (
    REPO,
    append_rows,
    benchmark_config,
    build_model,
    machine,
    model_arguments,
    model_label,
    setup_device,
    time_interleaved,
)

sys.path.insert(0, str(REPO))
from modeling_supreme import SupremeFeatureExtractor, SupremeOnnxModel  # noqa: E402
from modeling_supreme.onnx_supreme import ONNX_FILE, QUANTIZED_FILE  # noqa: E402
from training.onnx_export import export_graphs, processed_ecgs  # noqa: E402

DEMO_PTBXL = REPO / "training" / "demo_data" / "ptbxl" / "records500"  # ecg_id 1-300, shipped
GRAPHS = {"fp32": ONNX_FILE, "int8": QUANTIZED_FILE}
FREQUENT = 10  # positives a class needs for its AUROC delta to be more than a few swapped pairs


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser)
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated (default 1,16)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per variant")
    parser.add_argument("--runtimes", default="onnxruntime", help="onnxruntime and/or openvino, comma-separated")
    parser.add_argument("--plain", type=Path, help="the plain reference model's file (defines Ref and cfg); required "
                        "for the latency rows")
    parser.add_argument("--calibration", nargs="+", default=[str(DEMO_PTBXL)],
                        help="real ECG records or folders for the int8 ranges (default: training/demo_data/ptbxl)")
    parser.add_argument("--calibration-size", type=int, default=64)
    parser.add_argument("--model", help="a trained checkpoint: also measure accuracy (needs --data)")
    parser.add_argument("--data", help="held-out ECGs: a builders/ dataset folder, DIR or DIR:CONFIG")
    parser.add_argument("--splits", nargs="+", default=["test"], help="splits of --data scored together")
    parser.add_argument("--calibration-split", help="for accuracy: calibrate int8 on this split of --data (e.g. "
                        "train) instead of the --calibration records")
    parser.add_argument("--class-names", action="store_true", help="for accuracy: query with the dataset's class "
                        "names (a model trained on them), not the prompt files of training/prompts")
    parser.add_argument("--skip-latency", action="store_true", help="accuracy only")
    args = parser.parse_args(argv)
    if bool(args.model) != bool(args.data):
        parser.error("--model and --data go together")
    if not args.skip_latency and args.plain is None:
        parser.error("the latency rows time the plain reference model: pass --plain FILE (a Python file defining Ref "
                     "and cfg, e.g. plain_supreme.py; it is not in this repository), or --skip-latency with --model "
                     "and --data for the accuracy rows only")
    if not args.skip_latency and not args.plain.is_file():
        parser.error(f"--plain {args.plain}: no such file")
    if args.skip_latency and not args.model:
        parser.error("--skip-latency leaves only the accuracy rows, which need --model and --data")
    setup_device(args)  # CPU threads
    runtimes = args.runtimes.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        if not args.skip_latency:
            rows += latency_rows(args, runtimes, Path(scratch) / "latency")
        if args.model:
            rows += accuracy_rows(args, runtimes, Path(scratch) / "accuracy")
    return rows


def latency_rows(args, runtimes: list[str], folder: Path) -> list[dict]:
    config = benchmark_config(args)
    model = build_model(config, torch.device("cpu")).eval()
    plain = load_plain_model(args.plain, config, args.queries)
    query_embeds = torch.randn(args.queries, config.text_config.hidden_size)
    states = model.get_query_states(query_embeds)
    ecgs = processed_ecgs(SupremeFeatureExtractor(), args.calibration, args.calibration_size)
    export = export_graphs(model, states, folder, calibration_ecgs=ecgs, int8=True)
    names = [f"query {i}" for i in range(args.queries)]
    onnx_models = {
        (runtime, precision): SupremeOnnxModel.from_graph(folder / file, config, names, states, runtime, args.threads)
        for runtime in runtimes
        for precision, file in GRAPHS.items()
    }
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        batch = torch.rand(batch_size, config.num_leads, config.num_samples)  # processed ECGs lie in [0, 1]
        with torch.inference_mode():
            reference = model(batch, query_states=states).logits
        variants = {("plain model", "fp32"): call(plain, batch, query_embeds),
                    ("pytorch", "fp32"): call(model, batch, query_states=states)}
        errors = {}
        for (runtime, precision), onnx_model in onnx_models.items():
            variants[(runtime, precision)] = call(onnx_model, batch, query_states=states)
            logits = onnx_model(batch, query_states=states).logits
            errors[(runtime, precision)] = ((logits - reference).norm() / reference.norm()).item()
        times = time_interleaved(variants, torch.device("cpu"), args.rounds)
        plain_times = times[("plain model", "fp32")]
        for (runtime, precision), seconds in times.items():
            ratios = [t / p for t, p in zip(seconds, plain_times, strict=True)]
            rows.append({
                "table": "latency",
                **machine(torch.device("cpu")),
                "onnxruntime": module_version("onnxruntime"),
                "plain": args.plain.name,
                "calibration_ecgs": export["graphs"]["int8"]["calibration_ecgs"],
                "model": model_label(args),
                "runtime": runtime,
                "precision": precision,
                "threads": args.threads,
                "batch": batch_size,
                "queries": args.queries,
                "ms_per_ecg_median": 1e3 * statistics.median(seconds) / batch_size,
                "ms_per_ecg_best": 1e3 * min(seconds) / batch_size,
                "ratio_to_plain_median": statistics.median(ratios),
                "ratio_to_plain_best": min(seconds) / min(plain_times),
                "rel_err_vs_pytorch": errors.get((runtime, precision), 0.0 if runtime == "pytorch" else None),
                "rounds": args.rounds,
            })
    append_rows("bench_onnx", rows, dry_run=args.no_record)
    return rows


def accuracy_rows(args, runtimes: list[str], folder: Path) -> list[dict]:
    from transformers import AutoModel, AutoProcessor

    from modeling_supreme.processing_supreme import ecg_from_digital
    from training.ecg_data import class_names, ecg_dataloader
    from training.evaluate_zeroshot import load_prompts, queries_for, zeroshot_logits
    from training.onnx_export import export_onnx

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    dataset = held_out_split(args.data, args.splits)
    classes = class_names(dataset)
    queries = classes if args.class_names else queries_for(classes, load_prompts())[1]
    if args.calibration_split:
        train = held_out_split(args.data, [args.calibration_split]).select(range(args.calibration_size))
        batch = next(iter(ecg_dataloader(train, batch_size=len(train), shuffle=False, drop_last=False)))
        calibration = ecg_from_digital(batch["ecg"], batch["adc_gain"], processor.feature_extractor.normalization,
                                       model.config.sampling_rate)
    else:
        calibration = processed_ecgs(processor, args.calibration, args.calibration_size)
    export = export_onnx(model, processor, queries, folder, calibration_ecgs=calibration, int8=True)
    normalization = processor.feature_extractor.normalization
    torch_logits, labels, _ = zeroshot_logits(model, processor.tokenizer, dataset, queries,
                                              normalization=normalization)
    scores = {("pytorch", "fp32"): torch_logits}
    for runtime in runtimes:
        for precision, file in GRAPHS.items():
            onnx_model = SupremeOnnxModel.from_pretrained(folder, file_name=file, runtime=runtime,
                                                          num_threads=args.threads)
            states = onnx_model.select_query_states(queries)
            rate = model.config.sampling_rate
            logits = [onnx_model(ecg_from_digital(batch["ecg"], batch["adc_gain"], normalization, rate),
                                 query_states=states).logits.numpy()
                      for batch in ecg_dataloader(dataset, batch_size=16, shuffle=False, drop_last=False)]
            scores[(runtime, precision)] = np.concatenate(logits)
    reference = per_class_auroc(torch_logits, labels, classes)
    positives = dict(zip(classes, labels.sum(axis=0).tolist(), strict=True))
    rows = []
    for (runtime, precision), logits in scores.items():
        auroc = per_class_auroc(logits, labels, classes)
        deltas = [abs(auroc[c] - reference[c]) for c in reference]
        frequent = [abs(auroc[c] - reference[c]) for c in reference if positives[c] >= FREQUENT]
        rows.append({
            "table": "accuracy",
            **machine(torch.device("cpu")),
            "onnxruntime": module_version("onnxruntime"),
            "model": args.model,
            "data": f"{args.data} {'+'.join(args.splits)}",
            "ecgs": len(labels),
            "runtime": runtime,
            "precision": precision,
            "macro_auroc": float(np.mean(list(auroc.values()))),
            "max_abs_auroc_delta_vs_pytorch": max(deltas),
            f"max_abs_auroc_delta_classes_{FREQUENT}_positives": max(frequent) if frequent else None,
            "rel_logit_err_vs_pytorch": float(np.linalg.norm(logits - torch_logits) / np.linalg.norm(torch_logits)),
            "max_abs_logit_err_vs_pytorch": float(np.abs(logits - torch_logits).max()),
            "per_class_auroc": auroc,
            "calibration_ecgs": export["graphs"]["int8"]["calibration_ecgs"],
        })
    append_rows("bench_onnx", rows, dry_run=args.no_record)
    return rows


def held_out_split(spec: str, splits: list[str]):
    import datasets

    from training.ecg_data import load_ecg_dataset

    path, _, config = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    parts = [load_ecg_dataset(path, config or None, split=split) for split in splits]
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def per_class_auroc(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    """AUROC of each class that has positive and negative ECGs."""
    from sklearn.metrics import roc_auc_score

    return {name: float(roc_auc_score(labels[:, i], logits[:, i]))
            for i, name in enumerate(classes) if 0 < labels[:, i].sum() < len(labels)}


def load_plain_model(path: Path, config, num_queries: int):
    """`Ref(cfg)` from the reference file, at `config`'s shapes, in eval mode."""
    spec = importlib.util.spec_from_file_location("plain_supreme", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shapes = dict(
        leads=config.num_leads, length=config.num_samples, patch=config.patch_size, width=config.hidden_size,
        depth=config.num_hidden_layers, heads=config.num_attention_heads,
        mlp=config.intermediate_size / config.hidden_size, drop_path=config.drop_path_rate,
        proj_hidden=config.projection_hidden_size, dim=config.projection_dim,
        text_dim=config.text_config.hidden_size, cfn_layers=config.fusion_num_layers,
        cfn_heads=config.fusion_num_attention_heads, cfn_ffn=config.fusion_intermediate_size, queries=num_queries,
    )
    torch.manual_seed(0)
    return module.Ref({**module.cfg, **shapes}).eval()


def call(model, ecgs, *args, **kwargs):
    def run():
        with torch.inference_mode():
            return model(ecgs, *args, **kwargs)

    return run


def module_version(name: str) -> str | None:
    try:
        return __import__(name).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
