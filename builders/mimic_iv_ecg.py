"""Build SuPreME's pre-training dataset from MIMIC-IV-ECG v1.0: waveforms + labels extracted from the machine reports.

    python -m builders.mimic_iv_ecg --input MIMIC_ROOT --output OUT_DIR [--labeller rules|transformers|vllm]
        [--llm MODEL] [--rules-first] [--no-grammar] [--text-encoder PATH_OR_ID] [--num-proc N] [--limit N]
        [--tensor-parallel-size N] [--gpu-memory-utilization F] [--max-model-len N] [--vllm-option KEY=VALUE]
        [--push-to-hub REPO_ID]

MIMIC_ROOT is the PhysioNet download (record_list.csv, machine_measurements.csv, files/). The steps:

1. Index: join record_list.csv and machine_measurements.csv on study_id; a record's report is its non-empty
   report_0 … report_17, one statement a line. Empty reports and reports under `--min-words` (3) words are dropped;
   words are counted as a reader counts them, split at whitespace and "/" ("Atrial flutter/fibrillation": 3 words).
2. Label: every distinct statement is sent once to the labeller (`rules`, `transformers` or `vllm`; the LLM is loaded
   and checked before any record is read, decodes under the response grammar unless `--no-grammar`, and its answers
   are cached on disk under OUT_DIR/.cache; `--rules-first` prompts only the statements the rules labeller cannot
   account for; the vllm labeller's engine options pass to `vllm.LLM(...)`, and GPU ones are refused by vLLM's CPU
   build). Entities map to the cardiac vocabulary's standard terms (exactly, else by text-encoder clustering:
   builders/labelling/mapping.py). A record's `labels` are the terms its statements assert; the terms they name only
   as Uncertain are dropped from `labels` and kept in `uncertain_terms`. The class names (the query list) are every
   term some record carries as a label, most frequent first.
3. Write: records are split by patient (a patient's records all go to `validation` when a hash of its subject_id
   falls under `--validation-fraction`), read in `--num-proc` processes (int16 samples in the canonical lead order,
   missing samples filled) and written as Parquet shards of `--records-per-shard` records. Each shard is finished
   atomically with a note of its inputs, so a killed build rerun with the same arguments redoes only unfinished shards
   and produces the same files. Unreadable records are dropped and listed with the reason in `dropped.csv`.
4. Report: `stats.json` (records read/dropped and why; the paper's Table 13/14 labelling figures), `label_frequency.png`
   and the dataset card (README.md: ODbL 1.0, citations). `--push-to-hub` uploads the folder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pandas as pd

from builders.dataset_writing import (
    ECG_SHAPE,
    SAMPLING_RATE,
    ecg_features,
    push_to_hub,
    to_schema_ecg,
    write_dataset_card,
    write_shard,
)
from builders.labelling.cache import ResponseCache
from builders.labelling.causal_lm import ModelLoadError
from builders.labelling.extraction import BACKENDS, make_extractor
from builders.labelling.mapping import DEFAULT_TEXT_ENCODER, TextEncoder, label_statements
from builders.labelling.rules import RULES_AGREEMENT
from builders.labelling.statistics import plot_label_frequency, write_stats
from builders.labelling.study_agreement import LLM_AGREEMENT
from builders.labelling.vllm_engine import EngineError
from builders.labelling.vocabulary import load_vocabulary, normalize_phrase
from builders.wfdb_reading import RecordError, read_wfdb

N_REPORTS = 18
SPLITS = ("train", "validation")
ENTITY = {"entity": datasets.Value("string"), "category": datasets.Value("string"), "term": datasets.Value("string")}
EXTRA_FEATURES = {"ecg_time": datasets.Value("string"), "entities": datasets.List(ENTITY),
                  "uncertain_terms": datasets.List(datasets.Value("string"))}
_WORD = re.compile(r"[^\s/]+")


@dataclass
class BuildConfig:
    input: str
    output: str
    labeller: str = "rules"
    llm: str | None = None
    text_encoder: str = DEFAULT_TEXT_ENCODER
    pooling: str = "cls"
    cluster_threshold: float = 0.9
    map_threshold: float = 0.85
    num_proc: int = 1
    limit: int | None = None
    min_words: int = 3
    validation_fraction: float = 0.05
    records_per_shard: int = 4000
    max_new_tokens: int = 256
    retries: int = 2
    retry_failures: bool = False
    grammar: bool = True
    rules_first: bool = False
    vllm_options: dict = field(default_factory=dict)  # keywords for vllm.LLM(...), --labeller vllm only
    push_to_hub: str | None = None


def build(config: BuildConfig) -> dict:
    """Run the whole build (see the module docstring); returns the statistics written to stats.json."""
    started = time.time()
    root, out = Path(config.input), Path(config.output)
    # the labeller (and its model) first: a wrong --llm fails before any record is read
    engine = {"engine_options": config.vllm_options} if config.labeller == "vllm" else {}
    extractor = make_extractor(config.labeller, config.llm, max_new_tokens=config.max_new_tokens,
                               retries=config.retries, grammar=config.grammar, rules_first=config.rules_first, **engine)
    records, dropped = index_records(root, config.limit, config.min_words)
    out.mkdir(parents=True, exist_ok=True)
    n_listed = len(records) + len(dropped)

    # Labelling: distinct statements → entities → standard terms (uncertain ones kept apart).
    statements = sorted({s for r in records for s in r["statements"]})
    cache = None
    if config.labeller != "rules":
        cache = ResponseCache(out / ".cache" / f"{config.labeller}-responses.jsonl")
    extraction = extractor.extract_all(statements, cache, retry_failures=config.retry_failures)
    if cache is not None:
        cache.close()
    labelled = label_statements(extraction.entities, load_vocabulary(), lambda n: _load_encoder(config, n),
                                cluster_threshold=config.cluster_threshold, map_threshold=config.map_threshold)
    frequency = Counter(t for r in records for t in set().union(*(labelled.terms[s] for s in r["statements"])))
    class_names = [t for t, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))]
    class_index = {t: i for i, t in enumerate(class_names)}
    for r in records:
        terms = set().union(*(labelled.terms[s] for s in r["statements"]))
        r["labels"] = sorted(class_index[t] for t in terms)
        r["uncertain_terms"] = sorted(set().union(*(labelled.uncertain_terms[s] for s in r["statements"])) - terms)
        r["entities"] = [e for s in r["statements"] for e in labelled.entities[s]]

    # Waveforms: patient-disjoint splits, shards written in parallel, resumable.
    validation_subjects = _validation_subjects([r["subject_id"] for r in records], config.validation_fraction)
    tasks = []
    for split in SPLITS:
        members = [r for r in records if (r["subject_id"] in validation_subjects) == (split == "validation")]
        for i in range(0, len(members), config.records_per_shard):
            tasks.append(_shard_task(root, out, split, i // config.records_per_shard,
                                     members[i:i + config.records_per_shard], class_names))
    notes, reused = _run_shards(tasks, config.num_proc)
    shards = _finalise_shards(out, notes)

    for note in notes:
        dropped.extend(note["dropped"])
    dropped.sort(key=lambda d: d["study_id"])
    _write_dropped(out / "dropped.csv", dropped)
    written = Counter()
    for note in notes:
        written.update(note["label_counts"])
    label_frequency = {class_names[int(i)]: written[i] for i in sorted(written, key=lambda i: (-written[i], int(i)))}
    stats = _statistics(config, n_listed, records, dropped, notes, shards, statements, extraction, extractor.model,
                        labelled, len(class_names), label_frequency, reused, time.time() - started)
    write_stats(stats, out / "stats.json")
    plot_label_frequency(label_frequency, stats["records"]["kept"], out / "label_frequency.png")
    _write_card(out, class_names, stats, config)
    if config.push_to_hub:
        print(f"uploaded to {push_to_hub(out, config.push_to_hub)}")
    return stats


def _load_encoder(config: BuildConfig, n_entities: int) -> TextEncoder:
    try:
        return TextEncoder(config.text_encoder, config.pooling)
    except OSError as error:
        raise OSError(f"cannot load the text encoder {config.text_encoder!r}, needed to map {n_entities} entities that "
                      f"are not vocabulary terms: pass --text-encoder with a local BERT folder ({error})") from error


def count_words(report: str) -> int:
    """Words as a reader counts them: the machines join alternatives with "/" ("Atrial flutter/fibrillation" is three
    words, where a whitespace split counts two and the paper's 3-word filter would drop a real finding)."""
    return len(_WORD.findall(report))


def index_records(root: Path, limit: int | None = None, min_words: int = 3) -> tuple[list[dict], list[dict]]:
    """Records with usable reports (in record_list.csv order) and the ones dropped for their report."""
    for name in ("record_list.csv", "machine_measurements.csv"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} not found: --input must be the MIMIC-IV-ECG v1.0 folder")
    listing = pd.read_csv(root / "record_list.csv", dtype=str, keep_default_na=False, nrows=limit)
    missing = {"subject_id", "study_id", "path"} - set(listing.columns)
    if missing:
        raise ValueError(f"{root / 'record_list.csv'}: missing column(s) {', '.join(sorted(missing))}")
    report_columns = [f"report_{i}" for i in range(N_REPORTS)]
    header = pd.read_csv(root / "machine_measurements.csv", nrows=0).columns
    wanted = ["study_id"] + [c for c in report_columns if c in header]
    if len(wanted) == 1:
        raise ValueError(f"{root / 'machine_measurements.csv'}: no report_0 … report_17 columns")
    reports = pd.read_csv(root / "machine_measurements.csv", dtype=str, keep_default_na=False, usecols=wanted)
    reports = reports[reports["study_id"].isin(set(listing["study_id"]))].drop_duplicates("study_id")
    # one dict lookup per record (a pandas .loc per record would cost minutes over 800,035 records)
    by_study = dict(zip(reports["study_id"], reports[wanted[1:]].to_numpy().tolist(), strict=True))
    records, dropped = [], []
    for row in listing.itertuples(index=False):
        study = row.study_id
        statements = [s.strip() for s in by_study.get(study, []) if s and s.strip()]
        report = "\n".join(statements)
        n_words = count_words(report)
        base = {"study_id": study, "subject_id": row.subject_id}
        if n_words == 0:
            dropped.append({**base, "reason": "empty_report", "detail": "no report_0 … report_17 text"})
        elif n_words < min_words:
            dropped.append({**base, "reason": "short_report", "detail": f"{n_words} word(s): {report!r}"})
        else:
            records.append({**base, "path": row.path, "ecg_time": getattr(row, "ecg_time", ""), "report": report,
                            "statements": statements})
    return records, dropped


def _validation_subjects(subjects: list[str], fraction: float) -> set[str]:
    """Patients whose hashed subject_id falls under `fraction`; at least one when there are two or more patients, so
    small builds (--limit) still have a validation split."""
    unique = sorted(set(subjects))
    position = {s: int(hashlib.sha256(f"supreme-split:{s}".encode()).hexdigest(), 16) / 2**256 for s in unique}
    chosen = {s for s in unique if position[s] < fraction}
    if not chosen and len(unique) >= 2 and fraction > 0:
        chosen = {min(unique, key=position.get)}
    return chosen


def _shard_task(root: Path, out: Path, split: str, index: int, members: list[dict], class_names: list[str]) -> dict:
    rows = [{k: r[k] for k in ("study_id", "subject_id", "path", "ecg_time", "report", "labels", "entities",
                               "uncertain_terms")}
            for r in members]
    fingerprint = hashlib.sha256(json.dumps([class_names, rows], sort_keys=True).encode()).hexdigest()
    work = out / ".work"
    return {"root": str(root), "split": split, "index": index, "rows": rows, "class_names": class_names,
            "fingerprint": fingerprint, "parquet": str(work / f"{split}-{index:05d}.parquet"),
            "note": str(work / f"{split}-{index:05d}.json")}


def _run_shards(tasks: list[dict], num_proc: int) -> tuple[list[dict], int]:
    """Notes of every shard, from disk for shards finished by an earlier run; the others are (re)built."""
    notes, todo = {}, []
    for task in tasks:
        note = _finished_note(task)
        if note is None:
            todo.append(task)
        else:
            notes[(task["split"], task["index"])] = note
    reused = len(notes)
    if todo:
        Path(todo[0]["parquet"]).parent.mkdir(parents=True, exist_ok=True)
    if num_proc > 1 and len(todo) > 1:
        import multiprocessing

        # fork where there is one: workers start at once with the parent's imports (spawn re-imports for seconds)
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(num_proc, len(todo))) as pool:
            for note in pool.imap_unordered(write_record_shard, todo):
                notes[(note["split"], note["index"])] = note
    else:
        for task in todo:
            note = write_record_shard(task)
            notes[(note["split"], note["index"])] = note
    return [notes[key] for key in sorted(notes, key=lambda k: (SPLITS.index(k[0]), k[1]))], reused


