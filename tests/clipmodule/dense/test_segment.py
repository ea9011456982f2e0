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


def test_prompt_denoising_and_background_threshold():
    scores = torch.zeros(1, 3, 2, 2)
    scores[0, 0] = torch.tensor([[5.0, 5.0], [0.0, 0.0]])
    scores[0, 1] = torch.tensor([[0.0, 0.0], [5.0, 0.2]])
    scores[0, 2] = 0.1  # never the most likely anywhere: denoised away
    plain = labels_from_scores(scores, SegmentOptions())
    denoised = labels_from_scores(scores, SegmentOptions(prompt_denoising=0.5))
    assert plain.probabilities[0, 2].max() < 0.5 and denoised.probabilities[0, 2].max() < 1e-30
    assert torch.equal(denoised.labels, plain.labels)
    background = labels_from_scores(scores, SegmentOptions(background_threshold=0.9, background_index=0))
    # scored classes 0, 1, 2 become labels 1, 2, 3; the unsure bottom-right pixel is background
    assert background.labels[0].tolist() == [[1, 1], [2, 0]]
    assert background.probabilities.shape == (1, 4, 2, 2) and background.probabilities[0, 0].abs().max() == 0


def test_key_smoothing_thresholds(model):
    text = torch.nn.functional.normalize(torch.randn(4, 64), dim=-1)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        raw = window_scores(model, images, text, SegmentOptions())
        only_self = window_scores(model, images, text, SegmentOptions(key_smoothing=1.0 - 1e-6))
        everything = window_scores(model, images, text, SegmentOptions(key_smoothing=-1.0))
    assert torch.allclose(raw, only_self, atol=1e-5)
    assert torch.allclose(everything, everything[..., :1, :1].expand_as(everything), atol=1e-5)


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
    images = torch.randn(1, 3, 32, 32)
    both = clipmodule.segment(model, images, ["sky; grass", "dog"], ["a {}."])
    sky = clipmodule.segment(model, images, ["sky", "dog"], ["a {}."])
    grass = clipmodule.segment(model, images, ["grass", "dog"], ["a {}."])
    # the pair's score is the better of its two names' at every pixel, so it wins wherever either one does
    either = (sky.labels == 0) | (grass.labels == 0)
    assert torch.equal(both.labels == 0, either)


def test_segment_command_names_a_class_of_several_prompts(model, tmp_path, capsys):
    from clipmodule.cli import main

    clipmodule.save_checkpoint(model, tmp_path / "model.safetensors")
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "a.png")
    code = main(["segment", str(tmp_path / "a.png"), "--classes", "background=red background; black background,circle",
                 "--model", str(tmp_path / "model.safetensors"), "--output", str(tmp_path / "out.png")])
    out = capsys.readouterr().out
    assert code == 0 and "background " in out and "circle " in out and "red background" not in out
