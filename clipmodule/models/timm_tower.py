"""An image tower built by timm (SigLIP's MAP-head ViT, ConvNeXt, ...), laid out as open_clip's `TimmModel`.

`visual.trunk.*` is timm's model and `visual.head.proj` the optional projection, so open_clip's state dicts
load unchanged. timm builds the trunk from its own registry, never with pretrained weights (nothing downloads),
at its own image size (open_clip does not pass one either). timm's drop path is a training-only option not built.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from clipmodule.errors import ClipModuleError
from clipmodule.models.config import VisionConfig


class TimmTower(nn.Module):
    def __init__(self, config: VisionConfig, output_dim: int):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ClipModuleError(f"the image tower {config.timm_model_name!r} is built by timm: pip install timm") \
                from None
        if config.timm_proj not in ("none", "linear", "mlp", ""):
            raise ClipModuleError(f"timm_proj {config.timm_proj!r} is not supported (use 'none', 'linear', 'mlp' "
                                  "or '')")
        try:
            # "": timm's own classifier maps to output_dim; "none": no head at all
            if config.timm_proj not in ("linear", "mlp"):
                classes = 0 if config.timm_proj == "none" else output_dim
                self.trunk = timm.create_model(config.timm_model_name, num_classes=classes, pretrained=False,
                                               global_pool=config.timm_pool)
            else:
                self.trunk = timm.create_model(config.timm_model_name, pretrained=False)
                # an empty pool keeps the model's own pooling (open_clip's convention)
                self.trunk.reset_classifier(0, **({"global_pool": config.timm_pool} if config.timm_pool else {}))
        except (RuntimeError, TypeError, ValueError) as error:
            raise ClipModuleError(f"timm cannot build {config.timm_model_name!r}: {error}") from None
        if config.timm_input_size is not None and hasattr(self.trunk, "set_input_size"):  # a resized model
            self.trunk.set_input_size(img_size=(config.timm_input_size, config.timm_input_size))
        head = OrderedDict()
        if config.timm_proj == "linear":
            head["drop"] = nn.Dropout(0.0)
            head["proj"] = nn.Linear(self.trunk.num_features, output_dim, bias=config.timm_proj_bias)
        elif config.timm_proj == "mlp":  # ConvNeXt-large-d: timm's two-layer MLP, hidden width 2 * output_dim
            from timm.layers import Mlp

            head["mlp"] = Mlp(self.trunk.num_features, 2 * output_dim, output_dim, bias=(True, config.timm_proj_bias))
        self.head = nn.Sequential(head)

    def init_weights(self) -> None:
        """timm initialised the trunk; the projection keeps nn.Linear's init (as open_clip's)."""

    @property
    def grad_checkpointing(self) -> bool:
        return bool(getattr(self.trunk, "grad_checkpointing", False))

    @grad_checkpointing.setter
    def grad_checkpointing(self, enabled: bool) -> None:
        self.trunk.set_grad_checkpointing(enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))
