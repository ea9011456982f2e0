"""Pascal Context's original release: VOC2010's JPEGs and `trainval.tar.gz`, one `trainval/<id>.mat` per image whose
`LabelMap` holds ids into the release's `labels.txt` (459 classes, 1-based; 0: unlabelled).

    VOCdevkit/VOC2010/JPEGImages/<id>.jpg
    VOCdevkit/VOC2010/trainval/<id>.mat                 (or trainval/ beside VOCdevkit, in the folder given)
    labels.txt, 59_labels.txt                           (optional, beside trainval/: "<id>: <name>" per line)
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/<split>.txt, else VOC2010's ImageSets/Main/<split>.txt
    (Context's train/val are VOC2010's: 4998 and 5105 of the 10103 trainval images)

The 59 classes are the ids `59_labels.txt` lists (the site's file; without it, the same ids built in), in ascending
id order, the order of mmsegmentation's 59 classes: the 59-class set reads them as 0..58 and ignores every other
pixel (255); the 60-class set reads them as 1..59 and every other pixel, unlabelled or of the other 400 classes, as
background 0. These are NOT the benchmark's labels: mmsegmentation's SegmentationClassContext PNGs, on which
published numbers are scored, come from the Detail API's `trainval_merged.json`, whose masks differ from the .mat
files' (mmsegmentation's PR #474, a .mat converter, was closed for that), so the sets read here are named
`pascal_context_59_mat` / `pascal_context_60_mat` and their records say so. The .mat files are read with
scipy.io.loadmat (MATLAB's data format; no code runs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from clipmodule.errors import ClipModuleError, one_line
from clipmodule.eval.readers.base import MissingData
from clipmodule.eval.readers.segmentation import IGNORE_INDEX

RELEASE_CLASSES = 459
# The 59 classes' ids in labels.txt, as the PASCAL-Context site's 59_labels.txt lists them (aeroplane 2, bag 9, ...).
CONTEXT_59_IDS = (2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115,
                  144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349,
                  354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458)


def find_mat_folder(root: Path, top: Path) -> Path | None:
    """The release's `trainval/` folder of .mat files: in VOC2010's folder or in the folder given, else None."""
    for folder in (top / "trainval", root / "trainval"):
        if folder.is_dir() and any(folder.glob("*.mat")):
            return folder
    return None


def _label_file(path: Path) -> dict[int, str]:
    """A "<id>: <name>" per line file (labels.txt, 59_labels.txt) as {id: name}."""
    entries: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        if not sep or not key.strip().isdigit() or int(key) in entries:
            raise ClipModuleError(f"{path}: line {number} is not '<id>: <name>' with a new id: {line.strip()[:60]!r}")
        entries[int(key)] = name.strip()
    return entries


def context_59_ids(folder: Path, classnames: list[str]) -> tuple[int, ...]:
    """The 59 classes' release ids: from `59_labels.txt` beside `trainval/` if there (its names in id order must be
    `classnames`, clipmodule's pascal_context_59.txt, and those of `labels.txt` there), else the built-in list."""
    subset_file, all_file = folder.parent / "59_labels.txt", folder.parent / "labels.txt"
    if not subset_file.is_file():
        return CONTEXT_59_IDS
    subset = _label_file(subset_file)
    if len(subset) != 59 or not all(1 <= key <= RELEASE_CLASSES for key in subset):
        raise ClipModuleError(f"{subset_file}: expected 59 ids in 1..{RELEASE_CLASSES}, got {len(subset)}")
    if all_file.is_file():
        names = _label_file(all_file)
        wrong = [key for key, name in subset.items() if names.get(key) != name]
        if wrong:
            raise ClipModuleError(f"{subset_file}: id {wrong[0]} is {subset[wrong[0]]!r} but {all_file} names it "
                                  f"{names.get(wrong[0])!r}")
    ids = tuple(sorted(subset))
    differing = [(key, name) for key, name in zip(ids, classnames, strict=True) if subset[key] != name]
    if differing:
        key, name = differing[0]
        raise ClipModuleError(f"{subset_file}: id {key} is {subset[key]!r} but class {ids.index(key)} of the 59 "
                              f"(pascal_context_59.txt, in id order) is {name!r}")
    return ids


def read_label_map(path: str) -> np.ndarray:
    """A .mat file's `LabelMap` as int64 [H, W]."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:  # a damaged file fails in scipy's parser in any of these ways
        content = loadmat(path, variable_names=["LabelMap"])
    except (MatReadError, ValueError, TypeError, IndexError, KeyError, NotImplementedError, OSError) as error:
        raise ClipModuleError(f"{path}: not a readable MATLAB file ({one_line(error)[:120]})") from None
    labels = content.get("LabelMap")
    if labels is None or labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ClipModuleError(f"{path}: no 2-D integer LabelMap in it")
    return labels.astype(np.int64)


def context_decoder(ids: tuple[int, ...], classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """Release ids -> the 59-class (others: 255) or 60-class (others: background 0) indices; ids past the release's
    459 are ignored (255) in both."""
    table = np.full(RELEASE_CLASSES + 2, IGNORE_INDEX if classes == 59 else 0, dtype=np.int64)
    table[-1] = IGNORE_INDEX
    for index, key in enumerate(ids):
        table[key] = index if classes == 59 else index + 1
    return lambda labels: table[np.clip(labels, 0, RELEASE_CLASSES + 1)]


def mat_items(top: Path, folder: Path, split: str, name: str) -> list[tuple[str, str]]:
    """(JPEG, .mat) pairs of `split`, listed by ImageSets/SegmentationContext, else VOC2010's ImageSets/Main."""
    lists = [top / "ImageSets" / "SegmentationContext" / f"{split}.txt", top / "ImageSets" / "Main" / f"{split}.txt"]
    ids_file = next((path for path in lists if path.is_file()), None)
    if ids_file is None:
        raise MissingData(f"{name}: no split list {lists[0]} or {lists[1]}")
    ids = [line.split()[0] for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = [(str(top / "JPEGImages" / f"{key}.jpg"), str(folder / f"{key}.mat")) for key in ids]
    missing = [path for pair in items for path in pair if not Path(path).is_file()]
    if missing:
        raise MissingData(f"{name}: {len(missing)} files of the {split} split are missing (e.g. {missing[0]})")
    return items
