"""open_clip's model configs (`model_cfg`: its `model_configs/*.json`, the `model_cfg` of `open_clip_config.json`)
read as our typed config, and written back.

Only what our modules build is accepted: a key that would change the architecture (attention pooling, CoCa's
multimodal decoder, other norms or blocks) is refused by name, never dropped. The registry (`config.py`) reads
open_clip's whole zoo through this one parser, so a registered name means what open_clip's JSON says.
"""

from __future__ import annotations

import math
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.models.config import CLIPConfig, TextConfig, VisionConfig

# open_clip's defaults for the options we do not build: a config may spell them out, but only at these values.
_VISION_INERT = {
    "attentional_pool": False, "pos_embed_type": "learnable", "output_tokens": False, "norm_kwargs": None,
    "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "timm_model_pretrained": False,
}
_TEXT_INERT = {
    "tokenizer_mode": None, "embed_cls": False, "use_pad_mask": False, "final_ln_after_pool": False,
    "output_tokens": False, "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False,
}
# Options that only matter when another option (checked above) is on.
_VISION_DEPENDENT = ("attn_pooler_queries", "attn_pooler_heads", "timm_drop", "timm_drop_path")
# hf_model_pretrained: open_clip would download the tower's weights; here they come from the checkpoint.
_TEXT_DEPENDENT = ("pad_id", "hf_model_pretrained", "tokenizer_kwargs")
_VISION_BUILT = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio", "ls_init_value",
                 "patch_dropout", "timm_model_name", "timm_pool", "timm_proj", "timm_proj_bias", "no_ln_pre",
                 "pool_type", "final_ln_after_pool", "act_kwargs"}
_TEXT_BUILT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "ls_init_value",
               "no_causal_mask", "pool_type", "proj_bias", "proj_type", "norm_kwargs", "act_kwargs", "eos_id",
               "hf_tokenizer_name", "hf_model_name", "hf_pooler_type", "hf_proj_type"}
_TOP_LEVEL = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
              "cast_dtype", "nonscalar_logit_scale", "custom_text"}
_TOKENIZER_KWARGS = {"clean", "strip_sep_token"}


