"""Image-caption selection benchmarks (compositionality): each item is one or more images and a few captions, the
i-th caption belonging to the i-th image; the others are hard negatives. Read from the files as their authors
release them:

    sugar_crepe/<subset>   SugarCrepe (Hsieh et al. 2023): `<subset>.json` (or `data/<subset>.json`, as in the
                           RAIVNLab/sugar-crepe repository) {id: {filename, caption, negative_caption}} and COCO's
                           val2017/ images; subsets add_att, add_obj, replace_att, replace_obj, replace_rel,
                           swap_att, swap_obj. One image, [caption, negative caption].
    winoground             Winoground (Thrush et al. 2022), the facebook/winoground dataset's files: examples.jsonl
                           ({id, caption_0, caption_1, image_0, image_1, ...}) and images/ (images.zip unpacked:
                           <image_0>.png), in the root or its data/ folder. Two images, two captions.
    vg_relation            ARO's VG-Relation and VG-Attribution (Yuksekgonul et al. 2023):
    vg_attribution         visual_genome_relation.json / visual_genome_attribution.json ([{image_path, bbox_x,
                           bbox_y, bbox_w, bbox_h, true_caption, false_caption, relation_name | attributes}]) and
                           images/ (vgr_vga_images.zip unpacked); the image is cropped to the box, as ARO does.
                           One image, [true caption, false caption]; `groups` holds each item's relation (or
                           attribute pair) for ARO's macro accuracy.

Every image an annotation names is checked before any is read: a copy with missing images is one line naming
the first and how many.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import register
from clipmodule.eval.readers.images import CropImage, read_image, reason
from clipmodule.eval.readers.items import BenchmarkDataset

TASK = "image_caption_selection"
SUGAR_CREPE_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
ARO_FILES = {"vg_relation": "visual_genome_relation.json", "vg_attribution": "visual_genome_attribution.json"}


class SelectionDataset(BenchmarkDataset):
    """Items (tuple of image sources, captions): an item reads as (images [I, C, H, W] through the transform,
    or a list of PIL images without one, and its captions). `groups` names each item's group where the
    benchmark reports a macro accuracy (ARO), else None."""

    def __init__(self, name: str, items: list[tuple[tuple, list[str]]], root: Path,
                 groups: list[str] | None = None):
        super().__init__(name, "test", TASK, items, root=root)
        self.groups = groups

    def __getitem__(self, index: int) -> tuple[Any, list[str]]:
        sources, captions = self.items[index]
        images = [read_image(source) for source in sources]
        if self.transform is None:
            return images, captions
        return torch.stack([self.transform(image) for image in images]), list(captions)


def _read_json(path: Path, jsonl: bool = False) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()] if jsonl else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipModuleError(f"{path}: unreadable JSON ({reason(error)})") from None


def _fields(path: Path, entry: Any, where: str, keys: Sequence[str]) -> list[Any]:
    if not isinstance(entry, dict) or any(key not in entry for key in keys):
        have = ", ".join(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ClipModuleError(f"{path}: entry {where} lacks {', '.join(k for k in keys if k not in (entry or {}))} "
                              f"(has {have}); expected {', '.join(keys)}")
    return [entry[key] for key in keys]


def check_listed_images(name: str, annotations: Path, paths: list[Path], folder: Path) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise ClipModuleError(f"{name}: {len(missing)} of {len(paths)} images named in {annotations.name} are "
                              f"missing from {folder} (first: {missing[0].name})")


def _first_present(folder: Path, names: Sequence[str]) -> Path:
    return next((folder / name for name in names if (folder / name).exists()), folder / names[0])


def _sugar_crepe(subset: str) -> Callable[[Path, str], SelectionDataset]:
    name = f"sugar_crepe/{subset}"

    def open_subset(folder: Path, split: str) -> SelectionDataset:
        annotations = _first_present(folder, (f"{subset}.json", f"data/{subset}.json"))
        data = _read_json(annotations)
        if not isinstance(data, dict):
            raise ClipModuleError(f"{annotations}: expected SugarCrepe's {{id: {{filename, caption, "
                                  "negative_caption}}}")
        images = folder / "val2017"
        rows = [_fields(annotations, entry, key, ("filename", "caption", "negative_caption"))
                for key, entry in data.items()]
        paths = [images / filename for filename, _, _ in rows]
        check_listed_images(name, annotations, paths, images)
        return SelectionDataset(name, [((path,), [caption, negative]) for path, (_, caption, negative)
                                       in zip(paths, rows)], folder)

    return open_subset


for _subset in SUGAR_CREPE_SUBSETS:
    register(f"sugar_crepe/{_subset}", splits=("test",), bases=("sugar_crepe", "sugar-crepe"),
             expected=lambda split, subset=_subset: [(f"{subset}.json", f"data/{subset}.json"), "val2017"],
             layout=f"{_subset}.json (or data/{_subset}.json) + COCO val2017/", metric="text/image/group accuracy",
             )(_sugar_crepe(_subset))


def _image_file(folder: Path, stem: str) -> Path:
    candidates = [folder / f"{stem}{suffix}" for suffix in (".png", ".jpg", "")]
    return next((path for path in candidates if path.is_file()), candidates[0])


@register("winoground", splits=("test",), bases=("winoground",), metric="text/image/group score",
          expected=lambda split: [("examples.jsonl", "data/examples.jsonl"), ("images", "data/images")],
          layout="examples.jsonl + images/ (the HF dataset's data/ folder, images.zip unpacked)")
def open_winoground(folder: Path, split: str) -> SelectionDataset:
    annotations = _first_present(folder, ("examples.jsonl", "data/examples.jsonl"))
    images = _first_present(annotations.parent, ("images",))
    if not images.is_dir():
        images = _first_present(folder, ("images", "data/images"))
    rows = [_fields(annotations, entry, f"on line {number}", ("caption_0", "caption_1", "image_0", "image_1"))
            for number, entry in enumerate(_read_json(annotations, jsonl=True), start=1)]
    pairs = [(_image_file(images, str(image_0)), _image_file(images, str(image_1))) for _, _, image_0, image_1 in rows]
    check_listed_images("winoground", annotations, [path for pair in pairs for path in pair], images)
    return SelectionDataset("winoground", [(pair, [caption_0, caption_1]) for pair, (caption_0, caption_1, _, _)
                                           in zip(pairs, rows)], folder)


def _aro(name: str) -> Callable[[Path, str], SelectionDataset]:
    group_key = "relation_name" if name == "vg_relation" else "attributes"

    def open_aro(folder: Path, split: str) -> SelectionDataset:
        annotations = folder / ARO_FILES[name]
        data = _read_json(annotations)
        if not isinstance(data, list):
            raise ClipModuleError(f"{annotations}: expected ARO's list of test cases")
        keys = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption", group_key)
        rows = [_fields(annotations, entry, f"#{index}", keys) for index, entry in enumerate(data)]
        images = folder / "images"
        check_listed_images(name, annotations, [images / row[0] for row in rows], images)
        items = [((CropImage(images / path, (x, y, x + w, y + h)),), [true, false])
                 for path, x, y, w, h, true, false, _ in rows]
        groups = [group if isinstance(group, str) else "_".join(str(part) for part in group[:2])
                  for *_, group in rows]
        return SelectionDataset(name, items, folder, groups=groups)

    return open_aro


for _name, _file in ARO_FILES.items():
    register(_name, splits=("test",), bases=("aro", "ARO"), expected=lambda split, file=_file: [file, "images"],
             layout=f"{_file} + images/ (ARO's vgr_vga_images.zip unpacked)",
             metric="accuracy (micro) and ARO's macro accuracy")(_aro(_name))
