"""The speed work on modeling_supreme.py, measured: this checkout's model against an earlier revision of the file, in
one process, timed in turn (a shared machine slows both alike), same weights, same inputs.

    .venv/bin/python benchmarks/bench_model_changes.py [--revision 4b2c79a] [--device cpu] [--threads 2]

The earlier model loads this checkout's state dict strictly (the parameter names did not change) and must give the
same logits (max |diff| is reported). Rows: inference at batch 1 and 16 (the current model with cached query states,
as zero-shot evaluation uses it; the earlier one with query embeddings, all it had) and a training step (fp32 on CPU,
bf16 autocast on GPU).
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
    PAPER_QUERIES,
    REPO,
    build_model,
    machine,
    paper_config,
    record,
    run_command,
    setup_device,
    time_interleaved,
)

SECTION = "Model changes against an earlier revision (bench_model_changes.py)"


def load_revision(revision: str):
    """modeling_supreme.py as it was at `revision`, importable beside this checkout's configuration_supreme.py."""
    folder = Path(tempfile.mkdtemp(prefix="supreme_rev_")) / "supreme_revision"
    folder.mkdir()
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
    parser.add_argument("--revision", default="4b2c79a", help="git revision of the earlier modeling_supreme.py")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--batch-sizes", default=None, help="inference batches (default 1,16 CPU; 1024 GPU)")
    parser.add_argument("--train-batch", type=int, default=None, help="default 2 CPU, 256 GPU")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)

    device = setup_device(args)
    gpu = device.type == "cuda"
    config = paper_config()
    current = build_model(config, device)
    earlier = load_revision(args.revision).SupremeModel(config).to(device)
    earlier.load_state_dict(current.state_dict(), strict=True)
    query_embeds = torch.randn(PAPER_QUERIES, config.text_config.hidden_size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu)
    rows = []

    def add(what, batch, times, difference):
        now, before = statistics.median(times["current"]), statistics.median(times["earlier"])
        rows.append(
            {
                **machine(device),
                "revision": args.revision,
                "what": what,
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
        difference = (variants["current"]() - variants["earlier"]()).abs().max().item()
        add("inference", batch, time_interleaved(variants, device, args.rounds), difference)

    batch = args.train_batch or (256 if gpu else 2)
    ecgs = torch.rand(batch, config.num_leads, config.num_samples, device=device)
    labels = (torch.rand(batch, PAPER_QUERIES, device=device) < 0.02).float()

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
    description = (
        "This checkout's modeling_supreme.py against `revision`'s, same weights, timed in turn in one process; "
        "speedup = earlier / current time (median and best rounds). Inference: current with cached query states, "
        "earlier with query embeddings; `max_abs_diff` of their logits. Training step: forward, BCE, backward with "
        f"drop path on. Command: `{run_command()}`."
    )
    for row in rows:
        record(SECTION, description, row, dry_run=args.no_record)
    return rows


if __name__ == "__main__":
    main()
