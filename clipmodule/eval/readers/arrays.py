"""Datasets distributed as arrays of pixels: CIFAR-10/100, MNIST, STL-10, SVHN, PatchCamelyon, FER2013.

    cifar10     cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   python pickles (safe_pickle)
    cifar100    cifar-100-python/{train, test, meta}                               python pickles (safe_pickle)
    mnist       MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]        idx files
    stl10       stl10_binary/{train,test}_{X,y}.bin, class_names.txt               raw uint8, column-major
    svhn        {train,test,extra}_32x32.mat                                       MATLAB (label 10 is digit 0)
    pcam        pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5       HDF5 (h5py)
    fer2013     fer2013/fer2013.csv | icml_face_data.csv | train.csv               48x48 grey pixels as text
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import (
    PARSE_ERRORS,
    check_class_list,
    folder_items,
    loadmat,
    read_csv_rows,
    read_text_lines,
    register,
)
from clipmodule.eval.readers.images import ArrayImage, H5Image, reason
from clipmodule.eval.readers.items import BenchmarkDataset
from clipmodule.eval.readers.safe_pickle import load_array_pickle

CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# FER2013's CSV codes emotions 0..6 in this order; labels are renumbered into the sorted folder order of the
# Kaggle image-folder copy (and CLIP_benchmark's names), so both copies of the dataset mean the same labels.
FER_CSV_EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FER_CLASSES = sorted(FER_CSV_EMOTIONS)
FER_CSV_FILES = ("fer2013.csv", "icml_face_data.csv")
FER_SPLIT_USAGES = {"train": ("Training",), "test": ("PublicTest", "PrivateTest")}
FER_USAGES = ("Training", "PublicTest", "PrivateTest")


def _cifar(folder: Path, name: str, batches: list[str], meta: str, label_key: str, names_key: str,
           split: str) -> BenchmarkDataset:
    pixels, labels = [], []
    for batch in batches:
        entry = load_array_pickle(folder / batch)
        if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
            raise ClipModuleError(f"{folder / batch}: not a CIFAR batch (a dict with 'data' and '{label_key}')")
        pixels.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(label) for label in entry[label_key])
    images = np.concatenate(pixels).transpose(0, 2, 3, 1)  # CHW rows -> HWC images
    meta_entry = load_array_pickle(folder / meta)
    if not isinstance(meta_entry, dict) or names_key not in meta_entry:
        raise ClipModuleError(f"{folder / meta}: not CIFAR's meta (a dict with '{names_key}')")
    check_class_list(folder / meta, [str(name) for name in meta_entry[names_key]], labels)
    classnames = [str(name).replace("_", " ") for name in meta_entry[names_key]]
    items = [(ArrayImage(images, index), label) for index, label in enumerate(labels)]
    return BenchmarkDataset(name, split, "zeroshot_classification", items, classnames, folder)


@register("cifar10", splits=("train", "test"), bases=("cifar-10-batches-py",),
          expected=lambda split: [*CIFAR10_BATCHES[split], "batches.meta"],
          layout="cifar-10-batches-py/ (python batches, read by a numpy-only unpickler)")
def open_cifar10(folder: Path, split: str) -> BenchmarkDataset:
    return _cifar(folder, "cifar10", CIFAR10_BATCHES[split], "batches.meta", "labels", "label_names", split)


@register("cifar100", splits=("train", "test"), bases=("cifar-100-python",), expected=lambda split: [split, "meta"],
          layout="cifar-100-python/{train,test,meta} (python pickles, numpy-only unpickler)")
def open_cifar100(folder: Path, split: str) -> BenchmarkDataset:
    return _cifar(folder, "cifar100", [split], "meta", "fine_labels", "fine_label_names", split)


def _idx_prefix(split: str) -> str:
    return "train" if split == "train" else "t10k"


def _idx_files(split: str) -> list[str]:
    return [f"{_idx_prefix(split)}-images-idx3-ubyte", f"{_idx_prefix(split)}-labels-idx1-ubyte"]


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file (big-endian header: 0, 0, type 0x08 = uint8, number of dims, the dims; then the data)."""
    gz = path.with_name(path.name + ".gz")
    source = path if path.exists() else gz
    try:
        data = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # a cut download: "ended before the end-of-stream marker"
        raise ClipModuleError(f"{source}: unreadable, truncated or corrupt ({reason(error)})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ClipModuleError(f"{source}: not an idx file of unsigned bytes ({len(data)} bytes)")
    dims = data[3]
    if dims != ndim or len(data) < 4 + 4 * dims:
        raise ClipModuleError(f"{source}: idx header says {dims} dimensions, expected {ndim} (truncated or corrupt)")
    shape = tuple(int(value) for value in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ClipModuleError(f"{source}: holds {body.size} bytes, its header says {shape}")
    return body.reshape(shape)


@register("mnist", splits=("train", "test"), bases=("MNIST/raw", "raw"),
          expected=lambda split: [(name, f"{name}.gz") for name in _idx_files(split)],
          layout="MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
def open_mnist(folder: Path, split: str) -> BenchmarkDataset:
    prefix = _idx_prefix(split)
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte", 3)
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte", 1)
    if len(images) != len(labels):
        raise ClipModuleError(f"{folder}: {len(images)} {prefix} images but {len(labels)} labels")
    items = [(ArrayImage(images, index), int(label)) for index, label in enumerate(labels)]
    return BenchmarkDataset("mnist", split, "zeroshot_classification", items, [str(d) for d in range(10)], folder)


@register("stl10", splits=("train", "test"), bases=("stl10_binary",),
          expected=lambda split: [f"{split}_X.bin", f"{split}_y.bin", "class_names.txt"],
          layout="stl10_binary/{train,test}_{X,y}.bin, class_names.txt")
def open_stl10(folder: Path, split: str) -> BenchmarkDataset:
    raw = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise ClipModuleError(f"{folder / f'{split}_X.bin'}: size is not a multiple of one 3x96x96 image")
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)  # stored channel-major and column-major
    labels = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1  # 1-based on disk
    if len(labels) != len(images):
        raise ClipModuleError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    classnames = read_text_lines(folder / "class_names.txt")
    check_class_list(folder / "class_names.txt", classnames, labels.tolist())
    items = [(ArrayImage(images, index), int(label)) for index, label in enumerate(labels)]
    return BenchmarkDataset("stl10", split, "zeroshot_classification", items, classnames, folder)


@register("svhn", splits=("train", "test", "extra"), bases=("svhn",), expected=lambda split: [f"{split}_32x32.mat"],
          layout="{train,test,extra}_32x32.mat (MATLAB; scipy)")
def open_svhn(folder: Path, split: str) -> BenchmarkDataset:
    path = folder / f"{split}_32x32.mat"
    mat = loadmat(path)
    if "X" not in mat or "y" not in mat:
        raise ClipModuleError(f"{path}: expected arrays X and y")
    pixels, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if pixels.ndim == 3:  # squeezed: a split of one image
        pixels = pixels[..., None]
    if pixels.ndim != 4 or pixels.shape[2] != 3 or pixels.shape[3] != len(labels) \
            or not np.issubdtype(labels.dtype, np.number):
        raise ClipModuleError(f"{path}: X has shape {pixels.shape} and y {labels.shape}, expected 32x32x3xN "
                              "images and N numeric labels")
    images = np.ascontiguousarray(pixels.astype(np.uint8).transpose(3, 0, 1, 2))  # HWCN -> NHWC
    labels = labels.astype(np.int64) % 10  # the digit 0 is stored as label 10
    items = [(ArrayImage(images, index), int(label)) for index, label in enumerate(labels)]
    return BenchmarkDataset("svhn", split, "zeroshot_classification", items, [str(d) for d in range(10)], folder)


PCAM_SPLITS = {"train": "train", "val": "valid", "test": "test"}


def _pcam_file(split: str, part: str) -> str:
    return f"camelyonpatch_level_2_split_{PCAM_SPLITS[split]}_{part}.h5"


def _h5_read(h5py, path: Path, read):
    try:
        with h5py.File(path, "r") as handle:
            return read(handle)
    except PARSE_ERRORS as error:
        raise ClipModuleError(f"{path}: unreadable HDF5 file, truncated or corrupt ({reason(error)})") from None


@register("pcam", splits=("train", "val", "test"), bases=("pcam",), aliases=("patch_camelyon",),
          expected=lambda split: [_pcam_file(split, "x"), _pcam_file(split, "y")],
          layout="pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 (HDF5; h5py)")
def open_pcam(folder: Path, split: str) -> BenchmarkDataset:
    try:
        import h5py
    except ImportError:
        raise ClipModuleError("pcam: reading PatchCamelyon's .h5 files needs h5py (pip install h5py)") from None
    x_path, y_path = folder / _pcam_file(split, "x"), folder / _pcam_file(split, "y")
    labels = np.asarray(_h5_read(h5py, y_path, lambda handle: handle["y"][()])).reshape(-1)
    shape = _h5_read(h5py, x_path, lambda handle: handle["x"].shape)
    if not np.issubdtype(labels.dtype, np.integer) or len(shape) != 4:
        raise ClipModuleError(f"{folder}: expected integer labels y and images x of shape (N, H, W, 3), got "
                              f"{labels.dtype} labels and x of shape {shape}")
    count = shape[0]
    if count != len(labels):
        raise ClipModuleError(f"{folder}: {count} {split} patches but {len(labels)} labels")
    items = [(H5Image(str(x_path), "x", index), int(label)) for index, label in enumerate(labels)]
    return BenchmarkDataset("pcam", split, "zeroshot_classification", items, ["0", "1"], folder)


def _fer_pixels(path: Path, line: int, row: dict[str, str]) -> tuple[np.ndarray, int]:
    emotion = row["emotion"]
    try:
        pixels = np.array(row["pixels"].split(), dtype=np.int64)
    except ValueError:
        pixels = np.array([-1])
    if pixels.size != 48 * 48 or pixels.min() < 0 or pixels.max() > 255:
        raise ClipModuleError(f"{path}:{line}: expected 48x48 pixel values 0..255 (a truncated or damaged row)")
    if not emotion.isdigit() or int(emotion) >= len(FER_CSV_EMOTIONS):
        raise ClipModuleError(f"{path}:{line}: emotion {emotion!r} is not a code 0..6")
    return pixels.astype(np.uint8).reshape(48, 48), FER_CLASSES.index(FER_CSV_EMOTIONS[int(emotion)])


def _fer_rows(path: Path, split: str) -> list[tuple[np.ndarray, int]]:
    """Every row is checked, not only the split's: a cut in another split's row means a damaged file, and a
    row whose Usage was cut off would otherwise drop out of its split unseen."""
    usage = () if path.name == "train.csv" else ("Usage",)
    rows = read_csv_rows(path, ("emotion", "pixels", *usage))  # icml_face_data.csv has ", " separators
    out = []
    for line, row in rows:
        if usage and row["Usage"] not in FER_USAGES:
            raise ClipModuleError(f"{path}:{line}: Usage {row['Usage']!r} is not one of {', '.join(FER_USAGES)}")
        image = _fer_pixels(path, line, row)
        if not usage or row["Usage"] in FER_SPLIT_USAGES[split]:
            out.append(image)
    return out


def _fer_expected(split: str) -> list:
    if split == "train":
        return [(*FER_CSV_FILES, "train.csv", "train")]
    return [(*FER_CSV_FILES, "test")]


@register("fer2013", splits=("train", "test"), bases=("fer2013",), expected=_fer_expected,
          layout="fer2013/fer2013.csv (or icml_face_data.csv, train.csv), or Kaggle's {train,test}/<emotion>/*.jpg")
def open_fer2013(folder: Path, split: str) -> BenchmarkDataset:
    csv_file = next((folder / name for name in FER_CSV_FILES if (folder / name).is_file()), None)
    if csv_file is None and split == "train" and (folder / "train.csv").is_file():
        csv_file = folder / "train.csv"
    if csv_file is not None:
        rows = _fer_rows(csv_file, split)
        images = np.stack([pixels for pixels, _ in rows]) if rows else np.zeros((0, 48, 48), np.uint8)
        items = [(ArrayImage(images, index), label) for index, (_, label) in enumerate(rows)]
        return BenchmarkDataset("fer2013", split, "zeroshot_classification", items, list(FER_CLASSES), folder)
    present = sorted(entry.name for entry in (folder / split).iterdir() if entry.is_dir())
    if present != FER_CLASSES:
        raise ClipModuleError(f"{folder / split}: expected the emotion folders {', '.join(FER_CLASSES)}, "
                              f"found {', '.join(present) or 'none'}")
    return BenchmarkDataset("fer2013", split, "zeroshot_classification", folder_items(folder / split, FER_CLASSES),
                            list(FER_CLASSES), folder)
