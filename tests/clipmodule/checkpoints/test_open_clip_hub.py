"""open_clip hub folders and Hugging Face hub caches load as the model they describe, and ours writes them back."""

import json
import os

import numpy as np
import open_clip
import pytest
import safetensors.torch
import torch
from PIL import Image
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPImageProcessor, CLIPModel

import clipmodule
from clipmodule.checkpoints.io import load_checkpoint, save_checkpoint
from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.errors import ClipModuleError

TOL = 1e-5
VOCAB = 1000  # the embedding table is most of a cut-down model's parameters; its size changes nothing here


def _cut(name, quick_gelu=None):
    """open_clip's own config for `name`, depth cut to 1 block per tower and 28px images, widths and heads kept."""
    config = json.loads(json.dumps(open_clip.get_model_config(name)))
    config["vision_cfg"].update(layers=1, image_size=28)
    config["text_cfg"].update(layers=1, vocab_size=VOCAB)
    if quick_gelu is not None:
        config["quick_gelu"] = quick_gelu
    return config


def _open_clip(config, seed=0):
    torch.manual_seed(seed)
    model = open_clip.CLIP(**config).eval()
    with torch.no_grad():  # open_clip zero-inits some biases; random everywhere makes every weight matter
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def _inputs(image_size, vocab=VOCAB):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, image_size, image_size, generator=generator)
    text = torch.randint(1, vocab - 1, (2, 77), generator=generator)
    text[:, 6] = vocab - 1  # the end-of-text token: the largest id, where the text feature is read
    return images, text


def _hub_folder(folder, theirs, config, preprocess_cfg=None, weights="open_clip_model.safetensors"):
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config,
                                                              "preprocess_cfg": preprocess_cfg or {}}))
    if weights.endswith(".safetensors"):
        safetensors.torch.save_file(theirs.state_dict(), str(folder / weights))
    else:
        torch.save(theirs.state_dict(), folder / weights)
    return folder


def _assert_equal_outputs(theirs, ours, image_size):
    images, text = _inputs(image_size)
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= TOL
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= TOL


@pytest.mark.parametrize("name, weights", [("ViT-H-14", "open_clip_model.safetensors"),
                                           ("ViT-g-14", "open_clip_pytorch_model.bin"),
                                           ("ViT-bigG-14", "open_clip_model.safetensors"),
                                           ("ViT-L-14", "open_clip_pytorch_model.bin")])
def test_hub_folder_loads_as_open_clip_builds_it(name, weights, tmp_path):
    config = _cut(name)
    theirs = _open_clip(config)
    folder = _hub_folder(tmp_path / name, theirs, config, weights=weights)
    ours, _ = clipmodule.load(folder)
    head_width = config["vision_cfg"].get("head_width", 64)
    assert ours.config.vision.head_width == head_width and ours.config.quick_gelu is False
    _assert_equal_outputs(theirs, ours, 28)
    # The same weights as a bare file: head width and activation are not in them, so no guess is made.
    torch.save(theirs.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ClipModuleError, match="does not say its attention head width or its activation") as info:
        clipmodule.load(tmp_path / "bare.pt")
    assert "\n" not in str(info.value) and "model=NAME" in str(info.value)


def test_bare_file_is_read_with_the_named_architecture(tmp_path):
    theirs = _open_clip(_cut("ViT-H-14"))
    torch.save(theirs.state_dict(), tmp_path / "bare.pt")
    (tmp_path / "cfg.json").write_text(json.dumps(_cut("ViT-H-14")))  # open_clip's model_configs format
    ours = load_checkpoint(tmp_path / "bare.pt", model=str(tmp_path / "cfg.json"))
    _assert_equal_outputs(theirs, ours.eval(), 28)
    with pytest.raises(ClipModuleError, match="weights do not fit this architecture: .*shape mismatches") as info:
        load_checkpoint(tmp_path / "bare.pt", model="small-vit")
    assert "\n" not in str(info.value)


def test_quickgelu_twin_config_gives_quickgelu(tmp_path):
    config = _cut("ViT-L-14-quickgelu")
    theirs = _open_clip(config)
    ours, _ = clipmodule.load(_hub_folder(tmp_path / "hub", theirs, config))
    assert ours.config.quick_gelu
    _assert_equal_outputs(theirs, ours, 28)


def test_unsupported_open_clip_tower_is_refused_by_name(tmp_path):
    config = _cut("ViT-L-14")
    theirs = _open_clip(config)
    config["vision_cfg"]["attentional_pool"] = True
    folder = _hub_folder(tmp_path / "hub", theirs, config)
    with pytest.raises(ClipModuleError, match="vision_cfg.attentional_pool=True builds a tower"):
        clipmodule.load(folder)


