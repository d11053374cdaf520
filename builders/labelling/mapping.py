"""Deduplicate extracted entities and map them to the vocabulary's standard terms (paper §3.1, appendix A.6).

1. An entity whose normalised text is a vocabulary surface form maps to that term directly (similarity 1): exact
   names never go through clustering, so near-neighbours in embedding space ("left" vs "right bundle branch block")
   cannot be merged.
2. The other entities are embedded with the text encoder ([CLS] of MedCPT-Query-Encoder by default; any BERT folder),
   clustered by average-linkage on cosine similarity (clusters join while their mean similarity ≥ `cluster_threshold`),
   and each cluster maps to the term whose surface forms are, on average over the cluster's members, most similar,
   when that average similarity ≥ `map_threshold`.
3. Unmapped clusters give no label (their entities stay in each record's `entities` for provenance).
"""

from __future__ import annotations

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

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with little padding
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer([texts[i] for i in order[start:start + self.batch_size]], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        if not chunks:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        embedded = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
        embedded[order] = np.concatenate(chunks)
        return embedded


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
        terms = sorted(set(form_terms))
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
