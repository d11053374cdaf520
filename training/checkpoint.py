"""Writing a SuPreME checkpoint the way users load it: model, processor, zero-shot pipeline and model card, one folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from modeling_supreme.modeling_supreme import SupremeModel
from modeling_supreme.pipeline_supreme import TASK, ZeroShotECGClassificationPipeline
from modeling_supreme.processing_supreme import SupremeProcessor

MODEL_CARD = Path(__file__).resolve().parents[1] / "model_card.md"
logger = logging.getLogger(__name__)


def save_checkpoint(
    model: SupremeModel, processor: SupremeProcessor, directory: str | Path, model_card: str | Path | None = MODEL_CARD
) -> Path:
    """Save `model` and `processor` into `directory` so that all of these work with `trust_remote_code=True`:
    `AutoModel.from_pretrained`, `AutoProcessor.from_pretrained` and
    `pipeline("zero-shot-ecg-classification", model=directory)`. The model card becomes the folder's README.md.
    """
    directory = Path(directory)
    # Saving through the pipeline records it under `custom_pipelines` in config.json and copies its code beside the model.
    ZeroShotECGClassificationPipeline(model=model, processor=processor, task=TASK, device=model.device).save_pretrained(
        directory
    )
    processor.save_pretrained(directory)
    if model_card is not None and Path(model_card).is_file():
        shutil.copyfile(model_card, directory / "README.md")
    elif model_card is not None:
        logger.warning("model card %s not found; %s has no README.md", model_card, directory)
    return directory
