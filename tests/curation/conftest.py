"""Fixtures for the embedding-based stages (filter, dedup, decontaminate's embedding pass): webdataset shards
as img2dataset writes them (jpg, txt, json with the original sides) and their embedding folder written
through the embedding contract, with vectors the test chooses."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipformats.embeddings import finish_set, normalise, write_part


@dataclass
class Sample:
    key: str
    image: np.ndarray
    """Image embedding (normalised when written)."""
    text: np.ndarray
    caption: str = "a photo of a thing on a table"
    width: int = 256
    height: int = 256
    colour: tuple[int, int, int] = (128, 128, 128)
    picture: bytes | None = None
    """The encoded image (default: a square of `colour`)."""
    embedded: bool = True
    """False: in the shard but not in the embeddings, as the embed stage skips an undecodable image."""


def jpeg(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def picture(seed: int, size: int = 64) -> bytes:
    """A smooth random colour field: distinct seeds give images far apart under a perceptual hash."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def write_shard(path: Path, samples: list[Sample]) -> None:
    with tarfile.open(path, "w") as tar:
        for s in samples:
            meta = {"key": s.key, "caption": s.caption, "original_width": s.width, "original_height": s.height,
                    "width": 256, "height": 256}
            for suffix, payload in ((".jpg", s.picture or jpeg(s.colour)), (".txt", s.caption.encode()),
                                    (".json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(s.key + suffix)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def write_embedded(root: Path, shards: dict[str, list[Sample]], dtype: str = "float16") -> tuple[Path, Path]:
    """`root/shards/<name>.tar` and `root/embeddings` (one part per shard); returns both folders."""
    shard_dir, embeddings = root / "shards", root / "embeddings"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for name, samples in shards.items():
        write_shard(shard_dir / name, samples)
        rows = [s for s in samples if s.embedded]
        write_part(embeddings, name.split(".")[0], normalise(np.stack([s.image for s in rows])),
                   normalise(np.stack([s.text for s in rows])),
                   {"key": [s.key for s in rows], "shard": [name] * len(rows), "caption": [s.caption for s in rows]},
                   dtype=dtype, info={"rows_in": len(samples), "rows_out": len(rows)})
    finish_set(embeddings)
    return shard_dir, embeddings


def shard_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))


class Embedded:
    """What the `embedded` fixture hands a test: the sample type and the writers/readers above."""

    Sample = Sample
    write = staticmethod(write_embedded)
    keys = staticmethod(shard_keys)
    jpeg = staticmethod(jpeg)
    picture = staticmethod(picture)


@pytest.fixture
def embedded() -> type[Embedded]:
    """`embedded.write(root, {shard name: [embedded.Sample(...), ...]})` → (shards folder, embeddings folder)."""
    return Embedded
