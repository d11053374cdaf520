"""SuPreME: a 1D ViT ECG encoder, a frozen BERT query encoder and the Cardiac Fusion Network (CFN).

Paper: Cai et al., "SuPreME: A Supervised Pre-training Framework for Multimodal ECG Representation Learning",
EMNLP Findings 2025, §3.2 and appendix A.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_supreme import SupremeConfig


@dataclass
class SupremeECGModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_leads * num_patches, hidden_size)`):
            ECG tokens after the final LayerNorm; token `t` is lead `t // num_patches`, patch `t % num_patches`.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): mean over the tokens.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None


@dataclass
class SupremeOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, when `labels` are given): binary cross-entropy with logits.
        logits (`torch.FloatTensor` of shape `(batch_size, num_queries)`): one score per ECG and query.
        ecg_embeds (`torch.FloatTensor` of shape `(batch_size, num_tokens, projection_dim)`): the projected ECG
            tokens (the CFN memory).
        query_embeds (`torch.FloatTensor` of shape `(num_queries, projection_dim)`): the projected queries (the CFN
            targets), the same for every ECG.
        cross_attentions (`tuple(torch.FloatTensor)`, with `output_attentions=True`): one tensor per CFN layer of shape
            `(batch_size, fusion_num_attention_heads, num_queries, num_tokens)`: where each query looked in the ECG.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    ecg_embeds: torch.FloatTensor | None = None
    query_embeds: torch.FloatTensor | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SupremeQueryStates(ModelOutput):
    """Everything the model computes from a query list alone, cached by [`SupremeModel.get_query_states`] so that
    scoring many ECG batches against one list repeats none of it.

    Args:
        query_embeds (`torch.FloatTensor` of shape `(num_queries, projection_dim)`): the projected queries (the CFN
            targets).
        fusion_targets (`torch.FloatTensor` of shape `(num_queries, projection_dim)`): the targets after the first CFN
            layer's self-attention (`None` for a CFN without layers).
        fusion_query (`torch.FloatTensor` of shape `(fusion_num_attention_heads, num_queries, head_dim)`): the first
            CFN layer's projected cross-attention query (`None` for a CFN without layers).
    """

    query_embeds: torch.FloatTensor | None = None
    fusion_targets: torch.FloatTensor | None = None
    fusion_query: torch.FloatTensor | None = None


def attention(query, key, value, dropout: float = 0.0, output_attentions: bool = False):
    """Scaled dot-product attention over `(..., heads, length, head_dim)` tensors.

    SDPA (flash / memory-efficient kernels) unless the weights are asked for, which only the eager path returns.
    """
    if not output_attentions:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout), None
    weights = torch.softmax(query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5, dim=-1)
    return F.dropout(weights, dropout) @ value, weights


class SupremeDropPath(nn.Module):
    """Stochastic depth: drops a residual branch for whole samples during training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)  # scale the (batch_size, 1, 1) mask, not the whole tensor: one pass over x


