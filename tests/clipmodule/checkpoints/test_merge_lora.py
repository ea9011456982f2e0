"""`clipmodule convert --merge_lora`: a LoRA fit's checkpoint becomes plain weights that this project, open_clip and
transformers load, and the merged model gives the adapted model's outputs."""

from __future__ import annotations

import lightning as L
import open_clip
import pytest
import torch
from transformers import CLIPModel

import clipmodule
from clipmodule.checkpoints.io import load_checkpoint
from clipmodule.checkpoints.readers import read_checkpoint
from clipmodule.cli import main
from clipmodule.errors import ClipModuleError
from clipmodule.models import create_model
from clipmodule.models.lora import LoRAConfig
from clipmodule.train.module import ClipLitModule
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.fixtures import SyntheticDataModule

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5


@pytest.fixture(scope="module")
def lora_fit(tmp_path_factory):
    """A 2-step fit with adapters on both towers (B random at the start, so the adapters matter); its checkpoint
    and the adapted network."""
    folder = tmp_path_factory.mktemp("lora_fit")
    torch.manual_seed(0)
    module = ClipLitModule(create_model("tiny-vit"), lora=LoRAConfig(rank=4, alpha=8, targets=("q", "v", "out", "fc1")),
                           optim=OptimConfig(lr=1e-3, warmup_steps=1))
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if name.endswith("lora.b"):
                parameter.normal_(std=0.2)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        enable_checkpointing=False, default_root_dir=folder)
    trainer.fit(module, SyntheticDataModule(16, 8, image_size=32))
    trainer.save_checkpoint(folder / "last.ckpt")
    return folder / "last.ckpt", module.model.eval()


def _inputs():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    return images, open_clip.tokenize(["a red cube on a blue sphere", "a photo of a dog"])


def _expected(adapted):
    images, text = _inputs()
    with torch.no_grad():
        return adapted.encode_image(images), adapted.encode_text(text)


def test_an_unmerged_checkpoint_is_refused_in_one_line_naming_the_flag(lora_fit, capsys):
    checkpoint, _ = lora_fit
    with pytest.raises(ClipModuleError, match="holds LoRA adapters; fold them into plain weights first: clipmodule "
                                              "convert --merge_lora"):
        clipmodule.load(str(checkpoint))
    assert main(["convert", str(checkpoint), str(checkpoint.with_name("x.safetensors"))]) == 2
    assert "--merge_lora" in capsys.readouterr().err


def test_merged_weights_load_here_with_the_adapted_outputs(lora_fit, tmp_path):
    checkpoint, adapted = lora_fit
    assert main(["convert", "--merge_lora", str(checkpoint), str(tmp_path / "merged.safetensors")]) == 0
    merged = load_checkpoint(tmp_path / "merged.safetensors").eval()
    images, text = _inputs()
    expected = _expected(adapted)
    with torch.no_grad():
        assert (merged.encode_image(images) - expected[0]).abs().max() <= TOL
        assert (merged.encode_text(text) - expected[1]).abs().max() <= TOL
    state_dict, _ = read_checkpoint(checkpoint)  # the base weights alone: the adapters moved the features
    base = create_model("tiny-vit").eval()
    base.load_state_dict({key: value for key, value in state_dict.items() if "lora" not in key})
    assert (_expected(base)[0] - expected[0]).abs().max() > 1e-3


def test_open_clip_loads_the_merged_hub_folder_with_the_adapted_outputs(lora_fit, tmp_path):
    checkpoint, adapted = lora_fit
    assert main(["convert", "--merge_lora", str(checkpoint), str(tmp_path / "hub"), "--to", "open_clip"]) == 0
    theirs = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'hub'}")[0].eval()
    images, text = _inputs()
    expected = _expected(adapted)
    with torch.no_grad():
        assert (theirs.encode_image(images) - expected[0]).abs().max() <= TOL
        assert (theirs.encode_text(text) - expected[1]).abs().max() <= TOL


def test_transformers_loads_the_merged_folder_with_the_adapted_outputs(lora_fit, tmp_path):
    checkpoint, adapted = lora_fit
    assert main(["convert", "--merge_lora", str(checkpoint), str(tmp_path / "hf"), "--to", "hf"]) == 0
    theirs = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    images, text = _inputs()
    expected = _expected(adapted)
    with torch.no_grad():
        image_features = theirs.get_image_features(pixel_values=images)
        text_features = theirs.get_text_features(input_ids=text)
    image_features = getattr(image_features, "pooler_output", image_features)
    text_features = getattr(text_features, "pooler_output", text_features)
    assert (image_features - expected[0]).abs().max() <= TOL
    assert (text_features - expected[1]).abs().max() <= TOL
