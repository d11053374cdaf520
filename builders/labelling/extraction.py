"""Entity extraction behind one interface, three backends: `rules`, `transformers`, `vllm`.

`extractor.extract_all(statements, cache)` returns an `ExtractionResult` whatever the backend. The two LLM backends
share everything (prompt, parsing, cache, retries, failure counting) and differ only in `generate`, the call that turns
chat conversations into texts:

- `transformers`: any local causal LM (`AutoModelForCausalLM`), batched `generate`, for small models and CPUs;
- `vllm`: vLLM's offline engine, tensor-parallel over the visible GPUs, JSON-schema structured decoding; imported
  only when chosen (`pip install -e '.[label]'`).

Attempt 0 decodes greedily; a malformed or empty answer is retried with seeded sampling (temperature 0.7, seed =
attempt), and after `retries` more attempts the statement is recorded as a failure: it gets no entities, the build
goes on, and the statistics count it. Every outcome is cached, so a rerun sends no prompt already answered
(`retry_failures=True` re-prompts the failures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .cache import ResponseCache, cache_key
from .prompt import RESPONSE_SCHEMA, build_messages, parse_response, render_plain
from .rules import RulesExtractor
from .vocabulary import Vocabulary, load_vocabulary

BACKENDS = ("rules", "transformers", "vllm")


@dataclass
class ExtractionResult:
    """`entities[statement]`: [{"entity", "category"}] (empty for failures)."""

    entities: dict[str, list[dict[str, str]]]
    failures: list[str] = field(default_factory=list)
    llm_calls: int = 0
    cache_hits: int = 0
    retried: int = 0


class RulesBackend:
    """The rules labeller (builders/labelling/rules.py) behind the common interface; nothing to cache."""

    backend = "rules"

    def __init__(self, vocabulary: Vocabulary | None = None):
        self.rules = RulesExtractor(vocabulary)
        self.model = self.rules.model

    def extract_all(self, statements: list[str], cache: ResponseCache | None = None,
                    retry_failures: bool = False, progress: Callable[[int], None] | None = None) -> ExtractionResult:
        return ExtractionResult({s: self.rules.extract(s) for s in statements})


class LLMBackend:
    """Prompting, parsing, caching and retrying; subclasses implement `generate` only."""

    backend = "llm"

    def __init__(self, model: str, vocabulary: Vocabulary | None = None, *, max_new_tokens: int = 256,
                 batch_size: int = 16, retries: int = 2):
        self.model = model
        self.vocabulary = vocabulary or load_vocabulary()
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.retries = retries

    def generate(self, conversations: list[list[dict[str, str]]], attempt: int) -> list[str]:
        """One answer text per conversation; attempt 0 greedy, later attempts sampled with seed `attempt`."""
        raise NotImplementedError

    def extract_all(self, statements: list[str], cache: ResponseCache | None = None,
                    retry_failures: bool = False, progress: Callable[[int], None] | None = None) -> ExtractionResult:
        result = ExtractionResult({})
        pending = []
        for statement in statements:
            messages = build_messages(statement, self.vocabulary)
            key = cache_key(self.backend, self.model, messages)
            entry = cache.get(key) if cache is not None else None
            if entry is not None and (entry["ok"] or not retry_failures):
                result.cache_hits += 1
                self._record(result, statement, entry)
            else:
                pending.append((statement, messages, key))
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start:start + self.batch_size]
            entries = self._prompt_batch(batch, result)
            if cache is not None:
                cache.put_many(entries)  # on disk before the next batch: a crash loses at most one batch
            for (statement, _, _), entry in zip(batch, entries, strict=True):
                self._record(result, statement, entry)
            if progress is not None:
                progress(len(batch))
        return result

    def _prompt_batch(self, batch, result: ExtractionResult) -> list[dict]:
        entries = [{"key": key, "backend": self.backend, "model": self.model, "statement": statement,
                    "responses": [], "entities": None, "ok": False} for statement, _, key in batch]
        todo = list(range(len(batch)))
        for attempt in range(self.retries + 1):
            if not todo:
                break
            if attempt:
                result.retried += len(todo)
            texts = self.generate([batch[i][1] for i in todo], attempt)
            result.llm_calls += len(todo)
            still = []
            for i, text in zip(todo, texts, strict=True):
                entries[i]["responses"].append(text)
                entities = parse_response(text)
                if entities:  # malformed (None) and empty ([]) answers are retried
                    entries[i]["entities"], entries[i]["ok"] = entities, True
                else:
                    still.append(i)
            todo = still
        return entries

    @staticmethod
    def _record(result: ExtractionResult, statement: str, entry: dict) -> None:
        result.entities[statement] = entry["entities"] or []
        if not entry["ok"]:
            result.failures.append(statement)


class TransformersBackend(LLMBackend):
    """Any local causal LM through transformers' `generate` (CUDA when available, else CPU)."""

    backend = "transformers"

    def __init__(self, model: str, vocabulary: Vocabulary | None = None, **kwargs):
        super().__init__(model, vocabulary, **kwargs)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"  # generation continues from the right end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.lm = AutoModelForCausalLM.from_pretrained(model, dtype="auto").to(self.device).eval()

    def render(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return render_plain(messages)

    def generate(self, conversations, attempt):
        import torch

        texts = [self.render(messages) for messages in conversations]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        # only what every causal LM takes (BERT-style tokenizers also return token_type_ids)
        inputs = {k: encoded[k].to(self.device) for k in ("input_ids", "attention_mask")}
        sampling = {"do_sample": True, "temperature": 0.7, "top_p": 0.95} if attempt else {"do_sample": False}
        if attempt:
            torch.manual_seed(attempt)
        with torch.no_grad():
            output = self.lm.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class VLLMBackend(LLMBackend):
    """vLLM's offline engine: chat template, JSON-schema structured decoding, tensor-parallel over all visible GPUs."""

    backend = "vllm"

    def __init__(self, model: str, vocabulary: Vocabulary | None = None, *, tensor_parallel_size: int | None = None,
                 batch_size: int = 512, **kwargs):
        super().__init__(model, vocabulary, batch_size=batch_size, **kwargs)
        try:
            import vllm
        except ImportError as error:
            raise ImportError("the vllm labeller needs vLLM: pip install -e '.[label]'") from error
        import torch

        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size or max(torch.cuda.device_count(), 1),
                            enable_prefix_caching=True)  # every prompt shares the long instruction prefix

    def generate(self, conversations, attempt):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(temperature=0.7 if attempt else 0.0, top_p=0.95 if attempt else 1.0, seed=attempt,
                                max_tokens=self.max_new_tokens,
                                structured_outputs=StructuredOutputsParams(json=RESPONSE_SCHEMA))
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


def make_extractor(backend: str, model: str | None = None, vocabulary: Vocabulary | None = None, **kwargs):
    """The extractor for `backend` ("rules", "transformers" or "vllm"); LLM backends need `model` (name or folder)."""
    if backend == "rules":
        return RulesBackend(vocabulary)
    if backend not in BACKENDS:
        raise ValueError(f"unknown labeller {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not model:
        raise ValueError(f"the {backend} labeller needs a model: pass --llm NAME_OR_FOLDER")
    cls = TransformersBackend if backend == "transformers" else VLLMBackend
    return cls(model, vocabulary, **kwargs)
