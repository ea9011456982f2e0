"""Typed model configs and the one registry of named configs.

Names and semantics are open_clip's (its `model_configs/*.json` are the facts): a plain name (`ViT-B-32`,
`ViT-H-14`) uses exact GELU, as the LAION/DataComp checkpoints; its `-quickgelu` twin uses OpenAI's QuickGELU.
OpenAI's own spellings (`ViT-B/32`, `ViT-L/14@336px`) mean OpenAI's released models, i.e. the `-quickgelu`
twins. Head widths other than 64 (ViT-H/g/bigG) cannot be read off a checkpoint's weights, which is why
`clipmodule.checkpoints.infer` refuses a bare state dict it cannot name. Small CPU configs serve tests and the demo.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from clipmodule.errors import ClipModuleError


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
    """"linear": a projection to embed_dim after the trunk; "none": the trunk's features as they are (SigLIP);
    "": the trunk's own classifier, sized embed_dim (open_clip's null, EVA02)."""
    timm_proj_bias: bool = False
    timm_input_size: int | None = None
    """The timm trunk's input size when it is not timm's default for the model (a resized model, `models.resize`);
    None: timm's default, as open_clip builds it."""

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
    """"argmax": at the end-of-text token (the largest id, OpenAI's BPE); "last": the last position (SigLIP)."""
    proj_bias: bool = False
    norm_eps: float = 1e-5
    tokenizer: str = "openai_bpe"
    """"openai_bpe", or "hf:<repo>" for a `tokenizer.json` (sentencepiece-based for SigLIP) read by `tokenizers`."""
    tokenizer_clean: str = "whitespace"
    """Text cleaning before an "hf:" tokenizer (open_clip's `tokenizer_kwargs.clean`; SigLIP: "canonicalize")."""
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


def _rn(embed_dim: int, layers: tuple[int, int, int, int], width: int, image_size: int, text_width: int) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(image_size=image_size, layers=layers, width=width),
        text=TextConfig(width=text_width),
        quick_gelu=False,
    )


def _vit(embed_dim: int, layers: int, width: int, patch: int, image_size: int, text_width: int,
         text_layers: int = 12, head_width: int = 64, mlp_ratio: float = 4.0) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(image_size=image_size, layers=layers, width=width, patch_size=patch,
                            head_width=head_width, mlp_ratio=mlp_ratio),
        text=TextConfig(width=text_width, layers=text_layers),
        quick_gelu=False,
    )


# open_clip's names and shapes (exact GELU); each also gets a `-quickgelu` twin below.
_OPEN_CLIP_ZOO: dict[str, CLIPConfig] = {
    "RN50": _rn(1024, (3, 4, 6, 3), 64, 224, 512),
    "RN101": _rn(512, (3, 4, 23, 3), 64, 224, 512),
    "RN50x4": _rn(640, (4, 6, 10, 6), 80, 288, 640),
    "RN50x16": _rn(768, (6, 8, 18, 8), 96, 384, 768),
    "RN50x64": _rn(1024, (3, 15, 36, 10), 128, 448, 1024),
    "ViT-B-32": _vit(512, 12, 768, 32, 224, 512),
    "ViT-B-16": _vit(512, 12, 768, 16, 224, 512),
    "ViT-B-16-plus-240": _vit(640, 12, 896, 16, 240, 640),
    "ViT-L-14": _vit(768, 24, 1024, 14, 224, 768),
    "ViT-L-14-336": _vit(768, 24, 1024, 14, 336, 768),
    "ViT-H-14": _vit(1024, 32, 1280, 14, 224, 1024, text_layers=24, head_width=80),
    "ViT-g-14": _vit(1024, 40, 1408, 14, 224, 1024, text_layers=24, head_width=88, mlp_ratio=4.3637),
    "ViT-bigG-14": _vit(1280, 48, 1664, 14, 224, 1280, text_layers=32, head_width=104, mlp_ratio=4.9231),
}
# Small configs that train on a CPU in seconds (tests) or minutes (the demo); QuickGELU, as they always had.
_SMALL: dict[str, CLIPConfig] = {
    "tiny-vit": CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(image_size=32, layers=2, width=128, patch_size=8),
        text=TextConfig(width=128, layers=2),
    ),
    "tiny-rn": CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(image_size=64, layers=(1, 1, 1, 1), width=16),
        text=TextConfig(width=128, layers=2),
    ),
    "small-vit": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=64, layers=4, width=256, patch_size=8),
        text=TextConfig(width=256, layers=4),
    ),
}
MODEL_CONFIGS: dict[str, CLIPConfig] = {}
for _name, _config in _OPEN_CLIP_ZOO.items():
    MODEL_CONFIGS[_name] = _config
    MODEL_CONFIGS[f"{_name}-quickgelu"] = dataclasses.replace(_config, quick_gelu=True)
