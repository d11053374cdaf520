"""`pipeline("zero-shot-ecg-classification", model=..., trust_remote_code=True)`: free-text queries scored on ECGs."""

from __future__ import annotations

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

logger = logging.get_logger(__name__)

TASK = "zero-shot-ecg-classification"
# Said wherever such a model scores queries (this pipeline, the `supreme` CLI).
QUERY_LIST_NOTE = (
    "this model's queries attend to each other (fusion_query_attention='all', the paper's decoder): each score depends "
    "on the whole list of queries it is asked with, so score one fixed list (e.g. a benchmark's classes)"
)


class ZeroShotECGClassificationPipeline(Pipeline):
    """Scores one ECG (or a list of them) against `candidate_labels`, free-text cardiac queries.

    Each query gets its own probability (sigmoid of its logit): SuPreME is multi-label, so the scores of one ECG do not
    sum to 1. With the default `fusion_query_attention="self"` adding a query never changes another's score; a model
    with `"all"` (the paper's decoder) scores each query in the context of the whole list, and the pipeline warns so
    when it is built. Everything computed from the labels alone is cached once per list and reused for every ECG.

    Example:

    ```python
    >>> classifier = pipeline("zero-shot-ecg-classification", model="path/to/supreme", trust_remote_code=True)
    >>> classifier("records500/00000/00001_hr", candidate_labels=["atrial fibrillation", "sinus rhythm"])
    [{'label': 'sinus rhythm', 'score': 0.93}, {'label': 'atrial fibrillation', 'score': 0.02}]
    ```

    Inputs are anything [`SupremeFeatureExtractor`] accepts: a path to a WFDB record or CPSC `.mat`, a `wfdb.Record`,
    or a `(leads, samples)` array in mV with `sampling_rate=` and `lead_names=`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "fusion_query_attention", "self") == "all":  # older checkpoints: "self"
            logger.warning(QUERY_LIST_NOTE)
        self._cached_labels: tuple[str, ...] | None = None
        self._cached_states = None

    def __call__(self, ecg, candidate_labels: str | list[str] | None = None, **kwargs):
        """Returns, per ECG, a list of `{"label", "score"}` sorted by decreasing score."""
        return super().__call__(ecg, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, sampling_rate=None, lead_names=None, **kwargs):
        preprocess_params = {}
        if candidate_labels is not None:
            preprocess_params["candidate_labels"] = candidate_labels
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        if lead_names is not None:
            preprocess_params["lead_names"] = lead_names
        return preprocess_params, {}, {}

    def preprocess(self, ecg, candidate_labels=None, sampling_rate=None, lead_names=None):
        labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels or [])
        if not labels:
            raise ValueError("give at least one query in candidate_labels")
        inputs = self.processor(ecg=ecg, sampling_rate=sampling_rate, lead_names=lead_names, return_tensors="pt")
        return {"input_values": inputs["input_values"], "candidate_labels": labels}

    def _query_states(self, labels: tuple[str, ...]):
        """Everything computed from the labels alone, kept until the labels change."""
        if labels != self._cached_labels:
            if hasattr(self.model, "select_query_states"):  # an ONNX export: states cached for its exported queries
                self._cached_states = self.model.select_query_states(list(labels))
            else:
                query_embeds = self.model.encode_queries(
                    list(labels), self.processor.tokenizer, max_length=self.processor.query_max_length
                )
                self._cached_states = self.model.get_query_states(query_embeds)
            self._cached_labels = labels
        return self._cached_states

    def _forward(self, model_inputs):
        labels = model_inputs["candidate_labels"]
        query_states = self._query_states(tuple(labels))
        logits = self.model(input_values=model_inputs["input_values"], query_states=query_states).logits
        return {"logits": logits, "candidate_labels": labels}

    def postprocess(self, model_outputs):
        scores = torch.sigmoid(model_outputs["logits"][0].float()).tolist()
        ranked = sorted(zip(model_outputs["candidate_labels"], scores, strict=True), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked]


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ZeroShotECGClassificationPipeline, pt_model=AutoModel)
