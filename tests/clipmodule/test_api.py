"""The OpenAI-style API (`load`, `tokenize`, `model(image, text)`) and the convert/models commands."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

import clipmodule
from clipmodule.errors import ClipModuleError
from tests.conftest import tree_env


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = clipmodule.create_model("tiny-vit")
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    clipmodule.save_checkpoint(model, path)
    return model, path


def test_load_path_and_zero_shot_probabilities_like_openai_clip(tiny_checkpoint):
    reference, path = tiny_checkpoint
    model, preprocess = clipmodule.load(str(path), device="cpu")
    assert not model.training
    image = preprocess(Image.fromarray(skimage_data.chelsea())).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    text = clipmodule.tokenize(["a diagram", "a dog", "a cat"])
    with torch.no_grad():
        logits_per_image, logits_per_text = model(image, text)
        expected, _ = reference.eval()(image, text)
    probs = logits_per_image.softmax(dim=-1).numpy()
    assert probs.shape == (1, 3) and np.isclose(probs.sum(), 1.0)
    assert torch.allclose(logits_per_image, expected)


def test_load_by_name_reads_local_weights(tiny_checkpoint, tmp_path, monkeypatch):
    _, path = tiny_checkpoint
    monkeypatch.setenv("CLIPMODULE_HOME", str(tmp_path))
    with pytest.raises(ClipModuleError, match="no local weights for 'ViT-B/32'.*`load` reads local files only: pass a"):
        clipmodule.load("ViT-B/32")
    (tmp_path / "tiny-vit.safetensors").write_bytes(path.read_bytes())
    model, _ = clipmodule.load("tiny-vit")
    assert model.config.vision.image_size == 32


def test_load_by_name_reads_a_bare_file_as_that_architecture(tmp_path, monkeypatch):
    torch.manual_seed(0)
    reference = clipmodule.create_model("tiny-vit").eval()
    torch.save(reference.state_dict(), tmp_path / "tiny-vit.pth")
    with pytest.raises(ClipModuleError, match="a bare state dict does not say"):
        clipmodule.load(tmp_path / "tiny-vit.pth")  # by path nothing names it
    monkeypatch.setenv("CLIPMODULE_HOME", str(tmp_path))
    model, _ = clipmodule.load("tiny-vit")
    assert model.config == reference.config
    model, _ = clipmodule.load(tmp_path / "tiny-vit.pth", model="tiny-vit")
    assert torch.equal(model.visual.proj, reference.visual.proj)


def test_load_unknown_name_or_missing_path():
    with pytest.raises(ClipModuleError, match="neither an existing checkpoint path nor a model name"):
        clipmodule.load("no/such/file.pt")


def test_openai_torchscript_archive_loads_without_unpickling(tiny_checkpoint, tmp_path):
    reference, _ = tiny_checkpoint
    images, text = torch.randn(1, 3, 32, 32), clipmodule.tokenize(["a cat"])
    traced = torch.jit.trace(reference.eval(), (images, text), check_trace=False)
    torch.jit.save(traced, tmp_path / "ViT-tiny.pt")
    model, _ = clipmodule.load(tmp_path / "ViT-tiny.pt")
    with torch.no_grad():
        assert torch.allclose(model(images, text)[0], reference(images, text)[0], atol=1e-5)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "clipmodule", *args], env=tree_env(), capture_output=True, text=True,
                          timeout=300)


def test_convert_command_round_trip_to_hf(tiny_checkpoint, tmp_path):
    reference, path = tiny_checkpoint
    result = _run("convert", str(path), str(tmp_path / "hf"), "--to", "hf")
    assert result.returncode == 0, result.stderr
    assert "tiny" not in result.stderr and "(hf)" in result.stdout
    model, _ = clipmodule.load(tmp_path / "hf")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_convert_command_with_model_to_open_clip_folder(tiny_checkpoint, tmp_path):
    reference, _ = tiny_checkpoint
    torch.save(reference.state_dict(), tmp_path / "bare.pt")
    refused = _run("convert", str(tmp_path / "bare.pt"), str(tmp_path / "hub"), "--to", "open_clip")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--model NAME" in refused.stderr
    assert not (tmp_path / "hub").exists()
    result = _run("convert", str(tmp_path / "bare.pt"), str(tmp_path / "hub"), "--to", "open_clip",
                  "--model", "tiny-vit")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hub" / "open_clip_config.json").is_file() and "QuickGELU" in result.stdout
    model, _ = clipmodule.load(tmp_path / "hub")
    assert model.config == reference.config


def test_models_command_lists_every_name_with_its_facts():
    result = _run("models")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert set(clipmodule.available_models()) <= set(rows)
    assert "2539.57M" in rows["ViT-bigG-14"] and "GELU" in rows["ViT-bigG-14"] and "OpenAI BPE" in rows["ViT-H-14"]
    assert "QuickGELU" in rows["ViT-B-32-quickgelu"] and " 77 " in rows["ViT-B-32"] and " 336 " in rows["ViT-L-14-336"]


def test_convert_command_bad_input_is_one_line(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really a zip")
    result = _run("convert", str(tmp_path / "broken.pt"), str(tmp_path / "out.pt"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "broken.pt" in result.stderr
    assert not (tmp_path / "out.pt").exists()


def test_help_is_fast_and_lists_commands():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, clipmodule.cli as c; c.main(['--help']); print('torch' in sys.modules)"],
        env=tree_env(), capture_output=True, text=True, timeout=60,
    )
    assert "convert" in result.stdout and result.stdout.strip().endswith("False")