def _finished_note(task: dict) -> dict | None:
    path = Path(task["note"])
    if not path.is_file():
        return None
    note = json.loads(path.read_text(encoding="utf-8"))
    if note.get("fingerprint") != task["fingerprint"]:
        return None
    final = Path(task["parquet"]).parent.parent / "data" / (note.get("final") or "")
    if note["rows"] and not (Path(task["parquet"]).is_file() or (note.get("final") and final.is_file())):
        return None
    return note


def write_record_shard(task: dict) -> dict:
    """Read a shard's WFDB records and write them as one Parquet file; return the shard's note (also on disk)."""
    root = Path(task["root"])
    features = ecg_features(task["class_names"], EXTRA_FEATURES)
    note = {"split": task["split"], "index": task["index"], "fingerprint": task["fingerprint"], "dropped": [],
            "rows": 0, "unlabelled": 0, "samples_filled": 0, "records_filled": 0, "resampled": 0, "length_fitted": 0,
            "label_counts": Counter(), "subjects": set(), "final": None}

    def rows():
        for r in task["rows"]:
            try:
                ecg = read_wfdb(root / r["path"])
            except RecordError as error:
                note["dropped"].append({"study_id": r["study_id"], "subject_id": r["subject_id"],
                                        "reason": error.reason, "detail": str(error).replace(str(root) + os.sep, "")})
                continue
            note["resampled"] += ecg.fs != SAMPLING_RATE
            # resample_poly's output length: ceil(n * 500 / fs)
            note["length_fitted"] += math.ceil(ecg.digital.shape[1] * SAMPLING_RATE / ecg.fs) != ECG_SHAPE[1]
            digital = to_schema_ecg(ecg.digital, ecg.fs)
            note["samples_filled"] += ecg.n_filled
            note["records_filled"] += ecg.n_filled > 0
            note["label_counts"].update(r["labels"])
            note["unlabelled"] += not r["labels"]
            note["subjects"].add(r["subject_id"])
            yield {"id": r["study_id"], "subject_id": r["subject_id"], "ecg": digital,
                   "adc_gain": ecg.adc_gain, "report": r["report"], "labels": r["labels"], "ecg_time": r["ecg_time"],
                   "entities": r["entities"], "uncertain_terms": r["uncertain_terms"]}

    note["rows"] = write_shard(rows(), features, task["parquet"])
    note["label_counts"] = {str(k): v for k, v in sorted(note["label_counts"].items())}
    note["subjects"] = sorted(note["subjects"])
    tmp = Path(task["note"]).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(note, sort_keys=True), encoding="utf-8")
    tmp.replace(task["note"])  # the note lands last: its presence means the shard is complete
    return note