def _hub_cache(root, files, revision="0123abcd"):
    """The Hugging Face hub cache layout: snapshot files are symlinks into blobs/, refs/main names the revision."""
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for source in files.iterdir():
        blob = root / "blobs" / f"blob-{source.name}"
        blob.write_bytes(source.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / source.name)
    (root / "snapshots" / "older").mkdir()  # another revision: refs/main decides
    return root


def test_hub_cache_open_clip_repo(tmp_path):
    config = _cut("ViT-H-14")
    theirs = _open_clip(config)
    files = _hub_folder(tmp_path / "files", theirs, config, preprocess_cfg={"mean": [0.5] * 3, "std": [0.5] * 3})
    cache = _hub_cache(tmp_path / "models--laion--CLIP-ViT-H-14-tiny", files)
    ours, preprocess = clipmodule.load(cache)
    _assert_equal_outputs(theirs, ours, 28)
    assert preprocess.transforms[-1].mean == (0.5, 0.5, 0.5)


def test_hub_cache_transformers_repo(tmp_path):
    torch.manual_seed(0)
    hf = CLIPModel(HFCLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=1, num_hidden_layers=1,
                         vocab_size=VOCAB, hidden_act="gelu"),
        vision_config=dict(hidden_size=96, intermediate_size=192, num_attention_heads=3, num_hidden_layers=1,
                           image_size=28, patch_size=14, hidden_act="gelu"),
        projection_dim=32)).eval()
    hf.save_pretrained(tmp_path / "files")
    processor = CLIPImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.4], size={"shortest_edge": 28},
                                   crop_size={"height": 28, "width": 28})
    processor.save_pretrained(tmp_path / "files")
    ours, preprocess = clipmodule.load(_hub_cache(tmp_path / "models--org--tiny-clip", tmp_path / "files"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8))
    expected_pixels = torch.from_numpy(processor(images=image, return_tensors="np")["pixel_values"][0])
    difference = (preprocess(image) - expected_pixels).abs()  # its processor's mean, std and size
    assert difference.max() <= 1 / 255 / 0.2 + 1e-6 and difference.mean() < 1e-3  # an 8-bit level at most
    assert ours.config.vision.head_width == 32 and ours.config.text.head_width == 64 and not ours.config.quick_gelu
    images, text = _inputs(28)
    with torch.no_grad():
        expected = hf.get_image_features(pixel_values=images)
        expected = getattr(expected, "pooler_output", expected)
        assert (ours.encode_image(images) - expected).abs().max() <= TOL


def test_round_trip_through_an_open_clip_folder_is_exact_and_open_clip_reads_it(tmp_path):
    torch.manual_seed(0)
    ours = clipmodule.create_model("tiny-vit", quick_gelu=False, vision=dict(ls_init_value=0.1, head_width=32))
    ours.preprocess_cfg = Preprocess(32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), resize_mode="squash")
    folder = save_checkpoint(ours, tmp_path / "hub", format="open_clip")
    back = load_checkpoint(folder)
    assert back.config == ours.config and back.preprocess_cfg == ours.preprocess_cfg
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    theirs.eval()
    _assert_equal_outputs(theirs, ours.eval(), 32)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8))
    assert torch.allclose(preprocess(image), clipmodule.load(folder)[1](image), atol=1e-6)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_preprocess_equals_open_clip(resize_mode):
    ours = Preprocess(48, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize_mode=resize_mode,
                      fill_color=0).transform()
    theirs = open_clip.image_transform(48, is_train=False, mean=(0.5,) * 3, std=(0.25,) * 3,
                                       resize_mode=resize_mode, fill_color=0)
    for shape in [(30, 70, 3), (81, 40, 3)]:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
        assert torch.allclose(ours(image), theirs(image), atol=1e-6)


def test_every_registered_name_is_open_clips_config_and_round_trips():
    from clipmodule.checkpoints.open_clip import config_from_open_clip, config_to_open_clip
    from clipmodule.models import MODEL_CONFIGS

    compared = 0
    for name, config in MODEL_CONFIGS.items():
        assert config_from_open_clip(config_to_open_clip(config), name) == config, name
        theirs = open_clip.get_model_config(name)
        if theirs is not None:  # open_clip's own JSON for this name means exactly our registered model
            assert config_from_open_clip(theirs, name) == config, name
            compared += 1
    assert compared >= 28
