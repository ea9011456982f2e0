"""Lightning's model summary reports the FLOPs of one image-caption pair's forward pass, attention included (torch's
counter has no CPU attention formula of its own), equal to the count by hand."""

import lightning as L
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch.utils.flop_counter import FlopCounterMode

from clipmodule.train.module import ClipLitModule, build_network
from tests.clipmodule.fixtures import SyntheticDataModule


def _tower_flops(tokens: int, width: int, layers: int, mlp: int) -> int:
    """2 x multiply-adds of a transformer whose last block computes only the pooled token (`models.transformer`)."""
    full = tokens * (3 * width * width + width * width + 2 * width * mlp) + 2 * tokens * tokens * width
    pooled = width * width + tokens * 2 * width * width + width * width + 2 * width * mlp + 2 * tokens * width
    return 2 * ((layers - 1) * full + pooled)


def _tiny_vit_flops(module: ClipLitModule) -> int:
    config = module.model.config
    vision, text = config.vision, config.text
    patches = (vision.image_size // vision.patch_size) ** 2
    stem = patches * 3 * vision.patch_size**2 * vision.width
    image = 2 * stem + _tower_flops(patches + 1, vision.width, vision.layers, int(vision.width * vision.mlp_ratio))
    caption = _tower_flops(text.context_length, text.width, text.layers, int(text.width * text.mlp_ratio))
    projections = 2 * 2 * config.embed_dim * text.width  # (equal widths here)
    return image + caption + projections + 2 * config.embed_dim  # + one image-caption logit


def test_summary_flops_are_one_pairs_forward_counted_by_hand():
    module = ClipLitModule(build_network("tiny-vit"))
    total = ModelSummary(module, max_depth=1).total_flops
    assert total == _tiny_vit_flops(module) == 47_829_120
    image, text = module.example_input_array
    module.train()  # the training step's own encoders, with autograd recording, count the same
    with FlopCounterMode(display=False) as counter:
        features = module.encode_pair({"image": image, "text": text})
        features[0] @ features[1].t()
    assert counter.get_total_flops() == total


def test_fit_start_summary_shows_the_flops(tmp_path, capfd):
    module = ClipLitModule(build_network("tiny-vit"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, max_steps=1,
                        limit_val_batches=0, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, SyntheticDataModule(num_samples=8, batch_size=8, image_size=32))
    out = "".join(capfd.readouterr())
    lines = [line for line in out.splitlines() if "Total FLOPs" in line]
    assert len(lines) == 1 and lines[0].split()[:4] == ["Total", "FLOPs:", "47.8", "M"], out[-2000:]
    row = next(line for line in out.splitlines() if "│ model " in line)
    assert "47.8 M" in row and "[[1, 3," in row, row  # the network's row: its FLOPs and input sizes
    assert torch.is_grad_enabled()
