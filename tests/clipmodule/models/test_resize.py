"""Resizing: position embeddings equal open_clip's `resize_pos_embed` / `force_image_size` on the same weights."""

import open_clip
import pytest
import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed

import clipmodule
from clipmodule.models.resize import resize_grid_embedding, resize_model, resize_sequence_embedding
from tests.clipmodule.models.open_clip_tiny import CONFIGS, build_open_clip, texts, write_hub_folder


def _images(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))


def test_vit_at_another_size_and_context_equals_open_clip(tmp_path):
    config = CONFIGS["vit"]
    write_hub_folder(build_open_clip(config), config, tmp_path / "hub")
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'hub'}", force_image_size=48,
                                    force_context_length=24).eval()
    ours, preprocess = clipmodule.load(tmp_path / "hub", image_size=48, context_length=24)
    assert ours.config.vision.image_size == 48 and ours.context_length == 24
    assert preprocess.transforms[1].size == (48, 48)  # the preprocess follows the new size
    ids = torch.cat([texts(), torch.zeros(2, 8, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert (ours.encode_image(_images(48)) - theirs.encode_image(_images(48))).abs().max() <= 1e-5
        assert (ours.encode_text(ids) - theirs.encode_text(ids)).abs().max() <= 1e-5


def test_grid_and_sequence_resizing_equal_open_clips_functions():
    config = CONFIGS["vit"]
    source = build_open_clip(config)
    target = open_clip.CLIP(**{**config, "vision_cfg": {**config["vision_cfg"], "image_size": 56},
                               "text_cfg": {**config["text_cfg"], "context_length": 10}})
    state = {key: value.clone() for key, value in source.state_dict().items()}
    resize_pos_embed(state, target)
    resize_text_pos_embed(state, target)
    grid = resize_grid_embedding(source.visual.positional_embedding.detach(), (7, 7))
    assert torch.equal(grid, state["visual.positional_embedding"])
    sequence = resize_sequence_embedding(source.positional_embedding.detach(), 10, mode="interpolate")
    assert torch.equal(sequence, state["positional_embedding"])
    # the default truncates a shorter context: a text that fits is encoded exactly as before
    assert torch.equal(resize_sequence_embedding(source.positional_embedding.detach(), 10),
                       source.positional_embedding.detach()[:10])


def test_siglip_map_tower_without_class_token_equals_open_clip(tmp_path):
    config = CONFIGS["siglip"]
    write_hub_folder(build_open_clip(config), config, tmp_path / "hub")
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'hub'}", force_image_size=160).eval()
    ours, _ = clipmodule.load(tmp_path / "hub", image_size=160)
    assert ours.visual.trunk.pos_embed.shape[1] == 100  # 10 x 10 patches, no class token
    with torch.no_grad():
        assert (ours.encode_image(_images(160)) - theirs.encode_image(_images(160))).abs().max() <= 1e-5
    clipmodule.save_checkpoint(ours, tmp_path / "resized.safetensors")
    again, _ = clipmodule.load(tmp_path / "resized.safetensors")  # the config records the trunk's size
    with torch.no_grad():
        assert torch.equal(again.encode_image(_images(160)), ours.encode_image(_images(160)))


def test_resnet_attention_pool_is_resized_keeping_the_mean_token(tmp_path):
    config = CONFIGS["resnet"]
    write_hub_folder(build_open_clip(config), config, tmp_path / "hub")
    native, _ = clipmodule.load(tmp_path / "hub")
    ours, _ = clipmodule.load(tmp_path / "hub", image_size=96)
    old, new = native.visual.attnpool.positional_embedding, ours.visual.attnpool.positional_embedding
    assert new.shape == (1 + 9, old.shape[1]) and torch.equal(new[0], old[0])
    with torch.no_grad():
        assert ours.encode_image(_images(96)).shape == (2, 32)
    with pytest.raises(clipmodule.ClipModuleError, match="multiple of 32"):
        resize_model(native, image_size=100)


def test_convert_and_init_from_at_another_size(tmp_path):
    from clipmodule.checkpoints.cli import main
    from clipmodule.models import create_model
    from clipmodule.train.init import start_from_weights

    config = CONFIGS["vit"]
    write_hub_folder(build_open_clip(config), config, tmp_path / "hub")
    assert main([str(tmp_path / "hub"), str(tmp_path / "out.safetensors"), "--image_size", "40"]) == 0
    converted, _ = clipmodule.load(tmp_path / "out.safetensors")
    resized, _ = clipmodule.load(tmp_path / "hub", image_size=40)
    assert converted.config.vision.image_size == 40
    assert torch.equal(converted.visual.positional_embedding, resized.visual.positional_embedding)
    native, _ = clipmodule.load(tmp_path / "hub")
    configured = create_model("tiny-vit", **{"embed_dim": 32, "quick_gelu": False, "vision": {
        "image_size": 40, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text": {"context_length": 16, "vocab_size": 500, "width": 64, "head_width": 32, "layers": 2}})
    network, _ = start_from_weights(str(tmp_path / "hub"), configured=configured)
    assert torch.equal(network.visual.positional_embedding, resized.visual.positional_embedding)
    assert native.config.vision.image_size == 32
