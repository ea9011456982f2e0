"""Tiny open_clip models with random weights, written as hub folders, for parity tests of the dense-prediction APIs."""

import json

import open_clip
import safetensors.torch
import torch
from open_clip.model import CustomTextCLIP

TINY_SIGLIP = "vit_siglip_tiny_test_patch16"  # registered below: SigLIP's trunk (no class token, MAP head), 2 blocks


def _register_tiny_siglip() -> None:
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer

    if TINY_SIGLIP in timm.list_models(TINY_SIGLIP):
        return

    def vit_siglip_tiny_test_patch16(pretrained: bool = False, **kwargs) -> VisionTransformer:
        options = {"patch_size": 16, "embed_dim": 96, "depth": 2, "num_heads": 3, "class_token": False,
                   "global_pool": "map"}
        return _create_vision_transformer(TINY_SIGLIP, pretrained=pretrained, **{**options, **kwargs})

    register_model(vit_siglip_tiny_test_patch16)


_register_tiny_siglip()
TEXT = {"context_length": 16, "vocab_size": 500, "width": 64, "heads": 2, "layers": 2}
SIGLIP_TEXT = {**TEXT, "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}
CONFIGS = {
    "vit": {"embed_dim": 32, "text_cfg": TEXT,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32}},
    "resnet": {"embed_dim": 32, "text_cfg": TEXT,
               "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32}},
    "siglip": {"embed_dim": 96, "init_logit_bias": -10, "custom_text": True,
               "text_cfg": {**SIGLIP_TEXT, "width": 96, "heads": 3},
               "vision_cfg": {"image_size": 224, "timm_model_name": TINY_SIGLIP,
                              "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"}},
}


def build_open_clip(config: dict) -> torch.nn.Module:
    """open_clip's model for `config`, every weight perturbed (zero biases would hide a mismatch), in eval mode."""
    build = CustomTextCLIP if config.get("custom_text") else open_clip.CLIP
    torch.manual_seed(0)
    model = build(**{key: value for key, value in config.items() if key != "custom_text"}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
        for module in model.modules():  # BatchNorm statistics away from the identity too
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def write_hub_folder(model: torch.nn.Module, config: dict, folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    safetensors.torch.save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))


def texts(batch: int = 2, length: int = 16, eot_at: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 499, (batch, length), generator=generator)
    ids[:, eot_at] = 499
    ids[:, eot_at + 1:] = 0
    return ids