MODEL_CONFIGS.update(_SMALL)
# SigLIP (Zhai et al. 2023) as open_clip builds it: a timm ViT with an attention-pool (MAP) head, no class token;
# a bidirectional text tower read at the last token; sigmoid loss with a learned bias.
MODEL_CONFIGS["ViT-B-16-SigLIP"] = CLIPConfig(
    embed_dim=768,
    vision=VisionConfig(image_size=224, timm_model_name="vit_base_patch16_siglip_224", timm_pool="map",
                        timm_proj="none"),
    text=TextConfig(context_length=64, vocab_size=32000, width=768, layers=12, causal=False, pool="last",
                    proj_bias=True, norm_eps=1e-6, tokenizer="hf:timm/ViT-B-16-SigLIP",
                    tokenizer_clean="canonicalize"),
    quick_gelu=False,
    init_logit_bias=-10.0,
)
MODEL_CONFIGS["ViT-SO400M-14-SigLIP"] = CLIPConfig(
    embed_dim=1152,
    vision=VisionConfig(image_size=224, timm_model_name="vit_so400m_patch14_siglip_224", timm_pool="map",
                        timm_proj="none"),
    text=TextConfig(context_length=16, vocab_size=32000, width=1152, layers=27, head_width=72, mlp_ratio=3.7362,
                    causal=False, pool="last", proj_bias=True, norm_eps=1e-6, tokenizer="hf:timm/ViT-B-16-SigLIP",
                    tokenizer_clean="canonicalize"),
    quick_gelu=False,
    init_logit_bias=-10.0,
)
# timm image towers with open_clip's standard text tower (open_clip's names).
MODEL_CONFIGS["convnext_base"] = CLIPConfig(
    embed_dim=512, vision=VisionConfig(image_size=224, timm_model_name="convnext_base", timm_pool="",
                                       timm_proj="linear"), quick_gelu=False)
MODEL_CONFIGS["EVA02-B-16"] = CLIPConfig(
    embed_dim=512, vision=VisionConfig(image_size=224, timm_model_name="eva02_base_patch16_clip_224",
                                       timm_pool="token", timm_proj=""), quick_gelu=False)

# OpenAI's released models, under the names its `clip.available_models()` gives them. The ResNets keep their
# plain names there, so only `load` of OpenAI's files (TorchScript, or its exact shapes) means QuickGELU for them.
OPENAI_MODELS = {"RN50": "RN50-quickgelu", "RN101": "RN101-quickgelu", "RN50x4": "RN50x4-quickgelu",
                 "RN50x16": "RN50x16-quickgelu", "RN50x64": "RN50x64-quickgelu", "ViT-B/32": "ViT-B-32-quickgelu",
                 "ViT-B/16": "ViT-B-16-quickgelu", "ViT-L/14": "ViT-L-14-quickgelu",
                 "ViT-L/14@336px": "ViT-L-14-336-quickgelu"}
# OpenAI's slash spellings keep meaning OpenAI's (QuickGELU) models.
ALIASES = {name: canonical for name, canonical in OPENAI_MODELS.items() if "/" in name}


def available_models() -> list[str]:
    """Names accepted by `create_model` and `load`."""
    return list(MODEL_CONFIGS)


def get_model_config(name: str, **overrides: Any) -> CLIPConfig:
    """The registered config for `name`, with top-level fields or `vision={...}`/`text={...}` replaced.

    Shortcuts: `image_size`, `patch_dropout` (vision) and `context_length` (text)."""
    canonical = ALIASES.get(name, name)
    if canonical not in MODEL_CONFIGS:
        raise ClipModuleError(f"unknown model name {name!r}; available: {', '.join(available_models())}")
    return apply_overrides(MODEL_CONFIGS[canonical], **overrides)


def apply_overrides(config: CLIPConfig, **overrides: Any) -> CLIPConfig:
    vision = dict(overrides.pop("vision", None) or {})
    text = dict(overrides.pop("text", None) or {})
    for key in ("image_size", "patch_dropout"):
        if key in overrides:
            vision[key] = overrides.pop(key)
    if "context_length" in overrides:
        text["context_length"] = overrides.pop("context_length")
    try:
        if isinstance(vision.get("layers"), list):
            vision["layers"] = tuple(vision["layers"])
        return dataclasses.replace(
            config,
            vision=dataclasses.replace(config.vision, **vision),
            text=dataclasses.replace(config.text, **text),
            **overrides,
        )
    except TypeError as error:
        raise ClipModuleError(f"bad model override: {error}") from None
