"""Training pairs from local files, the usual fine-tuning input: a CSV/TSV of (image path, caption) rows, or a
folder of images each with a same-stem `.txt` caption.

A table becomes a sequence of one-row "shards" for the shard reader (`clipmodule.data.shards.ShardStream`):
the same shuffling, worker split and exact resume as webdataset shards, and a row's augmentation is seeded by
its place like a shard sample's. Rows are held as Arrow string arrays, a few bytes per row that the loader's
forked workers share without copying (Python strings would be copied page by page as their reference counts
change). A bad row (missing or unreadable image, empty caption) is skipped, counted and named by the reader
like a corrupt shard sample; the table itself (missing file, unknown column) is refused with one line.

Relative image paths in a CSV are relative to the CSV's folder, as in `clipmodule eval`'s CSV datasets; absolute
paths and `../` are read as written (open_clip's CSV reader does the same, and a researcher's CSV often names images
by absolute path), not confined to the CSV's folder. What is read is bounded instead: only regular files, at most
`MAX_FILE_BYTES` each. A FIFO (which would block the loader for ever), a device (`/dev/zero` never ends) or a larger
file is a bad row, skipped and counted, and never opened (`read_regular_file`).
"""

from __future__ import annotations

import csv
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from clipformats.images import MAX_IMAGE_PIXELS
from clipformats.webdataset import IMAGE_EXTENSIONS
from clipmodule.data.tar_index import ShardIndex
from clipmodule.errors import ClipModuleError

# Tried in order when no column is named: ours, then open_clip's defaults (`--csv-img-key filepath`,
# `--csv-caption-key title`), then other common names.
IMAGE_COLUMNS = ("path", "filepath", "image", "image_path", "filename", "file")
CAPTION_COLUMNS = ("caption", "title", "text", "txt")
TABLE_SUFFIXES = (".csv", ".tsv")
MAX_FILE_BYTES = 4 * MAX_IMAGE_PIXELS
"""The largest file read as an image (341 MiB): the decoder's pixel limit stored raw at 4 bytes a pixel (RGBA),
so no image the decoder accepts is refused, while a runaway file is never read whole."""
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def is_table(spec: object) -> bool:
    """Whether a training-data spec names a CSV/TSV file or a folder of image + .txt pairs (not shards)."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    path = Path(spec)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return True
    return path.is_dir() and not any(path.glob("*.tar"))


def read_regular_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, else OSError saying why. Checked before opening (a
    FIFO's open or read would block, a device's read never ends), and again on the open file (O_NONBLOCK: a
    FIFO swapped in between cannot block), and the read stops at the limit (a /proc file reports size 0)."""
    kind = _KINDS.get(stat.S_IFMT(os.stat(path).st_mode))
    if kind is not None:
        raise OSError(f"not a regular file ({kind})")
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"not a regular file ({_KINDS.get(stat.S_IFMT(status.st_mode), 'special')})")
        data = handle.read(limit + 1) if status.st_size <= limit else b""
    if status.st_size > limit or len(data) > limit:
        raise OSError(f"larger than {limit:,} bytes, the most read as one image")
    return data


@dataclass
class ImageTextTable:
    """Rows of (image path, caption). `captions` is None for a folder: each caption is the image's .txt."""

    source: str
    root: str
    images: object  # pyarrow.StringArray
    captions: object | None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def label(self) -> str:
        return Path(self.source).name