def config_from_open_clip(model_cfg: dict[str, Any], source: str) -> CLIPConfig:
    """Our config for open_clip's `model_cfg` (plain names mean exact GELU: `quick_gelu` defaults to False)."""
    if not isinstance(model_cfg, dict):
        raise ClipModuleError(f"{source}: model_cfg is not a JSON object")
    unknown = sorted(set(model_cfg) - _TOP_LEVEL)
    if "multimodal_cfg" in unknown:
        raise ClipModuleError(f"{source}: CoCa's captioning decoder (multimodal_cfg) is not built by this project")
    if unknown:
        raise ClipModuleError(f"{source}: open_clip option {unknown[0]!r} is not supported")
    if model_cfg.get("nonscalar_logit_scale"):
        raise ClipModuleError(f"{source}: open_clip's nonscalar_logit_scale=true is not supported")
    vision_cfg, text_cfg = dict(model_cfg.get("vision_cfg") or {}), dict(model_cfg.get("text_cfg") or {})
    _refuse_active(vision_cfg, _VISION_INERT, {*_VISION_BUILT, *_VISION_DEPENDENT}, f"{source}: vision_cfg")
    _refuse_active(text_cfg, _TEXT_INERT, {*_TEXT_BUILT, *_TEXT_DEPENDENT}, f"{source}: text_cfg")
    quick_gelu = bool(model_cfg.get("quick_gelu", False))
    try:
        return CLIPConfig(
            embed_dim=int(model_cfg["embed_dim"]),
            vision=_vision_config(vision_cfg, source, quick_gelu),
            text=_text_config(text_cfg, source, quick_gelu),
            quick_gelu=quick_gelu,
            init_logit_scale=float(model_cfg.get("init_logit_scale", math.log(1 / 0.07))),
            init_logit_bias=model_cfg.get("init_logit_bias"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ClipModuleError(f"{source}: malformed open_clip model_cfg ({error!r})") from None


def _approximate(act_kwargs: dict | None, quick_gelu: bool, where: str) -> str:
    """GELU's `approximate` ("none" exact, "tanh": SigLIP 2's text tower) from open_clip's `act_kwargs`."""
    act_kwargs = dict(act_kwargs or {})
    approximate = act_kwargs.pop("approximate", "none")
    if act_kwargs or approximate not in ("none", "tanh"):
        raise ClipModuleError(f"{where}.act_kwargs {act_kwargs or approximate!r} is not supported "
                              "(only approximate: none | tanh)")
    if quick_gelu and approximate != "none":
        raise ClipModuleError(f"{where}.act_kwargs: QuickGELU takes no 'approximate'")
    return approximate


def _vision_config(vision_cfg: dict[str, Any], source: str, quick_gelu: bool) -> VisionConfig:
    image_size = vision_cfg.get("image_size", 224)
    if isinstance(image_size, list | tuple):
        if len(set(image_size)) != 1:
            raise ClipModuleError(f"{source}: non-square image_size {image_size} is not supported")
        image_size = image_size[0]
    if vision_cfg.get("timm_model_name"):  # timm builds the tower by name: the ViT fields stay at our defaults
        return VisionConfig(
            image_size=int(image_size),
            timm_model_name=vision_cfg["timm_model_name"],
            timm_pool=vision_cfg.get("timm_pool", "avg"),
            timm_proj=vision_cfg.get("timm_proj", "linear") or "",  # open_clip's null: timm's own classifier
            timm_proj_bias=bool(vision_cfg.get("timm_proj_bias", False)),
        )
    layers = vision_cfg.get("layers", 12)
    pool = vision_cfg.get("pool_type", "tok")
    if pool not in ("tok", "avg"):
        raise ClipModuleError(f"{source}: vision_cfg.pool_type={pool!r} is not supported (tok, avg)")
    return VisionConfig(
        image_size=int(image_size),
        layers=tuple(layers) if isinstance(layers, list | tuple) else int(layers),
        width=int(vision_cfg.get("width", 768)),
        patch_size=int(vision_cfg.get("patch_size", 16) or 32),  # null for ResNets: our (unused) default
        head_width=int(vision_cfg.get("head_width", 64)),
        mlp_ratio=float(vision_cfg.get("mlp_ratio", 4.0)),
        ls_init_value=vision_cfg.get("ls_init_value"),
        patch_dropout=float(vision_cfg.get("patch_dropout", 0.0)),
        ln_pre=not vision_cfg.get("no_ln_pre", False),
        pool=pool,
        final_ln_after_pool=bool(vision_cfg.get("final_ln_after_pool", False)),
        gelu_approximate=_approximate(vision_cfg.get("act_kwargs"), quick_gelu, f"{source}: vision_cfg"),
    )


def _tokenizer_fields(text_cfg: dict[str, Any], source: str) -> dict[str, Any]:
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    unknown = sorted(set(kwargs) - _TOKENIZER_KWARGS)
    if unknown:
        raise ClipModuleError(f"{source}: text_cfg.tokenizer_kwargs.{unknown[0]} is not supported")
    return {"tokenizer": f"hf:{text_cfg['hf_tokenizer_name']}" if text_cfg.get("hf_tokenizer_name") else "openai_bpe",
            "tokenizer_clean": str(kwargs.get("clean", "whitespace")),
            "tokenizer_strip_sep": bool(kwargs.get("strip_sep_token", False))}


def _text_config(text_cfg: dict[str, Any], source: str, quick_gelu: bool) -> TextConfig:
    tokenizer = _tokenizer_fields(text_cfg, source)
    if text_cfg.get("hf_model_name"):  # transformers builds the tower from its config: our fields stay default
        return TextConfig(context_length=int(text_cfg.get("context_length", 77)), **tokenizer,
                          hf_model_name=str(text_cfg["hf_model_name"]),
                          hf_pooler=text_cfg.get("hf_pooler_type", "mean_pooler"),
                          hf_proj=text_cfg.get("hf_proj_type", "mlp") or "")
    width, heads = int(text_cfg.get("width", 512)), int(text_cfg.get("heads", 8))
    if width % heads:
        raise ClipModuleError(f"{source}: text_cfg width {width} is not a multiple of heads {heads}")
    proj_type = text_cfg.get("proj_type", "linear")
    if proj_type not in ("linear", "none"):
        raise ClipModuleError(f"{source}: text_cfg.proj_type={proj_type!r} is not supported (linear, none)")
    return TextConfig(
        context_length=int(text_cfg.get("context_length", 77)),
        vocab_size=int(text_cfg.get("vocab_size", 49408)),
        width=width,
        layers=int(text_cfg.get("layers", 12)),
        head_width=width // heads,
        mlp_ratio=float(text_cfg.get("mlp_ratio", 4.0)),
        ls_init_value=text_cfg.get("ls_init_value"),
        causal=not text_cfg.get("no_causal_mask", False),
        pool=_text_pool(text_cfg.get("pool_type", "argmax"), source),
        eos_id=int(text_cfg.get("eos_id", 2)),
        proj_type=proj_type,
        proj_bias=bool(text_cfg.get("proj_bias", False)),
        norm_eps=_norm_eps(text_cfg.get("norm_kwargs"), source),
        gelu_approximate=_approximate(text_cfg.get("act_kwargs"), quick_gelu, f"{source}: text_cfg"),
        **tokenizer,
    )


def _text_pool(pool_type: str, source: str) -> str:
    if pool_type not in ("argmax", "last", "eos", "first"):
        raise ClipModuleError(f"{source}: text_cfg.pool_type={pool_type!r} is not supported (argmax, last, eos, first)")
    return pool_type


def _norm_eps(norm_kwargs: dict | None, source: str) -> float:
    norm_kwargs = dict(norm_kwargs or {})
    eps = norm_kwargs.pop("eps", 1e-5)
    if norm_kwargs:
        raise ClipModuleError(f"{source}: text_cfg.norm_kwargs {sorted(norm_kwargs)} are not supported (only eps)")
    return float(eps)


def uses_custom_text(config: CLIPConfig) -> bool:
    """open_clip's CustomTextCLIP layout (text weights under `text.`), as its SigLIP and timm-tower configs use."""
    return (config.vision.timm_model_name is not None or config.text.tokenizer != "openai_bpe"
            or config.text.hf_model_name is not None)


def _refuse_active(section: dict[str, Any], inert: dict[str, Any], known: set[str], where: str) -> None:
    for key, value in section.items():
        if key not in inert and key not in known:
            raise ClipModuleError(f"{where}.{key} is not an open_clip option this project knows")
        if key in inert and value != inert[key] and not (key == "block_type" and value == "default"):
            raise ClipModuleError(f"{where}.{key}={value!r} builds a tower this project does not have")


def _vision_to_open_clip(vision: VisionConfig) -> dict[str, Any]:
    if vision.timm_model_name is not None:
        return {"image_size": vision.image_size, "timm_model_name": vision.timm_model_name,
                "timm_model_pretrained": False, "timm_pool": vision.timm_pool,
                "timm_proj": vision.timm_proj or None, "timm_proj_bias": vision.timm_proj_bias}
    vision_cfg: dict[str, Any] = {"image_size": vision.image_size,
                                  "layers": list(vision.layers) if vision.is_resnet else vision.layers,
                                  "width": vision.width, "patch_size": None if vision.is_resnet else vision.patch_size,
                                  "head_width": vision.head_width, "mlp_ratio": vision.mlp_ratio}
    if vision.ls_init_value is not None:
        vision_cfg["ls_init_value"] = vision.ls_init_value
    if vision.patch_dropout:
        vision_cfg["patch_dropout"] = vision.patch_dropout
    if not vision.ln_pre:
        vision_cfg["no_ln_pre"] = True
    if vision.pool != "tok":
        vision_cfg["pool_type"] = vision.pool
    if vision.final_ln_after_pool:
        vision_cfg["final_ln_after_pool"] = True
    if vision.gelu_approximate != "none":
        vision_cfg["act_kwargs"] = {"approximate": vision.gelu_approximate}
    return vision_cfg


def _text_to_open_clip(text: TextConfig) -> dict[str, Any]:
    if text.hf_model_name is not None:
        text_cfg = {"context_length": text.context_length, "hf_model_name": text.hf_model_name,
                    "hf_model_pretrained": False, "hf_pooler_type": text.hf_pooler,
                    "hf_proj_type": text.hf_proj or None}
    else:
        text_cfg = {"context_length": text.context_length, "vocab_size": text.vocab_size, "width": text.width,
                    "heads": text.width // text.head_width, "layers": text.layers, "mlp_ratio": text.mlp_ratio,
                    "no_causal_mask": not text.causal, "pool_type": text.pool, "proj_bias": text.proj_bias,
                    "norm_kwargs": {"eps": text.norm_eps}}
        if text.ls_init_value is not None:
            text_cfg["ls_init_value"] = text.ls_init_value
        if text.pool == "eos":
            text_cfg["eos_id"] = text.eos_id
        if text.proj_type != "linear":
            text_cfg["proj_type"] = text.proj_type
        if text.gelu_approximate != "none":
            text_cfg["act_kwargs"] = {"approximate": text.gelu_approximate}
    if text.tokenizer.startswith("hf:"):
        text_cfg["hf_tokenizer_name"] = text.tokenizer[len("hf:"):]
        text_cfg["tokenizer_kwargs"] = {"clean": text.tokenizer_clean}
        if text.tokenizer_strip_sep:
            text_cfg["tokenizer_kwargs"]["strip_sep_token"] = True
    return text_cfg


def config_to_open_clip(config: CLIPConfig) -> dict[str, Any]:
    """open_clip's `model_cfg` for our config; `config_from_open_clip` gives the same config back."""
    model_cfg: dict[str, Any] = {"embed_dim": config.embed_dim, "quick_gelu": config.quick_gelu,
                                 "vision_cfg": _vision_to_open_clip(config.vision),
                                 "text_cfg": _text_to_open_clip(config.text)}
    if uses_custom_text(config):
        model_cfg["custom_text"] = True
    if config.init_logit_scale != math.log(1 / 0.07):
        model_cfg["init_logit_scale"] = config.init_logit_scale
    if config.init_logit_bias is not None:
        model_cfg["init_logit_bias"] = config.init_logit_bias
    return model_cfg
