"""`clipmodule.segment`: sliding windows, MaskCLIP's options and the `clipmodule segment` command."""

import numpy as np
import pytest
import torch
from PIL import Image

import clipmodule
from clipmodule.dense.segment import SegmentOptions, labels_from_scores, segment_with_embeddings, window_scores
from clipmodule.errors import ClipModuleError
from clipmodule.models import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny-vit").eval()


def test_windows_cover_the_image_and_average_overlaps(model):
    text = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    images = torch.randn(1, 3, 32, 64)
    options = SegmentOptions(stride=32)
    with torch.no_grad():
        result = segment_with_embeddings(model, images, text, options)
        left = window_scores(model, images[..., :32], text, options)
        right = window_scores(model, images[..., 32:], text, options)
    expected = torch.cat([left, right], dim=-1).softmax(dim=1)
    assert result.probabilities.shape == (1, 3, 32, 64)
    assert torch.allclose(result.probabilities, expected, atol=1e-6)
    small = segment_with_embeddings(model, torch.randn(2, 3, 20, 28), text)  # smaller than a window: padded
    assert small.labels.shape == (2, 20, 28)
    wide = segment_with_embeddings(model, torch.randn(1, 3, 48, 48), text, SegmentOptions(window=48))
    assert wide.labels.shape == (1, 48, 48)  # the model resized to a 48-pixel window


def released_refine_output(output, k, pd_thresh, ks_thresh):
    """MaskCLIP's `MaskClipHead.refine_output` (chongzhou96/MaskCLIP, mmseg/models/decode_heads/maskclip_head.py)
    restated: `output` [N, C, H, W] cosines, `k` [N, H*W, width]."""
    output = output.clone()
    if pd_thresh > 0:
        n, c, h, w = output.shape
        max_cls_conf = torch.softmax(output * 100, dim=1).view(n, c, -1).max(dim=-1)[0]
        output[(max_cls_conf < pd_thresh)[:, :, None, None].expand(n, c, h, w)] = -100
    if ks_thresh > 0:
        output = torch.softmax(output * 100, dim=1)
        n, c, h, w = output.shape
        output = output.view(n, c, -1).transpose(-2, -1)
        k = torch.nn.functional.normalize(k, p=2)
        weight = k @ k.transpose(-2, -1)
        selected = (output.max(dim=-1, keepdim=True)[0] < ks_thresh).expand(-1, -1, c)
        weighted = weight @ output
        output[selected] = weighted[selected]
        output = output.transpose(-2, -1).reshape(n, c, h, w)
    return output


@pytest.mark.parametrize("scale", [100.0, 20.0])
def test_refinements_equal_maskclips_released_head(model, scale):
    """Prompt denoising then key smoothing, at the patch grid, as the released head: on its scale 100 whatever the
    model's logit scale (100, and 20 where the refinements would differ on the model's)."""
    from clipmodule.models.dense import dense_output, pixel_text_scores

    text = torch.nn.functional.normalize(torch.randn(5, 64), dim=-1)
    images = torch.randn(2, 3, 32, 32)
    saved = model.logit_scale.detach().clone()
    with torch.no_grad():
        model.logit_scale.fill_(np.log(scale))
        dense = dense_output(model, images)
        cosines = pixel_text_scores(dense.features, text, torch.tensor(1.0))
        for pd, ks in ((0.5, 0.0), (0.0, 1.0), (0.5, 1.0), (0.3, 0.6)):
            options = SegmentOptions(prompt_denoising=pd or None, key_smoothing=ks or None)
            ours = window_scores(model, images, text, options)
            expected = released_refine_output(cosines, dense.keys, pd, ks)
            # unsmoothed scores stay the model's logits (cosine x its scale); a denoised class is -100 (-100 there)
            expected = (expected * (scale if not ks else 1)).clamp(min=-100)
            expected = torch.nn.functional.interpolate(expected, size=(32, 32), mode="bilinear", align_corners=False)
            assert torch.allclose(ours, expected, atol=1e-4), (pd, ks)
        model.logit_scale.copy_(saved)


