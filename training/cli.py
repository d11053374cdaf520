"""The `supreme` command: classify and explain ECGs, and reach the builders and training scripts from one place.

supreme classify RECORD... [--model DIR_OR_REPO] --query "atrial fibrillation" [--query ...]
supreme classify RECORD... --onnx DIR [--query ...]          (a folder written by supreme export; default: its queries)
supreme export --model DIR_OR_REPO --output DIR --query ... [--int8 --calibration RECORD_OR_DIR ...]
supreme explain RECORD [--model DIR_OR_REPO] --query "..." [--query ...] --output attention.png
supreme build {mimic-iv-ecg,ptbxl,ptbxl-pretraining,cpsc2018,csn} ARGS...   (python -m builders.<source> ARGS...)
supreme train ARGS...                                     (accelerate launch training/pretrain.py ARGS...)
supreme evaluate ARGS...                                  (python training/evaluate_zeroshot.py ARGS...)
supreme probe ARGS...                                     (python training/linear_probe.py ARGS...)
supreme app [--model DIR_OR_REPO] [--port N]              (the Gradio Space: python space/app.py ARGS...)

Without --model, classify and explain use the model shipped in the repository (checkpoints/supreme-ptbxl).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path

BUILDERS = {
    "mimic-iv-ecg": "builders.mimic_iv_ecg",
    "ptbxl": "builders.ptbxl",
    "ptbxl-pretraining": "builders.ptbxl_pretraining",
    "cpsc2018": "builders.cpsc2018",
    "csn": "builders.csn",
}
SCRIPTS = {"evaluate": "training.evaluate_zeroshot", "probe": "training.linear_probe"}
PRETRAIN = Path(__file__).resolve().parent / "pretrain.py"
SPACE_APP = Path(__file__).resolve().parents[1] / "space" / "app.py"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "supreme-ptbxl"


class CommandError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def load_model(name: str, device: str):
    from transformers import AutoModel, AutoProcessor
    from transformers.utils import logging

    logging.disable_progress_bar()  # stderr is for errors: one line each
    try:
        model = AutoModel.from_pretrained(name, trust_remote_code=True).to(device).eval()
        processor = AutoProcessor.from_pretrained(name, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot load a SuPreME model from {name!r}: {str(error).splitlines()[0]}") from None
    if getattr(model.config, "fusion_query_attention", "self") == "all":  # checkpoints from before the option: "self"
        from modeling_supreme.pipeline_supreme import QUERY_LIST_NOTE

        print(f"supreme: note: {QUERY_LIST_NOTE}", file=sys.stderr)
    return model, processor


def read_queries(args, required: bool = True) -> list[str]:
    queries = list(args.query or [])
    if args.queries_file:
        path = Path(args.queries_file)
        if not path.is_file():
            raise CommandError(f"{path}: no such queries file")
        queries += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not queries and required:
        raise CommandError("give at least one query with --query TEXT (or --queries-file FILE)")
    return queries


def check_records(records: list[str]) -> None:
    for record in records:
        path = Path(record)
        candidates = [path, path.with_suffix(".hea"), Path(f"{record}.hea")]
        if not any(candidate.is_file() for candidate in candidates):
            raise CommandError(f"{record}: no such file or WFDB record")


def load_onnx(folder: str, runtime: str):
    """A folder written by `supreme export`: the ONNX model (its int8 graph where exported) and its processor."""
    from transformers import AutoProcessor

    from modeling_supreme.onnx_supreme import SupremeOnnxModel

    try:
        model = SupremeOnnxModel.from_pretrained(folder, runtime=runtime)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    except (OSError, ValueError, ImportError) as error:
        raise CommandError(str(error).splitlines()[0]) from None
    return model, processor


def classify(args) -> None:
    import torch

    if args.onnx:
        queries = read_queries(args, required=False)
        check_records(args.records)
        model, processor = load_onnx(args.onnx, args.runtime)
        queries = queries or model.queries
        try:
            query_states = model.select_query_states(queries)
        except ValueError as error:
            raise CommandError(str(error)) from None
        score = {"query_states": query_states}
    else:
        queries = read_queries(args)
        check_records(args.records)
        model, processor = load_model(args.model, args.device)
        with torch.no_grad():
            query_embeds = model.encode_queries(queries, processor.tokenizer, max_length=processor.query_max_length)
            score = {"query_states": model.get_query_states(query_embeds)}
    results = []
    with torch.no_grad():
        for record in args.records:
            try:
                input_values = processor(ecg=record, return_tensors="pt")["input_values"].to(model.device)
            except ValueError as error:
                raise CommandError(str(error)) from None
            probabilities = torch.sigmoid(model(input_values=input_values, **score).logits[0])
            results.append({"record": record, "scores": dict(zip(queries, probabilities.tolist(), strict=True))})
    if args.json:
        print(json.dumps(results, indent=2))
        return
    width = max(len(query) for query in queries)
    for result in results:
        print(result["record"])
        for query, probability in result["scores"].items():
            print(f"  {query:<{width}}  {probability:.4f}")


def export(args) -> None:
    import warnings

    from training.onnx_export import export_onnx, processed_ecgs

    queries = read_queries(args)
    if (Path(args.output) / "model.safetensors").exists():
        raise CommandError(f"{args.output} holds a PyTorch checkpoint: export to another folder")
    if args.int8 and not args.calibration:
        raise CommandError("--int8 calibrates on real ECGs: give --calibration RECORD_OR_DIR (e.g. 64 training ECGs)")
    model, processor = load_model(args.model, "cpu")
    try:
        ecgs = processed_ecgs(processor, args.calibration, args.calibration_size) if args.calibration else None
    except (OSError, ValueError) as error:
        raise CommandError(str(error).splitlines()[0]) from None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed": not ours to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = export_onnx(model, processor, queries, args.output, calibration_ecgs=ecgs, int8=args.int8)
    for precision, graph in record["graphs"].items():
        error = graph.get("relative_logit_error_vs_torch", graph["max_abs_logit_error_vs_torch"])
        what = "relative logit error" if "relative_logit_error_vs_torch" in graph else "max |logit error|"
        print(f"{Path(args.output) / graph['file']}  {precision}, {what} vs PyTorch {error:.2e}")


def explain(args) -> None:
    from training.attention_plots import plot_cross_attention

    queries = read_queries(args)
    check_records([args.record])
    model, processor = load_model(args.model, args.device)
    try:
        path = plot_cross_attention(model, processor, args.record, queries, args.output, layer=args.layer)
    except ValueError as error:
        raise CommandError(str(error)) from None
    print(path)


def forward_module(module: str, argv: list[str]) -> None:
    """Run `module` as `python -m module argv...`, in this process."""
    sys.argv = [sys.argv[0], *argv]  # run_module puts the module's path in argv[0]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supreme", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def query_options(command):
        command.add_argument("--query", action="append", help="a free-text cardiac query; repeat for several")
        command.add_argument("--queries-file", help="a text file with one query per line")

    def scoring_options(command):
        command.add_argument("--model", help="a saved SuPreME folder or Hub repo id (default: the shipped model, "
                             f"{DEFAULT_MODEL.relative_to(DEFAULT_MODEL.parents[1])})")
        query_options(command)
        command.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    classify_parser = commands.add_parser("classify", help="probability of each query for each ECG record")
    classify_parser.add_argument(
        "records", nargs="+", metavar="RECORD", help="WFDB record (.hea/.dat/.mat) or CPSC .mat"
    )
    scoring_options(classify_parser)
    classify_parser.add_argument(
        "--onnx", metavar="DIR", help="score with a folder written by `supreme export` instead of --model "
        "(its int8 graph where exported; default queries: the exported ones)"
    )
    classify_parser.add_argument(
        "--runtime", choices=("auto", "openvino", "onnxruntime"), default="auto",
        help="for --onnx; auto (the default): OpenVINO where installed, else ONNX Runtime"
    )
    classify_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    classify_parser.set_defaults(handler=classify)

    export_parser = commands.add_parser("export", help="an ONNX folder for CPU deployment, optionally int8")
    export_parser.add_argument("--model", required=True, help="a saved SuPreME folder or Hub repo id")
    export_parser.add_argument("--output", required=True, help="the folder to write")
    query_options(export_parser)
    export_parser.add_argument("--int8", action="store_true", help="also write model_quantized.onnx (static int8)")
    export_parser.add_argument(
        "--calibration", nargs="+", metavar="RECORD_OR_DIR", help="real ECGs for the int8 ranges: records, or folders "
        "searched for WFDB records (sorted)"
    )
    export_parser.add_argument("--calibration-size", type=int, default=64, help="ECGs used at most (default: 64)")
    export_parser.set_defaults(handler=export)

    explain_parser = commands.add_parser("explain", help="plot the CFN cross-attention of each query over one ECG")
    explain_parser.add_argument("record", metavar="RECORD")
    scoring_options(explain_parser)
    explain_parser.add_argument("--output", default="attention.png", help="PNG path (default: attention.png)")
    explain_parser.add_argument("--layer", type=int, default=-1, help="CFN layer to draw (default: the last)")
    explain_parser.set_defaults(handler=explain)

    # Listed for --help only: main() hands these commands their arguments untouched.
    commands.add_parser("build", help=f"build a Hub dataset: supreme build {{{','.join(BUILDERS)}}} ARGS...")
    commands.add_parser("train", help="pre-train: accelerate launch training/pretrain.py ARGS...")
    commands.add_parser("app", help="the Gradio Space in the browser: supreme app [--model DIR_OR_REPO] [--port N]")
    for name, module in SCRIPTS.items():
        commands.add_parser(name, help=f"python -m {module} ARGS...")
    return parser


def forward(command: str, argv: list[str]) -> None:
    """`build`, `train`, `evaluate`, `probe` and `app` hand their arguments to the script behind them, --help
    included."""
    if command == "train":
        sys.exit(subprocess.call([sys.executable, "-m", "accelerate.commands.launch", str(PRETRAIN), *argv]))
    if command == "app":
        if not SPACE_APP.is_file():
            raise CommandError(f"the Space's {SPACE_APP} is not there: run it from a checkout of the repository")
        # exec, not a child: the server is this process, so stopping `supreme app` stops it
        os.execv(sys.executable, [sys.executable, str(SPACE_APP), *argv])
    if command == "build":
        if not argv or argv[0] not in BUILDERS:
            raise CommandError(f"usage: supreme build {{{','.join(BUILDERS)}}} ARGS... (then --help for the builder's)")
        forward_module(BUILDERS[argv[0]], argv[1:])
        return
    forward_module(SCRIPTS[command], argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in {"build", "train", "app", *SCRIPTS}:
            forward(argv[0], argv[1:])
            return
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "classify" and args.model is not None and args.onnx is not None:
            parser.error("classify: give one of --model DIR_OR_REPO and --onnx DIR")
        if args.command in ("classify", "explain") and args.model is None and getattr(args, "onnx", None) is None:
            if not DEFAULT_MODEL.is_dir():
                raise CommandError(f"no --model given and the shipped model {DEFAULT_MODEL} is not there")
            args.model = str(DEFAULT_MODEL)
        args.handler(args)
    except CommandError as error:
        print(f"supreme: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
