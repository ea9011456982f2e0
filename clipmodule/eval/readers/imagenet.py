"""ImageNet-1k and its distribution shifts, as the folders they are distributed in.

    imagenet1k       {train,val}/<wnid>/*.JPEG (torchvision's prepared layout); `test` reads val
    imagenetv2       ImageNetV2-matched-frequency/<0..999>/*.jpeg (folder = ImageNet class index)
    imagenet_sketch  sketch/<wnid>/*.JPEG
    imagenet-a       imagenet-a/<wnid>/*.jpg, 200 of the 1000 classes
    imagenet-r       imagenet-r/<wnid>/*.jpg, 200 of the 1000 classes
    objectnet        objectnet-1.0/images/<folder>/*.png + the mappings (folder_to_objectnet_label.json,
                     objectnet_to_imagenet_1k.json; in the root as CLIP_benchmark copies them, or in
                     objectnet-1.0/mappings/): the 113 ObjectNet classes that map to ImageNet classes

Class index = position of the wnid in ImageNet's sorted 1000 (`assets/imagenet_wnids.txt`); A and R are
labelled by position in their own sorted 200-class lists (`assets/imagenet_{a,r}_wnids.txt`, the class sets
the datasets were published with), named with OpenAI's ImageNet class names (`assets/imagenet_classnames.txt`).
Images are labelled by their folder's wnid, never by folder order, so a copy with a class missing still
labels every other class right.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import class_folders, image_files, read_text_lines, register
from clipmodule.eval.readers.items import BenchmarkDataset

ASSETS = Path(__file__).resolve().parents[2] / "assets"


@functools.cache
def imagenet_wnids() -> list[str]:
    return read_text_lines(ASSETS / "imagenet_wnids.txt")


@functools.cache
def imagenet_classnames() -> list[str]:
    return read_text_lines(ASSETS / "imagenet_classnames.txt")


@functools.cache
def subset_wnids(name: str) -> list[str]:
    """The sorted wnids of a 200-class subset ("imagenet_a" or "imagenet_r")."""
    return read_text_lines(ASSETS / f"{name}_wnids.txt")


def _wnid_dataset(name: str, folder: Path, split: str, wnids: list[str]) -> BenchmarkDataset:
    """Images in <folder>/<wnid>/, labelled by the wnid's position in `wnids`."""
    index = {wnid: label for label, wnid in enumerate(wnids)}
    folders = class_folders(folder)
    unknown = [entry for entry in folders if entry not in index]
    if unknown:
        raise ClipModuleError(f"{name}: {folder} has folder {unknown[0]!r}, which is not one of its "
                              f"{len(wnids)} ImageNet wnids")
    items = [(path, index[wnid]) for wnid in folders for path in image_files(folder / wnid)]
    all_names = dict(zip(imagenet_wnids(), imagenet_classnames()))
    return BenchmarkDataset(name, split, "zeroshot_classification", items, [all_names[w] for w in wnids], folder)


@register("imagenet1k", splits=("train", "val", "test"), aliases=("imagenet",),
          expected=lambda split: ["train" if split == "train" else "val"],
          layout="{train,val}/<wnid>/*.JPEG (`test` reads val)")
def open_imagenet1k(folder: Path, split: str) -> BenchmarkDataset:
    return _wnid_dataset("imagenet1k", folder / ("train" if split == "train" else "val"), split, imagenet_wnids())


@register("imagenetv2", splits=("test",), expected=lambda split: ["0"],
          bases=("ImageNetV2-matched-frequency", "imagenetv2-matched-frequency-format-val"),
          layout="ImageNetV2-matched-frequency/<0..999>/*.jpeg")
def open_imagenetv2(folder: Path, split: str) -> BenchmarkDataset:
    folders = class_folders(folder)
    bad = [entry for entry in folders if not entry.isdigit() or int(entry) >= 1000]
    if bad:
        raise ClipModuleError(f"imagenetv2: {folder} has folder {bad[0]!r}; its class folders are 0..999")
    items = [(path, int(entry)) for entry in folders for path in image_files(folder / entry)]
    return BenchmarkDataset("imagenetv2", split, "zeroshot_classification", items, imagenet_classnames(), folder)


@register("imagenet_sketch", splits=("test",), bases=("sketch", "imagenet-sketch"),
          expected=lambda split: ["n01440764"], layout="sketch/<wnid>/*.JPEG")
def open_imagenet_sketch(folder: Path, split: str) -> BenchmarkDataset:
    return _wnid_dataset("imagenet_sketch", folder, split, imagenet_wnids())


@register("imagenet-a", splits=("test",), bases=("imagenet-a",), aliases=("imagenet_a",),
          expected=lambda split: [subset_wnids("imagenet_a")[0]], layout="imagenet-a/<wnid>/*.jpg (200 classes)")
def open_imagenet_a(folder: Path, split: str) -> BenchmarkDataset:
    return _wnid_dataset("imagenet-a", folder, split, subset_wnids("imagenet_a"))


@register("imagenet-r", splits=("test",), bases=("imagenet-r",), aliases=("imagenet_r",),
          expected=lambda split: [subset_wnids("imagenet_r")[0]], layout="imagenet-r/<wnid>/*.jpg (200 classes)")
def open_imagenet_r(folder: Path, split: str) -> BenchmarkDataset:
    return _wnid_dataset("imagenet-r", folder, split, subset_wnids("imagenet_r"))


OBJECTNET_MAPPINGS = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json")


def _mapping(folder: Path, name: str) -> dict[str, str]:
    path = next(path for path in (folder / name, folder / "objectnet-1.0" / "mappings" / name) if path.is_file())
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipModuleError(f"{path}: unreadable JSON ({str(error).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ClipModuleError(f"{path}: expected a JSON object")
    return data


@register("objectnet", splits=("test",),
          expected=lambda split: ["objectnet-1.0/images",
                                  *((name, f"objectnet-1.0/mappings/{name}") for name in OBJECTNET_MAPPINGS)],
          layout="objectnet-1.0/images/<folder>/*.png + mappings (113 classes mapped to ImageNet)")
def open_objectnet(folder: Path, split: str) -> BenchmarkDataset:
    folder_to_label = _mapping(folder, OBJECTNET_MAPPINGS[0])
    to_imagenet = _mapping(folder, OBJECTNET_MAPPINGS[1])
    classes = sorted(entry for entry, label in folder_to_label.items() if label in to_imagenet)
    images = folder / "objectnet-1.0" / "images"
    items = [(path, label) for label, entry in enumerate(classes) if (images / entry).is_dir()
             for path in image_files(images / entry)]
    names = [folder_to_label[entry].lower() for entry in classes]
    return BenchmarkDataset("objectnet", split, "zeroshot_classification", items, names, folder)
