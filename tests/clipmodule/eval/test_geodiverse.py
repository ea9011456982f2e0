"""Dollar Street and GeoDE read from their authors' releases (MLCommons' dataset_dollarstreet CSVs, GeoDE's index.csv)
give DataComp's worst-group metrics with the same numbers as DataComp's webdataset copies of the same images."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import SuiteConfig, TaskSpec
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.readers.geodiverse import income_group
from clipmodule.eval.suite import run_suite

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

COLOURS = ("red", "green", "blue", "yellow", "white", "black", "purple", "orange", "grey", "pink")
TOPICS = ("toilet paper", "stove", "bed", "toothbrush", "sofa", "cup", "shoes", "light source")  # 8: top-5 is no given
INCOMES = (50, 150, 300, 700, 1000, 2500, 5000, 200, 684, 1997)  # groups 0 0 1 2 2 3 3 0 1 2
REGIONS = ("af", "as", "am", "eu", "af", "as", "am", "eu", "af", "af")


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, format="png")
    return buffer.getvalue()


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def dollar_street_release(root: Path) -> Path:
    """dataset_dollarstreet/images_v2_imagenet_test.csv (pandas' index column first) + assets/<id>/<image>.jpg."""
    base = root / "dataset_dollarstreet"
    rows = []
    for number, colour in enumerate(COLOURS):
        relative = f"assets/5d4be{number:03d}/{number:024x}.jpg"
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / relative).write_bytes(_png(colour))  # PNG bytes: the wds copy below holds the same bytes
        topics = [TOPICS[number % 8]] + (["kitchen"] if number % 3 == 0 else [])
        rows.append([number, f"5d4be{number:03d}", "Kenya", "ke", REGIONS[number], "Africa", str(topics),
                     INCOMES[number], relative, "['n04254777']"])
    header = ["", "id", "country.name", "country.id", "region.id", "place", "topics", "income", "imageRelPath",
              "imagenet_sysnet_id"]
    _csv(base / "images_v2_imagenet_test.csv", header, rows)
    _csv(base / "images_v2.csv", header, rows[:6])  # the whole release's list (here: a part of the same images)
    return base


def geode_release(root: Path) -> Path:
    base = root / "geode"
    rows = []
    for number, colour in enumerate(COLOURS):
        obj = ("hand_soap", "bag", "stove")[number % 3]
        relative = f"{obj}/{REGIONS[number]}_{number}.jpg"
        (base / "images" / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / "images" / relative).write_bytes(_png(colour))
        rows.append([relative, obj, REGIONS[number], "Kenya"])
    _csv(base / "index.csv", ["file_path", "object", "region", "ip_country"], rows)
    return base


def datacomp_copy(folder: Path, classnames: list[str], labels: list[int], npy: list[list[int]]) -> Path:
    """DataComp's webdataset copy of the same images: `.png`, `.cls`, `.npy` per sample."""
    import webdataset

    (folder / "test").mkdir(parents=True)
    with webdataset.ShardWriter(str(folder / "test" / "%d.tar"), maxcount=4, verbose=0) as sink:
        for index, (colour, label, meta) in enumerate(zip(COLOURS, labels, npy)):
            sink.write({"__key__": f"s{index:07d}", "png": _png(colour), "cls": label,
                        "npy": np.array(meta, dtype=np.int64)})
        shards = sink.shard
    (folder / "test" / "nshards.txt").write_text(f"{shards}\n")
    (folder / "classnames.txt").write_text("".join(f"{name}\n" for name in classnames))
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of {c}.\n")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from clipmodule.api import load
    from clipmodule.checkpoints.io import save_checkpoint
    from clipmodule.models import create_model

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), folder / "tiny.safetensors")
    return load(folder / "tiny.safetensors")


def _rows(model, tmp_path: Path, release: TaskSpec, copy: TaskSpec) -> tuple[dict, dict]:
    (tmp_path / "templates.txt").write_text("a photo of {c}.\n")
    release.templates = str(tmp_path / "templates.txt")
    run = run_suite(*model, SuiteConfig(tasks=[release, copy]), say=lambda line: None)
    return run.rows[0], run.rows[1]


