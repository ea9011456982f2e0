"""What the loaders hand over, and what is read back from their state: batches (`TokenizingCollate`), plain option
data for checkpoints (`plain_data`) and the counters summed over workers (`sum_counters`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from clipmodule.api import TokenizerSpec


class TokenizingCollate:
    """Stacks images (uint8 from the training augmentation, float from the eval transform) and tokenises the
    batch's captions in one call (in the worker). `task` tags the
    batch ("train", "retrieval", "zeroshot" or "<task>/<set>") so validation knows which tracker computes it."""

    def __init__(self, tokenizer: TokenizerSpec | int = 77, task: str = "train"):
        self.spec = tokenizer if isinstance(tokenizer, TokenizerSpec) else TokenizerSpec(context_length=tokenizer)
        self.task = task
        self._tokenizer = None

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if self._tokenizer is None:  # built in the worker, on first use
            self._tokenizer = self.spec.build(truncate=True)
        texts = [sample["text"] for sample in samples]
        images = torch.stack([sample["image"] for sample in samples])
        return {
            # the training augmentation gives uint8 pixels; they stay uint8 (a quarter of the bytes through
            # shared memory and to the device) and `ClipLitModule` normalises them there (`normalize_batch`)
            "image": images,
            "text": self._tokenizer(texts),
            "label": torch.tensor([sample["label"] for sample in samples], dtype=torch.long),
            "key": [sample["key"] for sample in samples],
            "caption": texts,  # the words themselves, for rules that rewrite them (model.hard_negatives)
            "task": self.task,
        }


def plain_data(value: Any) -> Any:
    """`value` with every dataclass in it turned into a dict (nested in lists and dicts too)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [plain_data(item) for item in value]
    if isinstance(value, dict):
        return {key: plain_data(item) for key, item in value.items()}
    return value


def sum_counters(state: Any, names: tuple[str, ...] = ("corrupt_samples", "corrupt_shards")) -> dict[str, int]:
    """Totals of the named counters anywhere in a (nested) loader state: one per worker."""
    totals = dict.fromkeys(names, 0)
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for name in names:
                if isinstance(item.get(name), int):
                    totals[name] += item[name]
            stack.extend(value for value in item.values() if isinstance(value, (dict, list)))
        elif isinstance(item, list):
            stack.extend(value for value in item if isinstance(value, (dict, list)))
    return totals
