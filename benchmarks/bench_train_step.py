"""Training-step throughput at the paper's shapes: bf16 autocast, 295 cached queries, AdamW, eager and compiled.

    .venv/bin/python benchmarks/bench_train_step.py --device cuda     # batch 256, as in the paper
    .venv/bin/python benchmarks/bench_train_step.py                   # CPU: batch 4 (a check of the script, not a figure
                                                                      # anyone trains with)

One step is what training/pretrain.py does per batch once the data are on the device: int16 ECGs normalised on the
device (`ecg_from_digital`), forward with the cached query embeddings and the multi-hot labels, BCE loss, backward,
AdamW step. Data loading is not included (bench_loader.py and bench_end_to_end.py measure it). Achieved TFLOP/s
divides the analytic matmul count of benchmarks/flops.py (forward + backward) by the best step time.

Appends one row per variant (`--no-record`: prints them only) to `benchmarks/results/bench_train_step.jsonl`
(benchmarks/common.py `append_rows`: with the machine, torch version, date and command). On CPU the batch is small (a
check of the script; CPU bf16 autocast is emulated on AVX2 and slow).
"""

from __future__ import annotations

import argparse
import resource
import statistics

import torch
from common import (
    append_rows,
    benchmark_config,
    build_model,
    machine,
    model_arguments,
    model_label,
    setup_device,
    time_calls,
)
from flops import train_step_flops

from modeling_supreme.processing_supreme import ecg_from_digital


def make_step(model, optimizer, ecg, adc_gain, labels, query_embeds, autocast):
    """One optimisation step on device-resident data."""

    def step():
        with autocast:
            loss = model(ecg_from_digital(ecg, adc_gain), query_embeds=query_embeds, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 on GPU, 4 on CPU")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 20 GPU, 3 CPU)")
    parser.add_argument("--no-autocast", action="store_true", help="fp32 instead of bf16 autocast")
    args = parser.parse_args(argv)

    device = setup_device(args)
    gpu = device.type == "cuda"
    batch_size = args.batch_size or (256 if gpu else 4)
    steps = args.steps or (20 if gpu else 3)

    config = benchmark_config(args)
    generator = torch.Generator(device=device).manual_seed(0)
    ecg = torch.randint(
        -2000,
        2000,
        (batch_size, config.num_leads, config.num_samples),
        dtype=torch.int16,
        device=device,
        generator=generator,
    )
    adc_gain = torch.full((batch_size, config.num_leads), 200.0, device=device)  # MIMIC-IV-ECG's gain
    labels = (torch.rand(batch_size, args.queries, device=device, generator=generator) < 0.02).float()
    query_embeds = torch.randn(args.queries, config.text_config.hidden_size, device=device, generator=generator)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.no_autocast)

    rows = []
    for mode in args.modes.split(","):
        model = build_model(config, device).train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01, fused=gpu
        )
        run = torch.compile(model, mode=args.compile_mode) if mode == "compiled" else model
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        step = make_step(run, optimizer, ecg, adc_gain, labels, query_embeds, autocast)
        seconds = time_calls(step, device, repeats=steps, warmup=3 if gpu else 1)
        peak_gb = (
            torch.cuda.max_memory_allocated(device)
            if gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ) / 1e9
        best, median = min(seconds), statistics.median(seconds)
        flops = train_step_flops(config, args.queries, batch_size)
        rows.append(
            {
                **machine(device),
                "model": model_label(args),
                "precision": "fp32" if args.no_autocast else "bf16-autocast",
                "threads": None if gpu else torch.get_num_threads(),
                "batch": batch_size,
                "queries": args.queries,
                "mode": mode if mode == "eager" or not args.compile_mode else f"compiled ({args.compile_mode})",
                "ecg_per_s": batch_size / best,
                "ecg_per_s_median": batch_size / median,
                "gflop_per_ecg": flops / batch_size / 1e9,
                "achieved_tflops": flops / best / 1e12,
                "peak_mem_gb": peak_gb,  # GPU: allocated; CPU: process peak RSS
            }
        )
        del model, optimizer, run, step
    append_rows("bench_train_step", rows, device, dry_run=args.no_record)
    return rows


if __name__ == "__main__":
    main()
