"""Image-text retrieval sets: Flickr8k, Flickr30k, MS-COCO (Karpathy splits), several captions per image.

Either of two annotation layouts, in the dataset root:

    CLIP_benchmark's   flickr{8k,30k}_{split}_karpathy.txt: a header line, then `<image>.jpg,<caption>` (an
                       image per caption line; images in the root);
                       coco_{split}_karpathy.json: COCO caption format ({images: [{id, file_name}],
                       annotations: [{image_id, caption}]}), images in val2014/ (train2014/ for train)
    Karpathy's         dataset_{flickr8k,flickr30k,coco}.json: {images: [{filename, split, sentences: [{raw}],
                       filepath (COCO)}]}; `train` includes COCO's `restval`. Flickr images are looked up in
                       the root, flickr30k-images/, Flicker8k_Dataset/ or Images/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import register
from clipmodule.eval.readers.items import BenchmarkDataset

SPLITS = ("train", "val", "test")
FLICKR_IMAGE_DIRS = ("", "flickr30k-images", "flickr30k_images", "Flicker8k_Dataset", "Flickr8k_Dataset", "Images",
                     "images")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipModuleError(f"{path}: unreadable JSON ({str(error).splitlines()[0][:120]})") from None


def _caption_lines(path: Path) -> dict[str, list[str]]:
    """{image file: captions} from CLIP_benchmark's `<image>.jpg,<caption>` file (captions may hold commas)."""
    captions: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
    except (OSError, UnicodeDecodeError) as error:
        raise ClipModuleError(f"{path}: unreadable ({error})") from None
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        image, separator, caption = line.strip().partition(".jpg,")
        if not separator:
            raise ClipModuleError(f"{path}:{number}: expected '<image>.jpg,<caption>'")
        captions.setdefault(image + ".jpg", []).append(caption.strip())
    return captions


def _karpathy(path: Path, split: str) -> list[tuple[str, str, list[str]]]:
    """(filepath, filename, captions) of Karpathy's JSON entries in `split`."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ClipModuleError(f"{path}: expected Karpathy's {{images: [{{filename, split, sentences}}]}}")
    wanted = ("train", "restval") if split == "train" else (split,)
    try:
        return [(entry.get("filepath", ""), entry["filename"], [text["raw"].strip() for text in entry["sentences"]])
                for entry in data["images"] if entry.get("split") in wanted]
    except (KeyError, TypeError, AttributeError):
        raise ClipModuleError(f"{path}: an entry lacks filename or sentences[].raw") from None


def _coco_captions(path: Path) -> list[tuple[str, list[str]]]:
    """(file_name, captions) from a COCO caption-format file, in the order of its images."""
    data = _read_json(path)
    try:
        names = {image["id"]: image["file_name"] for image in data["images"]}
        captions: dict[Any, list[str]] = {image_id: [] for image_id in names}
        for annotation in data["annotations"]:
            captions[annotation["image_id"]].append(annotation["caption"].strip())
    except (KeyError, TypeError, AttributeError):
        raise ClipModuleError(f"{path}: expected COCO captions {{images: [{{id, file_name}}], "
                              "annotations: [{image_id, caption}]}") from None
    return [(names[image_id], texts) for image_id, texts in captions.items()]


def _flickr_image_dir(folder: Path, first: str) -> Path:
    for name in FLICKR_IMAGE_DIRS:
        if (folder / name / first).is_file():
            return folder / name
    raise ClipModuleError(f"{folder}: image {first} is in none of the image folders "
                          f"{', '.join(name or '.' for name in FLICKR_IMAGE_DIRS)}")


def _flickr(name: str, folder: Path, split: str) -> BenchmarkDataset:
    lines = folder / f"{name}_{split}_karpathy.txt"
    if lines.is_file():
        pairs = list(_caption_lines(lines).items())
    else:
        pairs = [(filename, captions) for _, filename, captions in _karpathy(folder / f"dataset_{name}.json", split)]
    if not pairs:
        raise ClipModuleError(f"{name} ({split}) at {folder}: the annotations list no images for this split")
    images = _flickr_image_dir(folder, pairs[0][0])
    items = [(images / filename, captions) for filename, captions in pairs]
    return BenchmarkDataset(name, split, "retrieval", items, root=folder)


def _flickr_expected(name: str):
    return lambda split: [(f"{name}_{split}_karpathy.txt", f"dataset_{name}.json")]


@register("flickr8k", splits=SPLITS, expected=_flickr_expected("flickr8k"), metric="recall@1/5/10 both ways",
          layout="flickr8k_<split>_karpathy.txt or dataset_flickr8k.json + the images")
def open_flickr8k(folder: Path, split: str) -> BenchmarkDataset:
    return _flickr("flickr8k", folder, split)


@register("flickr30k", splits=SPLITS, expected=_flickr_expected("flickr30k"), metric="recall@1/5/10 both ways",
          layout="flickr30k_<split>_karpathy.txt or dataset_flickr30k.json + the images")
def open_flickr30k(folder: Path, split: str) -> BenchmarkDataset:
    return _flickr("flickr30k", folder, split)


@register("mscoco_captions", splits=SPLITS, aliases=("coco", "mscoco"), metric="recall@1/5/10 both ways",
          expected=lambda split: [(f"coco_{split}_karpathy.json", "dataset_coco.json")],
          layout="coco_<split>_karpathy.json + val2014/ (train2014/), or dataset_coco.json")
def open_mscoco(folder: Path, split: str) -> BenchmarkDataset:
    cb_file = folder / f"coco_{split}_karpathy.json"
    if cb_file.is_file():
        images = folder / ("train2014" if split == "train" else "val2014")
        items = [(images / name, captions) for name, captions in _coco_captions(cb_file)]
    else:
        items = [(folder / filepath / filename, captions)
                 for filepath, filename, captions in _karpathy(folder / "dataset_coco.json", split)]
    return BenchmarkDataset("mscoco_captions", split, "retrieval", items, root=folder)
