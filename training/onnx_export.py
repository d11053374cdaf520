"""`supreme export`: a saved SuPreME → a folder that runs it on CPUs (OpenVINO or ONNX Runtime), optionally in int8.

    supreme export --model DIR --output DIR --queries-file classes.txt [--int8 --calibration RECORD_OR_DIR ...]

The graph is the ECG tower and the Cardiac Fusion Network (`torch.onnx.export`, the torch.export-based exporter, opset
23): inputs `input_values` (batch, 12, 5000) and the query states of `SupremeModel.get_query_states`, batch and query
axes dynamic; output `logits` (batch, queries). Attention exports as ONNX's fused `Attention` op. The query states of
the given list are computed here, once, and saved beside the graph with the query texts; the text encoder is not
exported. The fp32 graph is checked against PyTorch (max |logit difference| ≤ 1e-4) before anything is written.

`--int8` adds `model_quantized.onnx`: onnxruntime's static QDQ quantisation of the linear layers (weights int8 per
output channel, activations uint8 per tensor with ranges calibrated on real ECGs through the processor); attention,
LayerNorm, GELU, the residual sums, the patch embedding and the first encoder block (see FP32_MODULES) stay fp32.
Static ranges keep an ECG's logits independent of the batch it is scored in (dynamic quantisation takes each
activation's range over the whole batch). The folder also carries the processor, config.json mapping AutoModel to
`onnx_supreme.SupremeOnnxModel`, the pipeline and the model card, so
`pipeline("zero-shot-ecg-classification", model=OUTPUT, trust_remote_code=True)` runs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modeling_supreme.modeling_supreme import SupremeModel, SupremeQueryStates
from modeling_supreme.onnx_supreme import (
    EXPORT_FILE,
    ONNX_FILE,
    QUANTIZED_FILE,
    QUERY_STATE_NAMES,
    QUERY_STATES_FILE,
)
from modeling_supreme.pipeline_supreme import TASK
from modeling_supreme.processing_supreme import SupremeProcessor
from training.model_card import model_card

REMOTE_CODE = Path(__file__).resolve().parents[1] / "modeling_supreme"
OPSET = 23  # the first opset with a fused Attention op (onnxruntime >= 1.23 runs it on the CPU)
FP32_TOLERANCE = 1e-4
# Linear layers left in fp32 by --int8, where per-tensor uint8 activations cost the most accuracy (a small SuPreME
# trained on PTB-XL, logits against PyTorch): the patch embedding reads the normalised signal itself, whose spikes
# stretch the range (quantised, it alone gave 5x the error of all other layers together, 8.9 % vs 1.8 % relative, for
# 0.2 % of the FLOPs); of the rest, the first encoder block was the most sensitive, layer by layer, on 35 ECGs from
# other sources (CinC 2021, Chapman): 3.4 % -> 2.3 % kept in fp32 (one twelfth of the paper encoder's linear work).
FP32_MODULES = ("ecg_model.embeddings.patch_embedding", "ecg_model.encoder.layers.0")
logger = logging.getLogger(__name__)


class QueryStateScorer(nn.Module):
    """The exported graph: ECGs and cached query states → logits, i.e. `SupremeModel(input_values, query_states=...)`."""

    def __init__(self, model: SupremeModel):
        super().__init__()
        self.model = model

    def forward(self, input_values, query_embeds, fusion_targets, fusion_query):
        states = SupremeQueryStates(query_embeds=query_embeds, fusion_targets=fusion_targets, fusion_query=fusion_query)
        return self.model(input_values=input_values, query_states=states).logits


def export_onnx(
    model: SupremeModel,
    processor: SupremeProcessor,
    queries: Sequence[str],
    output_dir: str | Path,
    calibration_ecgs: torch.Tensor | None = None,
    int8: bool = False,
) -> dict:
    """Write the exported folder; returns what `onnx_export.json` records (queries, files, checks).

    Args:
        model, processor: a saved SuPreME and its processor (`AutoModel` / `AutoProcessor` output).
        queries: the query list whose states are cached in the folder (the only queries it can score).
        output_dir: created (or emptied of earlier graphs) here.
        calibration_ecgs: processed ECGs (n, num_leads, num_samples), from the processor; required with `int8`
            (activation ranges); also the ECGs the fp32 check and the int8 error report run on.
        int8: also write `model_quantized.onnx`.
    """
    queries = list(queries)
    if not queries or len(set(queries)) != len(queries):
        raise ValueError("give a non-empty list of distinct queries to export")
    model = model.float().eval()
    with torch.no_grad():
        query_embeds = model.encode_queries(queries, processor.tokenizer, max_length=processor.query_max_length)
        states = model.get_query_states(query_embeds)
    record = {"queries": queries, **export_graphs(model, states, output_dir, calibration_ecgs, int8)}
    output_dir = Path(output_dir)
    (output_dir / EXPORT_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_loading_files(model, processor, output_dir)
    return record


def export_graphs(
    model: SupremeModel,
    states: SupremeQueryStates,
    output_dir: str | Path,
    calibration_ecgs: torch.Tensor | None = None,
    int8: bool = False,
) -> dict:
    """The graphs and query states of an export (no loading files): `model.onnx`, with `int8` also
    `model_quantized.onnx`, and `query_states.npz`. Returns how each graph was made and how far its logits are
    from PyTorch's on (up to 4 of) `calibration_ecgs`."""
    if model.config.fusion_num_layers == 0:
        raise ValueError("a CFN without layers has no cached fusion states to export")
    if int8 and calibration_ecgs is None:
        raise ValueError("int8 quantisation calibrates on real ECGs: give calibration ECGs (--calibration)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state_arrays = {name: getattr(states, name).cpu().numpy().astype(np.float32) for name in QUERY_STATE_NAMES}
    check_ecgs = calibration_ecgs[:4] if calibration_ecgs is not None else synthetic_ecgs(model.config, 2)

    graph = output_dir / ONNX_FILE
    trace_graph(model, state_arrays, graph)
    expected = torch_logits(model, states, check_ecgs)
    fp32_error = float(np.abs(run_graph(graph, check_ecgs, state_arrays) - expected).max())
    if not fp32_error <= FP32_TOLERANCE:
        graph.unlink()
        raise RuntimeError(f"{graph}: the exported graph differs from PyTorch by {fp32_error:.3g} > {FP32_TOLERANCE}")
    record = {
        "fusion_query_attention": model.config.fusion_query_attention,
        "opset": OPSET,
        "torch": torch.__version__,
        "graphs": {"fp32": {"file": ONNX_FILE, "max_abs_logit_error_vs_torch": fp32_error,
                            "checked_on_ecgs": len(check_ecgs)}},
    }
    (output_dir / QUANTIZED_FILE).unlink(missing_ok=True)
    if int8:
        import onnxruntime

        record["onnxruntime"] = onnxruntime.__version__
        quantized = output_dir / QUANTIZED_FILE
        quantize_int8(graph, quantized, calibration_ecgs, state_arrays)
        logits = run_graph(quantized, check_ecgs, state_arrays)
        record["graphs"]["int8"] = {
            "file": QUANTIZED_FILE,
            "method": "onnxruntime quantize_static, QDQ, MatMul weights int8 per channel, activations uint8 per "
            "tensor (MinMax); attention, LayerNorm, GELU, residual sums, the patch embedding and the first encoder "
            "block fp32",
            "calibration_ecgs": len(calibration_ecgs),
            "relative_logit_error_vs_torch": float(np.linalg.norm(logits - expected) / np.linalg.norm(expected)),
            "max_abs_logit_error_vs_torch": float(np.abs(logits - expected).max()),
            "checked_on_ecgs": len(check_ecgs),
        }
    np.savez(output_dir / QUERY_STATES_FILE, **state_arrays)
    return record


def trace_graph(model: SupremeModel, state_arrays: dict[str, np.ndarray], path: Path) -> None:
    """torch.onnx.export (torch.export-based) of `QueryStateScorer`, batch and query axes dynamic."""
    batch, num_queries = torch.export.Dim("batch"), torch.export.Dim("num_queries")
    example = (synthetic_ecgs(model.config, 2), *(torch.from_numpy(state_arrays[n]) for n in QUERY_STATE_NAMES))
    dynamic_shapes = {"input_values": {0: batch}, "query_embeds": {0: num_queries}, "fusion_targets": {0: num_queries},
                      "fusion_query": {1: num_queries}}
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress; a CLI prints results only
        program = torch.onnx.export(
            QueryStateScorer(model), example, dynamo=True, opset_version=OPSET, optimize=True,
            input_names=["input_values", *QUERY_STATE_NAMES], output_names=["logits"], dynamic_shapes=dynamic_shapes,
        )
    program.save(str(path))


def quantize_int8(graph: Path, output: Path, calibration_ecgs: torch.Tensor, state_arrays: dict) -> None:
    """Static QDQ int8 of the linear layers (MatMuls with a weight operand), calibrated one ECG at a time (MinMax: the calibrator
    adds ReduceMin/ReduceMax outputs, so memory does not grow with the ECGs)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = ({"input_values": ecg[None].numpy(), **state_arrays} for ecg in calibration_ecgs)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # onnxruntime's symbolic shape inference reads ONNX's Attention as its own contrib op of that name: skip it
        quant_pre_process(str(graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(output), Calibration(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes_of(graph, FP32_MODULES),
            extra_options={
                "MatMulConstBOnly": True,  # linear layers only: products of two activations stay fp32
                # int8 inputs, fp32 output: onnxruntime fuses each into one MatMulIntegerToFloat
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
            },
        )


def nodes_of(graph: Path, modules: Sequence[str]) -> list[str]:
    """Names of the MatMul nodes that the exporter traced inside any of `modules` (PyTorch module names)."""
    import onnx

    found = []
    for node in onnx.load(str(graph)).graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if node.op_type == "MatMul" and any(f"'model.{module}'" in scopes for module in modules):
            found.append(node.name)
    if len(found) < len(modules):
        raise RuntimeError(f"{graph}: no MatMul traced in {modules}; the exporter no longer records module names")
    return found


def run_graph(graph: Path, ecgs: torch.Tensor, state_arrays: dict) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_values": ecgs.numpy(), **state_arrays})[0]


@torch.no_grad()
def torch_logits(model: SupremeModel, states: SupremeQueryStates, ecgs: torch.Tensor) -> np.ndarray:
    return model(input_values=ecgs.to(model.device), query_states=states).logits.float().cpu().numpy()


def synthetic_ecgs(config, count: int) -> torch.Tensor:
    """Deterministic stand-ins for processed ECGs (tracing and the fp32 check when no real ECGs are given)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(count, config.num_leads, config.num_samples, generator=generator)


def write_loading_files(model: SupremeModel, processor: SupremeProcessor, output_dir: Path) -> None:
    """config.json (AutoModel → the ONNX class, the pipeline), processor, remote code and model card."""
    config = model.config.__class__(**model.config.to_dict())
    config.architectures = ["SupremeOnnxModel"]
    config.custom_pipelines = {TASK: {"impl": "pipeline_supreme.ZeroShotECGClassificationPipeline", "pt": ["AutoModel"]}}
    config.save_pretrained(output_dir)  # writes auto_map's AutoConfig and copies configuration_supreme.py
    path = output_dir / "config.json"
    saved = json.loads(path.read_text())
    saved["auto_map"]["AutoModel"] = "onnx_supreme.SupremeOnnxModel"
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    processor.save_pretrained(output_dir)
    for name in ("modeling_supreme.py", "onnx_supreme.py", "pipeline_supreme.py", "processing_supreme.py"):
        shutil.copyfile(REMOTE_CODE / name, output_dir / name)
    name = f"SuPreME ONNX export (ViT width {model.config.hidden_size}, {model.config.num_hidden_layers} layers)"
    notes = ("## This folder\n\nThe model above exported to ONNX by `supreme export` (ECG tower and Cardiac Fusion "
             "Network in one graph; `model_quantized.onnx` is its int8 version where present), with the query states "
             "of the exported queries (`onnx_export.json`): it scores only those queries. Its training data and "
             "figures are those of the checkpoint it was exported from.")
    source_card = Path(model.name_or_path or "") / "README.md"  # the card of the checkpoint it was loaded from
    if model.name_or_path and source_card.is_file():
        card = source_card.read_text(encoding="utf-8").rstrip() + "\n\n" + notes + "\n"
    else:
        card = model_card(model, processor.feature_extractor, name, {}, notes=notes)
    (output_dir / "README.md").write_text(card, encoding="utf-8")


def processed_ecgs(processor: SupremeProcessor, sources: Sequence[str | Path], limit: int) -> torch.Tensor:
    """Processed ECGs (n, leads, samples) from WFDB records / `.mat` files, or folders searched for `*.hea` records
    (sorted), at most `limit`; through the processor, as every runtime sees them."""
    records = []
    for source in map(Path, sources):
        if source.is_dir():
            records += sorted(str(header.with_suffix("")) for header in source.rglob("*.hea"))
        else:
            records.append(str(source))
    if not records:
        raise ValueError(f"no ECG records found in {', '.join(map(str, sources))}")
    return torch.cat([processor(ecg=record, return_tensors="pt")["input_values"] for record in records[:limit]])
