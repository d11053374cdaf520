"""Analytic matmul FLOPs of SupremeModel, from its config: what "achieved TFLOP/s" in docs/performance_measurements.md divides by.

Counts 2 FLOPs per multiply-add of every matrix product (linear layers, attention scores and attention-weighted
values), as `torch.utils.flop_counter.FlopCounterMode` does; biases, norms, activations and softmax are left out
(a few percent of the total). Queries come cached (`query_embeds`): the frozen text tower never runs per step.
At the paper's shapes with 295 queries: 10.1 GFLOP per ECG forward (10.7 with `fusion_query_attention="all"`).
"""

from __future__ import annotations


def _query_attention_macs(config, num_queries: int) -> int:
    """One CFN layer's self-attention over the queries: one folded value/output map per query ("self"), or fused QKV,
    scores and weighted values over the whole list, and the output projection ("all")."""
    d = config.projection_dim
    if config.fusion_query_attention == "all":
        return 4 * num_queries * d * d + 2 * num_queries * num_queries * d
    return num_queries * d * d


def _query_side_macs(config, num_queries: int) -> int:
    """Multiply-adds that depend on the queries alone: done once per forward, whatever the batch size."""
    d = config.projection_dim
    text_projection = num_queries * (config.text_config.hidden_size * config.projection_hidden_size)
    text_projection += num_queries * config.projection_hidden_size * d
    if not config.fusion_num_layers:
        return text_projection
    return text_projection + _query_attention_macs(config, num_queries) + num_queries * d * d  # + q_proj


def _per_ecg_macs(config, num_queries: int) -> int:
    """Multiply-adds per ECG: the ViT, the ECG projection, and the CFN (its queries become ECG-specific after the
    first cross-attention)."""
    tokens, width, d = config.num_leads * config.num_patches, config.hidden_size, config.projection_dim
    vit = tokens * config.patch_size * width  # shared patch embedding
    vit += config.num_hidden_layers * (
        tokens * width * 3 * width  # fused QKV
        + 2 * tokens * tokens * width  # scores and weighted values, all heads
        + tokens * width * width  # output projection
        + 2 * tokens * width * config.intermediate_size  # MLP
    )
    projection = tokens * width * config.projection_hidden_size + tokens * config.projection_hidden_size * d
    cfn_layer = (
        tokens * d * 2 * d  # fused key/value projection of the memory
        + 2 * num_queries * tokens * d  # cross-attention scores and weighted values
        + num_queries * d * d  # output projection
        + 2 * num_queries * d * config.fusion_intermediate_size  # feed-forward
    )
    later_layers_query_side = max(config.fusion_num_layers - 1, 0) * (
        _query_attention_macs(config, num_queries) + num_queries * d * d  # + q_proj
    )
    classifier = num_queries * (d * config.classifier_hidden_size + config.classifier_hidden_size)
    return vit + projection + config.fusion_num_layers * cfn_layer + later_layers_query_side + classifier


def forward_flops(config, num_queries: int, batch_size: int = 1, cached_query_states: bool = False) -> int:
    """Matmul FLOPs of one forward pass over `batch_size` ECGs and `num_queries` cached query embeddings.

    `cached_query_states`: the queries come as `get_query_states` output, so the query-side work is not repeated.
    """
    query_side = 0 if cached_query_states else _query_side_macs(config, num_queries)
    return 2 * (batch_size * _per_ecg_macs(config, num_queries) + query_side)


def train_step_flops(config, num_queries: int, batch_size: int) -> int:
    """Matmul FLOPs of forward + backward: the backward pass costs two matmuls per forward matmul (gradients of the
    input and of the weight), except where the input needs no gradient (the ECG patches and the cached query
    embeddings entering the text projection)."""
    forward = forward_flops(config, num_queries, batch_size)
    tokens = config.num_leads * config.num_patches
    no_input_grad = batch_size * tokens * config.patch_size * config.hidden_size
    no_input_grad += num_queries * config.text_config.hidden_size * config.projection_hidden_size
    return 3 * forward - 2 * no_input_grad
