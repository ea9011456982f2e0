"""The registry of benchmark readers (what each returns: `items.BenchmarkDataset`) and their shared helpers.

A reader is registered with the files it needs, relative to the dataset's base folder (`cifar-10-batches-py`,
`food-101`, … as torchvision and CLIP_benchmark lay them out). The registry finds that folder under the
given root (or takes the root itself when it is that folder), checks the files before anything is read,
and answers a missing or incomplete copy with one line naming what it expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.images import reason
from clipmodule.eval.readers.items import BenchmarkDataset

Expected = Callable[[str], Sequence[str | tuple[str, ...]]]


# ---- the registry --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    name: str
    open: Callable[[Path, str], BenchmarkDataset]
    splits: tuple[str, ...]
    expected: Expected
    bases: tuple[str, ...] = ()
    """Folder names the copy sits in under the root (the first is the distributed one); the root itself
    is tried last, so `--dataset_root` may name the parent or the folder itself."""
    layout: str = ""
    """One line for the README's table and `known_datasets`."""
    metric: str = "top-1, top-5, mean per-class recall"
    aliases: tuple[str, ...] = ()
    by_language: bool = False
    """The splits are languages (XTD-10, Crossmodal-3600, Babel-ImageNet…): a row's `language` picks one."""

    @property
    def default_split(self) -> str:
        return next((split for split in ("all", "test", "en") if split in self.splits), self.splits[0])

    @property
    def train_split(self) -> str | None:
        return next((split for split in ("train", "trainval") if split in self.splits), None)


READERS: dict[str, Reader] = {}
ALIASES: dict[str, str] = {}


def register(name: str, *, splits: Sequence[str], expected: Expected, bases: Sequence[str] = (), layout: str = "",
             metric: str | None = None, aliases: Sequence[str] = (), by_language: bool = False) -> Callable:
    """Decorator: `open(base_folder, split) -> BenchmarkDataset` becomes the reader of `name` (`split` is a
    language code where `by_language`)."""

    def decorate(open_: Callable[[Path, str], BenchmarkDataset]) -> Callable:
        extra = {"metric": metric} if metric else {}
        READERS[name] = Reader(name, open_, tuple(splits), expected, tuple(bases), layout, aliases=tuple(aliases),
                               by_language=by_language, **extra)
        ALIASES.update(dict.fromkeys(aliases, name))
        return open_

    return decorate


def reader(name: str) -> Reader:
    canonical = ALIASES.get(name, name)
    if canonical.startswith("wds/"):
        canonical = "wds"
    if canonical not in READERS:
        raise ClipModuleError(f"{name}: unknown benchmark dataset (known: {', '.join(sorted(READERS))})")
    return READERS[canonical]


def _describe(entry: str | tuple[str, ...]) -> str:
    return " or ".join(entry) if isinstance(entry, tuple) else entry


def _missing(folder: Path, expected: Sequence[str | tuple[str, ...]]) -> list[str]:
    alternatives = [entry if isinstance(entry, tuple) else (entry,) for entry in expected]
    return [_describe(entry) for entry, options in zip(expected, alternatives)
            if not any((folder / option).exists() for option in options)]


class MissingData(ClipModuleError):
    """The copy is not on disk (no such root, or files the reader expects are absent): a suite files the row
    as missing, where a copy that is present but damaged is filed as failed."""


def locate(name: str, root: str | Path, split: str) -> tuple[Reader, Path, str]:
    """(reader, the copy's base folder, the split), or one line saying what is missing where."""
    entry = reader(name)
    split = split or entry.default_split
    if split not in entry.splits:
        what = "language" if entry.by_language else "split"
        raise ClipModuleError(f"{name}: no {what} {split!r} ({what}s: {', '.join(entry.splits)})")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingData(f"{name}: dataset root {root} is not a folder")
    expected = entry.expected(split)
    candidates = [root / base for base in entry.bases] + [root]
    for folder in candidates:
        if not _missing(folder, expected):
            return entry, folder, split
    folder = next((folder for folder in candidates if folder.is_dir()), root)
    where = f"{root}/{entry.bases[0]}" if entry.bases else str(root)
    missing = _missing(folder, expected)
    raise MissingData(f"{name} ({split}): {where} is missing {', '.join(missing[:6])}"
                          f"{f' and {len(missing) - 6} more' if len(missing) > 6 else ''} "
                          f"(expected there: {', '.join(_describe(item) for item in expected)})")


def open_dataset(name: str, root: str | Path, split: str | None = None) -> BenchmarkDataset:
    """The named benchmark dataset's `split` (default: its test split) read from the local copy at `root`."""
    entry, folder, split = locate(name, root, split or "")
    dataset = entry.open(folder, split)
    if name.startswith("wds/"):
        dataset.name = name
    return dataset