def test_the_same_dollar_street_groups_give_the_same_metrics_through_the_release_reader_and_a_wds_copy(model,
                                                                                                    tmp_path):
    base = dollar_street_release(tmp_path / "release")
    dataset = open_dataset("dollar_street", base)
    assert dataset.classnames == sorted(TOPICS) and len(dataset) == 10
    assert dataset.metadata["income_ds"] == [income_group(income) for income in INCOMES] == [0, 0, 1, 2, 2, 3, 3, 0, 1,
                                                                                             2]
    assert dataset.metadata["region"] == list(REGIONS)
    assert len(open_dataset("dollar_street", base, "full")) == 6  # images_v2.csv: every image of the release
    labels = [target for _, target in dataset.items]
    npy = [[group, income, index % 3] for index, (group, income) in enumerate(zip(dataset.metadata["income_ds"],
                                                                                   INCOMES))]
    copy = datacomp_copy(tmp_path / "wds_fairness-dollar_street_test", dataset.classnames, labels, npy)
    release, wds = _rows(model, tmp_path, TaskSpec("zeroshot", dataset="dollar_street", root=str(base)),
                         TaskSpec("zeroshot", dataset="wds/fairness/dollar_street", root=str(copy),
                                  templates="clip_benchmark"))
    assert release["metrics"]["worst_income_top5"] == wds["metrics"]["worst_income_top5"]
    for name in ("top1", "top5", "mean_per_class_recall"):
        assert release["metrics"][name] == pytest.approx(wds["metrics"][name], abs=1e-6)
    assert release["detail"]["groups"] == wds["detail"]["groups"]  # group by group, the same counts and top-5
    counts = {group: entry["count"] for group, entry in release["detail"]["groups"]["income_ds"].items()}
    assert counts == {"0": 3, "1": 2, "2": 3, "3": 2}


def test_the_same_geode_groups_give_the_same_metrics_through_the_release_reader_and_a_wds_copy(model, tmp_path):
    base = geode_release(tmp_path / "release")
    dataset = open_dataset("geode", base)
    assert dataset.classnames == ["bag", "hand soap", "stove"] and dataset.split == "test"
    regions = sorted(set(REGIONS))
    npy = [[regions.index(region), 7] for region in dataset.metadata["region"]]
    labels = [target for _, target in dataset.items]
    copy = datacomp_copy(tmp_path / "wds_fairness-geode_test", dataset.classnames, labels, npy)
    release, wds = _rows(model, tmp_path, TaskSpec("zeroshot", dataset="geode", root=str(base)),
                         TaskSpec("zeroshot", dataset="wds/fairness/geode", root=str(copy),
                                  templates="clip_benchmark"))
    assert release["metrics"]["worst_region_top1"] == wds["metrics"]["worst_region_top1"]
    assert release["metrics"]["top1"] == pytest.approx(wds["metrics"]["top1"], abs=1e-6)
    by_name = release["detail"]["groups"]["region"]
    by_number = {regions[int(number)]: entry for number, entry in wds["detail"]["groups"]["region"].items()}
    assert by_name == by_number


def test_bad_release_copies_are_one_line(tmp_path):
    base = dollar_street_release(tmp_path / "ds")
    next((base / "assets").glob("*/*.jpg")).unlink()
    with pytest.raises(ClipModuleError, match=r"dollar_street: 1 of 10 images named in images_v2_imagenet_test.csv "
                                              r"are missing from"):
        open_dataset("dollar_street", base)
    base = dollar_street_release(tmp_path / "ds2")
    text = (base / "images_v2_imagenet_test.csv").read_text().replace(",2500,", ",lots,")
    (base / "images_v2_imagenet_test.csv").write_text(text)
    with pytest.raises(ClipModuleError, match=r"images_v2_imagenet_test.csv:7: income 'lots' is not a number"):
        open_dataset("dollar_street", base)
    (base / "images_v2_imagenet_test.csv").write_text(text.replace(",lots,", ",nan,"))
    with pytest.raises(ClipModuleError, match=r"images_v2_imagenet_test.csv:7: income 'nan' is not a number"):
        open_dataset("dollar_street", base)
    geode = geode_release(tmp_path / "g")
    (geode / "index.csv").write_text("file_path,object\nx.jpg,bag\n")
    with pytest.raises(ClipModuleError, match="index.csv: expected ',\'-separated columns file_path, object, region"):
        open_dataset("geode", geode)
    with pytest.raises(ClipModuleError, match="images_v2_imagenet_train.csv"):
        open_dataset("dollar_street", base, "train")


def _edit_cell(path: Path, row: int, column: str, value: str) -> None:
    """Sets one cell of a release CSV (row 0: the first after the header, CSV line 2)."""
    with path.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    lines[row + 1][lines[0].index(column)] = value
    _csv(path, lines[0], lines[1:])


@pytest.mark.parametrize(("column", "value", "message"), [
    ("topics", "['', 'kitchen']", "topics' first topic is empty"), ("topics", "[' ']", "topics' first topic is empty"),
    ("topics", '""', "topics is empty"), ("region.id", "\t", "region.id is empty")])  # an empty cell: "row lacks"
def test_an_empty_dollar_street_class_or_group_is_one_line(tmp_path, column, value, message):
    base = dollar_street_release(tmp_path)
    _edit_cell(base / "images_v2_imagenet_test.csv", 3, column, value)
    with pytest.raises(ClipModuleError, match=rf"images_v2_imagenet_test.csv:5: {message}$"):
        open_dataset("dollar_street", base)


@pytest.mark.parametrize("column", ["object", "region"])
def test_an_empty_geode_class_or_region_is_one_line(tmp_path, column):
    base = geode_release(tmp_path)
    _edit_cell(base / "index.csv", 1, column, "\t ")
    with pytest.raises(ClipModuleError, match=rf"index.csv:3: {column} is empty$"):
        open_dataset("geode", base)
