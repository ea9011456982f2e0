"""Thumbnails of matched pairs, side by side: evaluation image beside training image (`curation decontaminate`),
kept sample beside its dropped duplicate (`curation dedup`).

It is handed the images' bytes: reading shards is the stages' job, drawing them is this module's."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from clipformats.files import atomic_path


def plot_pairs(images: list[tuple[bytes | None, bytes]], titles: list[tuple[str, str]], footers: list[str],
               title: str, path: Path) -> None:
    """One pair per cell, two cells a row: each pair's images (the first may be None: not shown), their
    titles and a footer under the second."""
    import matplotlib  # here: loading it takes a second that a stage spends only when it draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    rows = (len(images) + columns - 1) // columns
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.6, rows * 1.75), dpi=100, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, pair in enumerate(images):
        row, column = divmod(index, columns)
        for offset, (data, label) in enumerate(zip(pair, titles[index])):
            axis = axes[row, 2 * column + offset]
            if data is not None:
                with Image.open(io.BytesIO(data)) as image:
                    image.thumbnail((128, 128))
                    axis.imshow(image.convert("RGB"))
            axis.set_title(label, fontsize=7)
            if offset:
                axis.text(0.5, -0.08, footers[index], fontsize=6, ha="center", va="top", transform=axis.transAxes)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(figure)


def plot_matches(drops: list[dict[str, Any]], images: list[tuple[bytes | None, bytes]], path: Path) -> None:
    """One row per match (closest first): the evaluation image, the dropped training image (`images`, one
    pair per drop), their distance (perceptual hash) or cosine (embedding pass)."""
    titles = [("evaluation", f"training, d={d['distance']}" if d.get("distance") is not None
               else f"training, cos={d['cosine']:.3f}") for d in drops]
    plot_pairs(images, titles, [f"{d['shard']}:{d['key']}" for d in drops],
               "Closest evaluation/training matches (Hamming distance d of perceptual hashes, "
               "or cosine of image embeddings)", path)
