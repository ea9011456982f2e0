"""mmpretrain's 14 CLIP classifier names: counts against the seeds' table, weights from timm/mmpretrain/CLIP
layouts (outputs equal to timm's model), get_model / inference_model / extract_feat, and bad checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from clipmodule.checkpoints.classifier import load_classifier_weights, to_classifier_layout
from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.classifiers.complexity import complexity_on_meta, count_flops
from clipmodule.classifiers.zoo import (
    CLASSIFIER_SPECS,
    ClassifierSpec,
    CLIPImageClassifier,
    available_classifiers,
    get_model,
)
from clipmodule.errors import ClipModuleError
from clipmodule.models import create_model

# The seeds' table (mmpretrain's CLIP page): name -> (Params (M), Flops (G)).
SEEDS_TABLE = {
    "vit-base-p32_clip-laion2b-in12k-pre_3rdparty_in1k": (88.22, 4.36),
    "vit-base-p32_clip-laion2b-pre_3rdparty_in1k": (88.22, 4.36),
    "vit-base-p32_clip-openai-pre_3rdparty_in1k": (88.22, 4.36),
    "vit-base-p32_clip-laion2b-in12k-pre_3rdparty_in1k-384px": (88.22, 12.66),
    "vit-base-p32_clip-openai-in12k-pre_3rdparty_in1k-384px": (88.22, 12.66),
    "vit-base-p16_clip-laion2b-in12k-pre_3rdparty_in1k": (86.57, 16.86),
    "vit-base-p16_clip-laion2b-pre_3rdparty_in1k": (86.57, 16.86),
    "vit-base-p16_clip-openai-in12k-pre_3rdparty_in1k": (86.57, 16.86),
    "vit-base-p16_clip-openai-pre_3rdparty_in1k": (86.57, 16.86),
    "vit-base-p32_clip-laion2b-in12k-pre_3rdparty_in1k-448px": (88.22, 17.20),
    "vit-base-p16_clip-laion2b-in12k-pre_3rdparty_in1k-384px": (86.57, 49.37),
    "vit-base-p16_clip-laion2b-pre_3rdparty_in1k-384px": (86.57, 49.37),
    "vit-base-p16_clip-openai-in12k-pre_3rdparty_in1k-384px": (86.57, 49.37),
    "vit-base-p16_clip-openai-pre_3rdparty_in1k-384px": (86.57, 49.37),
}
SMALL = ClassifierSpec("small", patch_size=8, image_size=32, pretrain="test", num_classes=7, width=128, layers=2)
SMALL_NAMES = [f"class {i}" for i in range(7)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_the_14_names_match_the_seeds_table():
    assert available_classifiers() == list(SEEDS_TABLE)
    for name, (params_m, flops_g) in SEEDS_TABLE.items():
        spec = CLASSIFIER_SPECS[name]
        params, flops = complexity_on_meta(lambda spec=spec: CLIPImageClassifier(spec), spec.image_size)
        assert params / 1e6 == pytest.approx(params_m, rel=0.005), name
        assert flops / 1e9 == pytest.approx(flops_g, rel=0.005), name
    # The 224-px B/32 exactly: trunk 87,456,000 + head 769,000 (= timm's vit_base_patch32_clip_224).
    b32 = CLASSIFIER_SPECS["vit-base-p32_clip-openai-pre_3rdparty_in1k"]
    assert complexity_on_meta(lambda: CLIPImageClassifier(b32), 224)[0] == 88_225_000


def test_flops_leave_out_attention_products_as_mmpretrain_does():
    spec = CLASSIFIER_SPECS["vit-base-p32_clip-openai-pre_3rdparty_in1k"]
    with torch.device("meta"):
        model = CLIPImageClassifier(spec)
    tokens, width, layers = 50, 768, 12
    attention = layers * 2 * tokens * tokens * width  # q·kᵀ and attention·v
    assert count_flops(model, 224, include_attention=True) - count_flops(model, 224) == attention


def _timm_small():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=7,
                              pre_norm=True, norm_layer=nn.LayerNorm, global_pool="token").eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.dim() == 1:  # LayerNorm gains and biases away from 1/0, so a mix-up would show
                tensor.normal_(0.0, 0.5)
    return model


def _mmpretrain_keys(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm -> mmpretrain renaming, as mmpretrain's tools/model_converters/clip_to_mmpretrain.py does it."""
    out = {}
    for key, value in timm_state.items():
        if key.startswith("head."):
            out["head.layers." + key] = value
            continue
        new = key.replace("patch_embed.proj.", "patch_embed.projection.").replace("norm_pre.", "pre_norm.")
        if new.startswith("blocks."):
            new = (new.replace("blocks.", "layers.").replace("norm1", "ln1").replace("norm2", "ln2")
                   .replace("mlp.fc1", "ffn.layers.0.0").replace("mlp.fc2", "ffn.layers.1"))
        elif new.startswith("norm."):
            new = new.replace("norm.", "ln1.")
        out["backbone." + new] = value
    return out


