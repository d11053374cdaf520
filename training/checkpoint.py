"""Writing a SuPreME checkpoint the way users load it: model, processor, zero-shot pipeline and model card, one folder."""

from __future__ import annotations

from pathlib import Path

from modeling_supreme.modeling_supreme import SupremeModel
from modeling_supreme.pipeline_supreme import TASK, ZeroShotECGClassificationPipeline
from modeling_supreme.processing_supreme import SupremeProcessor
from training.model_card import model_card


def save_checkpoint(
    model: SupremeModel, processor: SupremeProcessor, directory: str | Path, card: str | None = None,
    training: dict | None = None,
) -> Path:
    """Save `model` and `processor` into `directory` so that all of these work with `trust_remote_code=True`:
    `AutoModel.from_pretrained`, `AutoProcessor.from_pretrained` and
    `pipeline("zero-shot-ecg-classification", model=directory)`. The folder's README.md is `card`, else a card
    generated from the model's config and `training` (`training/model_card.py`; the keys it documents).
    """
    directory = Path(directory)
    # Saving through the pipeline records it under `custom_pipelines` in config.json and copies its code beside the model.
    ZeroShotECGClassificationPipeline(model=model, processor=processor, task=TASK, device=model.device).save_pretrained(
        directory
    )
    processor.save_pretrained(directory)
    if card is None:
        name = f"SuPreME (ViT width {model.config.hidden_size}, {model.config.num_hidden_layers} layers)"
        card = model_card(model, processor.feature_extractor, name, training or {})
    (directory / "README.md").write_text(card, encoding="utf-8")
    return directory
