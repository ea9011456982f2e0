"""`forward_intermediates` equals open_clip's on the same random weights (ViT, ModifiedResNet, timm SigLIP and EVA
towers, both text towers); a Hugging Face text tower's equal transformers' hidden states."""

import json

import open_clip
import pytest
import torch
from open_clip.model import CustomTextCLIP
from transformers import AutoModel, XLMRobertaConfig

import clipmodule
from clipmodule.errors import ClipModuleError
from tests.clipmodule.models.open_clip_tiny import CONFIGS, TEXT, build_open_clip, texts, write_hub_folder

EVA = {"embed_dim": 32, "custom_text": True, "text_cfg": TEXT, "vision_cfg": {
    "image_size": 224, "timm_model_name": "eva02_tiny_patch14_224", "timm_model_pretrained": False,
    "timm_pool": "token", "timm_proj": None}}
CASES = {**CONFIGS, "eva": EVA}


def _close(ours, theirs) -> bool:
    if isinstance(ours, list):
        return len(ours) == len(theirs) and all(_close(a, b) for a, b in zip(ours, theirs))
    return ours.shape == theirs.shape and (ours - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("case, options", [
    ("vit", {"image_indices": None, "image_output_fmt": "NCHW", "normalize_intermediates": True,
             "image_output_extra_tokens": True}),
    ("vit", {"image_indices": [0, -1], "image_output_fmt": "NLC"}),
    ("resnet", {"image_indices": None}),
    ("siglip", {"image_indices": 1, "image_output_fmt": "NLC"}),
    pytest.param("eva", {"image_indices": [1, -1], "image_output_fmt": "NCHW"}, marks=pytest.mark.slow),
])
def test_forward_intermediates_equal_open_clip(case, options, tmp_path):
    config = CASES[case]
    theirs = build_open_clip(config)
    write_hub_folder(theirs, config, tmp_path / "hub")
    ours, _ = clipmodule.load(tmp_path / "hub")
    size = config["vision_cfg"]["image_size"]
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    ids = texts(1)
    with torch.no_grad():
        expected = theirs.forward_intermediates(images, ids, text_indices=[0, 1], **options)
        got = ours.forward_intermediates(
            images, ids, image_indices=options["image_indices"], text_indices=[0, 1],
            output_fmt=options.get("image_output_fmt", "NCHW"),
            normalize_intermediates=options.get("normalize_intermediates", False),
            output_extra_tokens=options.get("image_output_extra_tokens", False))
    assert set(got) == set(expected)
    for key in expected:
        assert _close(got[key], expected[key]), key
    assert got["image_intermediates"]


def test_return_tokens_are_the_final_patch_tokens(tmp_path):
    config = CONFIGS["vit"]
    write_hub_folder(build_open_clip(config), config, tmp_path / "hub")
    ours, _ = clipmodule.load(tmp_path / "hub")
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'hub'}").eval()
    theirs.visual.output_tokens = True
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled, tokens = ours.encode_image(images, return_tokens=True)
        their_pooled, their_tokens = theirs.visual(images)
        assert (pooled - their_pooled).abs().max() <= 1e-5 and (tokens - their_tokens).abs().max() <= 1e-5
        assert torch.allclose(pooled, ours.encode_image(images), atol=1e-5)
    with pytest.raises(ClipModuleError, match="out of range"):
        ours.forward_intermediates(images, indices=5)


def test_hf_text_intermediates_equal_transformers_hidden_states(tmp_path):
    hf = XLMRobertaConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=96, max_position_embeddings=40, pad_token_id=1)
    hf.save_pretrained(tmp_path / "xlmr")
    vision = {"layers": 1, "width": 64, "patch_size": 8, "image_size": 16}
    text_cfg = {"hf_model_name": str(tmp_path / "xlmr"), "hf_model_pretrained": False, "hf_pooler_type": "mean_pooler",
                "hf_proj_type": "mlp", "context_length": 16}
    torch.manual_seed(0)
    theirs = CustomTextCLIP(32, vision, text_cfg).eval()
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": 32, "custom_text": True, "vision_cfg": vision, "text_cfg": text_cfg}}))
    import safetensors.torch

    safetensors.torch.save_file(theirs.state_dict(), str(tmp_path / "hub" / "open_clip_model.safetensors"))
    ours, _ = clipmodule.load(tmp_path / "hub")
    reference = AutoModel.from_config(hf, add_pooling_layer=False).eval()
    reference.load_state_dict(ours.text.transformer.state_dict())
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    ids[:, 9:] = 1
    with torch.no_grad():
        got = ours.forward_intermediates(text=ids, normalize=False)
        states = reference(input_ids=ids, attention_mask=(ids != 1).long(), output_hidden_states=True).hidden_states
    assert _close(got["text_intermediates"], list(states[1:]))
    assert _close(got["text_features"], theirs.encode_text(ids).detach())


@pytest.mark.parametrize("final_ln_after_pool", [False, True])
def test_a_clipa_towers_tokens_and_intermediates_pool_as_encode_image(final_ln_after_pool):
    """CLIPA's average-pooled image embedding is the same through every path (no class-token shortcut)."""
    from clipmodule.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    model.visual.pool, model.visual.final_ln_after_pool = "avg", final_ln_after_pool
    images = torch.randn(2, 3, model.config.vision.image_size, model.config.vision.image_size)
    with torch.no_grad():
        plain = model.encode_image(images)
        pooled, _ = model.encode_image(images, return_tokens=True)
        features = model.forward_intermediates(images, None, indices=1, normalize=False)["image_features"]
    assert torch.allclose(pooled, plain, atol=1e-6) and torch.allclose(features, plain, atol=1e-6)
