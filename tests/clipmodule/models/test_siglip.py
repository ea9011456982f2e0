"""SigLIP as open_clip builds it (timm MAP-head ViT, bidirectional text read at the last token, biased
projection, LayerNorm eps 1e-6, logit bias): same parameters, same outputs on the same random weights."""

import json

import open_clip
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from open_clip.model import CustomTextCLIP

import clipmodule
from clipmodule.checkpoints.io import load_checkpoint, save_checkpoint
from clipmodule.models import count_parameters, create_model

pytest.importorskip("timm")
VOCAB = 1000


def _config():
    config = json.loads(json.dumps(open_clip.get_model_config("ViT-B-16-SigLIP")))
    config["text_cfg"].update(layers=1, vocab_size=VOCAB)  # the timm trunk stays whole: timm builds it by name
    return config


def _theirs(config):
    torch.manual_seed(0)
    model = CustomTextCLIP(**{key: value for key, value in config.items() if key != "custom_text"}).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # zero-initialised biases would hide a mismatch
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def test_parameter_count_equals_open_clip():
    config = open_clip.get_model_config("ViT-B-16-SigLIP")
    with torch.device("meta"):
        theirs = CustomTextCLIP(**{key: value for key, value in config.items() if key != "custom_text"})
        ours = create_model("ViT-B-16-SigLIP")
    assert count_parameters(ours) == sum(p.numel() for p in theirs.parameters())


def test_siglip_text_tower_equals_open_clip(tmp_path):
    """SigLIP's text options on a small model (fast); the whole SigLIP with its timm trunk is the slow test below."""
    config = {"embed_dim": 32, "init_logit_bias": -10, "vision_cfg": {"layers": 1, "width": 64, "patch_size": 8,
                                                                      "image_size": 16},
              "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 64, "heads": 1, "layers": 1,
                           "no_causal_mask": True, "pool_type": "last", "proj_bias": True,
                           "norm_kwargs": {"eps": 1e-6}}}
    torch.manual_seed(0)
    theirs = open_clip.CLIP(**config).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(theirs.state_dict(), tmp_path / "weights.pt")
    ours = load_checkpoint(tmp_path / "weights.pt", model=str(tmp_path / "config.json")).eval()
    text = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= 1e-5
        changed = text.clone()
        changed[:, -1] = (changed[:, -1] + 1) % VOCAB  # read at the last token, which sees every other token
        assert not torch.allclose(ours.encode_text(changed), ours.encode_text(text))
    assert ours.logit_bias.item() == theirs.logit_bias.item()


@pytest.mark.slow
def test_siglip_hub_folder_equals_open_clip_and_round_trips(tmp_path):
    config = _config()
    theirs = _theirs(config)
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {
        "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}}))
    safetensors.torch.save_file(theirs.state_dict(), str(folder / "open_clip_model.safetensors"))
    ours, preprocess = clipmodule.load(folder)
    assert ours.config.text.pool == "last" and not ours.config.text.causal and ours.logit_bias is not None
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 224, 224, generator=generator)
    text = torch.randint(0, VOCAB, (2, 64), generator=generator)
    with torch.no_grad():  # each tower of theirs runs once: a ViT-B/16 forward costs seconds on a CPU
        their_images, their_texts = theirs.encode_image(images), theirs.encode_text(text)
        assert (ours.encode_image(images) - their_images).abs().max() <= 1e-5
        assert (ours.encode_text(text) - their_texts).abs().max() <= 1e-5
        logits = theirs.logit_scale.exp() * F.normalize(their_images, dim=-1) @ \
            F.normalize(their_texts, dim=-1).t() + theirs.logit_bias
        assert (ours(images, text)[0] - logits).abs().max() <= 1e-3
    assert preprocess.transforms[0].size == (224, 224)  # squash: SigLIP resizes without cropping
    save_checkpoint(ours, tmp_path / "back", format="open_clip")
    again = load_checkpoint(tmp_path / "back")
    assert again.config == ours.config
    assert all(torch.equal(again.state_dict()[key], value) for key, value in ours.state_dict().items())
    reread, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'back'}")
    with torch.no_grad():
        assert (reread.eval().encode_text(text) - their_texts).abs().max() <= 1e-5
