"""Hugging Face text towers (open_clip's `hf_model_name` configs, e.g. XLM-R for multilingual CLIP) equal
open_clip's on the same random weights; the tower's config.json is read locally (a folder the test writes)."""

import json

import open_clip
import pytest
import safetensors.torch
import torch
from open_clip.model import CustomTextCLIP
from transformers import XLMRobertaConfig

import clipmodule
from clipmodule.errors import ClipModuleError

VISION = {"layers": 1, "width": 64, "patch_size": 8, "image_size": 16}


@pytest.fixture
def xlmr_folder(tmp_path):
    config = XLMRobertaConfig(vocab_size=300, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=96, max_position_embeddings=40, pad_token_id=1)
    config.save_pretrained(tmp_path / "xlmr")
    return tmp_path / "xlmr"


@pytest.mark.parametrize("pooler, proj", [("mean_pooler", "mlp"), ("cls_pooler", "linear")])
def test_hf_text_tower_equals_open_clip_and_round_trips(xlmr_folder, tmp_path, pooler, proj):
    text_cfg = {"hf_model_name": str(xlmr_folder), "hf_tokenizer_name": str(xlmr_folder), "hf_model_pretrained": False,
                "hf_pooler_type": pooler, "hf_proj_type": proj, "context_length": 16}
    model_cfg = {"embed_dim": 32, "vision_cfg": VISION, "text_cfg": text_cfg}
    torch.manual_seed(0)
    theirs = CustomTextCLIP(32, VISION, text_cfg).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    safetensors.torch.save_file(theirs.state_dict(), str(folder / "open_clip_model.safetensors"))
    ours, _ = clipmodule.load(folder)
    text = torch.randint(3, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    text[0, 0], text[:, 9:] = 0, 1  # <s> ... then padding, which the mean pooler must skip
    with torch.no_grad():
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= 1e-5
        images = torch.randn(2, 3, 16, 16)
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= 1e-5
    clipmodule.save_checkpoint(ours, tmp_path / "back", format="open_clip")
    back = clipmodule.load_checkpoint(tmp_path / "back")
    assert back.config == ours.config
    assert all(torch.equal(back.state_dict()[key], value) for key, value in ours.state_dict().items())
    reread, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'back'}")
    with torch.no_grad():
        assert (reread.eval().encode_text(text) - theirs.encode_text(text)).abs().max() <= 1e-5


def test_missing_tower_config_is_one_line(tmp_path):
    with pytest.raises(ClipModuleError, match="no local config.json .*nothing is downloaded") as info:
        clipmodule.create_model("tiny-vit", text={"hf_model_name": str(tmp_path / "absent")})
    assert "\n" not in str(info.value)
