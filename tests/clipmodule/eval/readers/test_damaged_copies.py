"""A damaged copy (a file cut short, emptied, or with a corrupt header) is one line naming the file and the
problem, from every reader: never a traceback, a memory blow-up, or a split silently missing rows."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import open_dataset
from tests.clipmodule.eval.readers import copies
from tests.clipmodule.eval.readers.test_folders import write_cars, write_flowers, write_gtsrb
from tests.clipmodule.eval.readers.test_retrieval_wds import write_wds

# dataset, writer, the file damaged (relative to the root), split
FILES = [
    ("mnist", copies.write_mnist, "MNIST/raw/t10k-images-idx3-ubyte.gz", "test"),
    ("mnist", copies.write_mnist, "MNIST/raw/t10k-labels-idx1-ubyte.gz", "test"),
    ("mnist", lambda root: copies.write_mnist(root, gz=False), "MNIST/raw/t10k-images-idx3-ubyte", "test"),
    ("svhn", copies.write_svhn, "test_32x32.mat", "test"),
    ("flowers", write_flowers, "flowers-102/imagelabels.mat", "test"),
    ("flowers", write_flowers, "flowers-102/setid.mat", "test"),
    ("cars", write_cars, "stanford_cars/devkit/cars_meta.mat", "test"),
    ("cars", write_cars, "stanford_cars/cars_test_annos_withlabels.mat", "test"),
    ("cifar10", copies.write_cifar10, "cifar-10-batches-py/test_batch", "test"),
    ("pcam", copies.write_pcam, "pcam/camelyonpatch_level_2_split_test_x.h5", "test"),
    ("pcam", copies.write_pcam, "pcam/camelyonpatch_level_2_split_test_y.h5", "test"),
    ("gtsrb", write_gtsrb, "gtsrb/GT-final_test.csv", "test"),
    ("wds", lambda root: write_wds(root, "classification"), "test/0.tar", "test"),
]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2 + 3])  # +3: not on a block boundary


def _one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message


@pytest.mark.parametrize("how", ["cut", "empty"])
@pytest.mark.parametrize("name, write, target, split", FILES, ids=[f"{case[0]}-{Path(case[2]).name}" for case in FILES])
def test_a_cut_or_empty_file_is_one_line_naming_it(tmp_path, name, write, target, split, how):
    write(tmp_path)
    _damage(tmp_path / target, how)
    with pytest.raises(ClipModuleError) as error:
        dataset = open_dataset(name, tmp_path, split)
        for index in range(len(dataset)):  # PCam's images are read lazily: damage may surface here
            dataset[index]
    _one_line_naming(error, tmp_path / target)


def test_a_mat_header_claiming_more_elements_than_the_file_holds_is_refused_before_it_is_allocated(tmp_path):
    write_cars(tmp_path)
    meta = tmp_path / "stanford_cars" / "devkit" / "cars_meta.mat"
    data = meta.read_bytes()
    dims = np.asarray([1, 3], "<i4").tobytes()  # class_names' shape, as the file stores it
    assert data.count(dims) == 1
    meta.write_bytes(data.replace(dims, np.asarray([1, 10_000_000], "<i4").tobytes()))
    with pytest.raises(ClipModuleError, match=re.escape(f"{meta}: unreadable .mat file (class_names claims shape")):
        open_dataset("cars", tmp_path, "test")


def test_an_idx_file_of_the_wrong_kind_is_refused(tmp_path):
    copies.write_mnist(tmp_path, gz=False)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes())
    with pytest.raises(ClipModuleError, match="t10k-labels-idx1-ubyte: idx header says 3 dimensions, expected 1"):
        open_dataset("mnist", tmp_path, "test")


def test_flowers_labels_outside_its_102_classes_are_refused(tmp_path):
    from scipy.io import savemat

    write_flowers(tmp_path)
    savemat(tmp_path / "flowers-102" / "imagelabels.mat", {"labels": np.asarray([[77, 77, 1, 5, 1, 10**6]])})
    with pytest.raises(ClipModuleError, match=r"imagelabels.mat: label 1000000 is not a class 1..102"):
        open_dataset("flowers", tmp_path, "test")


@pytest.mark.parametrize("cut", ["Usage", "pixels"])
def test_a_fer2013_csv_cut_inside_a_row_is_refused_not_dropped(tmp_path, cut):
    """A row whose Usage was cut off used to fall out of its split unseen (3 test images became 2)."""
    copies.write_fer2013_csv(tmp_path)
    table = tmp_path / "fer2013" / "fer2013.csv"
    text = table.read_text()
    end = text.rstrip("\n").rfind(",PrivateTe") + 6 if cut == "Usage" else len(text) - 40
    table.write_text(text[:end])
    with pytest.raises(ClipModuleError, match=re.escape(f"{table}:6: ")):
        open_dataset("fer2013", tmp_path, "test")


def test_a_gtsrb_table_with_a_class_past_its_43_is_refused(tmp_path):
    write_gtsrb(tmp_path)
    table = tmp_path / "gtsrb" / "GT-final_test.csv"
    table.write_text(table.read_text().replace(";1\n", ";4000000000\n", 1))
    with pytest.raises(ClipModuleError, match=r"GT-final_test.csv:2: ClassId is not a class 0..42"):
        open_dataset("gtsrb", tmp_path, "test")

