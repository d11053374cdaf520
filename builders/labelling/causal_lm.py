"""A local instruct model for the `transformers` labeller: loading with early checks, and batched chat generation that
runs the prompts' shared prefix once.

`--llm` names a model folder, a Hub id or a `.gguf` file (transformers de-quantises GGUF checkpoints to float32 with
the `gguf` package). `ChatModel` refuses, with a one-line `ModelLoadError`, anything the labeller cannot use: a path
that does not exist, a file that is not GGUF, a model that is not a causal LM (an encoder such as BERT, a T5), a
tokenizer without a chat template (a base model: the prompt is a chat). The builder creates it before reading any
record, so a wrong `--llm` costs seconds, not a scan of MIMIC-IV-ECG.

Every labelling prompt starts with the same instructions, vocabulary and few-shot turns (about 1,550 of its ~1,580
tokens with SmolLM2's tokenizer) and ends with one statement. `ChatModel.generate` runs that prefix through the model
once, keeps its KV cache, and generates each batch from a copy of it: the batch is laid out as [prefix | padding |
suffix] with the padding masked, so every prompt sees the positions it would see alone (greedy answers matched
unbatched ones when this was written).
"""

from __future__ import annotations

import copy
import inspect
from functools import cached_property
from pathlib import Path


class ModelLoadError(ValueError):
    """The `--llm` model cannot serve as the labeller; the message is one line that names it and says why."""


def _source(name: str) -> tuple[str, str | None]:
    """(folder or Hub id, GGUF file name or None) for `--llm NAME`."""
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"--llm {name}: no such GGUF file")
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ModelLoadError(f"--llm {name}: not a GGUF file (it does not start with the GGUF magic bytes)")
        return str(path.parent), path.name
    if path.is_file():
        raise ModelLoadError(f"--llm {name}: a file, but not a .gguf one; pass a model folder, a .gguf file or a Hub id")
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~"))):
        raise ModelLoadError(f"--llm {name}: no such folder")
    return name, None


def first_line(error: Exception) -> str:
    """An exception's message cut to one line, for a one-line `ModelLoadError`."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


class ChatModel:
    """A local causal LM checked for the labeller (see the module docstring): the config and tokenizer load at once,
    the weights on the first `generate` (a rerun answered from the response cache never loads them). On the CPU the
    weights are float32 (bf16 is emulated there and several times slower)."""

    def __init__(self, name: str, device: str = "cpu"):
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        self.name, self.device = name, device
        self.source, self.gguf_file = _source(name)
        try:
            self.config = AutoConfig.from_pretrained(self.source, gguf_file=self.gguf_file)
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"--llm {name}: not a model transformers can load ({first_line(error)})") from error
        # BERT-style encoders also have a causal-LM class, usable only with is_decoder=True: not an instruct model
        model_type = self.config.model_type
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or getattr(self.config, "is_decoder", True) is False:
            raise ModelLoadError(f"--llm {name}: a {model_type!r} model, not a causal (decoder-only) language model")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, gguf_file=self.gguf_file)
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"--llm {name}: cannot load its tokenizer ({first_line(error)})") from error
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelLoadError(f"--llm {name}: its tokenizer has no chat template; the labeller prompts with chat "
                                 "messages, so it needs an instruct (chat) model")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._prefix: tuple[list[int], object] | None = None  # (token ids, KV cache) of the last prefix seen

    @cached_property
    def model(self):
        import torch
        from transformers import AutoModelForCausalLM

        dtype = torch.float32 if self.device == "cpu" else "auto"
        model = AutoModelForCausalLM.from_pretrained(self.source, gguf_file=self.gguf_file, dtype=dtype)
        return model.to(self.device).eval()

    @cached_property
    def _cache_argument(self) -> str:
        """transformers 5 renamed `past_key_values` to `cache` (the old name warns): the name this version takes."""
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _ids(self, messages, add_generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prefix_cache(self, prefix_ids: list[int]):
        import torch
        from transformers import DynamicCache

        if self._prefix is None or self._prefix[0] != prefix_ids:
            cache = DynamicCache(config=self.model.config)
            with torch.no_grad():
                self.model(input_ids=torch.tensor([prefix_ids], device=self.device), use_cache=True,
                           **{self._cache_argument: cache})
            self._prefix = (prefix_ids, cache)
        return self._prefix[1]

    def generate(self, conversations: list[list[dict[str, str]]], *, max_new_tokens: int, sampling: dict,
                 logits_processor=None) -> list[str]:
        """One answer text per conversation, generated in one batch from the shared prefix's KV cache."""
        import torch

        prompts = [self._ids(messages, add_generation_prompt=True) for messages in conversations]
        prefix = []
        if all(messages[:-1] == conversations[0][:-1] for messages in conversations):
            prefix = self._ids(conversations[0][:-1], add_generation_prompt=False)
            # a template that renders the last turn into the earlier ones' text cannot share a prefix: run whole
            if not all(ids[:len(prefix)] == prefix and len(ids) > len(prefix) for ids in prompts):
                prefix = []
        suffixes = [ids[len(prefix):] for ids in prompts]
        width = max(map(len, suffixes))
        pad = self.tokenizer.pad_token_id
        input_ids = [prefix + [pad] * (width - len(s)) + s for s in suffixes]
        mask = [[1] * len(prefix) + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
        inputs = {"input_ids": torch.tensor(input_ids, device=self.device),
                  "attention_mask": torch.tensor(mask, device=self.device)}
        if prefix:
            cache = copy.deepcopy(self._prefix_cache(prefix))
            cache.batch_repeat_interleave(len(conversations))
            inputs[self._cache_argument] = cache
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                         logits_processor=logits_processor, **sampling)
        return self.tokenizer.batch_decode(output[:, len(input_ids[0]):], skip_special_tokens=True)
