"""timm image towers (ConvNeXt, EVA02, a MAP-head ViT as SigLIP's) equal open_clip's on the same random weights.

Small timm models stand in for the registered ones (same code paths, seconds on a CPU); the registered names'
parameter counts are checked at full size on the meta device."""

import json

import open_clip
import pytest
import safetensors.torch
import torch
from open_clip.model import CustomTextCLIP

import clipmodule
from clipmodule.models import count_parameters, create_model

pytest.importorskip("timm")
TEXT = {"context_length": 16, "vocab_size": 500, "width": 64, "heads": 1, "layers": 1}
SIGLIP_TEXT = {**TEXT, "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}
CASES = {  # open_clip's config for each family, with a small timm trunk in place of the big one
    "convnext": {"embed_dim": 32, "text_cfg": TEXT, "vision_cfg": {
        "timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear",
        "timm_drop": 0.0, "timm_drop_path": 0.1, "image_size": 64}},
    "eva02": {"embed_dim": 32, "custom_text": True, "text_cfg": TEXT, "vision_cfg": {
        "image_size": 224, "timm_model_name": "eva02_tiny_patch14_224", "timm_model_pretrained": False,
        "timm_pool": "token", "timm_proj": None}},
    "siglip_map_head": {"embed_dim": 192, "init_logit_bias": -10, "custom_text": True,
                        "text_cfg": {**SIGLIP_TEXT, "width": 192, "heads": 3},
                        "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224",
                                       "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"}},
}


@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP", "ViT-SO400M-14-SigLIP", "convnext_base", "EVA02-B-16"])
def test_parameter_count_equals_open_clip(name):
    config = open_clip.get_model_config(name)
    build = CustomTextCLIP if config.get("custom_text") else open_clip.CLIP
    with torch.device("meta"):
        theirs = build(**{key: value for key, value in config.items() if key != "custom_text"})
        ours = create_model(name)
    assert count_parameters(ours) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("case", sorted(CASES))
def test_timm_tower_equals_open_clip_and_round_trips(case, tmp_path):
    config = CASES[case]
    build = CustomTextCLIP if config.get("custom_text") else open_clip.CLIP
    torch.manual_seed(0)
    theirs = build(**{key: value for key, value in config.items() if key != "custom_text"}).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():  # zero-initialised biases would hide a mismatch
            parameter.add_(torch.randn_like(parameter) * 0.02)
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    safetensors.torch.save_file(theirs.state_dict(), str(folder / "open_clip_model.safetensors"))
    ours, _ = clipmodule.load(folder)
    size = config["vision_cfg"]["image_size"]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, size, size, generator=generator)
    text = torch.randint(0, 499, (2, 16), generator=generator)
    text[:, 5] = 499
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= 1e-5
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= 1e-5
    torch.save(theirs.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(clipmodule.ClipModuleError, match="bare state dict of a timm, SigLIP or Hugging Face"):
        clipmodule.load(tmp_path / "bare.pt")
    clipmodule.save_checkpoint(ours, tmp_path / "back", format="open_clip")
    reread, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'back'}")
    with torch.no_grad():
        assert (reread.eval().encode_image(images) - theirs.encode_image(images)).abs().max() <= 1e-5


def test_timm_tower_trains_one_step():
    torch.manual_seed(0)
    from clipmodule.loss import clip_loss

    model = create_model("tiny-vit", embed_dim=32, vision={"timm_model_name": "convnext_atto", "timm_pool": "",
                                                           "image_size": 64})
    images, text = torch.randn(2, 3, 64, 64), torch.randint(1, 49406, (2, 77))
    text[:, 4] = 49407
    loss = clip_loss(model.encode_image(images, normalize=True), model.encode_text(text, normalize=True),
                     model.logit_scale.exp())
    loss.backward()
    assert model.visual.trunk.stem[0].weight.grad is not None and model.visual.head.proj.weight.grad is not None
