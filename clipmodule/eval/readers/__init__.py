"""Benchmark datasets read from local copies in the layouts they are distributed in; nothing is downloaded.

    open_dataset("cifar10", "/data/cifar", "test")   a `BenchmarkDataset`: .classnames, .task, len, items
    known_datasets()                                 the names (CLIP_benchmark's; `wds/<name>` for its
                                                     webdataset layout)
    check_dataset(name, root, split)                 the missing-files check alone, no images read

One module per family: `arrays` (CIFAR, MNIST, STL-10, SVHN, PCam, FER2013), `folders` (EuroSAT, RESISC45,
Caltech-101, Country211, Rendered SST2, GTSRB, SUN397), `lists` (Food-101, Flowers-102, DTD, Pets,
FGVC-Aircraft, Stanford Cars), `imagenet` (ImageNet-1k, V2, Sketch, A, R, ObjectNet), `voc`, `retrieval`
(Flickr8k/30k, MS-COCO), `wds`. `table()` gives the README's dataset table.
"""

from __future__ import annotations

from clipmodule.eval.readers import arrays, folders, imagenet, lists, retrieval, voc, wds  # noqa: F401, E402 (register)
from clipmodule.eval.readers.base import (
    READERS,
    BenchmarkDataset,
    check_dataset,
    known_datasets,
    open_dataset,
    reader,
)

__all__ = ["BenchmarkDataset", "check_dataset", "is_benchmark_name", "known_datasets", "open_dataset", "reader",
           "table"]


def is_benchmark_name(name: str) -> bool:
    """Whether `name` names a registered reader (or an alias, or `wds/<name>`)."""
    from clipmodule.eval.readers.base import ALIASES

    return name in READERS or name in ALIASES or name.startswith("wds/")


def table() -> str:
    """The markdown table of every reader: name, the layout it expects under --dataset_root, splits, metric."""
    lines = ["| name | layout under `--dataset_root` | splits | metric |", "|---|---|---|---|"]
    for name in known_datasets():
        entry = READERS[name]
        lines.append(f"| `{name}` | {entry.layout} | {', '.join(entry.splits)} | {entry.metric} |")
    return "\n".join(lines) + "\n"
