"""Synthetic image-text data with a ground truth: coloured shapes and captions that name them.

`write_synthetic_shards` writes them in img2dataset's webdataset layout (jpg + txt + json per sample,
`<shard>_stats.json` beside each tar), so tests and benchmarks run the real shard reader;
`SyntheticDataModule` serves them from memory for tests that only need batches.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader

from clipmodule.transforms import image_transform

COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square", "triangle")
CLASSNAMES = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
CAPTIONS = ("a {}", "a photo of a {}", "a {} on a plain background", "a drawing of a {}")


def render_sample(number: int, image_size: int = 64, seed: int = 0) -> tuple[Image.Image, str, int]:
    """The number-th synthetic sample: (image, caption, label into CLASSNAMES)."""
    rng = np.random.default_rng([seed, number])
    label = int(rng.integers(len(CLASSNAMES)))
    color, shape = CLASSNAMES[label].split()
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    half = image_size * rng.uniform(0.2, 0.35)
    cx, cy = rng.uniform(half, image_size - half, size=2)
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=COLORS[color])
    caption = CAPTIONS[int(rng.integers(len(CAPTIONS)))].format(CLASSNAMES[label])
    return image, caption, label


def write_synthetic_shards(directory: str | Path, num_shards: int, samples_per_shard: int,
                           image_size: int = 64, seed: int = 0, first_sample: int = 0) -> list[Path]:
    """Write `num_shards` tars of `samples_per_shard` samples each; returns their paths."""
    import webdataset as wds

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = directory / f"{shard:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for offset in range(samples_per_shard):
                number = first_sample + shard * samples_per_shard + offset
                image, caption, label = render_sample(number, image_size, seed)
                jpeg = io.BytesIO()
                image.save(jpeg, format="JPEG", quality=90)
                key = f"{shard:05d}{offset:04d}"
                meta = {"key": key, "caption": caption, "status": "success", "label": label}
                sink.write({"__key__": key, "jpg": jpeg.getvalue(), "txt": caption, "json": json.dumps(meta)})
        stats = {"count": samples_per_shard, "successes": samples_per_shard, "failed_to_download": 0}
        (directory / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
        paths.append(path)
    return paths


class SyntheticPairs(Dataset):
    """In-memory synthetic pairs, already transformed and tokenised."""

    def __init__(self, num_samples: int, image_size: int, context_length: int, seed: int = 0):
        from clipmodule.tokenizer import ClipTokenizer

        transform = image_transform(image_size, train=False)
        rendered = [render_sample(i, image_size, seed) for i in range(num_samples)]
        self.images = torch.stack([transform(image) for image, _, _ in rendered])
        self.texts = ClipTokenizer()([caption for _, caption, _ in rendered], context_length=context_length)
        self.labels = torch.tensor([label for _, _, label in rendered])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "text": self.texts[index], "label": self.labels[index]}


class SyntheticDataModule(L.LightningDataModule):
    """Small synthetic batches for tests: `num_samples` pairs, reshuffled every epoch."""

    def __init__(self, num_samples: int = 64, batch_size: int = 16, image_size: int = 32,
                 context_length: int = 77, seed: int = 0):
        super().__init__()
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.image_size, self.context_length = image_size, context_length
        self.zeroshot_classnames = CLASSNAMES

    def setup(self, stage: str | None = None) -> None:
        self.pairs = SyntheticPairs(self.num_samples, self.image_size, self.context_length, self.seed)

    def train_dataloader(self) -> StatefulDataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return StatefulDataLoader(self.pairs, batch_size=self.batch_size, shuffle=True, drop_last=True,
                                  generator=generator)

    def val_dataloader(self) -> list[StatefulDataLoader]:
        """The same pairs twice: for retrieval, and (by label) for zero-shot classification."""
        return [StatefulDataLoader(self.pairs, batch_size=self.batch_size, collate_fn=functools.partial(tagged, task=task))
                for task in ("retrieval", "zeroshot")]


def tagged(samples: list[dict[str, torch.Tensor]], task: str) -> dict:
    return {**default_collate(samples), "task": task}
