"""The evaluation data, one stack: every dataset an evaluation reads, named by a spec string; nothing is downloaded.

    open_data(spec, transform, "classification" | "retrieval", classnames, root, split)
                                                     the one dispatcher (`specs`; `open_classification` and
                                                     `open_retrieval` are its two tasks): an image folder, a
                                                     CSV/TSV (`local`), webdataset shards (`shards`),
                                                     builtin:<name> (`builtin`) or, with a root, a benchmark
    open_dataset("cifar10", "/data/cifar", "test")   a benchmark by name from its local copy in the layout it is
                                                     distributed in: a `BenchmarkDataset`: .classnames, .task
    known_datasets()                                 the names (CLIP_benchmark's; `wds/<name>` for its
                                                     webdataset layout)
    check_dataset(name, root, split)                 the missing-files check alone, no images read

The dataset classes are one family (`items`: `LabelledImages`, `CaptionedImages`, `BenchmarkDataset`, and
`make_loader`); images and their lazy sources are `images`. One benchmark reader module per family:
`arrays` (CIFAR, MNIST, STL-10, SVHN, PCam, FER2013), `folders` (EuroSAT, RESISC45, Caltech-101, Country211,
Rendered SST2, GTSRB, SUN397), `lists` (Food-101, Flowers-102, DTD, Pets, FGVC-Aircraft, Stanford Cars),
`imagenet` (ImageNet-1k, V2, Sketch, A, R, ObjectNet), `voc`, `retrieval` (Flickr8k/30k, MS-COCO),
`wds`, `wilds` (iWildCam, Camelyon17, FMoW with their metadata), `geodiverse` (Dollar Street, GeoDE with their
groups), `winogavil`, `faces` (FairFace, UTKFace),
`selection` (SugarCrepe, Winoground, ARO: image-caption selection), `multilingual` (XTD-10/200, Flickr30k-200,
Crossmodal-3600, Babel-ImageNet: one split per language). `table()` gives the README's dataset table.
"""

from __future__ import annotations

from clipmodule.eval.readers import (  # noqa: F401 (imported to register their readers)
    arrays,
    faces,
    folders,
    geodiverse,
    imagenet,
    lists,
    multilingual,
    retrieval,
    selection,
    voc,
    wds,
    wilds,
    winogavil,
)
from clipmodule.eval.readers.base import (
    READERS,
    check_dataset,
    is_benchmark_name,
    known_datasets,
    open_dataset,
    reader,
)
from clipmodule.eval.readers.images import load_image
from clipmodule.eval.readers.items import BenchmarkDataset, CaptionedImages, LabelledImages, make_loader
from clipmodule.eval.readers.specs import open_classification, open_data, open_retrieval

__all__ = ["BenchmarkDataset", "CaptionedImages", "LabelledImages", "check_dataset", "is_benchmark_name",
           "known_datasets", "load_image", "make_loader", "open_classification", "open_data", "open_dataset",
           "open_retrieval", "reader", "table"]


def table() -> str:
    """The markdown table of every reader: name, the layout it expects under --dataset_root, splits, metric."""
    lines = ["| name | layout under `--dataset_root` | splits | metric |", "|---|---|---|---|"]
    for name in known_datasets():
        entry = READERS[name]
        splits = f"{len(entry.splits)} languages (`language`)" if entry.by_language else ", ".join(entry.splits)
        lines.append(f"| `{name}` | {entry.layout} | {splits} | {entry.metric} |")
    return "\n".join(lines) + "\n"
