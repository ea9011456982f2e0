"""Thumbnails of the closest matches `curation decontaminate` found: evaluation image beside training image."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from curation.stage import atomic_path


def plot_matches(drops: list[dict[str, Any]], shards: dict[str, Path], path: Path) -> None:
    """One row per match (closest first): the evaluation image, the dropped training image, their distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from curation.decontaminate import _image_member, load_eval_image, tar_samples

    wanted = {(d["shard"], d["key"]) for d in drops}
    train_images = {}
    for shard in sorted({d["shard"] for d in drops}):
        for key, members in tar_samples(shards[shard]):
            if (shard, key) in wanted:
                train_images[shard, key] = _image_member(members)
    columns = 2
    rows = (len(drops) + columns - 1) // columns
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.6, rows * 1.75), dpi=100, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, drop in enumerate(drops):
        row, column = divmod(index, columns)
        pair = (load_eval_image(drop["eval_image"]), train_images[drop["shard"], drop["key"]])
        for offset, (data, label) in enumerate(zip(pair, ("evaluation", f"training, d={drop['distance']}"))):
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
