"""Distillation from a frozen teacher CLIP (open_clip's `--distill-model`, its `DistillClipLoss`).

The student's image->text and text->image distributions over the global batch are pulled towards the teacher's:
the cross-entropy of the student's log-softmax against the teacher's softmax, row by row (the KL divergence plus the
teacher's entropy, a constant: the same gradients), averaged over both directions. The total loss is
`contrastive_weight * clip_loss + weight * distill`; open_clip uses 1 and 1. The teacher's features go through the
same gather as the student's (`local_loss` scores this rank's rows against every column, for both).

The teacher is anything `clipmodule.load` reads. It is frozen, in eval mode, and run without gradients in the
trainer's precision (under its autocast, or cast to the student's dtype for `*-true` precisions); it is not part of
the module's state dict, so checkpoints hold the student only and resume reloads the teacher from its path. It sees
the batch's pixels normalised with its own release's mean/std (`clipmodule.train.pixels`), whatever the student's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipmodule.errors import ClipModuleError
from clipmodule.loss import gather_with_grad
from clipmodule.train.pixels import PixelNorm


@dataclass(frozen=True)
class DistillConfig:
    """A teacher and the weights of the two loss terms."""

    teacher: str
    """The teacher's weights: anything `clipmodule.load` reads (a checkpoint, a hub folder, a name with local
    weights). Recorded in MLflow (distill/path, distill/sha256)."""
    architecture: str | None = None
    """The teacher's architecture for files that do not say it (load's `model=`)."""
    weight: float = 1.0
    """Weight of the distillation term."""
    contrastive_weight: float = 1.0
    """Weight of the student's own contrastive loss."""


def soft_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum(softmax(teacher) * log_softmax(student))."""
    return -(teacher_logits.softmax(dim=1) * student_logits.log_softmax(dim=1)).sum(dim=1).mean()


def _logits(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, rank: int, world_size: int,
            local_loss: bool) -> tuple[torch.Tensor, torch.Tensor]:
    all_images, all_texts = gather_with_grad(images, rank, world_size), gather_with_grad(texts, rank, world_size)
    if local_loss:
        return scale * images @ all_texts.t(), scale * texts @ all_images.t()
    per_image = scale * all_images @ all_texts.t()
    return per_image, per_image.t()


def distill_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                      teacher_images: torch.Tensor, teacher_texts: torch.Tensor, teacher_scale: torch.Tensor, *,
                      rank: int = 0, world_size: int = 1,
                      local_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(contrastive loss, distillation loss) of this rank's features, as open_clip's `DistillClipLoss`. All features
    are L2-normalised; the scales are exponentiated. The teacher's features carry no gradient."""
    per_image, per_text = _logits(image_features, text_features, logit_scale, rank, world_size, local_loss)
    with torch.no_grad():
        teacher_per_image, teacher_per_text = _logits(teacher_images, teacher_texts, teacher_scale, rank, world_size,
                                                      local_loss)
    offset = rank * image_features.shape[0] if local_loss else 0
    labels = torch.arange(per_image.shape[0], device=per_image.device) + offset
    contrastive = (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
    distill = (soft_cross_entropy(teacher_per_image, per_image) + soft_cross_entropy(teacher_per_text, per_text)) / 2
    return contrastive, distill


class Teacher:
    """The frozen teacher, kept outside the module's state dict (a plain attribute, not a submodule)."""

    def __init__(self, config: DistillConfig, student: nn.Module):
        from clipmodule.api import load, tokenizer_spec
        from clipmodule.train.init import source_path, source_sha256

        path = source_path(config.teacher)
        self.model, _ = load(config.teacher, model=config.architecture)
        self.model.eval().requires_grad_(False)
        own, theirs = tokenizer_spec(student), tokenizer_spec(self.model)
        if own.kind != theirs.kind or own.context_length > theirs.context_length:
            raise ClipModuleError(f"model.distill.teacher {config.teacher}: it reads {theirs.kind} texts of "
                                  f"{theirs.context_length} tokens, the student {own.kind} of {own.context_length}; "
                                  "the teacher must read the student's tokens")
        self.image_size = self.model.config.vision.image_size
        self.pixels = PixelNorm.of(self.model)  # its release's mean/std: the batch is moved to them
        self.source = {"path": str(path.resolve()), "sha256": source_sha256(path),
                       "weight": config.weight, "contrastive_weight": config.contrastive_weight}

    def place(self, like: nn.Module) -> None:
        """On the student's device, in its parameters' dtype (a `*-true` precision casts the student)."""
        parameter = next(like.parameters())
        self.model.to(device=parameter.device, dtype=parameter.dtype if parameter.is_floating_point() else None)

    @torch.no_grad()
    def encode(self, batch: dict[str, Any], pixels: PixelNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (image, text) features of a batch whose images are normalised with `pixels` (the student's;
        default OpenAI's): moved to the teacher's own mean/std, resized to its size when it differs."""
        images = (pixels or PixelNorm()).to(batch["image"], self.pixels)
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic",
                                   align_corners=False)
        return (self.model.encode_image(images, normalize=True),
                self.model.encode_text(batch["text"], normalize=True))

    def scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().exp()

    def encode_batch(self, batch: dict[str, Any], parts: int,
                     pixels: PixelNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's features of `batch`, computed `parts` micro-batches at a time (activations held for one)."""
        from clipmodule.train.accumulate import split_batch

        encoded = [self.encode(micro, pixels) for micro in (split_batch(batch, parts) if parts > 1 else [batch])]
        return torch.cat([images for images, _ in encoded]), torch.cat([texts for _, texts in encoded])
