"""training/configs/paper.yaml: the paper's published hyper-parameters, each value saying where it comes from."""

from __future__ import annotations

import re

from conftest import REPO

from modeling_supreme import SupremeConfig
from training.pretrain import parse_config

PAPER = REPO / "training" / "configs" / "paper.yaml"
# What the paper publishes (§4.1 for the optimisation, §3.2 for the model), as the trainer's keys.
PUBLISHED = {
    "global_batch_size": 256,
    "t_0": 5000,
    "max_epochs": 50,
    "patience": 10,
    "mixed_precision": "bf16",
    "text_encoder": "ncbi/MedCPT-Query-Encoder",
}
KEY_LINE = re.compile(r"^\s*(\w+):")


def provenance() -> dict[str, str]:
    """Each key of paper.yaml → the comment on its line."""
    return {
        match[1]: line.partition("#")[2].strip()
        for line in PAPER.read_text().splitlines()
        if (match := KEY_LINE.match(line))
    }


def test_the_paper_recipe_has_the_published_values():
    config = parse_config(["--config", str(PAPER)])  # every key is one the trainer knows
    for key, value in PUBLISHED.items():
        assert config[key] == value, key
    assert config["model_config"]["fusion_query_attention"] == "all"
    model = SupremeConfig(**config["model_config"])
    vit_tiny = (model.patch_size, model.hidden_size, model.num_hidden_layers, model.num_attention_heads)
    assert vit_tiny == (125, 192, 12, 3)
    assert "# optimiser: AdamW, paper §4.1" in PAPER.read_text()


def test_every_value_says_where_it_comes_from():
    tags = provenance()
    assert all(comment.split(" ")[0].rstrip(":") in {"paper", "chosen", "run"} for comment in tags.values()), tags
    for key in [*PUBLISHED, "fusion_query_attention"]:
        assert tags[key].startswith("paper"), key
