"""The data identity a suite row's stored result is kept with: the same copy gives the same identity; a file
the reader reads (an array batch, a class list, an image) rewritten, or an image added, changes it."""

from __future__ import annotations

import os

from clipmodule.eval.identity import data_identity
from clipmodule.eval.readers import open_dataset
from tests.clipmodule.eval.readers.copies import write_cifar10
from tests.clipmodule.eval.readers.test_folders import write_sun397


def _touch(path, seconds: int = 5) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 10**9))


def test_an_array_copy_is_identified_by_its_batch_files(tmp_path):
    write_cifar10(tmp_path)
    first = data_identity((open_dataset("cifar10", tmp_path, "test"),))
    assert data_identity((open_dataset("cifar10", tmp_path, "test"),)) == first
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes())  # the same bytes, rewritten: a new mtime
    _touch(batch)
    assert data_identity((open_dataset("cifar10", tmp_path, "test"),)) != first


def test_a_folder_copy_is_identified_by_its_class_list_and_images(tmp_path):
    write_sun397(tmp_path)
    first = data_identity((open_dataset("sun397", tmp_path, "all"),))
    _touch(tmp_path / "SUN397" / "ClassName.txt")
    second = data_identity((open_dataset("sun397", tmp_path, "all"),))
    assert second != first
    (tmp_path / "SUN397" / "z" / "zoo" / "sun_eee.jpg").write_bytes(
        (tmp_path / "SUN397" / "z" / "zoo" / "sun_ccc.jpg").read_bytes())
    assert data_identity((open_dataset("sun397", tmp_path, "all"),)) not in (first, second)


def test_a_segmentation_copy_is_identified_by_its_label_maps_too(tmp_path):
    """Regenerated masks under the same names change the identity (a stored mIoU is not reused for them)."""
    import numpy as np
    from PIL import Image

    from clipmodule.eval.readers.segmentation import SegmentationSet

    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "a.png")
    dataset = SegmentationSet("set", ["x", "y"], [(str(tmp_path / "a.jpg"), str(tmp_path / "a.png"))])
    before = data_identity((dataset,))
    Image.fromarray(np.ones((4, 4), dtype=np.uint8)).save(tmp_path / "a.png")
    os.utime(tmp_path / "a.png", ns=(1, 1))  # the same size; another modification time
    assert data_identity((dataset,)) != before
