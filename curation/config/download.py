"""`curation download`'s settings: what is handed to img2dataset, and how the job is watched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from clipformats.images import MAX_IMAGE_PIXELS
from curation.config.checks import require as _require

ENCODE_QUALITY = {"jpg": (0, 100), "webp": (1, 100), "png": (0, 9)}
"""OpenCV's range of `encode_quality` per format (PNG: a compression level; WebP above 100 would silently mean
lossless)."""



@dataclass
class DownloadConfig:
    """Options handed to img2dataset."""

    output_format: Literal["webdataset", "parquet"] = "webdataset"
    """Shard format: webdataset tars (for training) or parquet with the image bytes."""
    image_size: int = 256
    """Side of the stored images in pixels."""
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "border"
    """How images are brought to `image_size` (img2dataset's resize modes)."""
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    """Image encoding inside the shards."""
    encode_quality: int = 95
    """JPEG quality 0-100, WebP quality 1-100, PNG compression level 0-9 (OpenCV's ranges, which img2dataset
    encodes with)."""
    samples_per_shard: int = 10_000
    """Rows per output shard."""
    processes: int = 1
    """Download processes."""
    threads: int = 32
    """Download threads per process."""
    retries: int = 0
    """Extra attempts per failed URL."""
    timeout: int = 10
    """Seconds one attempt at a URL may take in all (connecting, redirects, reading the body), however slowly the
    server trickles; each retry gets its own."""
    distributor: Literal["multiprocessing", "pyspark", "ray"] = "multiprocessing"
    """img2dataset distributor; pyspark and ray need a cluster and their package installed."""
    save_columns: list[str] = field(default_factory=list)
    """Extra columns of the balanced rows stored with each sample (e.g. query_ids)."""
    from_matched: bool = False
    """Download a `curation match` output (the unbalanced pool online curation, `data.curation`, draws from each
    epoch; query_ids must be in save_columns, else refused) instead of a `curation balance` output."""
    allow_schemes: list[str] = field(default_factory=list)
    """URL schemes fetched besides http and https (e.g. file: then local files are read). Other URLs are
    not opened; they count as failures with the reason."""
    max_image_pixels: int = MAX_IMAGE_PIXELS
    """Images whose header says width x height is over this are not decoded; they count as failures."""
    dedup_urls: bool = False
    """Download each URL once (the first row that has it); by default duplicates are only counted in the stats."""
    stall_seconds: int = 0
    """Stop img2dataset when, after its first output, nothing has been written (shards, their stats, its log) for
    this many seconds: a hung job ends with one line and the same command resumes it (0: never). Set it above
    `timeout` x the URLs one thread may fail in a row, since failures write nothing until their shard closes."""
    min_image_size: int = 0
    """Images whose shorter side is under this many pixels are failures (img2dataset's min_image_size)."""
    max_aspect_ratio: float | None = None
    """Images whose longer/shorter side is over this are failures (img2dataset's max_aspect_ratio)."""
    verify_hash_column: str | None = None
    """Column of the balanced rows holding each image's expected sha256; an image whose hash differs is a failure
    (img2dataset's verify_hash)."""
    blur_faces: bool = False
    """Detect faces in every downloaded image (OpenCV's Haar cascade, offline) and blur them before storing, with
    img2dataset's blurrer, as DataComp's pool is face-blurred (see `curation.stages.download.faces` for its limits)."""
    bbox_column: str | None = None
    """Column of the balanced rows holding face boxes ([[x0, y0, x1, y1], ...] relative to the image) that
    img2dataset blurs before storing (its bbox_col; `curation faces` writes it)."""

    def __post_init__(self) -> None:
        for name in ("image_size", "samples_per_shard", "processes", "threads", "timeout", "max_image_pixels"):
            _require(getattr(self, name) >= 1, f"download.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("stall_seconds", "min_image_size"):
            _require(getattr(self, name) >= 0, f"download.{name} must be >= 0, got {getattr(self, name)}")
        _require(self.max_aspect_ratio is None or self.max_aspect_ratio >= 1.0,
                 f"download.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        _require(self.retries >= 0, f"download.retries must be >= 0, got {self.retries}")
        low, high = ENCODE_QUALITY.get(self.encode_format, (0, 100))
        _require(low <= self.encode_quality <= high, f"download.encode_quality for {self.encode_format} must be in "
                 f"[{low}, {high}], got {self.encode_quality}")
        reserved = {"url", "caption", "key", "status", "error_message", "width", "height", "sha256"}
        clash = sorted(reserved.intersection(self.save_columns))
        _require(not clash, f"download.save_columns: {clash} are written by img2dataset itself")
        _require(not self.from_matched or "query_ids" in self.save_columns,
                 "download.from_matched: online curation reads each sample's query_ids; add query_ids to "
                 "save_columns (--save_columns query_ids)")