def _read_header(path: Path, delimiter: str) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a BOM (Excel writes one) is no column name
            return next(csv.reader(handle, delimiter=delimiter), [])
    except FileNotFoundError:
        raise ClipModuleError(f"{path}: no such CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ClipModuleError(f"{path}: unreadable CSV ({error})") from None


def _pick_column(path: Path, header: list[str], given: str | None, candidates: tuple[str, ...], what: str) -> str:
    option = f"data.csv_{what}_key"
    if given is not None:
        if given in header:
            return given
        raise ClipModuleError(f"{path}: no column {given!r} (its columns: {', '.join(header) or 'none'}); "
                              f"set {option} to one of them")
    lowered = {column.strip().lower(): column for column in header}
    found = next((lowered[name] for name in candidates if name in lowered), None)
    if found is None:
        raise ClipModuleError(f"{path}: no {what} column among its columns ({', '.join(header)}); "
                              f"name one with {option} (looked for {'|'.join(candidates)})")
    return found


def read_csv_table(path: str | Path, image_key: str | None = None, caption_key: str | None = None,
                   separator: str | None = None) -> ImageTextTable:
    """The rows of a CSV (comma) or TSV (tab) file with a header; `image_key`/`caption_key` name the columns
    (default: the first of IMAGE_COLUMNS / CAPTION_COLUMNS present, case-insensitive)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    delimiter = separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
    header = _read_header(path, delimiter)
    image_column = _pick_column(path, header, image_key, IMAGE_COLUMNS, "image")
    caption_column = _pick_column(path, header, caption_key, CAPTION_COLUMNS, "caption")
    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=[image_column, caption_column],
                                                 column_types={image_column: pa.string(), caption_column: pa.string()}))
    except (OSError, pa.ArrowInvalid) as error:
        raise ClipModuleError(f"{path}: unreadable CSV ({str(error).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise ClipModuleError(f"{path}: no rows under the header")
    images, captions = (table.column(name).combine_chunks() for name in (image_column, caption_column))
    return ImageTextTable(str(path), str(path.parent), images, captions)


def read_pair_folder(folder: str | Path) -> ImageTextTable:
    """Every image under `folder` (recursively, in sorted order); its caption is the same-stem .txt beside it."""
    import pyarrow as pa

    root = Path(folder)
    suffixes = {f".{ext}" for ext in IMAGE_EXTENSIONS}
    images = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        relative = Path(directory).relative_to(root)
        images.extend(str(relative / name) for name in sorted(files)
                      if Path(name).suffix.lower() in suffixes and not name.startswith("."))
    if not images:
        raise ClipModuleError(f"{root}: no .tar shards and no images ({', '.join(sorted(suffixes))}) in the folder")
    return ImageTextTable(str(root), str(root), pa.array(images, pa.string()), None)


def open_table(spec: str | Path, image_key: str | None = None, caption_key: str | None = None,
               separator: str | None = None) -> ImageTextTable:
    path = Path(spec)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return read_csv_table(path, image_key, caption_key, separator)
    return read_pair_folder(path)


class TableReader:
    """Reads a table's rows for `ShardStream`: row r is "shard" r with a single sample."""

    def __init__(self, table: ImageTextTable):
        self.table = table

    def index(self, shard: int) -> ShardIndex:
        return ShardIndex(self.table.source, keys=[str(shard)])

    def _image(self, row: int) -> str:
        return self.table.images[row].as_py() or ""

    def read(self, shard: int, sample: int) -> tuple[str, dict[str, bytes]]:
        """The row's image bytes under its extension's field (`jpg` when it has no image extension: the
        decoder reads the format from the bytes) and its caption; OSError when the image or .txt is missing."""
        image = self._image(shard)
        if not image:
            raise OSError("no image path")
        path = os.path.join(self.table.root, image)
        extension = Path(image).suffix.lower().lstrip(".")
        fields = {extension if extension in IMAGE_EXTENSIONS else "jpg": read_regular_file(path)}
        if self.table.captions is None:
            try:
                fields["txt"] = read_regular_file(Path(path).with_suffix(".txt"))
            except FileNotFoundError:
                raise OSError(f"no caption file {Path(image).with_suffix('.txt')}") from None
        else:
            fields["txt"] = (self.table.captions[shard].as_py() or "").encode("utf-8")
        return image, fields

    def sample_name(self, shard: int, key: str) -> str:
        return f"{self.table.label}:{shard + 1}:{key}"

    def describe(self, shard: int, sample: int) -> str:
        return self.sample_name(shard, self._image(shard))

    def summary(self) -> str:
        return f"the {len(self.table)} rows of {self.table.source}"

    def close(self) -> None:
        pass