def test_vit_keys_are_the_last_attentions_projected_keys(model):
    from clipmodule.models.dense import dense_output

    images = torch.randn(1, 3, 32, 32)
    visual = model.visual
    with torch.no_grad():
        x = visual.ln_pre(torch.cat([visual.class_embedding.expand(1, 1, -1),
                                     visual.conv1(images).flatten(2).transpose(1, 2)], dim=1)
                          + visual.positional_embedding)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        last = visual.transformer.resblocks[-1]
        width = x.shape[-1]
        keys = last.ln_1(x) @ last.attn.in_proj_weight[width:2 * width].T + last.attn.in_proj_bias[width:2 * width]
        expected = last.attn.out_proj(keys)[:, 1:]
        assert torch.allclose(dense_output(model, images).keys, expected, atol=1e-6)


def test_background_threshold():
    scores = torch.zeros(1, 3, 2, 2)
    scores[0, 0] = torch.tensor([[5.0, 5.0], [0.0, 0.0]])
    scores[0, 1] = torch.tensor([[0.0, 0.0], [5.0, 0.2]])
    scores[0, 2] = 0.1
    background = labels_from_scores(scores, SegmentOptions(background_threshold=0.9, background_index=0))
    # scored classes 0, 1, 2 become labels 1, 2, 3; the unsure bottom-right pixel is background
    assert background.labels[0].tolist() == [[1, 1], [2, 0]]
    assert background.probabilities.shape == (1, 4, 2, 2) and background.probabilities[0, 0].abs().max() == 0


def test_key_smoothing_needs_keys(model, monkeypatch):
    from clipmodule.dense import segment as module
    from clipmodule.models.dense import DenseOutput

    monkeypatch.setattr(module, "dense_output", lambda m, x, *path: DenseOutput(torch.randn(1, 64, 2, 2), None))
    with pytest.raises(ClipModuleError, match="key_smoothing needs"):
        window_scores(model, torch.randn(1, 3, 32, 32), torch.randn(2, 64), SegmentOptions(key_smoothing=1.0))


def test_segment_builds_the_classifier_and_checks_inputs(model):
    result = clipmodule.segment(model, torch.randn(1, 3, 32, 32), ["cat", "dog"], ["a photo of a {}."],
                                background_threshold=0.6, background_index=1)
    assert result.probabilities.shape == (1, 2, 32, 32) and set(result.labels.unique().tolist()) <= {0, 1}
    with pytest.raises(ClipModuleError, match="one '\\{\\}' slot"):
        clipmodule.segment(model, torch.randn(1, 3, 32, 32), ["cat"], ["no slot"])
    with pytest.raises(ClipModuleError, match=r"\[B, 3, H, W\]"):
        clipmodule.segment(model, torch.randn(3, 32, 32), ["cat"])


def test_segment_command_writes_an_overlay(model, tmp_path, capsys):
    from clipmodule.cli import main

    clipmodule.save_checkpoint(model, tmp_path / "model.safetensors")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    code = main(["segment", str(tmp_path / "a.jpg"), "--classes", "sky,grass", "--model",
                 str(tmp_path / "model.safetensors"), "--output", str(tmp_path / "out.png")])
    assert code == 0 and Image.open(tmp_path / "out.png").size == (56, 40)
    assert "sky" in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "missing.jpg"), "--classes", "a", "--model", "x"]) == 2
    assert "missing.jpg: no such image file" in capsys.readouterr().err


def test_a_class_with_alternative_names_scores_as_the_best_of_them():
    from clipmodule.dense.segment import best_of_alternatives, split_alternatives

    names, owners = split_alternatives(["red background; black background", "circle", " square ;"])
    assert names == ["red background", "black background", "circle", "square"] and owners.tolist() == [0, 0, 1, 2]
    scores = torch.tensor([1.0, 3.0, 2.0, 0.5]).view(1, 4, 1, 1)
    assert best_of_alternatives(scores, owners).flatten().tolist() == [3.0, 2.0, 0.5]
    with pytest.raises(ClipModuleError, match="class 1: an empty class name"):
        split_alternatives(["a", " ; "])


