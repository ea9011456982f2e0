"""Datasets distributed as folders of images, one sub-folder per class (sorted names = class order).

    eurosat      eurosat/2750/<class>/*.jpg                               no official split: `all`
    resisc45     NWPU-RESISC45/<class>/*.jpg                              no official split: `all`
    caltech101   caltech101/101_ObjectCategories/<class>/*.jpg            `all`; BACKGROUND_Google kept, as
                                                                          CLIP_benchmark does (102 classes)
    country211   country211/{train,valid,test}/<ISO code>/*.jpg
    renderedsst2 rendered-sst2/{train,valid,test}/{negative,positive}/*.png
    gtsrb        gtsrb/GTSRB/Training/<000NN>/*.ppm; test: GTSRB/Final_Test/Images/*.ppm + GT-final_test.csv
    sun397       SUN397/ClassName.txt + SUN397/<letter>/<class>/sun_*.jpg; `all`, or train/test from the
                 official Partitions (Training_01.txt / Testing_01.txt) when they are in the copy
"""

from __future__ import annotations

from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import (
    check_class_list,
    class_folders,
    folder_items,
    image_files,
    read_csv_rows,
    read_text_lines,
    register,
)
from clipmodule.eval.readers.items import BenchmarkDataset


def _class_folder_dataset(name: str, folder: Path, split: str) -> BenchmarkDataset:
    classes = class_folders(folder)
    if not classes:
        raise ClipModuleError(f"{name}: {folder} holds no class folders")
    names = [cls.replace("_", " ") for cls in classes]
    return BenchmarkDataset(name, split, "zeroshot_classification", folder_items(folder, classes), names, folder)


@register("eurosat", splits=("all",), bases=("eurosat",), expected=lambda split: ["2750"],
          layout="eurosat/2750/<class>/*.jpg (no official split: `all`)")
def open_eurosat(folder: Path, split: str) -> BenchmarkDataset:
    return _class_folder_dataset("eurosat", folder / "2750", split)


@register("resisc45", splits=("all",), bases=("NWPU-RESISC45", "resisc45"), expected=lambda split: ["airplane"],
          layout="NWPU-RESISC45/<class>/*.jpg (no official split: `all`)")
def open_resisc45(folder: Path, split: str) -> BenchmarkDataset:
    return _class_folder_dataset("resisc45", folder, split)


@register("caltech101", splits=("all",), bases=("caltech101",), expected=lambda split: ["101_ObjectCategories"],
          layout="caltech101/101_ObjectCategories/<class>/*.jpg (`all`; the background class kept)")
def open_caltech101(folder: Path, split: str) -> BenchmarkDataset:
    return _class_folder_dataset("caltech101", folder / "101_ObjectCategories", split)


@register("country211", splits=("train", "valid", "test"), bases=("country211",), expected=lambda split: [split],
          layout="country211/{train,valid,test}/<ISO code>/*.jpg")
def open_country211(folder: Path, split: str) -> BenchmarkDataset:
    classes = class_folders(folder / split)
    return BenchmarkDataset("country211", split, "zeroshot_classification", folder_items(folder / split, classes),
                            classes, folder)


SST2_SPLITS = {"train": "train", "val": "valid", "test": "test"}
SST2_CLASSES = ["negative", "positive"]


@register("renderedsst2", splits=("train", "val", "test"), bases=("rendered-sst2",), aliases=("rendered_sst2",),
          expected=lambda split: [f"{SST2_SPLITS[split]}/{cls}" for cls in SST2_CLASSES],
          layout="rendered-sst2/{train,valid,test}/{negative,positive}/*.png")
def open_renderedsst2(folder: Path, split: str) -> BenchmarkDataset:
    items = folder_items(folder / SST2_SPLITS[split], SST2_CLASSES)
    return BenchmarkDataset("renderedsst2", split, "zeroshot_classification", items, list(SST2_CLASSES), folder)


GTSRB_CLASSES = 43


