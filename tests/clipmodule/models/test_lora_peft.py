"""Parity with peft: its LoRA on a transformers CLIPModel (separate q/k/v projections, where peft applies) and ours
on the same weights, with the same adapter weights, give the same features; so do their trainable counts. Ours
reaches the same update through the packed q/k/v projection that peft cannot adapt (peft #761)."""

from __future__ import annotations

import open_clip
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel

from clipmodule.checkpoints.io import load_checkpoint
from clipmodule.models.lora import LoRAConfig, apply_lora

pytestmark = pytest.mark.usefixtures("one_thread")
PEFT_NAMES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "out", "fc1": "fc1", "fc2": "fc2"}


def _hf_clip(tmp_path):
    torch.manual_seed(0)
    config = HFCLIPConfig(  # tiny, built from a config: nothing is downloaded
        text_config=dict(hidden_size=128, intermediate_size=512, num_attention_heads=2, num_hidden_layers=2),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_attention_heads=2, num_hidden_layers=2,
                           image_size=32, patch_size=8),
        projection_dim=64,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(tmp_path / "hf")
    return model


def _our_adapter(ours, tower: str, layer: int, module: str):
    """(adapter, part index) of ours that peft's `<tower>.encoder.layers.<layer>.<...>.<module>` corresponds to."""
    prefix = "visual.transformer" if tower == "vision_model" else "transformer"
    block = ours.get_submodule(f"{prefix}.resblocks.{layer}")
    target = PEFT_NAMES[module]
    if target in "qkv":
        adapter = block.attn.in_proj_lora
        return adapter, adapter.chunks.tolist().index("qkv".index(target))
    linear = {"out": block.attn.out_proj, "fc1": block.mlp.c_fc, "fc2": block.mlp.c_proj}[target]
    return linear.lora, 0


def _copy_adapters(peft_model, ours) -> int:
    """peft's A and B (B made random: it starts at zero) into ours; returns how many adapters were copied."""
    generator = torch.Generator().manual_seed(1)
    copied = 0
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        parts = name.split(".")
        tower, layer, projection = parts[parts.index("encoder") - 1], int(parts[parts.index("layers") + 1]), parts[-1]
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        with torch.no_grad():
            b.copy_(torch.randn(b.shape, generator=generator) * 0.2)
            adapter, part = _our_adapter(ours, tower, layer, projection)
            adapter.a[part].copy_(a)
            adapter.b[part].copy_(b)
        copied += 1
    return copied


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")])
def test_peft_lora_on_hf_clip_and_ours_give_the_same_features(tmp_path, targets):
    hf = _hf_clip(tmp_path)
    ours = load_checkpoint(tmp_path / "hf").eval()
    peft_model = get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(targets)))
    apply_lora(ours, LoRAConfig(rank=4, alpha=8, targets=tuple(PEFT_NAMES[name] for name in targets)))
    assert _copy_adapters(peft_model, ours) == 2 * 2 * len(targets)  # 2 towers x 2 layers
    trainable = sum(parameter.numel() for parameter in ours.parameters() if parameter.requires_grad)
    assert trainable == sum(parameter.numel() for parameter in peft_model.parameters() if parameter.requires_grad)
    peft_model.eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = open_clip.tokenize(["a red cube on a blue sphere", "a dog"])
    with torch.no_grad():
        theirs_image = peft_model.get_image_features(pixel_values=images)
        theirs_text = peft_model.get_text_features(input_ids=text)
        ours_image, ours_text = ours.encode_image(images), ours.encode_text(text)
        with peft_model.disable_adapter():
            plain_image = peft_model.get_image_features(pixel_values=images)
    theirs_image = getattr(theirs_image, "pooler_output", theirs_image)
    theirs_text = getattr(theirs_text, "pooler_output", theirs_text)
    plain_image = getattr(plain_image, "pooler_output", plain_image)
    assert (ours_image - theirs_image).abs().max() <= 1e-5
    assert (ours_text - theirs_text).abs().max() <= 1e-5
    assert (plain_image - theirs_image).abs().max() > 1e-3  # the adapters matter: the check above could fail
