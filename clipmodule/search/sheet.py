"""The hits of a search as a PNG contact sheet: each sample's thumbnail (read from its shard), score and caption."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from PIL import Image

from clipformats.files import atomic_path
from clipformats.webdataset import image_field
from clipmodule.data.shards import ShardCache
from clipmodule.embedding import decode_image

COLUMNS = 4


def hit_images(hits: list[dict[str, Any]], shard_files: dict[str, str]) -> list[Image.Image | None]:
    """Each hit's image, every shard read once; None where the shard or the sample is not found."""
    wanted: dict[str, set[str]] = {}
    for hit in hits:
        wanted.setdefault(hit["shard"], set()).add(hit["key"])
    found: dict[tuple[str, str], Image.Image | None] = {}
    for shard, keys in wanted.items():
        path = shard_files.get(shard)
        if path is None or not Path(path).is_file():
            continue
        cache = ShardCache([path], capacity=1)
        try:
            index = cache.index(0)
            for sample, key in enumerate(index.keys):
                if key in keys:
                    fields = cache.read(0, sample)[1]
                    name = image_field(fields)
                    found[shard, key] = decode_image(fields[name]) if name is not None else None
        finally:
            cache.close()
    return [found.get((hit["shard"], hit["key"])) for hit in hits]


def plot_hits(query: str, hits: list[dict[str, Any]], images: list[Image.Image | None], path: Path) -> Path:
    """A grid of the hits, best first: thumbnail, rank, score and caption (wrapped) under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(hits) // COLUMNS))
    figure, axes = plt.subplots(rows, COLUMNS, figsize=(COLUMNS * 3.0, rows * 3.6), squeeze=False)
    for number, axis in enumerate(axes.flat):
        axis.axis("off")
        if number >= len(hits):
            continue
        hit, image = hits[number], images[number]
        if image is not None:
            axis.imshow(image)
        else:
            axis.text(0.5, 0.5, "image not found", ha="center", va="center", transform=axis.transAxes)
        caption = textwrap.shorten(hit.get("caption") or "", 80, placeholder="…")
        axis.set_title(f"#{number + 1}  {hit['score']:.3f}\n" + "\n".join(textwrap.wrap(caption, 32)[:3]),
                       fontsize=8)
    figure.suptitle(f"nearest samples to {query}", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return path
