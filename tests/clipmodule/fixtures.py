"""Test-only data: synthetic shape pairs served from memory, for tests that need batches but not the shard reader.

Import it as `from tests.clipmodule.fixtures import SyntheticDataModule` (pytest runs from the checkout root)."""

from __future__ import annotations

import functools

import lightning as L
import torch
from torch.utils.data import Dataset, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader

from clipmodule.data.synthetic import CLASSNAMES, render_sample
from clipmodule.tokenizer import ClipTokenizer
from clipmodule.transforms import image_transform


class SyntheticPairs(Dataset):
    """In-memory synthetic pairs, already transformed and tokenised."""

    def __init__(self, num_samples: int, image_size: int, context_length: int, seed: int = 0):
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
        return [StatefulDataLoader(self.pairs, batch_size=self.batch_size,
                                   collate_fn=functools.partial(tagged, task=task))
                for task in ("retrieval", "zeroshot")]


def tagged(samples: list[dict[str, torch.Tensor]], task: str) -> dict:
    """A batch tagged with the task validation should compute for it, as `TokenizingCollate` tags real ones."""
    return {**default_collate(samples), "task": task}
