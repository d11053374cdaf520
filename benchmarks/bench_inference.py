"""Zero-shot inference throughput: ECGs scored against 295 cached queries, at the paper's shapes.

    .venv/bin/python benchmarks/bench_inference.py                    # CPU: fp32, 2 threads, batch 1 and 16
    .venv/bin/python benchmarks/bench_inference.py --device cuda      # GPU: bf16 autocast, batch 1024, eager + compiled

Each variant is timed in turn, round after round (a shared machine slows all alike); a row reports the best and the
median round. `cache` says how the queries come: `embeds` = `query_embeds` (the text projection and the first CFN
layer's query-only work run on every call), `states` = `get_query_states` output (computed once per query list).
The analytic FLOP count is benchmarks/flops.py (matmuls only); on this project's 2-core AVX2 CPU the fp32 matmul
peak is about 70 GFLOP/s per core, which puts the floor near 75 ms per ECG.

Appends one row per variant (`--no-record`: prints them only) to `benchmarks/results/bench_inference.jsonl`
(benchmarks/common.py `append_rows`: with the machine, torch version, date and command). Random weights, paper shapes
unless `model` says small. `rel_err_vs_fp32` = ||logits - fp32 logits|| / ||fp32 logits|| on 2 ECGs (random weights:
a proxy); `achieved_tflops` = analytic matmul FLOPs / best time; CPU `peak_mem_gb` = process peak RSS.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import warnings

import torch
from common import (
    append_rows,
    benchmark_config,
    build_model,
    machine,
    model_arguments,
    model_label,
    setup_device,
    synchronize,
    time_interleaved,
)
from flops import forward_flops


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser)
    parser.add_argument("--batch-sizes", default=None, help="comma-separated; default 1,16 on CPU, 1024 on GPU")
    parser.add_argument(
        "--dtypes",
        default=None,
        help="comma-separated, timed in turn: fp32, bf16-autocast, bf16 (weights cast to bfloat16), int8-dynamic "
        "(CPU opt-in: torch.ao dynamic int8 Linear layers); default fp32 on CPU, bf16-autocast on GPU",
    )
    parser.add_argument("--modes", default=None, help="eager,compiled; default eager on CPU, both on GPU")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per variant")
    args = parser.parse_args(argv)

    device = setup_device(args)
    gpu = device.type == "cuda"
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1024" if gpu else "1,16")).split(",")]
    dtypes = (args.dtypes or ("bf16-autocast" if gpu else "fp32")).split(",")
    modes = (args.modes or ("eager,compiled" if gpu else "eager")).split(",")
    rounds = args.rounds or (10 if gpu else 5)

    config = benchmark_config(args)
    model = build_model(config, device).eval()
    query_embeds = torch.randn(args.queries, config.text_config.hidden_size, device=device)
    reference_ecgs = torch.rand(2, config.num_leads, config.num_samples, device=device)
    with torch.inference_mode():
        reference = model(reference_ecgs, query_embeds=query_embeds).logits.float()
    precisions = {}  # dtype -> (model, autocast, query states, relative error of the logits against fp32)
    for dtype in dtypes:
        variant = cast(model, dtype)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16-autocast")
        with torch.inference_mode(), autocast:
            states = variant.get_query_states(query_embeds)
            logits = variant(reference_ecgs, query_states=states).logits.float()
        error = ((logits - reference).norm() / reference.norm()).item()
        precisions[dtype] = (variant, autocast, states, error)

    rows = []
    for batch_size in batch_sizes:
        ecgs = torch.rand(batch_size, config.num_leads, config.num_samples, device=device)
        variants = {}
        for dtype, (variant, autocast, states, _) in precisions.items():
            for mode in modes:
                run = torch.compile(variant) if mode == "compiled" else variant
                variants[(dtype, mode, "states")] = scorer(run, ecgs, autocast, query_states=states)
                if not gpu:  # the per-call query work is a visible share only at small CPU batches
                    variants[(dtype, mode, "embeds")] = scorer(run, ecgs, autocast, query_embeds=query_embeds)
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        times = time_interleaved(variants, device, rounds, warmup=2 if gpu else 1)
        synchronize(device)
        peak_gb = (
            torch.cuda.max_memory_allocated(device)
            if gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ) / 1e9
        for (dtype, mode, cache), seconds in times.items():
            best, median = min(seconds), statistics.median(seconds)
            flops = forward_flops(config, args.queries, batch_size, cached_query_states=cache == "states")
            rows.append(
                {
                    **machine(device),
                    "model": model_label(args),
                    "dtype": dtype,
                    "rel_err_vs_fp32": precisions[dtype][3],
                    "threads": None if gpu else torch.get_num_threads(),
                    "batch": batch_size,
                    "queries": args.queries,
                    "mode": mode,
                    "cache": cache,
                    "ms_per_ecg": 1e3 * best / batch_size,
                    "ms_per_ecg_median": 1e3 * median / batch_size,
                    "ecg_per_s": batch_size / best,
                    "gflop_per_ecg": flops / batch_size / 1e9,
                    "achieved_tflops": flops / best / 1e12,
                    "peak_mem_gb": peak_gb,  # GPU: allocated; CPU: process peak RSS
                }
            )
    append_rows("bench_inference", rows, device, dry_run=args.no_record)
    return rows


def cast(model, dtype: str):
    """The model in `dtype`: itself for fp32 and autocast, a bfloat16 copy, or a dynamic-int8 copy (CPU only)."""
    if dtype in ("fp32", "bf16-autocast"):
        return model
    if dtype == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16)
    if dtype == "int8-dynamic":
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"unknown dtype {dtype!r}")


def scorer(model, ecgs, autocast, **queries):
    """A call that scores `ecgs` against the queries, as zero-shot evaluation does."""

    def call():
        with torch.inference_mode(), autocast:
            return model(ecgs, **queries).logits

    return call


if __name__ == "__main__":
    main()
