"""Deduplicate extracted entities and map them to the vocabulary's standard terms (paper §3.1, appendix A.6).

1. An entity whose normalised text is a vocabulary surface form maps to that term directly (similarity 1): exact
   names never go through clustering, so near-neighbours in embedding space ("left" vs "right bundle branch block")
   cannot be merged.
2. The other entities are embedded with the text encoder ([CLS] of MedCPT-Query-Encoder by default; any BERT folder),
   clustered by average-linkage on cosine similarity (clusters join while their mean similarity ≥ `cluster_threshold`),
   and each cluster maps to the term whose surface forms are, on average over the cluster's members, most similar,
   when that average similarity ≥ `map_threshold`.
3. Unmapped clusters give no label (their entities stay in each record's `entities` for provenance).

`label_statements` applies this to a labeller's output: the definite (Normal/Abnormal) entities are deduplicated and
mapped as above, and give the labels; entities that appear only as Uncertain are mapped in a separate pass (so a
hedged mention can never change how definite ones cluster) and give each statement's `uncertain_terms`, kept so that
labels can be rebuilt under another uncertainty policy without prompting again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .vocabulary import Vocabulary, normalize_phrase

DEFAULT_TEXT_ENCODER = "ncbi/MedCPT-Query-Encoder"


class TextEncoder:
    """Unit-norm sentence embeddings (n, hidden_size) from a BERT-family encoder, [CLS] or mean pooling."""

    def __init__(self, path_or_id: str = DEFAULT_TEXT_ENCODER, pooling: str = "cls", batch_size: int = 64,
                 max_length: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.name, self.pooling, self.batch_size, self.max_length = str(path_or_id), pooling, batch_size, max_length
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        self.model = AutoModel.from_pretrained(path_or_id).to(self.device).eval()
        self._embedded: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), hidden_size) unit vectors; each text is embedded once per encoder (mapping passes share the
        vocabulary's surface forms)."""
        import torch

        todo = sorted({t for t in texts if t not in self._embedded}, key=len)  # similar lengths batch with little padding
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            vectors = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
            self._embedded.update(zip(chunk, vectors, strict=True))
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return np.stack([self._embedded[t] for t in texts])


@dataclass
class Mapping:
    """`term_of[entity]`: the standard term of each (normalised) entity, None when unmapped; `clusters`: entity lists;
    `cluster_terms`: the term each cluster maps to (None if unmapped); `cluster_scores`: its mean similarity."""

    term_of: dict[str, str | None]
    clusters: list[list[str]]
    cluster_terms: list[str | None]
    cluster_scores: list[float]


def map_entities(entities: list[str], vocabulary: Vocabulary, encoder: TextEncoder | None = None, *,
                 cluster_threshold: float = 0.9, map_threshold: float = 0.85) -> Mapping:
    """Map unique entity strings to standard terms (see the module docstring). Without an encoder, only exact
    surface forms map."""
    names = sorted({normalize_phrase(e) for e in entities} - {""})
    clusters: list[list[str]] = []
    cluster_terms: list[str | None] = []
    scores: list[float] = []
    exact: dict[str, list[str]] = {}
    rest = []
    for name in names:
        term = vocabulary.synonyms.get(name)
        if term is None:
            rest.append(name)
        else:
            exact.setdefault(term, []).append(name)
    for term, members in sorted(exact.items()):
        clusters.append(members)
        cluster_terms.append(term)
        scores.append(1.0)
    if rest and encoder is None:
        for name in rest:
            clusters.append([name])
            cluster_terms.append(None)
            scores.append(0.0)
    elif rest:
        forms = sorted(vocabulary.forms)
        form_terms = np.array([vocabulary.forms[f] for f in forms])
        terms = sorted({str(term) for term in form_terms})  # plain str: numpy's reach the dataset card and YAML
        embedded = encoder.encode(rest + forms)
        entity_vectors, form_vectors = embedded[: len(rest)], embedded[len(rest):]
        similarity = entity_vectors @ form_vectors.T  # (entities, surface forms)
        # best surface form of each term, per entity: (entities, terms)
        per_term = np.stack([similarity[:, form_terms == t].max(axis=1) for t in terms], axis=1)
        for members in _cluster(entity_vectors, cluster_threshold):
            mean = per_term[members].mean(axis=0)
            best = int(mean.argmax())
            clusters.append([rest[i] for i in members])
            cluster_terms.append(terms[best] if mean[best] >= map_threshold else None)
            scores.append(float(mean[best]))
    term_of = {name: term for members, term in zip(clusters, cluster_terms, strict=True) for name in members}
    return Mapping(term_of, clusters, cluster_terms, scores)


def _cluster(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Average-linkage clusters of unit vectors whose mean pairwise cosine similarity stays ≥ `threshold`."""
    if len(vectors) == 1:
        return [[0]]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    distances = np.clip(pdist(vectors.astype(np.float64), metric="cosine"), 0.0, 2.0)
    labels = fcluster(linkage(distances, method="average"), t=1.0 - threshold, criterion="distance")
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


@dataclass
class StatementLabels:
    """Per distinct statement: `entities` ([{"entity", "category", "term"}], term "" when unmapped), `terms` (the
    standard terms it asserts) and `uncertain_terms` (those it names only as Uncertain). `mapping` maps the definite
    entities (`kept_entities`), `uncertain_mapping` the entities seen only as Uncertain; `encoder` is the text encoder
    used, None when every entity was a vocabulary surface form."""

    entities: dict[str, list[dict[str, str]]]
    terms: dict[str, set[str]]
    uncertain_terms: dict[str, set[str]]
    mapping: Mapping
    uncertain_mapping: Mapping
    kept_entities: list[str]
    encoder: TextEncoder | None


def label_statements(entities_of: dict[str, list[dict[str, str]]], vocabulary: Vocabulary,
                     load_encoder: Callable[[int], TextEncoder], *, cluster_threshold: float = 0.9,
                     map_threshold: float = 0.85) -> StatementLabels:
    """Standard terms of each statement from its extracted entities (see the module docstring). `load_encoder(n)` is
    called only when `n` > 0 entities are not vocabulary surface forms."""
    def names(definite: bool) -> set[str]:
        return {normalize_phrase(e["entity"]) for entities in entities_of.values() for e in entities
                if (e["category"] != "Uncertain") == definite} - {""}

    kept = sorted(names(definite=True))
    hedged_only = sorted(names(definite=False) - set(kept))
    inexact = [e for e in kept + hedged_only if vocabulary.synonyms.get(e) is None]
    encoder = load_encoder(len(inexact)) if inexact else None
    options = {"cluster_threshold": cluster_threshold, "map_threshold": map_threshold}
    mapping = map_entities(kept, vocabulary, encoder, **options)
    uncertain_mapping = map_entities(hedged_only, vocabulary, encoder, **options)
    term_of = {**uncertain_mapping.term_of, **mapping.term_of}
    entities, terms, uncertain = {}, {}, {}
    for statement, extracted in entities_of.items():
        rows = [{"entity": e["entity"], "category": e["category"], "term": term_of.get(normalize_phrase(e["entity"])) or ""}
                for e in extracted]
        entities[statement] = rows
        terms[statement] = {r["term"] for r in rows if r["term"] and r["category"] != "Uncertain"}
        uncertain[statement] = {r["term"] for r in rows if r["term"] and r["category"] == "Uncertain"} - terms[statement]
    return StatementLabels(entities, terms, uncertain, mapping, uncertain_mapping, kept, encoder)
