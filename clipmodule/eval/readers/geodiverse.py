"""Dollar Street and GeoDE in their authors' releases, with the per-image groups DataComp's fairness metrics take
(`BenchmarkDataset.metadata`; `eval.subgroups`). DataComp reads both from its own webdataset copies
(`wds/fairness/dollar_street`, `wds/fairness/geode`: `.npy` metadata); these readers give the same metric paths on
the files people download:

    dollar_street  dataset_dollarstreet/images_v2_imagenet_<split>.csv (MLCommons' release: imageRelPath, topics,
                   income, region.id, country.name, …) + the images under it (imageRelPath, e.g. assets/<id>/…jpg);
                   splits test and train (the ImageNet-matched ones), `full` (images_v2.csv: every image). The
                   class of an image is its first topic (class names: the split's topics, sorted); `income_ds` is
                   its income group: 0 up to $200 a month, 1 up to $684, 2 up to $1,997, 3 above (our choice:
                   DataComp's own income split is in its copy's metadata and its conversion script is not
                   public); `region` is region.id
    geode          geode/index.csv (file_path, object, region, ip_country) + images/<file_path>; one split, test
                   (DataComp evaluates every image). Class names: the objects, sorted, `_` read as a space;
                   `region` is the release's region

DataComp's copies were converted by a script that is not public: which Dollar Street images they hold and how they
name and order the classes may differ from the release's; given the same images in the same groups, both readers
give the same worst-group values (`tests/clipmodule/eval/test_geodiverse.py`). An empty topic, object or region is
one line naming its CSV line (never a class or group named "").
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import read_csv_rows, register
from clipmodule.eval.readers.items import BenchmarkDataset
from clipmodule.eval.readers.selection import check_listed_images

DOLLAR_STREET_CSV = "images_v2_imagenet_{split}.csv"
DOLLAR_STREET_ALL = "images_v2.csv"


def _dollar_street_csv(split: str) -> str:
    return DOLLAR_STREET_ALL if split == "full" else DOLLAR_STREET_CSV.format(split=split)
INCOME_EDGES = (200.0, 684.0, 1997.0)
"""Upper bounds (monthly income, USD) of the poorer three of Dollar Street's four income groups."""


def income_group(income: float) -> int:
    """0 (poorest) to 3: how many of `INCOME_EDGES` the income exceeds."""
    return sum(income > edge for edge in INCOME_EDGES)


def _first_topic(path: Path, line: int, text: str) -> str:
    for parse in (json.loads, ast.literal_eval):  # literal_eval reads literals only: no code runs
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(value, str):
            return _named(path, line, "topics", value).strip()
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return _named(path, line, "topics' first topic", value[0]).strip()
    if text.strip() and not text.strip().startswith("["):
        return text.strip()  # a bare topic name
    raise ClipModuleError(f"{path}:{line}: topics {text!r} is not a list of topic names")


def _named(path: Path, line: int, column: str, text: str | None) -> str:
    """A class or group name: not empty (an empty cell would be a class or group named "")."""
    if not (text or "").strip():
        raise ClipModuleError(f"{path}:{line}: {column} is empty")
    return str(text)


def _income(path: Path, line: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:  # a NaN would fall silently into the poorest group
        raise ClipModuleError(f"{path}:{line}: income {text!r} is not a number")
    return value


@register("dollar_street", splits=("test", "train", "full"), bases=("dataset_dollarstreet",),
          aliases=("dollarstreet",), expected=lambda split: [_dollar_street_csv(split)],
          metric="top-1, worst income group top-5 (DataComp's main)",
          layout="dataset_dollarstreet/images_v2_imagenet_test.csv (imageRelPath, topics, income, region.id) + "
                 "the images it names")
def open_dollar_street(folder: Path, split: str) -> BenchmarkDataset:
    path = folder / _dollar_street_csv(split)
    rows = read_csv_rows(path, ("imageRelPath", "topics", "income", "region.id"))
    topics = [_first_topic(path, line, row["topics"]) for line, row in rows]
    names = sorted(set(topics))
    index = {name: label for label, name in enumerate(names)}
    images = [folder / row["imageRelPath"] for _, row in rows]
    check_listed_images("dollar_street", path, images, folder)
    dataset = BenchmarkDataset("dollar_street", split, "zeroshot_classification",
                               [(image, index[topic]) for image, topic in zip(images, topics)], names, folder)
    dataset.metadata = {"income_ds": [income_group(_income(path, line, row["income"])) for line, row in rows],
                        "region": [_named(path, line, "region.id", row["region.id"]) for line, row in rows],
                        "country": [row.get("country.name") or "" for _, row in rows]}
    return dataset


@register("geode", splits=("test",), bases=("geode",), expected=lambda split: ["index.csv", "images"],
          metric="top-1, worst-region top-1 (DataComp's main)",
          layout="geode/index.csv (file_path, object, region, ip_country) + images/<file_path>")
def open_geode(folder: Path, split: str) -> BenchmarkDataset:
    path = folder / "index.csv"
    rows = read_csv_rows(path, ("file_path", "object", "region", "ip_country"))
    for line, row in rows:
        _named(path, line, "object", row["object"]), _named(path, line, "region", row["region"])
    objects = sorted({row["object"] for _, row in rows})
    index = {name: label for label, name in enumerate(objects)}
    images = [folder / "images" / row["file_path"] for _, row in rows]
    check_listed_images("geode", path, images, folder / "images")
    items = [(image, index[row["object"]]) for image, (_, row) in zip(images, rows)]
    dataset = BenchmarkDataset("geode", split, "zeroshot_classification", items,
                               [name.replace("_", " ") for name in objects], folder)
    dataset.metadata = {"region": [row["region"] for _, row in rows], "country": [row["ip_country"] for _, row in rows]}
    return dataset
