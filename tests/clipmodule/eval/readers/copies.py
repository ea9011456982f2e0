"""Tiny copies of benchmark datasets, written in each distribution's own on-disk format.

Every image carries its own truth: the left half's grey level is 15 + 30 * label (labels 0..7), the right
half's says the split (train 10, val 130, test 250). A reader that pairs an image with the wrong label or
reads the wrong split is caught by `decode`, whatever the format stored (pickles, idx, .mat, HDF5, JPEG…).
"""

from __future__ import annotations

import csv
import gzip
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_LEVEL = {"train": 10, "val": 130, "valid": 130, "trainval": 10, "test": 250, "all": 250, "extra": 130}


def pixels(label: int, split: str, size: int = 16, channels: int = 3) -> np.ndarray:
    image = np.empty((size, size), np.uint8)
    image[:, : size // 2] = 15 + 30 * label
    image[:, size // 2 :] = SPLIT_LEVEL[split]
    return np.repeat(image[..., None], channels, axis=2) if channels > 1 else image


def decode(image: Image.Image) -> tuple[int, int]:
    """(label, split level) read back from an image made by `pixels` (JPEG-tolerant)."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    width = grey.shape[1]
    left, right = grey[:, : width // 4].mean(), grey[:, -(width // 4) :].mean()
    return round((left - 15) / 30), min(SPLIT_LEVEL.values(), key=lambda level: abs(level - right))


def save(path: Path, label: int, split: str, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels(label, split, size)).save(path, quality=95) if path.suffix in (".jpg", ".jpeg", ".JPEG") \
        else Image.fromarray(pixels(label, split, size)).save(path)
    return path


# ---- arrays ------------------------------------------------------------------------------------------------


def _cifar_rows(labels: list[int], split: str) -> np.ndarray:
    return np.stack([pixels(label, split, 32).transpose(2, 0, 1).reshape(-1) for label in labels])  # CHW rows


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    for number in range(1, 6):
        labels = [number % 3, (number + 1) % 3]
        _pickle(folder / f"data_batch_{number}", {"batch_label": f"training batch {number} of 5", "labels": labels,
                                                 "data": _cifar_rows(labels, "train"), "filenames": ["a.png", "b.png"]})
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": [2, 0, 1],
                                    "data": _cifar_rows([2, 0, 1], "test"), "filenames": ["a", "b", "c"]})
    _pickle(folder / "batches.meta", {"label_names": ["airplane", "automobile", "bird"], "num_cases_per_batch": 2,
                                      "num_vis": 3072})


def write_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    for split, labels in (("train", [0, 1, 2, 1]), ("test", [2, 1])):
        _pickle(folder / split, {"filenames": ["x"] * len(labels), "batch_label": split, "fine_labels": labels,
                                 "coarse_labels": [0] * len(labels), "data": _cifar_rows(labels, split)})
    _pickle(folder / "meta", {"fine_label_names": ["apple", "aquarium_fish", "baby"], "coarse_label_names": ["x"]})


def _idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.with_name(path.name + ".gz").write_bytes(gzip.compress(data)) if gz else path.write_bytes(data))


def write_mnist(root: Path, gz: bool = True) -> None:
    folder = root / "MNIST" / "raw"
    for prefix, split, labels in (("train", "train", [0, 1, 2, 3]), ("t10k", "test", [3, 1])):
        _idx(folder / f"{prefix}-images-idx3-ubyte", np.stack([pixels(k, split, 28, 1) for k in labels]), gz)
        _idx(folder / f"{prefix}-labels-idx1-ubyte", np.asarray(labels), gz)


def write_stl10(root: Path) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, labels in (("train", [0, 1, 2]), ("test", [2, 0])):
        raw = np.stack([pixels(label, split, 96).transpose(2, 1, 0) for label in labels])  # channel-, column-major
        raw.tofile(folder / f"{split}_X.bin")
        (np.asarray(labels, np.uint8) + 1).tofile(folder / f"{split}_y.bin")  # 1-based on disk
    (folder / "class_names.txt").write_text("airplane\nbird\ncar\n")


def write_svhn(root: Path) -> None:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, labels in (("train", [0, 1, 2]), ("test", [2, 0, 0, 1])):
        images = np.stack([pixels(label, split, 32) for label in labels], axis=3)  # H, W, C, N
        savemat(root / f"{split}_32x32.mat", {"X": images, "y": np.asarray([[label or 10] for label in labels])})


def write_pcam(root: Path) -> None:
    import h5py

    folder = root / "pcam"
    folder.mkdir(parents=True)
    for split, name, labels in (("train", "train", [0, 1, 1]), ("val", "valid", [1, 0]), ("test", "test", [0, 1])):
        with h5py.File(folder / f"camelyonpatch_level_2_split_{name}_x.h5", "w") as handle:
            handle["x"] = np.stack([pixels(label, split, 96) for label in labels])
        with h5py.File(folder / f"camelyonpatch_level_2_split_{name}_y.h5", "w") as handle:
            handle["y"] = np.asarray(labels, np.uint8).reshape(-1, 1, 1, 1)


FER_CSV_CODES = [("Training", 0), ("Training", 4), ("Training", 6), ("PublicTest", 3), ("PrivateTest", 5)]


def write_fer2013_csv(root: Path) -> None:
    """fer2013.csv: `emotion,pixels,Usage`; the image's grey level is the CSV's own emotion code."""
    folder = root / "fer2013"
    folder.mkdir(parents=True)
    with (folder / "fer2013.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, code in FER_CSV_CODES:
            split = "train" if usage == "Training" else "test"
            writer.writerow([code, " ".join(map(str, pixels(code, split, 48, 1).reshape(-1))), usage])


def write_fer2013_folders(root: Path) -> None:
    for split in ("train", "test"):
        for label, emotion in enumerate(["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]):
            save(root / split / emotion / f"im{label}.jpg", label, split, 48)


# ---- retrieval ---------------------------------------------------------------------------------------------


def write_flickr_txt(root: Path, name: str) -> list[tuple[str, list[str]]]:
    """CLIP_benchmark's flickr<n>_test_karpathy.txt (a header, then image,caption) and the images in the root."""
    pairs = [("1000268201_693b08cb0e.jpg", ["A child in a pink dress, climbing stairs.", "A girl going up"]),
             ("1001773457_577c3a7d70.jpg", ["Two dogs play.", "A black dog and a spotted dog"])]
    lines = ["image,caption"] + [f"{image},{caption}" for image, captions in pairs for caption in captions]
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}_test_karpathy.txt").write_text("\n".join(lines) + "\n")
    for number, (image, _) in enumerate(pairs):
        save(root / image, number, "test")
    return pairs


def write_karpathy_json(root: Path, name: str, images_dir: str) -> None:
    entries = [{"filepath": images_dir if name == "coco" else None, "filename": f"img{number}.jpg", "split": split,
                "sentences": [{"raw": f"caption {number} {k}", "tokens": []} for k in range(2)]}
               for number, split in enumerate(["train", "restval", "test", "val", "test"])]
    for entry in entries:
        if entry["filepath"] is None:
            del entry["filepath"]
        save(root / images_dir / entry["filename"], int(entry["filename"][3]), "test")
    (root / f"dataset_{name}.json").write_text(json.dumps({"images": entries, "dataset": name}))


def write_coco_captions(root: Path) -> None:
    """CLIP_benchmark's coco_test_karpathy.json (COCO caption format) and val2014/ images."""
    images = [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg"},
              {"id": 522418, "file_name": "COCO_val2014_000000522418.jpg"}]
    annotations = [{"image_id": 522418, "id": 1, "caption": "A woman cutting a cake."},
                   {"image_id": 391895, "id": 2, "caption": "A man on a moped."},
                   {"image_id": 522418, "id": 3, "caption": "A woman with a knife."}]
    root.mkdir(parents=True, exist_ok=True)
    (root / "coco_test_karpathy.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    for number, image in enumerate(images):
        save(root / "val2014" / image["file_name"], number, "test")
