"""The speed work on modeling_supreme.py, measured: this checkout's model against an earlier revision of the file, in
one process, timed in turn (a shared machine slows both alike), same weights, same inputs.

    .venv/bin/python benchmarks/bench_model_changes.py [--revision 4b2c79a] [--device cpu] [--threads 2]
        [--fusion-query-attention self|all]

With the default CFN (`self`) the earlier model loads this checkout's state dict strictly (the parameter names did not
change) and must give the same logits (max |diff| is reported). With `all` (the paper's decoder, which the earlier
revision cannot build) the rows time what choosing it costs against the earlier model, each with its own weights; no
difference is reported. Rows: inference at batch 1 and 16 (the current model with cached query states, as zero-shot
evaluation uses it; the earlier one with query embeddings, all it had) and a training step (fp32 on CPU, bf16 autocast
on GPU).

Appends one row per measurement (`--no-record`: prints them only) to
`benchmarks/results/bench_model_changes.jsonl` (benchmarks/common.py `append_rows`: with the machine, torch version,
date and command). speedup = earlier / current time (median and best rounds); `max_abs_diff` of the logits (same
weights: default CFN only; a `what` naming `CFN all` times the paper's decoder against the earlier default CFN). The
training step is forward, BCE, backward with drop path on.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

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


def load_revision(revision: str):
    """modeling_supreme.py as it was at `revision` (or the file at that path, for a copy of the checkout without its
    git history), importable beside this checkout's configuration_supreme.py."""
    folder = Path(tempfile.mkdtemp(prefix="supreme_rev_")) / "supreme_revision"
    folder.mkdir()
    if Path(revision).is_file():
        source = Path(revision).read_text()
    else:
        source = subprocess.run(
            ["git", "show", f"{revision}:modeling_supreme/modeling_supreme.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    (folder / "modeling_supreme.py").write_text(source)
    (folder / "configuration_supreme.py").write_text(
        (REPO / "modeling_supreme" / "configuration_supreme.py").read_text()
    )
    (folder / "__init__.py").write_text("")
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module("supreme_revision.modeling_supreme")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser)
    parser.add_argument(
        "--revision", default="4b2c79a", help="git revision of the earlier modeling_supreme.py, or that file's path"
    )
    parser.add_argument("--batch-sizes", default=None, help="inference batches (default 1,16 CPU; 1024 GPU)")
    parser.add_argument("--train-batch", type=int, default=None, help="default 2 CPU, 256 GPU")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)

    device = setup_device(args)
    gpu = device.type == "cuda"
    config = benchmark_config(args)
    current = build_model(config, device)
    earlier = load_revision(args.revision).SupremeModel(config).to(device)  # builds the default CFN whatever the mode
    same_weights = args.fusion_query_attention == "self"
    if same_weights:
        earlier.load_state_dict(current.state_dict(), strict=True)
    query_embeds = torch.randn(args.queries, config.text_config.hidden_size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu)
    rows = []

    def add(what, batch, times, difference):
        now, before = statistics.median(times["current"]), statistics.median(times["earlier"])
        rows.append(
            {
                **machine(device),
                "revision": Path(args.revision).stem,  # a file given for the revision is named after it
                "what": what if same_weights else f"{what}, current: {model_label(args)}",
                "batch": batch,
                "threads": None if gpu else torch.get_num_threads(),
                "precision": "bf16-autocast" if gpu else "fp32",
                "earlier_ms_per_ecg": 1e3 * before / batch,
                "current_ms_per_ecg": 1e3 * now / batch,
                "speedup_median": before / now,
                "speedup_best": min(times["earlier"]) / min(times["current"]),
                "max_abs_diff": difference,
            }
        )

    current.eval(), earlier.eval()
    with torch.inference_mode(), autocast:
        states = current.get_query_states(query_embeds)
    for batch in [int(b) for b in (args.batch_sizes or ("1024" if gpu else "1,16")).split(",")]:
        ecgs = torch.rand(batch, config.num_leads, config.num_samples, device=device)

        def infer(model, ecgs=ecgs, **queries):
            def call():
                with torch.inference_mode(), autocast:
                    return model(ecgs, **queries).logits.float()

            return call

        variants = {
            "current": infer(current, query_states=states),
            "earlier": infer(earlier, query_embeds=query_embeds),
        }
        difference = (variants["current"]() - variants["earlier"]()).abs().max().item() if same_weights else None
        add("inference", batch, time_interleaved(variants, device, args.rounds), difference)

    batch = args.train_batch or (256 if gpu else 2)
    ecgs = torch.rand(batch, config.num_leads, config.num_samples, device=device)
    labels = (torch.rand(batch, args.queries, device=device) < 0.02).float()

    def train(model):
        model.train()

        def step():
            with autocast:
                loss = model(ecgs, query_embeds=query_embeds, labels=labels).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
            return loss

        return step

    add(
        "train step (fwd+bwd)",
        batch,
        time_interleaved({"current": train(current), "earlier": train(earlier)}, device, max(2, args.rounds // 2)),
        None,
    )
    append_rows("bench_model_changes", rows, device, dry_run=args.no_record)
    return rows


if __name__ == "__main__":
    main()