def check_dataset(name: str, root: str | Path, split: str | None = None) -> None:
    """Raises the one-line error `open_dataset` would for a missing or incomplete copy, reading no images."""
    locate(name, root, split or "")


def is_benchmark_name(name: str) -> bool:
    """Whether `name` names a registered reader (or an alias, or `wds/<name>`)."""
    return name in READERS or name in ALIASES or name.startswith("wds/")


def known_datasets() -> list[str]:
    """The registered names (CLIP_benchmark's where it has one), sorted."""
    return sorted(READERS)


def read_text_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ClipModuleError(f"{path}: unreadable ({error})") from None


# Corrupt bytes surface as any of these from a parser (scipy's MatReadError is a plain Exception subclass,
# named here by import so a real bug elsewhere still shows its traceback).
PARSE_ERRORS = (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError,
                OverflowError, UnicodeDecodeError)
ZLIB_RATIO = 1100  # zlib never expands data more than 1032:1, so a compressed .mat holds at most this per byte


def loadmat(path: Path) -> dict[str, Any]:
    """A MATLAB file (scipy.io.loadmat, squeezed): plain arrays and structs, no code is run. A truncated,
    empty or corrupt file is one line naming it; a header declaring more elements than the file could hold
    (a flipped byte) is refused before scipy allocates them."""
    from scipy.io import loadmat as scipy_loadmat
    from scipy.io import whosmat
    from scipy.io.matlab import MatReadError

    try:
        size = path.stat().st_size
        if size == 0:
            raise ClipModuleError(f"{path}: unreadable .mat file (it is empty: 0 bytes)")
        for name, shape, _ in whosmat(path):
            if int(np.prod(shape, dtype=np.float64)) > ZLIB_RATIO * size:
                raise ClipModuleError(f"{path}: unreadable .mat file ({name} claims shape {tuple(shape)}, more "
                                      f"than {size} bytes can hold: truncated or corrupt)")
        return scipy_loadmat(path, squeeze_me=True)
    except (MatReadError, MemoryError, UnboundLocalError, *PARSE_ERRORS) as error:  # scipy, on some damage
        raise ClipModuleError(f"{path}: unreadable .mat file, truncated or corrupt ({reason(error)})") from None


def read_csv_rows(path: Path, required: Sequence[str], delimiter: str = ",") -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header holding `required`; a row missing one of them (a file cut
    short, a stray line) or undecodable text is one line naming the file and the line."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter, skipinitialspace=True)
            rows = [(reader.line_num, row) for row in reader]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ClipModuleError(f"{path}: unreadable CSV ({reason(error)})") from None
    if not set(required) <= set(header):
        raise ClipModuleError(f"{path}: expected {delimiter!r}-separated columns {', '.join(required)}, "
                              f"got {', '.join(header) or 'nothing'}")
    for line, row in rows:
        if any(row.get(column) in (None, "") for column in required):
            raise ClipModuleError(f"{path}:{line}: row lacks {', '.join(c for c in required if not row.get(c))} "
                                  "(a truncated or damaged file)")
    return rows


def check_class_list(path: Path, names: Sequence[str], labels: Sequence[int] | None = None) -> None:
    """Refuses a class list with a name twice (a duplicated line shifts every later label's name) and, given
    the split's labels, one longer than the classes they index (an extra line: a class no image has, which
    zero-shot would still predict); a split of a full benchmark holds every class. Too short a list is
    refused by `BenchmarkDataset` (a label past the names)."""
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if name in seen:
            raise ClipModuleError(f"{path}: class {name!r} is listed twice (entries {seen[name]} and {number}); "
                                  "a duplicated line shifts the names of the labels after it")
        seen[name] = number
    count = max(labels) + 1 if labels else len(names)
    if count < len(names):
        raise ClipModuleError(f"{path}: lists {len(names)} classes but the labels index only {count} "
                              "(an extra or a duplicated line)")


def image_files(folder: Path, extensions: Sequence[str] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp",
                                                            ".tif", ".tiff")) -> list[Path]:
    """Image files directly in `folder`, sorted by name (the order torchvision's folder datasets use)."""
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in extensions and path.is_file())


def class_folders(folder: Path) -> list[str]:
    """Sub-folder names, sorted (the class order of torchvision's ImageFolder)."""
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def folder_items(folder: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(image, class index) for every image in each class's sub-folder."""
    return [(path, label) for label, name in enumerate(classes) for path in image_files(folder / name)]