def _gtsrb_expected(split: str) -> list[str]:
    return ["GTSRB/Training"] if split == "train" else ["GTSRB/Final_Test/Images", "GT-final_test.csv"]


@register("gtsrb", splits=("train", "test"), bases=("gtsrb",), expected=_gtsrb_expected,
          layout="gtsrb/GTSRB/Training/<000NN>/*.ppm; gtsrb/GTSRB/Final_Test/Images/*.ppm + GT-final_test.csv")
def open_gtsrb(folder: Path, split: str) -> BenchmarkDataset:
    if split == "train":
        training = folder / "GTSRB" / "Training"
        classes = class_folders(training)
        bad = [name for name in classes if not name.isdigit() or int(name) >= GTSRB_CLASSES]
        if bad:
            raise ClipModuleError(f"{training}: class folders are numbered 00000..00042, found {bad[0]!r}")
        items = [(path, int(name)) for name in classes for path in image_files(training / name, (".ppm",))]
    else:
        images, table = folder / "GTSRB" / "Final_Test" / "Images", folder / "GT-final_test.csv"
        rows = read_csv_rows(table, ("Filename", "ClassId"), delimiter=";")
        bad = next((line for line, row in rows if not row["ClassId"].isdigit() or int(row["ClassId"]) >= GTSRB_CLASSES),
                   None)
        if bad is not None:
            raise ClipModuleError(f"{table}:{bad}: ClassId is not a class 0..42 (a truncated or damaged file)")
        items = [(images / row["Filename"], int(row["ClassId"])) for _, row in rows]
    names = [str(index) for index in range(GTSRB_CLASSES)]
    return BenchmarkDataset("gtsrb", split, "zeroshot_classification", items, names, folder)


def _sun_expected(split: str) -> list[str]:
    partition = {"train": ["Partitions/Training_01.txt"], "test": ["Partitions/Testing_01.txt"]}
    return ["ClassName.txt", *partition.get(split, [])]


def _sun_classes(folder: Path) -> list[str]:
    """ClassName.txt's classes ("/a/abbey" -> "abbey"), each a folder of the copy, none twice: a duplicated or
    an extra line would shift the labels of every class after it."""
    listing = folder / "ClassName.txt"
    lines = read_text_lines(listing)
    bad = next((line for line in lines if len(line) < 4 or line[0] != "/" or line[2] != "/" or line[1] != line[3]),
               None)
    if bad is not None:
        raise ClipModuleError(f"{listing}: line {bad[:60]!r} is not '/<letter>/<class>'")
    if not lines:
        raise ClipModuleError(f"{listing}: lists no classes")
    check_class_list(listing, lines)
    absent = [line for line in lines if not (folder / line[1:]).is_dir()]
    if absent:
        raise ClipModuleError(f"{listing}: {len(absent)} of its {len(lines)} classes have no folder in the copy, "
                              f"the first: {absent[0]} (a stray line, or a copy missing classes)")
    return [line[3:] for line in lines]


@register("sun397", splits=("all", "train", "test"), bases=("SUN397",), expected=_sun_expected,
          layout="SUN397/ClassName.txt + <letter>/<class>/sun_*.jpg (`all`; train/test from Partitions/*_01.txt)")
def open_sun397(folder: Path, split: str) -> BenchmarkDataset:
    classes = _sun_classes(folder)
    index = {cls: label for label, cls in enumerate(classes)}
    names = [cls.replace("_", " ").replace("/", " ") for cls in classes]
    if split == "all":
        relative = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("sun_*.jpg"))
    else:
        listing = folder / "Partitions" / ("Training_01.txt" if split == "train" else "Testing_01.txt")
        relative = [line.lstrip("/") for line in read_text_lines(listing)]
    items = []
    for path in relative:
        cls = path.rsplit("/", 1)[0][2:]  # "a/abbey/sun_x.jpg" -> "abbey"
        if cls not in index:
            raise ClipModuleError(f"{folder}: {path} is in no class of ClassName.txt")
        items.append((folder / path, index[cls]))
    return BenchmarkDataset("sun397", split, "zeroshot_classification", items, names, folder)