def _finalise_shards(out: Path, notes: list[dict]) -> dict[str, list[str]]:
    """Move finished shards to `data/<split>-XXXXX-of-YYYYY.parquet`, numbering the non-empty ones; remove stale
    shards of earlier builds."""
    data = out / "data"
    data.mkdir(exist_ok=True)
    shards: dict[str, list[str]] = {}
    for split in SPLITS:
        full = [n for n in notes if n["split"] == split and n["rows"]]
        names = [f"{split}-{i:05d}-of-{len(full):05d}.parquet" for i in range(len(full))]
        for note, name in zip(full, names, strict=True):
            work = out / ".work" / f"{split}-{note['index']:05d}.parquet"
            final = data / name
            if work.is_file():
                work.replace(final)
            elif note["final"] and note["final"] != name:
                (data / note["final"]).replace(final)
            if note["final"] != name:  # a name, not a path: the output folder may be moved between runs
                note["final"] = name
                path = out / ".work" / f"{split}-{note['index']:05d}.json"
                path.write_text(json.dumps(note, sort_keys=True), encoding="utf-8")
        for stale in data.glob(f"{split}-*-of-*.parquet"):
            if stale.name not in names:
                stale.unlink()
        shards[split] = names
    return shards


def _write_dropped(path: Path, dropped: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["study_id", "subject_id", "reason", "detail"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(dropped)


def _statistics(config, n_listed, records, dropped, notes, shards, statements, extraction, model, labelled,
                n_classes, label_frequency, reused, seconds) -> dict:
    """stats.json: the "run" part describes this invocation (LLM prompts, cache hits, time); the rest is the dataset's
    and is identical for a resumed build. `classes` counts the ClassLabel names (terms of records with a usable
    report); `final_terms` those that some written record carries (a record can still fail to read). With
    --rules-first, `statement_labeller` says which labeller answered each distinct statement."""
    raw = [e for s in statements for e in extraction.entities[s]]
    occurrences = sum(len(r["statements"]) for r in records)
    kept = sum(n["rows"] for n in notes)
    mapping, encoder = labelled.mapping, labelled.encoder
    clusters = len(mapping.clusters)
    mapped = sum(t is not None for t in mapping.cluster_terms)
    by_rules = set(extraction.by_rules)
    llm = config.labeller != "rules"
    split_rows = {split: sum(n["rows"] for n in notes if n["split"] == split) for split in SPLITS}
    patients = {split: len({s for n in notes if n["split"] == split for s in n["subjects"]}) for split in SPLITS}
    return {
        "records": {
            "listed": n_listed,
            "kept": kept,
            "dropped": dict(sorted(Counter(d["reason"] for d in dropped).items())),
            "splits": split_rows,
            "patients": patients,
            "shards": {split: len(names) for split, names in shards.items()},
            "records_with_missing_samples": sum(n["records_filled"] for n in notes),
            "samples_filled": sum(n["samples_filled"] for n in notes),
            "resampled": sum(n["resampled"] for n in notes),
            "length_fitted": sum(n["length_fitted"] for n in notes),
            "without_labels": sum(n["unlabelled"] for n in notes),
        },
        "labelling": {
            "labeller": config.labeller,
            "model": model,
            "grammar": config.grammar if llm else None,
            "rules_first": config.rules_first if llm else None,
            "distinct_statements": len(statements),
            "statements_by_rules": len(by_rules) if llm else len(statements),
            "statements_by_llm": len(statements) - len(by_rules) if llm else 0,
            "statement_occurrences": occurrences,
            "prompts_per_record": (len(statements) - len(by_rules)) / len(records) if records and llm else 0.0,
            "distinct_statements_per_record": len(statements) / len(records) if records else 0.0,
            "failed_statements": len(extraction.failures),
            "raw_entities": len(raw),
            "unique_entities": len({normalize_phrase(e["entity"]) for e in raw}),
            "uncertain_entities": sum(e["category"] == "Uncertain" for e in raw),
            "unique_entities_after_uncertainty_filter": len(labelled.kept_entities),
            "unique_entities_only_uncertain": len(labelled.uncertain_mapping.term_of),
            "records_with_uncertain_terms": sum(bool(r["uncertain_terms"]) for r in records),
            "clusters": clusters,
            "mapped_clusters": mapped,
            "mapped_share": mapped / clusters if clusters else 0.0,
            "classes": n_classes,
            "final_terms": len(label_frequency),
            "text_encoder": encoder.name if encoder is not None else None,
            "cluster_threshold": config.cluster_threshold,
            "map_threshold": config.map_threshold,
        },
        "label_frequency": label_frequency,
        **({"statement_labeller": {s: "rules" if s in by_rules else "llm" for s in statements}}
           if llm and config.rules_first else {}),
        "run": {
            "llm_prompts": extraction.llm_calls,
            "cache_hits": extraction.cache_hits,
            "retried_prompts": extraction.retried,
            "shards_reused": reused,
            "seconds": round(seconds, 2),
        },
    }


CITATION = """@misc{gow2023mimicivecg,
  title = {{MIMIC-IV-ECG}: Diagnostic Electrocardiogram Matched Subset (version 1.0)},
  author = {Gow, Brian and Pollard, Tom and Nathanson, Larry A. and Johnson, Alistair and Moody, Benjamin and
            Fernandes, Chrystinne and Greenbaum, Nathaniel and Waks, Jonathan W. and Eslami, Parastou and
            Carbonati, Tanner and Chaudhari, Ashish and Herbst, Elizabeth and Moukheiber, Dana and Berkowitz, Seth and
            Mark, Roger and Horng, Steven},
  year = {2023},
  publisher = {PhysioNet},
  doi = {10.13026/4nqg-sb35}
}

@article{goldberger2000physionet,
  title = {{PhysioBank}, {PhysioToolkit}, and {PhysioNet}: Components of a new research resource for complex physiologic
           signals},
  author = {Goldberger, Ary L. and Amaral, Luis A. N. and Glass, Leon and Hausdorff, Jeffrey M. and Ivanov, Plamen Ch.
            and Mark, Roger G. and Mietus, Joseph E. and Moody, George B. and Peng, Chung-Kang and Stanley, H. Eugene},
  journal = {Circulation},
  volume = {101},
  number = {23},
  pages = {e215--e220},
  year = {2000}
}

@inproceedings{cai2025supreme,
  title = {{SuPreME}: A Supervised Pre-training Framework for Multimodal {ECG} Representation Learning},
  author = {Cai, Mingsheng and Jiang, Jiuming and Huang, Wenhao and Liu, Che and Arcucci, Rossella},
  booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2025},
  year = {2025},
  eprint = {2502.19668},
  archivePrefix = {arXiv}
}"""


def _write_card(out: Path, class_names: list[str], stats: dict, config: BuildConfig) -> None:
    records, labelling = stats["records"], stats["labelling"]
    dropped = ", ".join(f"{reason} {count:,}" for reason, count in records["dropped"].items()) or "none"
    top = list(stats["label_frequency"].items())[:20]
    table = "\n".join(["| label | records |", "|---|---|"] + [f"| {name} | {count:,} |" for name, count in top])
    if config.labeller == "rules":
        how = (
            "Labels come from the `rules` labeller: the cardiac vocabulary (SCP-ECG, SNOMED CT, abbreviations; "
            "`builders/labelling/VOCABULARY.md`) matched in each statement, with negation and uncertainty rules "
            "(possible, probable, consider, cannot rule out, may be due to, suggests, borderline → Uncertain, dropped; "
            "\"borderline 1st degree A-V block\" gives no label, while the summary \"Borderline ECG\" is its own label). "
            f"Against a public study's reading of 546 real MIMIC-IV-ECG statements for six classes (NSR, AF, IAVB, "
            f"LBBB, RBBB, old MI) its decisions agree on {RULES_AGREEMENT['statements']:.1%} of statement-class pairs "
            f"({RULES_AGREEMENT['records']:.2%} weighted by records); the rules were written with these statements in "
            "view, so this is agreement on development data, not a held-out estimate. It is a transparent baseline, "
            "not the paper's "
            "LLM labelling; rebuild with `--labeller vllm --llm <instruct model>` for that."
        )
    else:
        decoding = ("grammar-constrained decoding (the response JSON schema compiled by xgrammar), so every complete "
                    "answer parses" if labelling["grammar"] else "free decoding (no grammar), answers parsed leniently")
        rules_first = (
            f" With `--rules-first`, the rules labeller answered the {labelling['statements_by_rules']:,} statements "
            f"whose every word the cardiac vocabulary and its rules account for, and the LLM the other "
            f"{labelling['statements_by_llm']:,} (`statement_labeller` in `stats.json` says which answered each)."
            if labelling["rules_first"] else "")
        smollm2 = LLM_AGREEMENT
        model = Path(labelling["model"]).name if Path(labelling["model"]).exists() else labelling["model"]  # no local path
        how = (
            f"Labels come from the `{config.labeller}` labeller with `{model}`: each distinct machine "
            "statement was prompted once (vocabulary-guided, few-shot, JSON output) for entities tagged Normal, "
            f"Abnormal or Uncertain, with {decoding}; Uncertain entities were dropped from the labels and the rest "
            f"mapped to standard terms (text encoder `{labelling['text_encoder']}`, cluster threshold "
            f"{config.cluster_threshold}, map threshold {config.map_threshold}). {labelling['failed_statements']:,} "
            f"statements got no valid answer and no labels.{rules_first} How far to trust an LLM's labels depends on "
            "the model: `benchmarks/bench_labelling.py --llm MODEL` measures it against a public study's reading of "
            "546 real MIMIC-IV-ECG statements for six classes (NSR, AF, IAVB, LBBB, RBBB, old MI). For scale: the "
            f"rules labeller agrees on {RULES_AGREEMENT['statements']:.1%} of statement-class pairs, the small "
            f"{smollm2['model']} on {smollm2['statements']:.1%} ({smollm2['with_rules_first']:.1%} with "
            "`--rules-first`), measured on a CPU (benchmarks/RESULTS.md)."
        )
    description = (
        "ECGs of MIMIC-IV-ECG v1.0 (12 leads, 10 s, 500 Hz) with multi-label cardiac findings extracted from their "
        "machine-written reports, for pre-training SuPreME. Derived from MIMIC-IV-ECG, Open Access under the Open "
        "Database License (ODbL 1.0); this derived database is released under the same licence."
    )
    sections = {
        "Columns": (
            "- `id`: MIMIC-IV-ECG study_id; `subject_id`: the patient (train and validation share no patient);\n"
            "- `ecg`: int16 (12, 5000) digital samples, leads I, II, III, aVR, aVL, aVF, V1–V6 (MIMIC stores aVF "
            "before aVL; reordered by name), missing samples replaced by the mean of the six neighbouring samples;\n"
            "- `adc_gain`: ADC units per mV for each lead (`ecg / adc_gain[:, None]` is mV);\n"
            "- `report`: the machine statements report_0 … report_17, one per line (records whose report has fewer "
            f"than {config.min_words} words are dropped; words are split at whitespace and \"/\", so \"Atrial "
            "flutter/fibrillation\" counts 3);\n"
            "- `labels`: positive standard terms; the `ClassLabel` names are the query list;\n"
            "- `entities`: every extracted entity with its category (Normal, Abnormal, Uncertain) and mapped standard "
            "term (empty if unmapped), for provenance;\n"
            "- `uncertain_terms`: the standard terms the report names only as Uncertain (possible, probable, consider, "
            "cannot rule out, borderline ...), which `labels` leaves out as the paper does; a term also stated "
            "definitely is a label, not listed here. `labels` names plus `uncertain_terms` is the labelling that keeps "
            "hedged findings, without prompting again;\n"
            "- `ecg_time`: acquisition time (MIMIC's shifted dates)."
        ),
        "Labelling": how,
        "Statistics": (
            f"{records['listed']:,} records listed; {records['kept']:,} kept (train {records['splits']['train']:,}, "
            f"validation {records['splits']['validation']:,}); dropped: {dropped} (each listed in `dropped.csv`). "
            f"{labelling['distinct_statements']:,} distinct statements; {labelling['raw_entities']:,} raw entities, "
            f"{labelling['unique_entities']:,} unique, {labelling['unique_entities_after_uncertainty_filter']:,} after "
            f"the uncertainty filter, {labelling['clusters']:,} clusters, {labelling['mapped_share']:.1%} mapped, "
            f"{labelling['classes']:,} query classes, {labelling['final_terms']:,} of them on written records. Full figures: `stats.json`; label frequencies: "
            f"`label_frequency.png`.\n\n{table}"
        ),
        "Use": (
            "```python\nfrom datasets import load_dataset\nds = load_dataset(\"<this folder or repo id>\")\n"
            "names = ds[\"train\"].features[\"labels\"].feature.names  # the query list\n```\n"
            "Read `ecg` through Arrow (`ds[\"train\"].data`, as SuPreME's `training/ecg_data.py` does) to keep int16: "
            "datasets' numpy/torch formatters widen it to int64. Scale to mV with `adc_gain` on the device."
        ),
        "Licence": (
            "Open Database License (ODbL) 1.0, as MIMIC-IV-ECG. Cite MIMIC-IV-ECG, PhysioNet and SuPreME (below)."
        ),
    }
    write_dataset_card(out, pretty_name="MIMIC-IV-ECG labelled for SuPreME pre-training", license="odbl",
                       citation=CITATION, features=ecg_features(class_names, EXTRA_FEATURES),
                       description=description, extra_sections=sections)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m builders.mimic_iv_ecg", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="MIMIC-IV-ECG v1.0 folder (record_list.csv, files/, ...)")
    parser.add_argument("--output", required=True, help="output folder (Parquet shards, README.md, stats.json)")
    parser.add_argument("--labeller", choices=BACKENDS, default="rules", help="entity extraction backend")
    parser.add_argument("--llm", help="model for the transformers/vllm labellers: a Hub id, a folder or (transformers) "
                                      "a .gguf file")
    parser.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER,
                        help="BERT name or folder embedding entities for deduplication/mapping")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="text encoder pooling")
    parser.add_argument("--cluster-threshold", type=float, default=0.9, help="mean cosine similarity within a cluster")
    parser.add_argument("--map-threshold", type=float, default=0.85, help="mean cosine similarity to map a cluster")
    parser.add_argument("--num-proc", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="reading processes")
    parser.add_argument("--limit", type=int, help="use only the first N records of record_list.csv")
    parser.add_argument("--min-words", type=int, default=3, help="drop reports with fewer words (split at whitespace and /)")
    parser.add_argument("--validation-fraction", type=float, default=0.05, help="share of patients in validation")
    parser.add_argument("--records-per-shard", type=int, default=4000, help="records per Parquet shard (≤ 500 MB)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="LLM answer length")
    parser.add_argument("--retries", type=int, default=2, help="extra attempts for malformed or empty LLM answers")
    parser.add_argument("--retry-failures", action="store_true", help="re-prompt statements cached as failures")
    parser.add_argument("--no-grammar", dest="grammar", action="store_false",
                        help="decode LLM answers freely instead of constraining them to the response JSON schema")
    parser.add_argument("--rules-first", action="store_true",
                        help="answer statements the cardiac vocabulary covers fully with the rules labeller and "
                             "prompt the LLM only for the others")
    engine = parser.add_argument_group("vllm labeller", "passed to vllm.LLM(...) unchanged; vLLM's CPU build refuses "
                                       "the ones that spread a model over GPUs")
    engine.add_argument("--tensor-parallel-size", type=int, help="GPUs per model replica (default: all visible)")
    engine.add_argument("--gpu-memory-utilization", type=float,
                        help="share of each GPU's memory vLLM may take (on the CPU build: of the machine's memory)")
    engine.add_argument("--max-model-len", type=int, help="context length (default: the model's)")
    engine.add_argument("--vllm-option", action="append", default=[], metavar="KEY=VALUE",
                        help="any other vllm.LLM keyword (VALUE read as JSON when it parses, else a string); repeatable")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the finished folder to this dataset repo")
    args = vars(parser.parse_args(argv))
    options = {key: args.pop(key) for key in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len")}
    options = {key: value for key, value in options.items() if value is not None}
    for item in args.pop("vllm_option"):
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--vllm-option {item}: expected KEY=VALUE")
        options[key.replace("-", "_")] = _option_value(value)
    if options and args["labeller"] != "vllm":
        names = ", ".join(f"--{key.replace('_', '-')}" for key in options)
        parser.error(f"{names}: options of --labeller vllm, not of --labeller {args['labeller']}")
    config = BuildConfig(**args, vllm_options=options)
    try:
        stats = build(config)
    except (ModelLoadError, EngineError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    records = stats["records"]
    print(f"{records['kept']:,} of {records['listed']:,} records written to {config.output} "
          f"(dropped: {records['dropped'] or 'none'}); {stats['labelling']['final_terms']} labels; "
          f"{stats['run']['llm_prompts']} LLM prompts, {stats['run']['cache_hits']} cached")
    return stats


def _option_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


if __name__ == "__main__":
    main()
