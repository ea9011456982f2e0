"""Thumbnails of the closest matches `curation decontaminate` found: evaluation image beside training image.

It is handed the images' bytes: reading shards is the stage's job, drawing them is this module's."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from curation.formats.files import atomic_path


def plot_matches(drops: list[dict[str, Any]], images: list[tuple[bytes, bytes]], path: Path) -> None:
    """One row per match (closest first): the evaluation image, the dropped training image (`images`, one
    pair per drop), their distance."""
    import matplotlib  # here: loading it takes a second that the stage spends only when it draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    rows = (len(drops) + columns - 1) // columns
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.6, rows * 1.75), dpi=100, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, drop in enumerate(drops):
        row, column = divmod(index, columns)
        for offset, (data, label) in enumerate(zip(images[index], ("evaluation", f"training, d={drop['distance']}"))):
            axis = axes[row, 2 * column + offset]
            with Image.open(io.BytesIO(data)) as image:
                image.thumbnail((128, 128))
                axis.imshow(image.convert("RGB"))
            axis.set_title(label, fontsize=7)
            if offset:
                axis.text(0.5, -0.08, f"{drop['shard']}:{drop['key']}", fontsize=6, ha="center", va="top",
                          transform=axis.transAxes)
    figure.suptitle("Closest evaluation/training matches (Hamming distance d of perceptual hashes)", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(figure)
