"""SuPreME exported to ONNX for CPU deployment (`supreme export`): the ECG tower and the Cardiac Fusion Network as one
graph, scored against the query states of one query list, computed when the folder was exported.

An exported folder holds `model.onnx` (fp32), with `--int8` also `model_quantized.onnx` (the linear layers in int8,
calibrated on real ECGs), `query_states.npz`, `onnx_export.json` (the query texts and how the graphs were
made), the processor and this code. `AutoModel.from_pretrained(folder, trust_remote_code=True)` and
`pipeline("zero-shot-ecg-classification", model=folder, trust_remote_code=True)` load it. The runtime is imported only
when a folder is loaded: OpenVINO where it is installed (the fastest on the CPUs measured, benchmarks/RESULTS.md), else
ONNX Runtime; `runtime=` picks one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .configuration_supreme import SupremeConfig
from .modeling_supreme import SupremeOutput, SupremeQueryStates

ONNX_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
QUERY_STATES_FILE = "query_states.npz"
EXPORT_FILE = "onnx_export.json"
QUERY_STATE_NAMES = ("query_embeds", "fusion_targets", "fusion_query")  # graph inputs after input_values
RUNTIMES = ("auto", "openvino", "onnxruntime")


class SupremeOnnxModel:
    """An exported SuPreME, run by OpenVINO or ONNX Runtime; scores ECGs as `SupremeModel` does, against the exported
    queries only.

    It stands where a `SupremeModel` with cached query states would: `model(input_values=..., query_states=...)`
    returns a [`SupremeOutput`] with `logits` (batch_size, num_queries), and [`select_query_states`] replaces
    `get_query_states`: it picks the exported states of the queries asked, and refuses any query the folder was not
    exported for (there is no text encoder in the folder to embed a new one).
    """

    main_input_name = "input_values"

    def __init__(
        self, run, config: SupremeConfig, queries: list[str], query_states: SupremeQueryStates, graph: Path, runtime: str
    ):
        self._run = run  # {input name: float32 array} -> logits array
        self.runtime = runtime
        self.config = config
        self.queries = queries
        self.query_states = query_states
        self.graph = graph
        self.name_or_path = str(graph.parent)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        file_name: str | None = None,
        runtime: str = "auto",
        num_threads: int | None = None,
        config: SupremeConfig | None = None,
        **kwargs,
    ) -> SupremeOnnxModel:
        """Load an exported folder.

        Args:
            path: the folder `supreme export` wrote.
            file_name: the graph to run: default `model_quantized.onnx` (int8) where exported, else `model.onnx`.
            runtime: `"openvino"` (CPU plugin, fp32 where the graph is not int8), `"onnxruntime"`, or `"auto"`:
                OpenVINO where it is installed, else ONNX Runtime.
            num_threads: intra-op threads; default: the runtime's (all physical cores).
            config: the folder's `SupremeConfig` (AutoModel passes it); read from the folder when not given.
            kwargs: what AutoModel passes (hub and remote-code options), unused: the folder is local.
        """
        folder = Path(path)
        export_file = folder / EXPORT_FILE
        if not export_file.is_file():
            raise OSError(f"{export_file}: not found; {folder} is not a folder written by `supreme export`")
        export = json.loads(export_file.read_text(encoding="utf-8"))
        if file_name is None:
            file_name = QUANTIZED_FILE if (folder / QUANTIZED_FILE).is_file() else ONNX_FILE
        graph = folder / file_name
        if not graph.is_file():
            raise OSError(f"{graph}: no such ONNX file")
        config = config if config is not None else SupremeConfig.from_pretrained(folder)
        states = load_query_states(folder / QUERY_STATES_FILE, len(export["queries"]))
        return cls.from_graph(graph, config, list(export["queries"]), states, runtime, num_threads)

    @classmethod
    def from_graph(
        cls,
        graph: str | os.PathLike,
        config: SupremeConfig,
        queries: list[str],
        query_states: SupremeQueryStates,
        runtime: str = "auto",
        num_threads: int | None = None,
    ) -> SupremeOnnxModel:
        """A graph file with its config, query texts and query states given directly (benchmarks, tests)."""
        graph = Path(graph)
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if runtime == "auto":
            runtime = "openvino" if importlib.util.find_spec("openvino") is not None else "onnxruntime"
        run = _onnxruntime_runner(graph, num_threads) if runtime == "onnxruntime" else _openvino_runner(graph, num_threads)
        return cls(run, config, queries, query_states, graph, runtime)

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModel"):
        """AutoModel calls this on every remote-code class it loads; the folder's config.json already maps it."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, device) -> SupremeOnnxModel:
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.graph}: an exported SuPreME runs on the CPU, not on {device}")
        return self

    def eval(self) -> SupremeOnnxModel:
        return self

    def can_generate(self) -> bool:
        return False

    def select_query_states(self, queries: list[str]) -> SupremeQueryStates:
        """The exported states of `queries`, in their order.

        With `fusion_query_attention="self"` any of the exported queries may be asked, alone or in any subset (each
        query's score is independent of the others). With `"all"` each score depends on the whole list, so the queries
        must be exactly the exported list (in any order).
        """
        missing = [query for query in dict.fromkeys(queries) if query not in self.queries]
        if missing:
            shown = ", ".join(repr(query) for query in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ValueError(
                f"{self.graph.parent}: exported for {len(self.queries)} queries, not for {shown}; "
                "export again with these queries (supreme export --query ...)"
            )
        if self.config.fusion_query_attention == "all" and sorted(queries) != sorted(self.queries):
            raise ValueError(
                f"{self.graph.parent}: this model scores each query in the context of its exported list "
                f"(fusion_query_attention='all'): ask all {len(self.queries)} exported queries, each once"
            )
        rows = torch.tensor([self.queries.index(query) for query in queries])
        states = self.query_states
        return SupremeQueryStates(
            query_embeds=states.query_embeds[rows],
            fusion_targets=states.fusion_targets[rows],
            fusion_query=states.fusion_query[:, rows],
        )

    def __call__(self, input_values, query_states: SupremeQueryStates | None = None) -> SupremeOutput:
        """input_values (batch_size, num_leads, num_samples) from the processor; `query_states` from
        `select_query_states` (default: every exported query) → `SupremeOutput.logits` (batch_size, num_queries)."""
        values = np.ascontiguousarray(torch.as_tensor(input_values, dtype=torch.float32).cpu().numpy())
        expected = (self.config.num_leads, self.config.num_samples)
        if values.ndim != 3 or values.shape[1:] != expected:
            raise ValueError(f"input_values must be (batch_size, {expected[0]}, {expected[1]}), got {values.shape}")
        states = self.query_states if query_states is None else query_states
        feeds = {"input_values": values}
        feeds.update({name: getattr(states, name).numpy() for name in QUERY_STATE_NAMES})
        return SupremeOutput(logits=torch.from_numpy(self._run(feeds)), query_embeds=states.query_embeds)

    forward = __call__


def load_query_states(path: Path, num_queries: int) -> SupremeQueryStates:
    """The exported `SupremeQueryStates` of `num_queries` queries, as float32 CPU tensors."""
    if not path.is_file():
        raise OSError(f"{path}: not found; export the folder again")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not readable query states ({_reason(error)})") from None
    if set(arrays) != set(QUERY_STATE_NAMES) or any(len(arrays[name]) != num_queries for name in QUERY_STATE_NAMES[:2]):
        raise ValueError(f"{path}: expected {QUERY_STATE_NAMES} for {num_queries} queries; export the folder again")
    return SupremeQueryStates(**{name: torch.from_numpy(arrays[name]) for name in QUERY_STATE_NAMES})


def _onnxruntime_runner(graph: Path, num_threads: int | None):
    try:  # in a try block, transformers' remote-code import check leaves it optional
        import onnxruntime
    except ImportError:
        raise ImportError(f"{graph}: running an exported SuPreME needs onnxruntime (pip install onnxruntime)") from None

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    try:
        session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises untyped pybind errors for a damaged or foreign file
        raise ValueError(f"{graph}: not a usable ONNX graph ({_reason(error)})") from None
    names = [node.name for node in session.get_inputs()]
    _check_inputs(graph, names)
    return lambda feeds: session.run(["logits"], feeds)[0]


def _openvino_runner(graph: Path, num_threads: int | None):
    try:
        import openvino
    except ImportError:
        raise ImportError(f"{graph}: runtime='openvino' needs openvino (pip install openvino)") from None

    # f32: OpenVINO would otherwise run fp32 layers in bf16 on CPUs that have it, changing the logits
    properties = {"INFERENCE_PRECISION_HINT": "f32"}
    if num_threads:
        properties["INFERENCE_NUM_THREADS"] = num_threads
    try:
        compiled = openvino.Core().compile_model(str(graph), "CPU", properties)
    except Exception as error:  # OpenVINO raises RuntimeError with a multi-line trace for a damaged file
        raise ValueError(f"{graph}: not a usable ONNX graph ({_reason(error)})") from None
    _check_inputs(graph, [node.get_any_name() for node in compiled.inputs])
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds)[compiled.output("logits")].copy()


def _check_inputs(graph: Path, names: list[str]) -> None:
    expected = ["input_values", *QUERY_STATE_NAMES]
    if sorted(names) != sorted(expected):
        raise ValueError(f"{graph}: graph inputs {names}, expected {expected}; not a SuPreME export")


def _reason(error: Exception) -> str:
    """One line of a runtime's error: the last that is not a source location (OpenVINO stacks several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Exception from", "Check '"))] or lines
    return lines[-1] if lines else type(error).__name__


__all__ = ["SupremeOnnxModel"]
