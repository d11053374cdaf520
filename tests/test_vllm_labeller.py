"""The `vllm` labeller executed for real: vLLM 0.32's CPU build with SmolLM2-135M-Instruct, in .venv-vllm
(`make test-vllm`; these tests need vLLM and are deselected from `make test`)."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from builders.mimic_iv_ecg import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, run_offline  # noqa: E402
from mimic_fixture import build_mimic_fixture  # noqa: E402

pytestmark = pytest.mark.vllm

# The first three fixture records: 6 distinct statements, hedged ones among them ("Possible anterior infarct - age
# undetermined", "Sinus rhythm with borderline 1st degree A-V block") and ones SmolLM2 answers with entities that are
# not vocabulary terms word for word ("age undetermined"), so the text encoder maps entities by embedding similarity
LIMIT = 3
DISTINCT = 6


def _build(fixture, out: Path, labeller: str, llm: Path, minilm_path) -> tuple[dict, str]:
    argv = ["-m", "builders.mimic_iv_ecg", "--input", fixture.root, "--output", out, "--labeller", labeller,
            "--llm", llm, "--limit", LIMIT, "--num-proc", "1", "--text-encoder", minilm_path, "--pooling", "mean"]
    # vLLM's CPU engine spawns its worker: the builder must run as a script, as users run it
    result = run_offline(argv, cwd=REPO, timeout=900, OMP_NUM_THREADS="2")
    return json.loads((out / "stats.json").read_text()), result.stdout


def _answers(out: Path, labeller: str) -> dict[str, dict]:
    lines = (out / ".cache" / f"{labeller}-responses.jsonl").read_text().splitlines()
    return {entry["statement"]: entry for entry in map(json.loads, lines)}


def test_vllm_labels_the_mimic_fixture_as_the_transformers_labeller_does(smollm2_folder, smollm2_gguf, minilm_path,
                                                                          tmp_path):
    """`--labeller vllm` end to end with the real SmolLM2 under the response grammar: every answer parses, entities
    map through the text encoder, the card is written and the dataset loads with `load_dataset`; a rerun sends no
    prompt; the statistics and the uncertain column are those of the transformers labeller on the same model."""
    import datasets

    fixture = build_mimic_fixture(tmp_path / "mimic")
    out = tmp_path / "vllm"
    stats, _ = _build(fixture, out, "vllm", smollm2_folder, minilm_path)
    labelling = stats["labelling"]
    assert labelling["labeller"] == "vllm" and labelling["grammar"] is True
    assert labelling["distinct_statements"] == DISTINCT and labelling["failed_statements"] == 0
    assert stats["run"]["llm_prompts"] >= DISTINCT and stats["run"]["cache_hits"] == 0
    # entities outside the vocabulary's surface forms went through the text encoder (the branch that once crashed the
    # card's YAML with numpy strings)
    assert labelling["text_encoder"] == str(minilm_path) and labelling["classes"] > 0
    answers = _answers(out, "vllm")
    assert len(answers) == DISTINCT
    for entry in answers.values():  # the grammar's JSON, separators as the few-shot answers, nothing else
        answer = entry["responses"][-1]
        assert entry["ok"] and entry["grammar"] and json.dumps(json.loads(answer)) == answer and entry["entities"]

    assert "MIMIC-IV-ECG" in (out / "README.md").read_text()
    loaded = datasets.load_dataset(str(out))
    rows = {row["id"]: row for split in loaded.values() for row in split}
    assert len(rows) == stats["records"]["kept"] == LIMIT
    for study, row in rows.items():
        report = fixture.reports[study].splitlines()
        assert [(e["entity"], e["category"]) for e in row["entities"]] == [
            (e["entity"], e["category"]) for statement in report for e in answers[statement]["entities"]]
    assert labelling["records_with_uncertain_terms"] == sum(bool(r["uncertain_terms"]) for r in rows.values())

    _, rerun = _build(fixture, out, "vllm", smollm2_folder, minilm_path)
    assert f"0 LLM prompts, {DISTINCT} cached" in rerun

    reference, _ = _build(fixture, tmp_path / "transformers", "transformers", smollm2_gguf, minilm_path)
    for key in ("distinct_statements", "failed_statements", "statement_occurrences"):
        assert labelling[key] == reference["labelling"][key], key
    assert set(labelling) == set(reference["labelling"]) and stats["records"] == reference["records"]
    assert set(_answers(tmp_path / "transformers", "transformers")) == set(answers)


def _fails_before_reading(tmp_path, capsys, *args) -> str:
    """The one-line error of `--labeller vllm ARGS`, which must stop before the (here missing) MIMIC folder is read."""
    with pytest.raises(SystemExit) as stopped:
        main(["--input", str(tmp_path / "no-mimic-here"), "--output", str(tmp_path / "out"), "--labeller", "vllm",
              *map(str, args)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert not (tmp_path / "out").exists()
    return error


def test_gpu_options_are_refused_by_the_cpu_build(smollm2_folder, tmp_path, capsys):
    cases = {("--tensor-parallel-size", "2"): "--tensor-parallel-size",
             ("--vllm-option", "pipeline_parallel_size=2"): "--pipeline-parallel-size"}
    for option, name in cases.items():
        error = _fails_before_reading(tmp_path, capsys, "--llm", smollm2_folder, *option)
        assert name in error and "CPU build" in error and "0.32" in error, error


def test_models_vllm_cannot_serve_fail_in_one_line(smollm2_folder, smollm2_gguf, tmp_path, capsys):
    from transformers import AutoTokenizer

    no_template = tmp_path / "no-template"  # the same weights and config, a tokenizer without its chat template
    no_template.mkdir()
    for path in smollm2_folder.glob("*.safetensors"):
        (no_template / path.name).symlink_to(path)
    shutil.copy(smollm2_folder / "config.json", no_template)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(no_template)
    error = _fails_before_reading(tmp_path, capsys, "--llm", no_template)
    assert str(no_template) in error and "no chat template" in error, error

    error = _fails_before_reading(tmp_path, capsys, "--llm", smollm2_gguf)
    assert "not a .gguf file" in error and "gguf_folder" in error, error
