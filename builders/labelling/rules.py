"""The `rules` labeller: cardiac-vocabulary matching with negation and uncertainty rules, no model at all.

A machine statement ("Sinus rhythm with borderline 1st degree A-V block") is normalised, split into words and clause
boundaries (`,` `;` `:` `.` a spaced ` - `, and the words "with", "but", "though"), and the longest vocabulary surface
form is matched at each position. Each match becomes an entity tagged like the LLM prompt asks:

- **Uncertain** when, in its clause, a hedge precedes it ("possible", "probable", "consider", "cannot rule out",
  "may be due to", "suggests", "borderline", ...), a hedge phrase follows it ("cannot be excluded", "is possible"), or
  it is one side of an "X or Y" alternative. Uncertain entities are dropped from the labels, as in the paper.
- **Borderline** findings ("borderline 1st degree A-V block", "borderline prolonged QT") are Uncertain: the machine
  says the criteria are only marginally met, and the paper keeps only definite findings. The summary statement
  "Borderline ECG" is itself a term (the ECG's overall class), labelled as stated.
- **Negated** findings ("no ST elevation", "... is no longer present", "has replaced atrial fibrillation") yield no
  entity.
- Infarcts: an "acute"/"recent" qualifier anywhere after the infarct in the statement (or before it in its clause) turns
  it into "acute myocardial infarction", Uncertain if that qualifier is hedged ("inferior infarct - possibly acute");
  "old" adds "old myocardial infarction"; "age undetermined" keeps the located infarct.
- Otherwise **Normal** for normal findings (sinus rhythm, normal ECG) and **Abnormal** for the rest.

`covers(statement)` says whether these rules account for every word of a statement (then an LLM has nothing to add:
`--rules-first` prompts only the others). `study_agreement.agreement_with_study` scores the rules' decisions against
how a public study read 546 real MIMIC-IV-ECG statements (`tests/data/mimic_statements.jsonl`) for six classes; the
figures are in the dataset card and benchmarks/RESULTS.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .vocabulary import _SPELLING, Vocabulary, load_vocabulary

_MAX_WORDS = 10
_BOUNDARY = "|"
_BOUNDARY_WORDS = {"with", "but", "though", "although", "however", "while"}
_HEDGE_BEFORE = [
    "possible", "possibly", "probable", "probably", "consider", "considered", "cannot rule out", "can not rule out",
    "cannot exclude", "rule out", "r o", "may be", "might be", "could be", "suggest", "suggests", "suggesting",
    "suggestive of", "suspect", "suspected", "suspicious for", "questionable", "likely", "borderline", "versus", "vs",
    "compatible with", "query", "indeterminate", "undetermined",
]
_HEDGE_AFTER = [
    "cannot be excluded", "cannot be ruled out", "can not be ruled out", "not excluded", "not ruled out", "is possible",
    "is probable", "is likely", "is suspected", "is questionable", "may be present", "versus",
]
_NEGATION_BEFORE = ["no", "not", "without", "absent", "absence of", "negative for", "no evidence of", "has replaced",
                    "resolution of", "resolved"]
_NEGATION_AFTER = ["no longer present", "no longer seen", "no longer evident", "is absent", "not present", "not seen",
                   "has resolved", "resolved", "has been replaced", "was replaced", "is replaced", "has disappeared"]
_ACUTE = {"acute", "recent", "evolving", "hyperacute"}
_MI = "myocardial infarction"
# Words whose meaning the rules handle (cues, qualifiers, clause words) or that carry none: see `covers`.
_INTERPRETED_WORDS = ({_BOUNDARY, "old", "age", "and", "of", "the", "a", "an", "is", "are", "be", "by", "to", "due",
                       "for", "in", "or"} | _BOUNDARY_WORDS | _ACUTE
                      | {word for cue in _HEDGE_BEFORE + _HEDGE_AFTER + _NEGATION_BEFORE + _NEGATION_AFTER
                         for word in cue.split()})


@dataclass
class _Mention:
    start: int
    end: int
    term: str
    status: str = "definite"  # definite | uncertain | negated


def tokenize(statement: str) -> list[str]:
    """Words of the normalised statement, with `|` at clause boundaries."""
    text = statement.lower()
    text = re.sub(r"(^|\s)-+(\s|$)", " | ", text)  # a spaced dash separates clauses; a hyphen joins words
    text = re.sub(r"[,;:]|\.(\s|$)", " | ", text)
    for pattern, replacement in _SPELLING:
        text = re.sub(pattern, replacement, text)
    return [t.strip("'") for t in re.findall(r"[a-z0-9']+|\|", text) if t.strip("'")]


class RulesExtractor:
    """Entities of one statement from the vocabulary and the rules above; `extract` is the labeller interface."""

    backend = "rules"

    def __init__(self, vocabulary: Vocabulary | None = None):
        self.vocabulary = vocabulary or load_vocabulary()
        self.model = "cardiac-vocabulary"
        self._forms = {tuple(form.split()): term for form, term in self.vocabulary.synonyms.items()}

    def extract(self, statement: str) -> list[dict[str, str]]:
        """[{"entity": standard term, "category": "Normal" | "Abnormal" | "Uncertain"}, ...] for one statement."""
        tokens = tokenize(statement)
        mentions = self._match(tokens)
        covered = {i for m in mentions for i in range(m.start, m.end)}
        boundaries = [i for i, t in enumerate(tokens) if t == _BOUNDARY or (
            t in _BOUNDARY_WORDS and i not in covered and not (t == "with" and i and tokens[i - 1] in {
                "compatible", "consistent"}))]
        extra: list[_Mention] = []
        for k, mention in enumerate(mentions):
            clause_start = max([b + 1 for b in boundaries if b < mention.start], default=0)
            clause_end = min([b for b in boundaries if b >= mention.end], default=len(tokens))
            before = tokens[clause_start:mention.start]
            after = tokens[mention.end:clause_end]
            if _ends_with_cue(before, _NEGATION_BEFORE) or _contains(after, _NEGATION_AFTER):
                mention.status = "negated"
            elif (_has_cue(before, _HEDGE_BEFORE) or _contains(after, _HEDGE_AFTER) or (before and before[-1] == "or")
                  or (after[:1] == ["or"] and any(m.start == mention.end + 1 for m in mentions))):
                mention.status = "uncertain"
            if mention.term.endswith(_MI) and mention.status != "negated":
                extra += self._infarct_qualifiers(tokens, mentions, k, clause_start, boundaries)
        entities: dict[str, str] = {}
        for mention in mentions + extra:
            if mention.status == "negated":
                continue
            category = "Uncertain" if mention.status == "uncertain" else (
                "Normal" if mention.term in self.vocabulary.normal else "Abnormal")
            if entities.get(mention.term) in (None, "Uncertain"):  # a definite mention outranks a hedged one
                entities[mention.term] = category
        return [{"entity": term, "category": category} for term, category in entities.items()]

    def labels(self, statement: str) -> set[str]:
        """The standard terms the statement asserts (its entities less the Uncertain ones)."""
        return {e["entity"] for e in self.extract(statement) if e["category"] != "Uncertain"}

    def covers(self, statement: str) -> bool:
        """True when every word of the statement is part of a vocabulary term or a word the rules interpret (hedges,
        negations, infarct qualifiers, clause words such as "with", "and", "of"): nothing is left for an LLM to read.
        Any other word (a lead name, a rate, an unlisted finding) leaves the statement to the LLM."""
        tokens = tokenize(statement)
        inside = {i for m in self._match(tokens) for i in range(m.start, m.end)}
        return bool(inside) and all(i in inside or t in _INTERPRETED_WORDS for i, t in enumerate(tokens))

    def _match(self, tokens: list[str]) -> list[_Mention]:
        mentions, i = [], 0
        while i < len(tokens):
            for n in range(min(_MAX_WORDS, len(tokens) - i), 0, -1):
                term = self._forms.get(tuple(tokens[i:i + n]))
                if term is not None:
                    mentions.append(_Mention(i, i + n, term))
                    i += n
                    break
            else:
                i += 1
        return mentions

    def _infarct_qualifiers(self, tokens, mentions, k, clause_start, boundaries) -> list[_Mention]:
        """Acute/recent and old qualifiers of the infarct mentions[k] (see the module docstring)."""
        mention = mentions[k]
        next_infarct = next((m.start for m in mentions[k + 1:] if m.term.endswith(_MI)), len(tokens))
        window = list(range(clause_start, mention.start)) + list(range(mention.end, next_infarct))
        extra = []
        for i in window:
            if tokens[i] in _ACUTE:
                start = max([b + 1 for b in boundaries if b < i], default=0)
                hedged = _has_cue(tokens[start:i], _HEDGE_BEFORE)
                mention.term = "acute " + _MI
                if hedged:
                    mention.status = "uncertain"
                return extra
        if "old" in (tokens[i] for i in window):
            extra.append(_Mention(mention.start, mention.end, "old " + _MI, mention.status))
        return extra

    def __call__(self, statement: str) -> list[dict[str, str]]:
        return self.extract(statement)


def _has_cue(words: list[str], cues: list[str]) -> bool:
    text = " " + " ".join(words) + " "
    return any(f" {cue} " in text for cue in cues)


def _ends_with_cue(words: list[str], cues: list[str]) -> bool:
    """Negation applies to what directly follows it ("no st elevation"), allowing a couple of modifiers between."""
    text = " ".join(words[-4:])
    return any(re.search(rf"(^| ){re.escape(cue)}( [a-z0-9]+){{0,2}}$", text) for cue in cues)


def _contains(words: list[str], cues: list[str]) -> bool:
    return _has_cue(words, cues)


# `study_agreement.agreement_with_study` on tests/data/mimic_statements.jsonl (tests/test_labelling.py keeps these
# current).
RULES_AGREEMENT = {"statements": 0.9954, "records": 0.9996}