def test_timm_and_mmpretrain_weights_give_timms_outputs(tmp_path):
    timm_model = _timm_small()
    state = {key: value.contiguous() for key, value in timm_model.state_dict().items()}
    save_file(state, str(tmp_path / "timm.safetensors"))
    torch.save({"meta": {"epoch": 30}, "state_dict": _mmpretrain_keys(state)}, tmp_path / "mmpretrain.pth")
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = timm_model(images)
        expected_features = timm_model.forward_head(timm_model.forward_features(images), pre_logits=True)
    for file in ("timm.safetensors", "mmpretrain.pth"):
        ours = CLIPImageClassifier(SMALL, SMALL_NAMES).eval()
        assert load_classifier_weights(ours, tmp_path / file) is True
        with torch.no_grad():
            torch.testing.assert_close(ours(images), expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(ours.extract_feat(images)[0], expected_features, atol=1e-5, rtol=0)


@pytest.mark.parametrize("timm_name,ours", [
    ("vit_base_patch32_clip_224", "vit-base-p32_clip-openai-pre_3rdparty_in1k"),
    ("vit_base_patch32_clip_384", "vit-base-p32_clip-openai-in12k-pre_3rdparty_in1k-384px"),
    ("vit_base_patch32_clip_448", "vit-base-p32_clip-laion2b-in12k-pre_3rdparty_in1k-448px"),
    ("vit_base_patch16_clip_224", "vit-base-p16_clip-openai-pre_3rdparty_in1k"),
    ("vit_base_patch16_clip_384", "vit-base-p16_clip-openai-pre_3rdparty_in1k-384px"),
])
def test_timm_checkpoints_of_every_size_fit_key_for_key(timm_name, ours):
    import timm

    with torch.device("meta"):
        theirs = timm.create_model(timm_name, pretrained=False).state_dict()
        model = CLIPImageClassifier(CLASSIFIER_SPECS[ours])
    converted, has_head = to_classifier_layout(theirs, timm_name)
    assert has_head
    assert {key: tuple(value.shape) for key, value in converted.items()} == {
        key: tuple(value.shape) for key, value in model.state_dict().items()}


def test_clip_checkpoint_fills_the_trunk_and_warns_about_the_head(tmp_path):
    torch.manual_seed(0)
    clip = create_model("tiny-vit", quick_gelu=False).eval()
    save_checkpoint(clip, tmp_path / "clip.safetensors")
    spec = ClassifierSpec("tiny", patch_size=8, image_size=32, pretrain="test", num_classes=7, width=128, layers=2)
    classifier = CLIPImageClassifier(spec, SMALL_NAMES).eval()
    assert load_classifier_weights(classifier, tmp_path / "clip.safetensors") is False
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(classifier.extract_feat(images)[0], clip.visual.forward_features(images)[:, 0])


def test_get_model_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(ClipModuleError, match="unknown classifier 'vit-huge'"):
        get_model("vit-huge")
    monkeypatch.setenv("CLIPMODULE_HOME", str(tmp_path))
    name = "vit-base-p32_clip-openai-pre_3rdparty_in1k"
    with pytest.raises(ClipModuleError, match="reads local files only: pass pretrained=<path") as caught:
        get_model(name, pretrained=True)
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    with pytest.raises(ClipModuleError, match=r"tiny.safetensors: weights do not fit this architecture: .*shape mism"):
        get_model(name, pretrained=tmp_path / "tiny.safetensors")
    save_file({"something.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ClipModuleError, match="other.safetensors: not a ViT classifier checkpoint"):
        get_model(name, pretrained=tmp_path / "other.safetensors")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "code": nn.Identity()}, tmp_path / "pickled.pth")
    with pytest.raises(ClipModuleError, match="pickled.pth: refusing to unpickle"):
        get_model(name, pretrained=tmp_path / "pickled.pth")
