"""The entity-extraction prompt (vocabulary-guided, few-shot, after the SuPreME paper's appendix A.3) and its parser.

One prompt per distinct machine statement. The model answers JSON: {"entities": [{"entity", "category"}]}, each
category Normal, Abnormal or Uncertain. `RESPONSE_SCHEMA` is the same contract as a JSON schema, for engines with
structured decoding (vLLM); `parse_response` enforces it on any text, so engines without it share the same path.
"""

from __future__ import annotations

import json
import re

from .vocabulary import Vocabulary

CATEGORIES = ("Normal", "Abnormal", "Uncertain")
RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "entity": {"type": "string", "minLength": 1, "maxLength": 120},
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


def render_plain(messages: list[dict[str, str]]) -> str:
    """A chat as plain text, for tokenizers without a chat template (base models, the tiny test model)."""
    parts = []
    for message in messages:
        if message["role"] == "system":
            parts.append(message["content"])
        elif message["role"] == "user":
            parts.append(message["content"])
        else:
            parts.append(f"Answer: {message['content']}")
    return "\n\n".join(parts) + "\n\nAnswer: "


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
