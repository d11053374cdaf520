"""Entity extraction behind one interface: `rules`, `transformers`, `vllm`, and the LLMs behind the rules (`RulesFirst`).

`extractor.extract_all(statements, cache)` returns an `ExtractionResult` whatever the backend. The two LLM backends
share everything (prompt, grammar, parsing, cache, retries, failure counting) and differ only in `generate`, the call
that turns chat conversations into texts:

- `transformers`: any local causal LM with a chat template (`builders/labelling/causal_lm.py`: a folder, a Hub id or
  a `.gguf` file), batched `generate` from the shared prompt prefix's KV cache, for small models and CPUs;
- `vllm`: vLLM's offline engine (`LLM.chat`; `builders/labelling/vllm_engine.py`), tensor-parallel over the visible
  GPUs, or vLLM's CPU build; imported only when chosen (`pip install -e '.[label]'` on GPUs, `make install-vllm` on a
  CPU).

Both constrain decoding with the same grammar text, `response_grammar()`: `prompt.RESPONSE_SCHEMA` as xgrammar's EBNF,
with the separators the few-shot answers use. vLLM takes it as a structured-outputs grammar
(`StructuredOutputsParams(grammar=...)`), transformers through xgrammar's logits processor for `generate`. An answer
then parses by construction unless it hits the new-token limit. `grammar=False` (`--no-grammar`)
decodes freely, for engines or models where the grammar is unwanted; the parser, retries and failure counts are the
same either way.

Attempt 0 decodes greedily; a malformed or empty answer is retried with seeded sampling (temperature 0.7, seed =
attempt), and after `retries` more attempts the statement is recorded as a failure: it gets no entities, the build
goes on, and the statistics count it. Every outcome is cached, keyed by backend, grammar, model and prompt, so a rerun
sends no prompt already answered (`retry_failures=True` re-prompts the failures).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from .cache import ResponseCache, cache_key
from .causal_lm import ChatModel
from .prompt import RESPONSE_SCHEMA, build_messages, parse_response
from .rules import RulesExtractor
from .vllm_engine import check_vllm, load_engine
from .vocabulary import Vocabulary, load_vocabulary

BACKENDS = ("rules", "transformers", "vllm")


@dataclass
class ExtractionResult:
    """`entities[statement]`: [{"entity", "category"}] (empty for failures); `by_rules`: the statements the rules
    answered under `RulesFirst` (the LLM answered the others)."""

    entities: dict[str, list[dict[str, str]]]
    failures: list[str] = field(default_factory=list)
    llm_calls: int = 0
    cache_hits: int = 0
    retried: int = 0
    by_rules: list[str] = field(default_factory=list)


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
                 batch_size: int = 16, retries: int = 2, grammar: bool = True):
        self.model = model
        self.vocabulary = vocabulary or load_vocabulary()
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.retries = retries
        self.grammar = grammar

    @property
    def cache_name(self) -> str:
        """The backend as the cache keys it: answers decoded with and without the grammar are different answers."""
        return f"{self.backend}+grammar" if self.grammar else self.backend

    def generate(self, conversations: list[list[dict[str, str]]], attempt: int) -> list[str]:
        """One answer text per conversation; attempt 0 greedy, later attempts sampled with seed `attempt`."""
        raise NotImplementedError

    def extract_all(self, statements: list[str], cache: ResponseCache | None = None,
                    retry_failures: bool = False, progress: Callable[[int], None] | None = None) -> ExtractionResult:
        result = ExtractionResult({})
        pending = []
        for statement in statements:
            messages = build_messages(statement, self.vocabulary)
            key = cache_key(self.cache_name, self.model, messages)
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
        entries = [{"key": key, "backend": self.backend, "grammar": self.grammar, "model": self.model,
                    "statement": statement, "responses": [], "entities": None, "ok": False} for statement, _, key in batch]
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
    """Any local causal LM with a chat template through transformers' `generate` (CUDA when available, else CPU)."""

    backend = "transformers"

    def __init__(self, model: str, vocabulary: Vocabulary | None = None, *, batch_size: int = 8, **kwargs):
        super().__init__(model, vocabulary, batch_size=batch_size, **kwargs)
        import torch

        self.chat_model = ChatModel(model, "cuda" if torch.cuda.is_available() else "cpu")
        if self.grammar:
            _import_xgrammar()  # missing, it fails now rather than at the first prompt

    @cached_property
    def compiled_grammar(self):
        """`RESPONSE_SCHEMA` over this model's vocabulary, compiled on the first prompt (a cached rerun never needs
        it)."""
        return compile_response_grammar(self.chat_model.tokenizer, self.chat_model.config.vocab_size)

    def generate(self, conversations, attempt):
        import torch

        sampling = {"do_sample": True, "temperature": 0.7, "top_p": 0.95} if attempt else {"do_sample": False}
        if attempt:
            torch.manual_seed(attempt)
        processors = None
        if self.grammar:
            from xgrammar.contrib.hf import LogitsProcessor

            processors = [LogitsProcessor(self.compiled_grammar)]  # it keeps per-sequence state: one per call
        return self.chat_model.generate(conversations, max_new_tokens=self.max_new_tokens, sampling=sampling,
                                        logits_processor=processors)


