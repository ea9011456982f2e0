"""The model zoo: parameter counts equal open_clip's, shapes and options behave as a user expects."""

import math

import open_clip
import pytest
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.models import available_models, count_parameters, create_model, get_model_config

PAPER_MODELS = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"]


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_parameter_count_equals_open_clip(name):
    with torch.device("meta"):  # shapes only; both libraries build their modules the same way
        ours = count_parameters(create_model(name))
        theirs = open_clip.CLIP(**open_clip.get_model_config(name))
    assert ours == sum(p.numel() for p in theirs.parameters())


def test_registry_lists_paper_models_and_small_configs():
    names = available_models()
    assert set(PAPER_MODELS) <= set(names)
    assert {"tiny-vit", "tiny-rn", "small-vit"} <= set(names)


def test_openai_spellings_are_accepted():
    assert get_model_config("ViT-B/32") == get_model_config("ViT-B-32")
    assert get_model_config("ViT-L/14@336px").vision.image_size == 336


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
