"""builders.labelling: the rules labeller, vocabulary, prompt/parse, cache, LLM backends and entity mapping."""

import json
import sys
from pathlib import Path

import pytest

from builders.labelling.cache import ResponseCache, cache_key
from builders.labelling.extraction import LLMBackend, make_extractor
from builders.labelling.mapping import TextEncoder, map_entities
from builders.labelling.prompt import build_messages, parse_response
from builders.labelling.rules import RULES_AGREEMENT, RulesExtractor, agreement_with_study
from builders.labelling.vocabulary import VOCABULARY_FILE, build_vocabulary, load_vocabulary, normalize_phrase
from builders.mimic_iv_ecg import BuildConfig, build

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    result = agreement_with_study(STATEMENTS, rules)
    assert set(result) == {"NSR", "AF", "IAVB", "LBBB", "RBBB", "MI_OLD", "overall"}
    assert round(result["overall"]["agreement"], 4) == RULES_AGREEMENT["statements"]
    assert round(result["overall"]["record_agreement"], 4) == RULES_AGREEMENT["records"]
    assert result["AF"]["agreement"] > 0.95 and result["MI_OLD"]["agreement"] > 0.95


def test_vocabulary_file_is_current(shared_data):
    rows = build_vocabulary(shared_data)
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


def test_vllm_backend_explains_how_to_install():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install -e '\.\[label\]'"):
            make_extractor("vllm", "meta-llama/Llama-3.1-70B-Instruct")
    else:
        pytest.skip("vllm is installed: the engine itself needs GPUs and weights")
    with pytest.raises(ValueError, match="--llm"):
        make_extractor("transformers")


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


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory, minilm_path):
    """A random 1-layer Llama with the real BERT WordPiece tokenizer and a chat template: its answers are nonsense."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant> {% endif %}")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_transformers_labeller_survives_nonsense_and_caches(tiny_causal_lm, tmp_path):
    fixture = build_mimic_fixture(tmp_path / "mimic")
    out = tmp_path / "out"
    config = BuildConfig(input=str(fixture.root), output=str(out), labeller="transformers", llm=str(tiny_causal_lm),
                         limit=6, max_new_tokens=6, retries=1, num_proc=1)
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
