"""Typed model configs: what a CLIP model is, as frozen dataclasses (the named ones are in `registry`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VisionConfig:
    """Image tower. `layers` as an int builds a ViT of that depth; as a 4-tuple, a ModifiedResNet."""

    image_size: int = 224
    layers: int | tuple[int, int, int, int] = 12
    width: int = 768
    patch_size: int = 32
    head_width: int = 64
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    """LayerScale: a learned per-channel gain on each residual branch, initialised to this value (None: off)."""
    patch_dropout: float = 0.0
    """FLIP: fraction of patch tokens dropped at random during training (ViT only)."""
    timm_model_name: str | None = None
    """A timm model as the image tower (e.g. SigLIP's `vit_base_patch16_siglip_224`); the fields above are then
    unused except image_size. Built by timm (`pip install timm`), never with pretrained weights."""
    timm_pool: str = "avg"
    """timm's `global_pool` ("map": SigLIP's attention-pool head; "avg", "token", "")."""
    timm_proj: str = "linear"
    """"linear": a projection to embed_dim after the trunk; "mlp": timm's two-layer MLP (ConvNeXt-large-d); "none":
    the trunk's features as they are (SigLIP);
    "": the trunk's own classifier, sized embed_dim (open_clip's null, EVA02)."""
    timm_proj_bias: bool = False
    timm_input_size: int | None = None
    """The timm trunk's input size when it is not timm's default for the model (a resized model, `models.resize`);
    None: timm's default, as open_clip builds it."""
    ln_pre: bool = True
    """LayerNorm on the ViT's input tokens (False: open_clip's `no_ln_pre`, CLIPA)."""
    pool: str = "tok"
    """The ViT's image feature: "tok" the class token, "avg" the mean of the patch tokens (CLIPA)."""
    final_ln_after_pool: bool = False
    """`ln_post` after pooling instead of on every token (differs from before only for "avg")."""
    gelu_approximate: str = "none"
    """GELU's `approximate` ("none" exact, "tanh"); open_clip's `act_kwargs`."""

    @property
    def is_resnet(self) -> bool:
        return self.timm_model_name is None and not isinstance(self.layers, int)


@dataclass(frozen=True)
class TextConfig:
    """Causal text transformer over OpenAI's BPE; the feature is taken at the end-of-text token.

    SigLIP's differs: no causal mask, the last token's feature, a biased projection, LayerNorm eps 1e-6, and a
    sentencepiece tokenizer."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    causal: bool = True
    pool: str = "argmax"
    """"argmax": at the end-of-text token (the largest id, OpenAI's BPE); "last": the last position (SigLIP);
    "eos": the first `eos_id` token (MetaCLIP 2's mT5 vocabulary); "first": the first position."""
    eos_id: int = 2
    proj_type: str = "linear"
    """"linear": a projection to embed_dim; "none": the pooled feature as it is (width == embed_dim)."""
    proj_bias: bool = False
    gelu_approximate: str = "none"
    """GELU's `approximate` ("none" exact, "tanh": SigLIP 2's text tower); open_clip's `act_kwargs`."""
    norm_eps: float = 1e-5
    tokenizer: str = "openai_bpe"
    """"openai_bpe", or "hf:<repo>" for a `tokenizer.json` (sentencepiece-based for SigLIP) read by `tokenizers`."""
    tokenizer_clean: str = "whitespace"
    """Text cleaning before an "hf:" tokenizer (open_clip's `tokenizer_kwargs.clean`; SigLIP: "canonicalize")."""
    tokenizer_strip_sep: bool = False
    """Drop the separator token an "hf:" tokenizer appends (open_clip's `strip_sep_token`; CLIPA's BERT vocabulary)."""
    hf_model_name: str | None = None
    """A transformers text tower (e.g. "xlm-roberta-base" or a folder) built from its local config.json; the
    fields above are then unused except context_length and the tokenizer."""
    hf_pooler: str = "mean_pooler"
    hf_proj: str = "mlp"


@dataclass(frozen=True)
class CLIPConfig:
    """A two-tower CLIP model: both towers project into a shared `embed_dim` space."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = True
    """OpenAI's models use x * sigmoid(1.702 x); open_clip's non-`-quickgelu` names use exact GELU."""
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None
    """Set (e.g. -10.0) to add the learnable bias that the SigLIP loss needs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLIPConfig:
        data = dict(data)
        vision = dict(data.pop("vision", {}))
        if isinstance(vision.get("layers"), list):
            vision["layers"] = tuple(vision["layers"])
        text = dict(data.pop("text", {}))
        return cls(vision=VisionConfig(**vision), text=TextConfig(**text), **data)
