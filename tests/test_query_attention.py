"""`fusion_query_attention`: the CFN's query self-attention restricted to each query ("self", the default) or run over
the whole query list ("all", the paper's standard Transformer decoder)."""

from __future__ import annotations

import json
import zlib

import pytest
import torch
from conftest import FIXTURES, tiny_config
from torch import nn

from modeling_supreme import SupremeModel
from modeling_supreme.modeling_supreme import CardiacFusionLayer

REFERENCE = FIXTURES / "cfn_self_reference.json"


def set_deterministic_weights(model) -> list[list]:
    """Draw every parameter outside the text tower from a generator seeded by its name, so that any revision of the
    code with these parameter names and shapes gets the same weights. Returns `[name, shape]` in state-dict order."""
    state = {}
    for name, tensor in model.state_dict().items():
        if not name.startswith("text_model."):
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            state[name] = 0.3 * torch.randn(tensor.shape, generator=generator)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(name.startswith("text_model.") for name in missing)
    return [[name, list(tensor.shape)] for name, tensor in state.items()]


def reference_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two unlike ECGs (noise; a sine per lead, 1 to 3.75 Hz) and five query embeddings (the tiny text width)."""
    generator = torch.Generator().manual_seed(7)
    seconds = torch.arange(5000) / 500
    sines = 0.5 + 0.5 * torch.sin(2 * torch.pi * (1 + torch.arange(12)[:, None] / 4) * seconds)
    ecgs = torch.stack([torch.rand(12, 5000, generator=generator), sines])
    return ecgs, torch.randn(5, 32, generator=generator)


@pytest.fixture(scope="module")
def all_model():
    model = SupremeModel(tiny_config(fusion_query_attention="all")).eval()
    set_deterministic_weights(model)
    return model


def test_self_mode_keeps_the_parameters_and_logits_of_the_revision_before_the_option():
    """The default is today's CFN: same parameter names and shapes (old checkpoints load strictly), same logits as the
    revision recorded in the reference file for the same weights."""
    reference = json.loads(REFERENCE.read_text())
    model = SupremeModel(tiny_config()).eval()
    assert model.config.fusion_query_attention == "self"
    assert set_deterministic_weights(model) == reference["parameters"]
    ecgs, embeds = reference_inputs()
    with torch.no_grad():
        logits = model(ecgs, query_embeds=embeds).logits
    assert (logits - torch.tensor(reference["logits"])).abs().max() <= 1e-5


def test_all_mode_a_querys_score_depends_on_the_list_but_not_on_its_order(all_model):
    ecgs, embeds = reference_inputs()
    order = torch.tensor([4, 2, 0, 3, 1])
    with torch.no_grad():
        five = all_model(ecgs, query_embeds=embeds).logits
        four = all_model(ecgs, query_embeds=embeds[:4]).logits
        reordered = all_model(ecgs, query_embeds=embeds[order]).logits
    # float rounding moves these logits by ~1e-7: every one of the four moved by far more
    assert (five[:, :4] - four).abs().min() > 1e-5, "adding a fifth query must change the other four scores"
    assert (reordered - five[:, order]).abs().max() <= 1e-5, "queries carry no position: the list is a set"


def test_all_mode_one_ecg_alone_equals_it_inside_a_batch(all_model):
    ecgs, embeds = reference_inputs()
    with torch.no_grad():
        states = all_model.get_query_states(embeds)
        batch = all_model(ecgs, query_embeds=embeds).logits
        for i in range(len(ecgs)):
            assert (all_model(ecgs[i : i + 1], query_embeds=embeds).logits[0] - batch[i]).abs().max() <= 1e-5
            assert (all_model(ecgs[i : i + 1], query_states=states).logits[0] - batch[i]).abs().max() <= 1e-5


def test_all_mode_attention_maps_leave_the_logits_unchanged(all_model):
    """`supreme explain` draws the cross-attention weights, which only the eager attention path returns."""
    ecgs, embeds = reference_inputs()
    with torch.no_grad():
        plain = all_model(ecgs, query_embeds=embeds).logits
        explained = all_model(ecgs, query_embeds=embeds, output_attentions=True)
    assert (explained.logits - plain).abs().max() <= 1e-5
    assert [weights.shape for weights in explained.cross_attentions] == [(2, 2, 5, 480)] * 2
    torch.testing.assert_close(explained.cross_attentions[-1].sum(-1), torch.ones(2, 2, 5))


def test_all_mode_layer_is_torch_transformer_decoder_layer():
    """With `"all"` a CFN layer computes what `torch.nn.TransformerDecoderLayer(norm_first=True)` computes without
    masks, given its weights: the fused projections are the rows of PyTorch's `in_proj_weight`, in q, k, v order."""
    config = tiny_config(fusion_query_attention="all")
    torch.manual_seed(0)
    ours = CardiacFusionLayer(config).eval()
    for norm in (ours.layer_norm1, ours.layer_norm2, ours.layer_norm3):
        nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    width, heads = config.projection_dim, config.fusion_num_attention_heads
    theirs = nn.TransformerDecoderLayer(
        width,
        heads,
        config.fusion_intermediate_size,
        dropout=0.0,
        activation="relu",
        layer_norm_eps=config.layer_norm_eps,
        batch_first=True,
        norm_first=True,
    ).eval()
    cross = ours.cross_attn
    theirs.load_state_dict(
        {
            "self_attn.in_proj_weight": ours.self_attn.qkv.weight,
            "self_attn.in_proj_bias": ours.self_attn.qkv.bias,
            "self_attn.out_proj.weight": ours.self_attn.out_proj.weight,
            "self_attn.out_proj.bias": ours.self_attn.out_proj.bias,
            "multihead_attn.in_proj_weight": torch.cat([cross.q_proj.weight, cross.kv_proj.weight]),
            "multihead_attn.in_proj_bias": torch.cat([cross.q_proj.bias, cross.kv_proj.bias]),
            "multihead_attn.out_proj.weight": cross.out_proj.weight,
            "multihead_attn.out_proj.bias": cross.out_proj.bias,
            "linear1.weight": ours.mlp.fc1.weight,
            "linear1.bias": ours.mlp.fc1.bias,
            "linear2.weight": ours.mlp.fc2.weight,
            "linear2.bias": ours.mlp.fc2.bias,
            **{
                f"norm{i}.{p}": getattr(getattr(ours, f"layer_norm{i}"), p)
                for i in (1, 2, 3)
                for p in ("weight", "bias")
            },
        }
    )
    generator = torch.Generator().manual_seed(3)
    targets, memory = torch.randn(3, 7, width, generator=generator), torch.randn(3, 40, width, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(ours(targets, memory)[0], theirs(targets, memory), atol=1e-5, rtol=1e-5)
