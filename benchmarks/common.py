"""What every benchmark script shares: the machine it ran on, timing, and recording a row in RESULTS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
PAPER_QUERIES = 295  # the standard terms extracted from MIMIC-IV-ECG reports


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """Where a figure was measured: CPU (cores this process may use), GPU, torch version, date, load."""
    info = {
        "cpu": f"{cpu_model()} ({len(os.sched_getaffinity(0))} cores)",
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        # other users of a shared machine inflate CPU timings: keep the load beside the figure
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    return info


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
    parser.add_argument("--no-record", action="store_true", help="print the JSON lines only")


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


def record(section: str, description: str, row: dict, path: Path = RESULTS, dry_run: bool = False) -> None:
    """Print `row` as one JSON line and append it to `section`'s table in RESULTS.md (creating the section);
    `dry_run` (the scripts' --no-record) only prints.

    Sections belong to scripts: each run adds one table row under its own heading and leaves the rest of the file
    as it is, so several engineers and machines can add to one file.
    """
    print(json.dumps(row), flush=True)
    if dry_run:
        return
    line = "| " + " | ".join(_cell(value) for value in row.values()) + " |"
    text = path.read_text() if path.exists() else "# Benchmark results\n\nEach section is written by one script.\n"
    heading = f"## {section}"
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        end = len(text) if end == -1 else end
        text = text[:start] + text[start:end].rstrip("\n") + "\n" + line + "\n" + text[end:]
    else:
        header = "| " + " | ".join(row) + " |\n|" + "---|" * len(row)
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{description}\n\n{header}\n{line}\n"
    path.write_text(text)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "/")


def run_command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
