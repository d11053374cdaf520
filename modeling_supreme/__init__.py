"""SuPreME as transformers remote code. Users load it with `AutoModel.from_pretrained(..., trust_remote_code=True)`;
this package re-exports the classes for local use (training, builders, tests)."""

from .configuration_supreme import SupremeConfig
from .modeling_supreme import SupremeECGModel, SupremeModel, SupremeQueryStates
from .onnx_supreme import SupremeOnnxModel
from .processing_supreme import SupremeFeatureExtractor, SupremeProcessor

__all__ = ["SupremeConfig", "SupremeECGModel", "SupremeFeatureExtractor", "SupremeModel", "SupremeOnnxModel", "SupremeProcessor", "SupremeQueryStates"]
