"""Small copies of the image-caption selection benchmarks, written in their authors' release layouts:
SugarCrepe (data/<subset>.json + COCO's val2017/), Winoground (the HF dataset's data/examples.jsonl + images/),
ARO (visual_genome_relation.json / visual_genome_attribution.json + images/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
RGB = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20),
       "purple": (150, 20, 160), "orange": (240, 140, 10)}


def _image(path: Path, colour: str, size: tuple[int, int] = (40, 32), seed: int = 0) -> None:
    noise = np.random.default_rng(seed).integers(0, 30, (size[1], size[0], 3))
    pixels = np.clip(np.array(RGB[colour])[None, None] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_sugar_crepe(root: Path, subsets=("add_att", "swap_obj"), per_subset: int = 6,
                      repo_layout: bool = True) -> Path:
    """root/data/<subset>.json as in RAIVNLab/sugar-crepe (root/<subset>.json when not `repo_layout`, as
    CLIP_benchmark downloads it) and root/val2017/<12-digit id>.jpg; ids are strings, not all contiguous."""
    for index, colour in enumerate(COLOURS):
        _image(root / "val2017" / f"{397133 + index:012d}.jpg", colour, seed=index)
    for number, subset in enumerate(subsets):
        entries = {}
        for item in range(per_subset):
            colour, other = COLOURS[item % 6], COLOURS[(item + number + 1) % 6]
            entries[str(item * 3 + number)] = {"filename": f"{397133 + item % 6:012d}.jpg",
                                               "caption": f"a photo of something {colour}",
                                               "negative_caption": f"a photo of something {other}"}
        target = root / "data" / f"{subset}.json" if repo_layout else root / f"{subset}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(entries))
    return root


def write_winoground(root: Path, examples: int = 5) -> Path:
    """root/data/examples.jsonl and root/data/images/ex_<i>_img_<j>.png (images.zip unpacked beside the jsonl)."""
    data = root / "data"
    lines = []
    for index in range(examples):
        first, second = COLOURS[index % 6], COLOURS[(index + 2) % 6]
        _image(data / "images" / f"ex_{index}_img_0.png", first, seed=10 + index)
        _image(data / "images" / f"ex_{index}_img_1.png", second, seed=20 + index)
        lines.append(json.dumps({"id": index, "caption_0": f"a {first} square next to a {second} one",
                                 "caption_1": f"a {second} square next to a {first} one", "tag": "Object",
                                 "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object",
                                 "image_0": f"ex_{index}_img_0", "image_1": f"ex_{index}_img_1"}))
    (data / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return root


def write_aro(root: Path, cases: int = 8) -> Path:
    """root/visual_genome_{relation,attribution}.json and root/images/<vg id>.jpg; boxes crop the images."""
    relations, attributions = [], []
    relation_names = ["on", "under", "next to", "holding"]
    for index in range(cases):
        colour = COLOURS[index % 6]
        name = f"{2315000 + index}.jpg"
        _image(root / "images" / name, colour, size=(64, 48), seed=30 + index)
        box = {"bbox_x": 4 + index, "bbox_y": 2, "bbox_w": 40, "bbox_h": 30}
        relations.append({"image_id": str(2315000 + index), **box, "image_path": name,
                          "true_caption": f"the {colour} cup is on the table",
                          "false_caption": f"the table is on the {colour} cup",
                          "relation_name": relation_names[index % 4]})
        attributions.append({"image_id": str(2315000 + index), **box, "image_path": name,
                             "true_caption": f"the {colour} cup and the white plate",
                             "false_caption": f"the white cup and the {colour} plate",
                             "attributes": [colour, "white"]})
    (root / "visual_genome_relation.json").write_text(json.dumps(relations))
    (root / "visual_genome_attribution.json").write_text(json.dumps(attributions))
    return root
