"""An exported model keeps the preprocessing it was trained with: `--to hf` writes preprocessor_config.json (read back
here and by transformers' CLIPImageProcessor), and an OpenAI .pt file, which cannot record it, refuses other stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from clipmodule.checkpoints.io import load_checkpoint, save_checkpoint
from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.errors import ClipModuleError
from clipmodule.models import create_model

HALF = (0.5, 0.5, 0.5)

def _model(preprocess: Preprocess | None):
    torch.manual_seed(0)
    model = create_model("tiny-vit", quick_gelu=True)
    if preprocess is not None:
        model.preprocess_cfg = preprocess
    return model

@pytest.mark.parametrize("preprocess", [None, Preprocess(32, mean=HALF, std=HALF, interpolation="bilinear"),
                                        Preprocess(32, mean=HALF, std=HALF, resize_mode="squash")])
def test_hf_export_writes_the_preprocessing_both_readers_take(tmp_path, preprocess):
    save_checkpoint(_model(preprocess), tmp_path / "hf", format="hf")
    expected = preprocess or Preprocess(32)
    assert load_checkpoint(tmp_path / "hf").preprocess_cfg == expected
    processor = CLIPImageProcessor.from_pretrained(tmp_path / "hf")
    assert (tuple(processor.image_mean), tuple(processor.image_std)) == (expected.mean, expected.std)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    theirs = torch.as_tensor(np.asarray(processor(images=image, return_tensors="np")["pixel_values"][0]))
    ours = expected.transform()(image)
    assert theirs.shape == ours.shape == (3, 32, 32)
    assert (theirs - ours).abs().mean() < 0.02  # PIL's and torchvision's resize round differently

def test_a_fit_and_pad_model_is_not_written_as_hf(tmp_path):
    with pytest.raises(ClipModuleError, match="longest side.*export as open_clip"):
        save_checkpoint(_model(Preprocess(32, resize_mode="longest")), tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()

def test_an_openai_pt_file_refuses_stats_it_cannot_record(tmp_path):
    model = _model(Preprocess(32, mean=HALF, std=HALF))
    with pytest.raises(ClipModuleError, match=r"model\.pt: .*mean \[0\.5, 0\.5, 0\.5\].*\.safetensors"):
        save_checkpoint(model, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
    assert load_checkpoint(save_checkpoint(model, tmp_path / "model.safetensors")).preprocess_cfg.mean == HALF
    assert save_checkpoint(_model(None), tmp_path / "plain.pt").is_file()  # OpenAI's stats: written as before


@pytest.mark.parametrize("name", ["model.bin", "model.pt"])
def test_an_open_clip_torch_file_refuses_stats_it_cannot_record(tmp_path, name):
    model = _model(Preprocess(32, mean=HALF, std=HALF))
    with pytest.raises(ClipModuleError, match=r"cannot record"):
        save_checkpoint(model, tmp_path / name, format="open_clip")
    assert not (tmp_path / name).exists()
    folder = save_checkpoint(model, tmp_path / "hub", format="open_clip")  # a hub folder records it
    assert load_checkpoint(folder).preprocess_cfg.mean == HALF


def test_a_torch_file_refuses_another_interpolation(tmp_path):
    model = _model(Preprocess(32, interpolation="bilinear"))  # OpenAI's mean/std, not its resize
    with pytest.raises(ClipModuleError, match=r"interpolation 'bilinear'.*cannot record"):
        save_checkpoint(model, tmp_path / "model.pt")
