"""`curation image_shape`: keep samples whose image's original sides are large enough and not too elongated
(DataComp's basic filter: shorter side >= 200, aspect ratio <= 3), read from img2dataset's json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.config.checks import require
from curation.stage import HashCache
from curation.stages.sieve import Decide, sieve_stage


@dataclass
class ImageShapeConfig:
    """The image sides kept."""

    min_side: int = 200
    """Keep images whose shorter original side is at least this many pixels."""
    max_aspect_ratio: float = 3.0
    """Keep images whose longer/shorter original side is at most this."""
    truth: Path | None = None
    """Parquet table (shard, key) of samples that should be dropped (planted): the stats report precision/recall."""

    def __post_init__(self) -> None:
        require(self.min_side >= 0, f"image_shape.min_side must be >= 0, got {self.min_side}")
        require(self.max_aspect_ratio >= 1.0, f"image_shape.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        self.truth = Path(self.truth) if self.truth is not None else None


@dataclass
class ImageShapePaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Input shards: webdataset .tar files or folders of them."""
    out: Path = Path("work/image_shape")
    """Folder for the kept samples' shards (same names); <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def shape_problem(width: Any, height: Any, config: ImageShapeConfig) -> str | None:
    """Why an image of these sides is dropped (None: kept); unknown sides are dropped."""
    if not (isinstance(width, int) and isinstance(height, int)) or min(width, height) <= 0:
        return "no image sides"
    if min(width, height) < config.min_side:
        return "image side"
    return "aspect ratio" if max(width, height) / min(width, height) > config.max_aspect_ratio else None


@dataclass(frozen=True)
class ImageShapeSieve:
    config: ImageShapeConfig
    name: str = "image_shape"

    def build(self, shards: list[Path]) -> Decide:
        return lambda meta, members: shape_problem(meta.get("width"), meta.get("height"), self.config)

    def side_inputs(self, shards: list[Path], hashes: HashCache | None = None) -> dict[str, str | None]:
        return {}  # the json's sides only (and the truth table, which run_sieve hashes)


STAGE = sieve_stage("image_shape", "keep samples whose image's original sides are large and square enough",
                    ImageShapePaths, ImageShapeConfig, ImageShapeSieve, "Image size and aspect ratio",
                    "kept by image shape")
