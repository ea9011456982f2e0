"""Generic local sources of evaluation data: an image folder and labelled or captioned CSV/TSV tables.

    path/to/folder                ImageFolder layout: one sub-folder per class, sorted order = class index
    path/to/labels.csv (.tsv)     header with a path column (path|filepath|image) and label (label|class)
                                  or caption (caption|text|title); several rows per image = several captions

Relative paths in a CSV are relative to the CSV's folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.images import Transform
from clipmodule.eval.readers.items import CaptionedImages, LabelledImages

_PATH_COLUMNS = ("path", "filepath", "image", "filename")
_LABEL_COLUMNS = ("label", "class")
_CAPTION_COLUMNS = ("caption", "text", "title")


def image_folder(root: Path, classnames: list[str] | None, transform: Transform) -> LabelledImages:
    try:
        folders, folder_to_index = find_classes(str(root))
        samples = make_dataset(str(root), folder_to_index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as error:
        raise ClipModuleError(f"{root}: empty dataset folder ({str(error).splitlines()[0]})") from None
    names = [folder.replace("_", " ") for folder in folders]
    if classnames is None:
        classnames = names
    elif len(classnames) != len(folders):
        raise ClipModuleError(f"{root}: {len(folders)} class folders but {len(classnames)} class names")
    elif set(names) == set(classnames) and names != list(classnames):
        # Folders named after the classes: label by name, so a class-name file in any order stays right
        # (torchvision's sorted-folder indices would silently scramble the labels).
        index = {name: classnames.index(name) for name in names}
        samples = [(path, index[names[label]]) for path, label in samples]
    return LabelledImages([(Path(path), label) for path, label in samples], classnames, transform, str(root))


def _read_csv(path: Path, wanted: tuple[str, ...], what: str) -> list[tuple[Path, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ClipModuleError(f"{path}: unreadable CSV ({error})") from None
    if not rows:
        raise ClipModuleError(f"{path}: dataset is empty")
    header = [column.strip().lower() for column in rows[0]]
    path_column = next((header.index(name) for name in _PATH_COLUMNS if name in header), None)
    value_column = next((header.index(name) for name in wanted if name in header), None)
    if path_column is None or value_column is None:
        raise ClipModuleError(
            f"{path}: header {rows[0]} needs a path column ({'|'.join(_PATH_COLUMNS)}) "
            f"and a {what} column ({'|'.join(wanted)})"
        )
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) <= max(path_column, value_column):
            raise ClipModuleError(f"{path}:{line}: expected at least {max(path_column, value_column) + 1} columns")
        out.append((path.parent / row[path_column].strip(), row[value_column].strip()))
    return out


def _label_index(label: str, classnames: list[str], where: str) -> int:
    if label in classnames:
        return classnames.index(label)
    if label.isdigit() and int(label) < len(classnames):
        return int(label)
    raise ClipModuleError(f"{where}: label {label!r} is neither a class name nor an index below {len(classnames)}")


def labelled_csv(path: Path, classnames: list[str] | None, transform: Transform) -> LabelledImages:
    rows = _read_csv(path, _LABEL_COLUMNS, "label")
    if classnames is None:
        labels = sorted({label for _, label in rows})
        if labels and all(label.isdigit() for label in labels):
            raise ClipModuleError(f"{path}: labels are indices; give the class names (--classnames)")
        classnames = labels
    items = [(image, _label_index(label, classnames, f"{path}:{line}")) for line, (image, label) in enumerate(rows, 2)]
    return LabelledImages(items, classnames, transform, str(path))


def captioned_csv(path: Path, transform: Transform) -> CaptionedImages:
    captions: dict[Path, list[str]] = {}
    for image, caption in _read_csv(path, _CAPTION_COLUMNS, "caption"):
        captions.setdefault(image, []).append(caption)
    return CaptionedImages(list(captions.items()), transform, str(path))
