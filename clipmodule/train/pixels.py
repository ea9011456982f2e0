"""The pixel normalisation each network in a run was trained with, and the one operation that moves a batch between
two of them.

Released weights differ in the mean and std they expect (OpenAI's and LAION's: OpenAI's values; SigLIP's: 0.5 and
0.5; some ImageNet's), and `clipmodule.load` keeps the file's as `preprocess_cfg`. The data pipeline does not know
the model: training batches arrive as uint8 pixels and evaluation batches normalised with OpenAI's values. The
trainer normalises each batch for its own network (`PixelNorm.of(model)`: the release's values for `init_from`,
OpenAI's for a network built from scratch); a distillation teacher gets the batch moved to its own values. The move is
per-channel affine, so it commutes with the bicubic resize to the teacher's size (its weights sum to one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from clipmodule.errors import ClipModuleError
from clipmodule.transforms import OPENAI_MEAN, OPENAI_STD, normalize_batch

log = logging.getLogger(__name__)
NORM_KEY = "image_norm"  # a batch's optional (mean, std) of its float images; absent: OpenAI's


@dataclass(frozen=True)
class PixelNorm:
    """Per-channel mean and std of [0, 1] pixels."""

    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD

    @classmethod
    def of(cls, network: Any) -> PixelNorm:
        """The network's own (its checkpoint's `preprocess_cfg`), else OpenAI's."""
        preprocess = getattr(network, "preprocess_cfg", None)
        if preprocess is None:
            return cls()
        return cls(tuple(float(v) for v in preprocess.mean), tuple(float(v) for v in preprocess.std))

    @classmethod
    def of_record(cls, record: Any, source: str = "checkpoint") -> PixelNorm | None:
        """From a recorded preprocess (open_clip's `preprocess_cfg` form, its defaults where a key is absent), or
        None where nothing is recorded; a malformed record is one error naming `source`."""
        preprocess = preprocess_of_record(record, 224, source)
        return None if preprocess is None else cls(preprocess.mean, preprocess.std)

    @classmethod
    def of_checkpoint(cls, checkpoint: dict[str, Any], source: str, current: PixelNorm) -> PixelNorm:
        """The values a fit checkpoint's weights were trained with: its recorded preprocess, else OpenAI's (a run
        from scratch, or one from before runs recorded it); `current` (the module's own) for a checkpoint that is no
        fit checkpoint (no hyper_parameters). One log line where they differ from `current`."""
        hyper = checkpoint.get("hyper_parameters")
        if not isinstance(hyper, dict):
            return current
        pixels = cls.of_record(hyper.get("preprocess"), source) or cls()
        if pixels != current:
            log.info("%s: its weights were trained with pixel mean %s, std %s (not this module's %s, %s); using "
                     "the checkpoint's", source, list(pixels.mean), list(pixels.std), list(current.mean),
                     list(current.std))
        return pixels

    @classmethod
    def carried(cls, batch: dict[str, Any]) -> PixelNorm:
        """The mean/std a batch's float images were normalised with: its `image_norm` ((mean, std), set by a data
        module that normalises otherwise), else OpenAI's (every loader of this project's)."""
        tag = batch.get(NORM_KEY)
        if tag is None:
            return cls()
        try:
            mean, std = tag
            norm = cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a per-sample tag, collated into [B] tensors
            norm = None
        if norm is None or len(norm.mean) != 3 or len(norm.std) != 3 or min(norm.std) <= 0:
            raise ClipModuleError(f"batch {NORM_KEY} {tag!r}: not (mean, std) of 3 values each, std positive")
        return norm

    @property
    def is_openai(self) -> bool:
        return self == PixelNorm()

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> float, scaled to [0, 1] and normalised with these values."""
        return normalize_batch(images) if self.is_openai else normalize_batch(images, self.mean, self.std)

    def to(self, images: torch.Tensor, other: PixelNorm) -> torch.Tensor:
        """Images normalised with these values, normalised with `other`'s instead (the same pixels)."""
        if other == self:
            return images
        mine_mean, mine_std, their_mean, their_std = (
            torch.tensor(values, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
            for values in (self.mean, self.std, other.mean, other.std))
        return images * (mine_std / their_std) + (mine_mean - their_mean) / their_std


def preprocess_record(network: Any) -> dict[str, Any] | None:
    """The network's eval preprocessing as open_clip's `preprocess_cfg` (recorded with a fit run, so that its
    checkpoints are read with it), or None for a network without one (OpenAI's then)."""
    from clipmodule.checkpoints.open_clip import preprocess_to_open_clip

    preprocess = getattr(network, "preprocess_cfg", None)
    return None if preprocess is None else preprocess_to_open_clip(preprocess)


def preprocess_of_record(record: Any, image_size: int, source: str) -> Any:
    """The eval preprocessing a fit checkpoint recorded (`preprocess_record`) at `image_size`, or None (OpenAI's);
    a malformed record is one error naming `source`."""
    from clipmodule.checkpoints.open_clip import preprocess_from_open_clip

    if record is None:
        return None
    where = f"{source}: hyper_parameters.preprocess"
    try:
        return preprocess_from_open_clip(record, image_size, where)
    except (TypeError, ValueError) as error:
        raise ClipModuleError(f"{where}: {error}") from None