def test_segment_prompts_every_alternative(model):
    from clipmodule.dense.segment import class_text_embeddings
    from clipmodule.models.dense import dense_output, pixel_text_scores

    images = torch.randn(1, 3, 32, 32)
    both = clipmodule.segment(model, images, ["sky; grass", "dog"], ["a {}."])
    # the pair's score is the better of its two names' at every patch (before the upsampling and the refinements)
    text = class_text_embeddings(model, clipmodule.get_tokenizer(model), ["sky", "grass", "dog"], ["a {}."])
    with torch.no_grad():
        scores = pixel_text_scores(dense_output(model, images).features, text, model.logit_scale.exp())
    merged = torch.stack([scores[:, :2].amax(dim=1), scores[:, 2]], dim=1)
    expected = torch.nn.functional.interpolate(merged, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(both.labels, expected.argmax(dim=1))


def test_segment_command_names_a_class_of_several_prompts(model, tmp_path, capsys):
    from clipmodule.cli import main

    clipmodule.save_checkpoint(model, tmp_path / "model.safetensors")
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "a.png")
    code = main(["segment", str(tmp_path / "a.png"), "--classes", "background=red background; black background,circle",
                 "--model", str(tmp_path / "model.safetensors"), "--output", str(tmp_path / "out.png")])
    out = capsys.readouterr().out
    assert code == 0 and "background " in out and "circle " in out and "red background" not in out


def _planted_dense(monkeypatch, cosines):
    """dense_output replaced by unit features at the 2x2 patches whose cosines with the text rows e_0 .. e_{M-1} are
    `cosines` ([4 patches, M], row-major); returns those text rows."""
    from clipmodule.dense import segment as module
    from clipmodule.models.dense import DenseOutput

    planted = torch.tensor(cosines)
    features = torch.zeros(4, 64)
    features[:, :planted.shape[1]] = planted
    features[:, planted.shape[1]] = (1 - planted.square().sum(dim=1)).sqrt()
    grid = features.T.reshape(1, 64, 2, 2)
    monkeypatch.setattr(module, "dense_output", lambda m, x, *rest, **options: DenseOutput(
        grid.expand(x.shape[0], 64, 2, 2).clone(), torch.randn(x.shape[0], 4, 8)))
    return torch.eye(64)[:planted.shape[1]]


def test_alternatives_merge_before_prompt_denoising(model, monkeypatch):
    """Two equal background names at 0.498 each would both be denoised away; merged first, the background holds."""
    text = _planted_dense(monkeypatch, [[0.5, 0.5, 0.45]] * 3 + [[0.0, 0.0, 0.6]])
    owners = torch.tensor([0, 0, 1])
    with torch.no_grad():
        saved = model.logit_scale.clone()
        model.logit_scale.fill_(np.log(100.0))
        result = segment_with_embeddings(model, torch.randn(1, 3, 32, 32), text, SegmentOptions(prompt_denoising=0.5),
                                         owners=owners)
        model.logit_scale.copy_(saved)
    assert result.probabilities.shape == (1, 2, 32, 32)
    assert (result.labels[0, :8, :8] == 0).all() and (result.labels[0, -8:, -8:] == 1).all()


def test_key_smoothing_refuses_a_background_threshold(model):
    with pytest.raises(ClipModuleError, match="key_smoothing and background_threshold do not go together") as info:
        SegmentOptions(key_smoothing=1.0, background_threshold=0.5)
    assert "\n" not in str(info.value)
    with pytest.raises(ClipModuleError, match="key_smoothing and background_threshold"):
        clipmodule.segment(model, torch.randn(1, 3, 32, 32), ["sky", "dog"], key_smoothing=1.0,
                           background_threshold=0.5)


def test_vit_path_option_reaches_the_dense_features(model, tmp_path):
    from clipmodule.cli import main
    from clipmodule.models.dense import pixel_text_scores

    text = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ours = window_scores(model, images, text, SegmentOptions(vit_path="released"))
        dense = model.encode_image_dense(images, vit_path="released")
        expected = torch.nn.functional.interpolate(pixel_text_scores(dense, text, model.logit_scale.exp()),
                                                   size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(ours, expected, atol=1e-5)
    with pytest.raises(ClipModuleError, match="vit_path 'both': expected one of value, released"):
        SegmentOptions(vit_path="both")
    clipmodule.save_checkpoint(model, tmp_path / "model.safetensors")
    Image.new("RGB", (32, 32), (20, 90, 200)).save(tmp_path / "a.png")
    assert main(["segment", str(tmp_path / "a.png"), "--classes", "sky,grass", "--vit_path", "released",
                 "--model", str(tmp_path / "model.safetensors"), "--output", str(tmp_path / "out.png")]) == 0
