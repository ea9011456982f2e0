"""`create_model(<a timm tower's name>, image_size=N)` builds timm's trunk at N (its patch grid and position
embeddings), not at the registered size."""

import pytest
import torch

from clipmodule.models import create_model
from clipmodule.models.registry import get_model_config

pytest.importorskip("timm")


def test_another_image_size_reaches_the_timm_trunk():
    assert get_model_config("ViT-B-16-SigLIP").vision.timm_input_size is None
    assert get_model_config("ViT-B-16-SigLIP", image_size=224).vision.timm_input_size is None  # its own size
    with torch.device("meta"):
        model = create_model("ViT-B-16-SigLIP", image_size=384)
    trunk = model.visual.trunk
    assert model.config.vision.timm_input_size == 384
    assert tuple(trunk.patch_embed.img_size) == (384, 384) and trunk.pos_embed.shape[1] == (384 // 16) ** 2
