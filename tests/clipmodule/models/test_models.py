"""The model zoo: parameter counts equal open_clip's, shapes and options behave as a user expects."""

import math

import open_clip
import pytest
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.models import available_models, count_parameters, create_model, get_model_config

PAPER_MODELS = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"]
OPEN_CLIP_ZOO = [*PAPER_MODELS, "ViT-B-16-plus-240", "ViT-H-14", "ViT-g-14", "ViT-bigG-14"]


@pytest.mark.parametrize("name", [*OPEN_CLIP_ZOO, *(f"{name}-quickgelu" for name in OPEN_CLIP_ZOO)])
def test_parameter_count_equals_open_clip(name):
    # open_clip has no -quickgelu json for every name; QuickGELU has no parameters, so the plain config counts.
    config = open_clip.get_model_config(name) or open_clip.get_model_config(name.removesuffix("-quickgelu"))
    with torch.device("meta"):  # shapes only: bigG is 2.5B parameters
        ours = count_parameters(create_model(name))
        theirs = open_clip.CLIP(**config)
    assert ours == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("name", OPEN_CLIP_ZOO)
def test_open_clip_semantics_plain_is_gelu_and_twin_is_quickgelu(name):
    assert get_model_config(name).quick_gelu is False
    assert get_model_config(f"{name}-quickgelu").quick_gelu is True
    theirs = open_clip.get_model_config(name)["vision_cfg"]
    ours = get_model_config(name).vision
    assert ours.head_width == theirs.get("head_width", 64) and ours.mlp_ratio == theirs.get("mlp_ratio", 4.0)


def test_layer_scale_equals_open_clip():
    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(layers=1, width=64, patch_size=8, image_size=16, ls_init_value=0.5)
    text = open_clip.CLIPTextCfg(width=64, heads=1, layers=1, ls_init_value=0.5)
    theirs = open_clip.CLIP(32, vision, text).eval()
    for block in [*theirs.visual.transformer.resblocks, *theirs.transformer.resblocks]:
        torch.nn.init.normal_(block.ls_1.gamma)
    ours = create_model("tiny-vit", embed_dim=32, quick_gelu=False,
                        vision=dict(layers=1, width=64, patch_size=8, image_size=16, ls_init_value=0.5),
                        text=dict(width=64, layers=1, ls_init_value=0.5)).eval()
    ours.load_state_dict(theirs.state_dict())
    images, text_ids = torch.randn(2, 3, 16, 16), open_clip.tokenize(["a cat", "a dog"])
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() < 1e-5
        assert (ours.encode_text(text_ids) - theirs.encode_text(text_ids)).abs().max() < 1e-5


def test_registry_lists_paper_models_and_small_configs():
    names = available_models()
    assert set(PAPER_MODELS) <= set(names)
    assert {"tiny-vit", "tiny-rn", "small-vit"} <= set(names)


def test_openai_spellings_mean_openai_quickgelu_models():
    assert get_model_config("ViT-B/32") == get_model_config("ViT-B-32-quickgelu")
    assert get_model_config("ViT-B/32").quick_gelu and not get_model_config("ViT-B-32").quick_gelu
    assert get_model_config("ViT-L/14@336px") == get_model_config("ViT-L-14-336-quickgelu")


def test_unknown_name_is_one_line_error():
    with pytest.raises(ClipModuleError, match="unknown model name 'ViT-Q-99'") as info:
        create_model("ViT-Q-99")
    assert "\n" not in str(info.value)


def test_bad_override_is_one_line_error():
    with pytest.raises(ClipModuleError, match="bad model override"):
        create_model("tiny-vit", vision={"depth": 3})


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_forward_shapes_and_logit_scale(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = model.config.vision.image_size
    images, text = torch.randn(3, 3, size, size), torch.randint(1, 49406, (2, 77))
    text[:, 5] = 49407
    logits_per_image, logits_per_text = model(images, text)
    assert logits_per_image.shape == (3, 2) and torch.equal(logits_per_text, logits_per_image.t())
    assert math.isclose(model.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)
    features = model.encode_image(images, normalize=True)
    assert torch.allclose(features.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_text_feature_is_read_at_end_of_text_token():
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :4] = torch.tensor([49406, 320, 1929, 49407])
    changed = text.clone()
    changed[0, 10] = 500  # after EOT: the causal mask hides it from the EOT position
    assert torch.allclose(model.encode_text(text), model.encode_text(changed))
    changed[0, 2] = 501  # before EOT: it must matter
    assert not torch.allclose(model.encode_text(text), model.encode_text(changed))


def test_siglip_bias_and_patch_dropout_and_checkpointing():
    torch.manual_seed(0)
    model = create_model("tiny-vit", init_logit_bias=-10.0, patch_dropout=0.5)
    assert model.logit_bias is not None and model.logit_bias.item() == -10.0
    images = torch.randn(2, 3, 32, 32)
    model.train()
    assert model.visual.drop_patches(torch.randn(2, 17, 128)).shape == (2, 9, 128)
    model.eval()
    assert torch.allclose(model.encode_image(images), model.encode_image(images))
    model.set_grad_checkpointing(True)
    model.train()
    model.visual.patch_dropout = 0.0
    text = torch.randint(1, 49407, (2, 77))
    loss = model(images, text)[0].sum()
    loss.backward()
    assert model.visual.conv1.weight.grad is not None
    assert create_model("tiny-vit").logit_bias is None
