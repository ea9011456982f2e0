"""Small copies of the multilingual benchmarks in their release layouts: XTD10 (Adobe's repository folders XTD10/,
MIC/, STAIR/ and the images in xtd10/images/), nllb-clip's xtd200/ and flickr30k-200/ (index, <flores code>.txt,
images/), Crossmodal-3600 (xm3600/captions.jsonl + images/), and ImageNet's val/<wnid>/ for Babel-ImageNet."""

from __future__ import annotations

import json
from pathlib import Path

from tests.clipmodule.eval.readers.selection_copies import COLOURS, _image

WORDS = {"en": "a {} square", "de": "ein {} Quadrat", "jp": "{}の四角", "fr": "un carré {}",
         "deu_Latn": "ein {} Quadrat", "fil": "isang {} na parisukat", "zho_Hans": "{}的方块"}


def _captions(language: str, count: int) -> list[str]:
    return [WORDS[language].format(COLOURS[index % 6]) for index in range(count)]


def write_xtd10(root: Path, languages=("en", "de", "jp"), count: int = 6) -> Path:
    names = [f"COCO_val2014_{index:012d}.jpg" for index in range(count)]
    for index, name in enumerate(names):
        _image(root / "xtd10" / "images" / name, COLOURS[index % 6], seed=40 + index)
    (root / "XTD10").mkdir(parents=True, exist_ok=True)
    (root / "XTD10" / "test_image_names.txt").write_text("\n".join(names) + "\n")
    for language in languages:
        folder = {"de": "MIC", "fr": "MIC", "jp": "STAIR"}.get(language, "XTD10")
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"test_1kcaptions_{language}.txt").write_text("\n".join(_captions(language, count)) + "\n")
    return root


def write_nllb(root: Path, name: str, languages=("deu_Latn", "zho_Hans"), count: int = 5) -> Path:
    """nllb-clip's data/<name>/ files (index + one caption file per FLORES code) and <name>/images/."""
    index = "filenames.txt" if name == "flickr30k-200" else "test_image_names.txt"
    names = [f"{1000092795 + index_:d}.jpg" for index_ in range(count)]
    for number, image in enumerate(names):
        _image(root / name / "images" / image, COLOURS[number % 6], seed=50 + number)
    (root / name / index).write_text("\n".join(names) + "\n")
    for language in languages:
        (root / name / f"{language}.txt").write_text("\n".join(_captions(language, count)) + "\n")
    return root


def write_xm3600(root: Path, languages=("en", "de", "fil"), count: int = 5) -> Path:
    lines = []
    for number in range(count):
        key = f"{number:016x}"
        _image(root / "xm3600" / "images" / f"{key}.jpg", COLOURS[number % 6], seed=60 + number)
        entry = {"image/key": key}
        for language in languages:
            caption = _captions(language, count)[number]
            entry[language] = {"caption": [caption, caption + "!"], "caption/tokenized": [caption.lower()]}
        lines.append(json.dumps(entry, ensure_ascii=False))
    (root / "xm3600" / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_imagenet_val(root: Path, wnids: list[str], per_class: int = 2) -> Path:
    for number, wnid in enumerate(wnids):
        for image in range(per_class):
            _image(root / "val" / wnid / f"ILSVRC2012_val_{number * per_class + image:08d}.JPEG",
                   COLOURS[number % 6], seed=70 + number * per_class + image)
    return root