def response_grammar() -> str:
    """`RESPONSE_SCHEMA` as xgrammar's EBNF text, the one grammar both LLM backends decode under: no free whitespace,
    separators `", "` and `": "` as the few-shot answers are written."""
    xgrammar = _import_xgrammar()
    return str(xgrammar.Grammar.from_json_schema(json.dumps(RESPONSE_SCHEMA), any_whitespace=False))


def compile_response_grammar(tokenizer, vocab_size: int):
    """`response_grammar()` compiled over the model's vocabulary (`vocab_size`: the logits' width, which can exceed
    the tokenizer's)."""
    xgrammar = _import_xgrammar()
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    return xgrammar.GrammarCompiler(info).compile_grammar(response_grammar())


def _import_xgrammar():
    try:
        import xgrammar
    except ImportError as error:
        raise ImportError("grammar-constrained decoding needs xgrammar: pip install -e '.[llm]', or pass --no-grammar") \
            from error
    return xgrammar


class VLLMBackend(LLMBackend):
    """vLLM's offline engine (`vllm_engine.py`): chat template, the response grammar, prefix caching; on GPUs
    tensor-parallel over all visible ones unless `engine_options` says otherwise.

    `model` is what `vllm.LLM(model=...)` takes, a Hub id or a folder (a `.gguf` file is refused: convert it with
    `python -m builders.labelling.gguf_folder`). `engine_options` pass to `LLM(...)` unchanged. Everything that can
    fail is checked here, before any record is read; the engine itself starts on the first prompt."""

    backend = "vllm"

    def __init__(self, model: str, vocabulary: Vocabulary | None = None, *, engine_options: dict | None = None,
                 batch_size: int = 512, **kwargs):
        super().__init__(model, vocabulary, batch_size=batch_size, **kwargs)
        self.engine_kwargs = check_vllm(model, dict(engine_options or {}))
        if self.grammar:
            self.grammar_text = response_grammar()

    @cached_property
    def llm(self):
        return load_engine(self.model, self.engine_kwargs)

    def generate(self, conversations, attempt):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        grammar = StructuredOutputsParams(grammar=self.grammar_text) if self.grammar else None
        params = SamplingParams(temperature=0.7 if attempt else 0.0, top_p=0.95 if attempt else 1.0, seed=attempt,
                                max_tokens=self.max_new_tokens, structured_outputs=grammar)
        outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


class RulesFirst:
    """The rules labeller's answer where the vocabulary covers a statement fully (`RulesExtractor.covers`), the LLM
    backend's elsewhere (`--rules-first`): fewer prompts, and the LLM still reads every statement the rules cannot."""

    def __init__(self, llm: LLMBackend):
        self.llm = llm
        self.rules = RulesExtractor(llm.vocabulary)
        self.backend, self.model = llm.backend, llm.model

    def extract_all(self, statements: list[str], cache: ResponseCache | None = None,
                    retry_failures: bool = False, progress: Callable[[int], None] | None = None) -> ExtractionResult:
        by_rules = [s for s in statements if self.rules.covers(s)]
        covered = set(by_rules)
        result = self.llm.extract_all([s for s in statements if s not in covered], cache, retry_failures, progress)
        result.entities.update({s: self.rules.extract(s) for s in by_rules})
        result.by_rules = by_rules
        return result


def make_extractor(backend: str, model: str | None = None, vocabulary: Vocabulary | None = None, *,
                   rules_first: bool = False, **kwargs):
    """The extractor for `backend` ("rules", "transformers" or "vllm"); LLM backends need `model` (a name, a folder
    or, for transformers, a .gguf file) and check it here, so that a wrong one fails before any work. `rules_first`
    wraps an LLM backend in `RulesFirst`; the rules backend ignores the LLM options."""
    if backend == "rules":
        return RulesBackend(vocabulary)
    if backend not in BACKENDS:
        raise ValueError(f"unknown labeller {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not model:
        raise ValueError(f"the {backend} labeller needs a model: pass --llm NAME_OR_FOLDER")
    cls = TransformersBackend if backend == "transformers" else VLLMBackend
    extractor = cls(model, vocabulary, **kwargs)
    return RulesFirst(extractor) if rules_first else extractor
