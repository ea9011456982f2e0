"""Small copies of DataComp's WILDS and association sets in their release layouts (tiny PNG images), for tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

COLOURS = ("red", "green", "blue", "yellow", "white", "black", "purple", "orange", "grey", "pink", "cyan", "brown")


def _image(path: Path, colour: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), colour).save(path)


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def iwildcam(root: Path) -> Path:
    """iwildcam_v2.0: 3 categories, 8 test and 2 train images over 3 locations."""
    base = root / "iwildcam_v2.0"
    _csv(base / "categories.csv", ["y", "category_id", "name"], [[0, 0, "empty"], [1, 3, "fox"], [2, 7, "deer"]])
    rows = []
    for number in range(10):
        split, y = ("train" if number < 2 else "test"), number % 3
        name = f"{number:04x}.jpg"
        rows.append([split, number % 3, number, f"2013-06-0{number % 9 + 1} 12:00:00.000", y, name])
        _image(base / "train" / name, COLOURS[y])
    _csv(base / "metadata.csv", ["split", "location_remapped", "sequence_remapped", "datetime", "y", "filename"], rows)
    return base


def camelyon17(root: Path) -> Path:
    """camelyon17_v1.0: patches of 5 hospitals; hospital 2 (test) holds slides 20 and 21."""
    base = root / "camelyon17_v1.0"
    rows = []
    for number in range(10):
        center, slide, tumor = number % 5, 20 + number % 2 if number % 5 == 2 else number, number % 2
        patient, node, x, y = f"{number:03d}", 1, 32 * number, 64
        rows.append([number, patient, node, x, y, tumor, slide, center, number % 2])
        patch = f"patient_{patient}_node_{node}"
        _image(base / "patches" / patch / f"patch_{patch}_x_{x}_y_{y}.png", COLOURS[tumor])
    _csv(base / "metadata.csv", ["", "patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split"],
         rows)
    return base


def fmow(root: Path) -> Path:
    """fmow_v1.1: 12 rows; the 2016+ test rows are in Asia (2), Europe (3) and an unmapped country (Other, 1)."""
    base = root / "fmow_v1.1"
    _csv(base / "country_code_mapping.csv", ["alpha-3", "region"], [["JPN", "Asia"], ["FRA", "Europe"]])
    plan = [("train", "airport", "JPN", 2010), ("seq", "zoo", "FRA", 2016), ("test", "airport", "JPN", 2016),
            ("test", "barn", "JPN", 2017), ("test", "airport", "FRA", 2016), ("test", "barn", "FRA", 2017),
            ("test", "zoo", "FRA", 2016), ("test", "zoo", "XXX", 2017), ("test", "barn", "JPN", 2011),
            ("val", "zoo", "JPN", 2014), ("val", "barn", "FRA", 2016), ("train", "zoo", "FRA", 2012)]
    rows = []
    for number, (split, category, country, year) in enumerate(plan):
        rows.append([split, f"{category}_{number}.jpg", category, country, f"{year}-03-01T10:00:00Z"])
        _image(base / "images" / f"rgb_img_{number}.png", COLOURS[number])
    _csv(base / "rgb_metadata.csv", ["split", "img_filename", "category", "country_code", "timestamp"], rows)
    return base


WINOGAVIL_GAMES = [  # (cue, candidates, associations): game sizes 5, 6, 10 and 12
    ("apple", COLOURS[:5], ["red", "green"]),
    ("ocean", COLOURS[:6], ["blue"]),
    ("night", COLOURS[:10], ["black", "purple", "grey"]),
    ("sun", COLOURS[:12], ["yellow", "orange"]),
]


def winogavil(root: Path, games=WINOGAVIL_GAMES) -> Path:
    """winogavil: the games above (lists as JSON, one as a Python literal) and one image per colour."""
    base = root / "winogavil"
    rows = []
    for number, (cue, candidates, associations) in enumerate(games):
        dump = repr if number == 1 else json.dumps
        rows.append([cue, dump(list(candidates)), dump(list(associations)), len(associations), number])
        for name in candidates:
            _image(base / "winogavil_images" / f"{name}.jpg", name)
    _csv(base / "winogavil_dataset.csv", ["cue", "candidates", "associations", "num_associations", "ID"], rows)
    return base