class SupremeECGEmbeddings(nn.Module):
    """Per-lead patches → one shared linear projection + lead embedding + position embedding."""

    def __init__(self, config: SupremeConfig):
        super().__init__()
        self.num_leads = config.num_leads
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Linear(config.patch_size, config.hidden_size)
        self.lead_embeddings = nn.Parameter(torch.zeros(config.num_leads, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(config.num_patches, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """(batch_size, num_leads, num_samples) → (batch_size, num_leads * num_patches, hidden_size)."""
        batch_size = input_values.shape[0]
        # ECGs arrive as float32 from the processor; a model cast to bf16/fp16 takes them in its own dtype
        patches = input_values.to(self.position_embeddings.dtype).reshape(
            batch_size, self.num_leads, -1, self.patch_size
        )
        # (leads, patches, width) table first, then one pass over the batch
        tokens = self.patch_embedding(patches) + (self.lead_embeddings[:, None] + self.position_embeddings)
        return self.dropout(tokens.flatten(1, 2))


class SupremeAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection: over the ECG tokens in each encoder block, and over the
    query list in each CFN layer when `fusion_query_attention="all"`."""

    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(..., length, width) → (..., length, width): a batch dimension, or none (a query list shared by the batch)."""
        *batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(*batch, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.movedim(-3, 0).transpose(-3, -2).unbind(0)  # 3 x (..., heads, length, head_dim)
        context, _ = attention(query, key, value, self.dropout if self.training else 0.0)
        return self.out_proj(context.transpose(-3, -2).reshape(*batch, length, width))


class SupremeMLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.activation = ACT2FN[activation]
        self.fc2 = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class SupremeEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm ViT block: x + DropPath(Attention(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, config: SupremeConfig, drop_path_rate: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SupremeAttention(
            config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob
        )
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SupremeMLP(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.drop_path = SupremeDropPath(drop_path_rate)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.drop_path(self.dropout(self.self_attn(self.layer_norm1(hidden_states))))
        return hidden_states + self.drop_path(self.dropout(self.mlp(self.layer_norm2(hidden_states))))


class SupremeEncoder(nn.Module):
    def __init__(self, config: SupremeConfig):
        super().__init__()
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList([SupremeEncoderLayer(config, rate) for rate in rates])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class SupremeProjection(nn.Module):
    """Linear → activation → Linear → LayerNorm into the shared `projection_dim` space."""

    def __init__(self, width: int, hidden: int, out: int, activation: str, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.activation = ACT2FN[activation]
        self.fc2 = nn.Linear(hidden, out)
        self.layer_norm = nn.LayerNorm(out, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.fc2(self.activation(self.fc1(x))))


class SupremeQuerySelfAttention(nn.Module):
    """The CFN's target self-attention restricted to each query itself (`fusion_query_attention="self"`).

    With one key per query the softmax is exactly 1, so attention reduces to the value and output projections, folded
    here into one linear map. A query's logit is then independent of the other queries in the list.
    """

    def __init__(self, width: int):
        super().__init__()
        self.value_output = nn.Linear(width, width)

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        return self.value_output(targets)


class SupremeCrossAttention(nn.Module):
    """Queries (targets) attend to the ECG tokens (memory); keys and values come from one fused projection."""

    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(width, width)
        self.kv_proj = nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, width)
        self.dropout = dropout

    def project_queries(self, targets: torch.Tensor) -> torch.Tensor:
        """targets (..., num_queries, width) → attention queries (..., heads, num_queries, head_dim)."""
        query = self.q_proj(targets)
        return query.unflatten(-1, (self.num_heads, query.shape[-1] // self.num_heads)).transpose(-3, -2)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, output_attentions: bool = False):
        """query (heads, num_queries, head_dim) shared by the batch, or (batch_size, heads, num_queries, head_dim), from
        `project_queries`; memory (batch_size, num_tokens, width) → (batch_size, num_queries, width) and optional
        weights (batch_size, heads, num_queries, num_tokens)."""
        batch_size, num_tokens, width = memory.shape
        query = query.expand(batch_size, -1, -1, -1)  # a view: shared queries are projected once, not per ECG
        key, value = self.kv_proj(memory).view(batch_size, num_tokens, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        context, weights = attention(query, key, value, dropout, output_attentions)
        return self.out_proj(context.transpose(1, 2).flatten(2)), weights


class CardiacFusionLayer(GradientCheckpointingLayer):
    """Pre-norm decoder layer: query self-attention, cross-attention to the ECG tokens, feed-forward. The query
    self-attention sees each query alone (`fusion_query_attention="self"`) or the whole list (`"all"`: then the layer is
    `torch.nn.TransformerDecoderLayer(norm_first=True)` without masks)."""

    def __init__(self, config: SupremeConfig):
        super().__init__()
        width, eps = config.projection_dim, config.layer_norm_eps
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        if config.fusion_query_attention == "all":
            self.self_attn = SupremeAttention(width, config.fusion_num_attention_heads, config.fusion_dropout)
        else:
            self.self_attn = SupremeQuerySelfAttention(width)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.cross_attn = SupremeCrossAttention(width, config.fusion_num_attention_heads, config.fusion_dropout)
        self.layer_norm3 = nn.LayerNorm(width, eps=eps)
        self.mlp = SupremeMLP(width, config.fusion_intermediate_size, "relu", config.fusion_dropout)
        self.dropout = nn.Dropout(config.fusion_dropout)

    def query_states(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The part of the layer that sees only the queries (in the first layer, whose targets are the query list
        itself, it depends on nothing else, in either query-attention mode): targets (..., num_queries, width) → the
        targets after self-attention and the cross-attention query (..., heads, num_queries, head_dim)."""
        targets = targets + self.dropout(self.self_attn(self.layer_norm1(targets)))
        return targets, self.cross_attn.project_queries(self.layer_norm2(targets))

    def forward(
        self,
        targets: torch.Tensor,
        memory: torch.Tensor,
        output_attentions: bool = False,
        query_states: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """`query_states`: this layer's cached `query_states(targets)`, which then replace `targets`."""
        targets, query = self.query_states(targets) if query_states is None else query_states
        attended, weights = self.cross_attn(query, memory, output_attentions)
        targets = targets + self.dropout(attended)  # broadcasts shared (Q, D) targets to (B, Q, D)
        return targets + self.dropout(self.mlp(self.layer_norm3(targets))), weights


class CardiacFusionNetwork(nn.Module):
    """The CFN: a Transformer decoder from queries to ECG tokens, then one MLP head shared by every query."""

    def __init__(self, config: SupremeConfig):
        super().__init__()
        self.layers = nn.ModuleList([CardiacFusionLayer(config) for _ in range(config.fusion_num_layers)])
        self.layer_norm = nn.LayerNorm(config.projection_dim, eps=config.layer_norm_eps)
        self.classifier = nn.Sequential(
            nn.Linear(config.projection_dim, config.classifier_hidden_size),
            nn.GELU(),
            nn.Linear(config.classifier_hidden_size, 1),
        )

    def forward(
        self,
        targets: torch.Tensor,
        memory: torch.Tensor,
        output_attentions: bool = False,
        first_query_states: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """targets (num_queries, projection_dim), memory (batch_size, num_tokens, projection_dim) →
        logits (batch_size, num_queries) and a tuple of per-layer cross-attention weights (or None).
        `first_query_states`: the first layer's cached `query_states(targets)`."""
        cross_attentions = []
        for i, layer in enumerate(self.layers):
            targets, weights = layer(targets, memory, output_attentions, first_query_states if i == 0 else None)
            cross_attentions.append(weights)
        targets = targets.expand(memory.shape[0], -1, -1)  # a CFN with no layers still scores every ECG
        logits = self.classifier(self.layer_norm(targets)).squeeze(-1)
        return logits, tuple(cross_attentions) if output_attentions else None


def _text_encoder_source(config: SupremeConfig) -> str | None:
    """The installed package's folder when `text_encoder_package` is importable, else `text_encoder_name_or_path`."""
    if config.text_encoder_package:
        import importlib

        try:
            return str(importlib.import_module(config.text_encoder_package).get_model_path())
        except ImportError:
            pass
    return config.text_encoder_name_or_path


class SupremePreTrainedModel(PreTrainedModel):
    config_class = SupremeConfig
    config: SupremeConfig
    base_model_prefix = "supreme"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["SupremeEncoderLayer", "CardiacFusionLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SupremeECGEmbeddings):
            init.normal_(module.lead_embeddings, mean=0.0, std=std)
            init.normal_(module.position_embeddings, mean=0.0, std=std)


class SupremeECGModel(SupremePreTrainedModel):
    """The 1D ViT ECG encoder alone (what linear probing trains on)."""

    def __init__(self, config: SupremeConfig):
        super().__init__(config)
        self.embeddings = SupremeECGEmbeddings(config)
        self.encoder = SupremeEncoder(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(self, input_values: torch.Tensor, return_dict: bool | None = None, **kwargs) -> SupremeECGModelOutput:
        """input_values (batch_size, num_leads, num_samples), preprocessed by `SupremeFeatureExtractor`."""
        expected = (self.config.num_leads, self.config.num_samples)
        if input_values.ndim != 3 or tuple(input_values.shape[1:]) != expected:
            raise ValueError(
                f"input_values must be (batch_size, {expected[0]}, {expected[1]}), got {tuple(input_values.shape)}"
            )
        hidden_states = self.layer_norm(self.encoder(self.embeddings(input_values)))
        return SupremeECGModelOutput(last_hidden_state=hidden_states, pooler_output=hidden_states.mean(dim=1))


class SupremeModel(SupremePreTrainedModel):
    """ECG encoder + projections + frozen text encoder + Cardiac Fusion Network: one logit per (ECG, query)."""

    def __init__(self, config: SupremeConfig):
        super().__init__(config)
        eps = config.layer_norm_eps
        self.ecg_model = SupremeECGModel(config)
        self.ecg_projection = SupremeProjection(
            config.hidden_size, config.projection_hidden_size, config.projection_dim, "relu", eps
        )
        # Built from the config, not loaded: a saved SuPreME checkpoint carries the text weights itself.
        self.text_model = AutoModel.from_config(config.text_config)
        self.text_model.requires_grad_(False)
        # Frozen, so never in training mode: a new module starts in it, and queries embedded before the first
        # `.train()`/`.eval()` (the trainer embeds its queries once, at the start) would carry dropout noise.
        self.text_model.eval()
        self.text_projection = SupremeProjection(
            config.text_config.hidden_size, config.projection_hidden_size, config.projection_dim, "gelu", eps
        )
        self.fusion = CardiacFusionNetwork(config)
        self.post_init()
        if config.text_encoder_name_or_path:  # saved without its text tower: not "missing", loaded by reference
            self._keys_to_ignore_on_load_missing.add(r"^text_model\.")

    @classmethod
    def from_text_encoder(cls, text_encoder: str, config: SupremeConfig | None = None, **kwargs) -> SupremeModel:
        """A fresh SuPreME whose text tower carries the pretrained weights of `text_encoder`.

        Args:
            text_encoder: path or Hub id of a BERT-family encoder (`ncbi/MedCPT-Query-Encoder` in the paper).
            config: the rest of the model; its `text_config` is replaced by the encoder's.
            kwargs: passed to `AutoModel.from_pretrained` for the encoder (e.g. `revision`).
        """
        encoder = AutoModel.from_pretrained(text_encoder, **kwargs)
        config = SupremeConfig(**config.to_dict()) if config is not None else SupremeConfig()
        config.text_config = encoder.config
        model = cls(config)
        model.text_model.load_state_dict(encoder.state_dict())
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, text_encoder: str | None = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus: a checkpoint that leaves the frozen text tower out (its config
        names `text_encoder_name_or_path`) gets it from `text_encoder` if given, else from the installed
        `text_encoder_package`, else from the Hub id or folder the config names."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        missing = [key for key in info["missing_keys"] if key.startswith("text_model.")]
        if missing or model.config.text_encoder_name_or_path:
            source = text_encoder or _text_encoder_source(model.config)
            if source is None:
                raise ValueError(
                    f"{pretrained_model_name_or_path}: the checkpoint lacks the text tower ({len(missing)} weights, "
                    f"e.g. {missing[0]}) and its config names no text_encoder_name_or_path to load it from"
                )
            encoder = AutoModel.from_pretrained(source)
            model.text_model.load_state_dict(encoder.state_dict())
            model.text_model.to(model.dtype)
            info["missing_keys"] = [key for key in info["missing_keys"] if key not in missing]
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """A model whose config references its text tower (`text_encoder_name_or_path`) is saved without it."""
        if self.config.text_encoder_name_or_path and "state_dict" not in kwargs:
            kwargs["state_dict"] = {k: v for k, v in self.state_dict().items() if not k.startswith("text_model.")}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_model.eval()  # frozen: its dropout stays off while the rest trains
        return self

    @torch.no_grad()
    def get_query_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[CLS] embeddings (num_queries, text_hidden_size) of tokenised queries; cache them and pass `query_embeds`."""
        output = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return output.last_hidden_state[:, 0]

    @torch.no_grad()
    def encode_queries(self, queries: list[str], tokenizer, batch_size: int = 64, max_length: int = 64) -> torch.Tensor:
        """Free-text queries → [CLS] embeddings (num_queries, text_hidden_size), in batches, on the model's device."""
        if len(queries) == 0:
            raise ValueError("the query list is empty")
        embeddings = []
        for start in range(0, len(queries), batch_size):
            tokens = tokenizer(
                list(queries[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            embeddings.append(self.get_query_embeddings(tokens["input_ids"], tokens["attention_mask"]))
        return torch.cat(embeddings)

    def project_queries(self, query_embeds: torch.Tensor) -> torch.Tensor:
        """Cached `get_query_embeddings` output (num_queries, text_hidden_size) → the CFN targets
        (num_queries, projection_dim)."""
        width = self.config.text_config.hidden_size
        if query_embeds.ndim != 2 or query_embeds.shape[-1] != width:
            raise ValueError(
                f"query_embeds must be (num_queries, {width}) from this model's text encoder, "
                f"got {tuple(query_embeds.shape)}"
            )
        if query_embeds.shape[0] == 0:
            raise ValueError("the query list is empty")
        return self.text_projection(query_embeds.to(self.dtype))

    @torch.no_grad()
    def get_query_states(self, query_embeds: torch.Tensor) -> SupremeQueryStates:
        """Everything the model computes from the queries alone: cached `get_query_embeddings` output
        (num_queries, text_hidden_size) → [`SupremeQueryStates`], to pass as `query_states` when scoring many ECG
        batches against one query list (zero-shot evaluation, serving). Call it in eval mode, with the weights it will
        be used with: the states carry no dropout and go stale when the weights change."""
        if self.training:
            raise ValueError("get_query_states caches inference states: call model.eval() first")
        targets = self.project_queries(query_embeds)
        if len(self.fusion.layers) == 0:
            return SupremeQueryStates(query_embeds=targets)
        fusion_targets, fusion_query = self.fusion.layers[0].query_states(targets)
        return SupremeQueryStates(query_embeds=targets, fusion_targets=fusion_targets, fusion_query=fusion_query)

    def forward(
        self,
        input_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool | None = None,
        query_states: SupremeQueryStates | None = None,
        **kwargs,
    ) -> SupremeOutput:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_leads, num_samples)`): preprocessed ECGs.
            input_ids, attention_mask (`torch.LongTensor` of shape `(num_queries, sequence_length)`): tokenised queries.
            query_embeds (`torch.FloatTensor` of shape `(num_queries, text_hidden_size)`): cached
                `get_query_embeddings` output, instead of `input_ids`.
            labels (`torch.FloatTensor` of shape `(batch_size, num_queries)`): multi-hot targets for the BCE loss.
            output_attentions (`bool`): also return the CFN cross-attention weights.
            query_states ([`SupremeQueryStates`]): cached `get_query_states` output, instead of `input_ids` or
                `query_embeds`; inference only (in training the query side must see dropout and gradients).
        """
        if query_states is None:
            if query_embeds is None:
                if input_ids is None:
                    raise ValueError("give the queries as input_ids (tokenised), query_embeds or query_states (cached)")
                query_embeds = self.get_query_embeddings(input_ids, attention_mask)
            # Not cached: the CFN's first layer computes its own query states (with dropout and gradients).
            query_states = SupremeQueryStates(query_embeds=self.project_queries(query_embeds))
        elif self.training and torch.is_grad_enabled():
            raise ValueError("query_states are cached for inference: in training, pass query_embeds")

        tokens = self.ecg_model(input_values).last_hidden_state
        memory = self.ecg_projection(tokens)
        first_query_states = None
        if query_states.fusion_targets is not None:
            first_query_states = (query_states.fusion_targets, query_states.fusion_query)
        logits, cross_attentions = self.fusion(query_states.query_embeds, memory, output_attentions, first_query_states)

        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"labels must be (batch_size, num_queries) = {tuple(logits.shape)}, got {tuple(labels.shape)}"
                )
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32))
        return SupremeOutput(
            loss=loss,
            logits=logits,
            ecg_embeds=memory,
            query_embeds=query_states.query_embeds,
            cross_attentions=cross_attentions,
        )


SupremeModel.register_for_auto_class("AutoModel")

__all__ = ["SupremeECGModel", "SupremeModel", "SupremePreTrainedModel", "SupremeQueryStates"]
