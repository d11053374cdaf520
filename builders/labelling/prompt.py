"""The entity-extraction prompt (vocabulary-guided, few-shot, after the SuPreME paper's appendix A.3) and its parser.

One prompt per distinct machine statement. The model answers JSON: {"entities": [{"entity", "category"}]}, each
category Normal, Abnormal or Uncertain. `RESPONSE_SCHEMA` is the same contract as a JSON schema: both LLM backends
compile it into a grammar (xgrammar; compact separators, `", "` and `": "`, as the few-shot answers are written), so
that a grammar-constrained answer parses by construction. `parse_response` enforces the contract on any text, for
engines or runs with the grammar off.

The schema bounds the answer (at most `MAX_ENTITIES` entities of at most `MAX_ENTITY_CHARS` characters), so a small
model cannot loop through an endless list; under the grammar an answer can still fail only by hitting the new-token
limit (256 by default; eight 62-character clinical terms take 189 tokens with SmolLM2's tokenizer), and such a
failure is retried and counted like any other.
"""

from __future__ import annotations

import json
import re

from .vocabulary import Vocabulary

CATEGORIES = ("Normal", "Abnormal", "Uncertain")
MAX_ENTITIES, MAX_ENTITY_CHARS = 8, 64  # a machine statement names a handful of findings in a few words each
RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "maxItems": MAX_ENTITIES,
            "items": {
                "type": "object",
                "properties": {
                    "entity": {"type": "string", "minLength": 1, "maxLength": MAX_ENTITY_CHARS},
                    "category": {"type": "string", "enum": list(CATEGORIES)},
                },
                "required": ["entity", "category"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["entities"],
    "additionalProperties": False,
}

_INSTRUCTIONS = """You read the statements that ECG machines print on 12-lead ECG reports and list the cardiac findings \
each statement names.

Rules:
1. List every finding (rhythm, conduction, axis, hypertrophy, ischemia, infarction, repolarisation, ectopy, summary).
2. Name each finding with the matching standard term from the vocabulary below; if none matches, use a short, \
lower-case clinical phrase. Expand abbreviations (LVH -> left ventricular hypertrophy).
3. Tag each finding:
   - "Normal": a normal finding (sinus rhythm, normal ECG);
   - "Abnormal": an abnormality the statement asserts;
   - "Uncertain": a hedged finding (possible, probable, consider, cannot rule out, may be due to, suggests, \
borderline) or one of several alternatives ("X or Y").
4. Leave out findings the statement says are absent or resolved.
5. Answer with JSON only, no prose: {"entities": [{"entity": "<term>", "category": "Normal|Abnormal|Uncertain"}]}

Vocabulary of standard terms:
"""

FEW_SHOT = [
    ("Sinus rhythm with borderline 1st degree A-V block",
     [("sinus rhythm", "Normal"), ("first degree av block", "Uncertain")]),
    ("Probable atrial fibrillation with rapid ventricular response",
     [("atrial fibrillation", "Uncertain"), ("rapid ventricular response", "Uncertain")]),
    ("Inferior infarct, old", [("inferior myocardial infarction", "Abnormal"), ("old myocardial infarction", "Abnormal")]),
    ("QRS changes V3/V4 may be due to LVH but cannot rule out anterior infarct",
     [("left ventricular hypertrophy", "Uncertain"), ("anterior myocardial infarction", "Uncertain")]),
    ("RBBB with left anterior fascicular block",
     [("right bundle branch block", "Abnormal"), ("left anterior fascicular block", "Abnormal")]),
]


def _answer(entities) -> str:
    return json.dumps({"entities": [{"entity": e, "category": c} for e, c in entities]})


def build_messages(statement: str, vocabulary: Vocabulary) -> list[dict[str, str]]:
    """Chat messages for one statement: instructions + vocabulary, the few-shot turns, then the statement."""
    messages = [{"role": "system", "content": _INSTRUCTIONS + "; ".join(vocabulary.terms)}]
    for example, entities in FEW_SHOT:
        messages.append({"role": "user", "content": f"Statement: {example}"})
        messages.append({"role": "assistant", "content": _answer(entities)})
    messages.append({"role": "user", "content": f"Statement: {statement}"})
    return messages


def parse_response(text: str) -> list[dict[str, str]] | None:
    """Entities from a model's answer, or None when it holds no valid JSON in the contract.

    Tolerates code fences and prose around the JSON, a bare list instead of {"entities": [...]}, and any case of the
    category; drops items without a non-empty entity or with an unknown category.
    """
    text = re.sub(r"```(?:json)?", "", text or "")
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    items = value.get("entities") if isinstance(value, dict) else value
    if not isinstance(items, list):
        return None
    categories = {c.lower(): c for c in CATEGORIES}
    entities = []
    for item in items:
        if not isinstance(item, dict):
            continue
        entity = str(item.get("entity", "")).strip().lower()
        category = categories.get(str(item.get("category", "")).strip().lower())
        if entity and category:
            entities.append({"entity": entity, "category": category})
    return entities
