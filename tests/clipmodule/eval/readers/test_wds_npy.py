"""The webdataset reader's `.npy` decoding (header parsed once per distinct header, values from the bytes) gives what
`np.load(allow_pickle=False)` gives, and refuses what it refuses."""

from __future__ import annotations

import io

import numpy as np
import pytest

from clipmodule.eval.readers.wds import npy_values


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array, allow_pickle=True)
    else:
        np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


ARRAYS = [np.array([3, 1, 2], dtype=np.int64), np.array([[1, 0], [0, 1]], dtype=np.uint8),
          np.zeros(0, dtype=np.float32),
          np.array(7, dtype=np.int32), np.arange(6, dtype=">i4").reshape(2, 3),
          np.asfortranarray(np.arange(6.0).reshape(2, 3))]  # Fortran order: flattened as numpy reads it, row-major


@pytest.mark.parametrize("array", ARRAYS)
@pytest.mark.parametrize("version", [None, (1, 0), (2, 0)])
def test_npy_values_equal_numpys_loader(array, version):
    data = _npy(array, version)
    expected = np.load(io.BytesIO(data), allow_pickle=False).reshape(-1)
    got = npy_values(data)
    assert got.dtype == expected.dtype and got.tolist() == expected.tolist()


def test_what_numpys_safe_loader_refuses_is_refused():
    with pytest.raises(ValueError, match="object array"):
        npy_values(_npy(np.array([{"a": 1}], dtype=object)))
    with pytest.raises(ValueError, match="not an .npy file"):
        npy_values(b"PK\x03\x04 not numpy")
    with pytest.raises(ValueError, match="shorter than its header"):
        npy_values(_npy(np.arange(10, dtype=np.int64))[:-8])


def _with_shape(shape: tuple, values: np.ndarray) -> bytes:
    """An `.npy` file whose header states `shape` over the bytes of `values` (a damaged or forged header)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(values.dtype),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue() + values.tobytes()


@pytest.mark.parametrize("shape", [(-1,), (2, -3), (2**32, 2**32), (7,)])  # int64 product of 2**32·2**32: 0
def test_a_shape_that_does_not_fit_the_data_is_refused_as_numpy_refuses_it(shape):
    data = _with_shape(shape, np.arange(6, dtype=np.int64))
    with pytest.raises(ValueError):
        np.load(io.BytesIO(data), allow_pickle=False)
    with pytest.raises(ValueError, match=r"negative size|(shorter|longer) than its header"):
        npy_values(data)


def test_bytes_beyond_the_stated_shape_are_refused():
    data = _npy(np.arange(3, dtype=np.int64)) + b"\0" * 8  # np.load reads the first 3 and ignores the rest
    assert np.load(io.BytesIO(data), allow_pickle=False).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="longer than its header says"):
        npy_values(data)


def test_labels_and_metadata_must_be_whole_numbers_named_by_shard_and_key():
    from clipmodule.errors import ClipModuleError
    from clipmodule.eval.readers.wds import _metadata, _target

    assert _metadata({"npy": _npy(np.array([2.0, 0.0, 1.0]))}, "0.tar:s1") == [2, 0, 1]
    assert _target("multilabel", {"npy": _npy(np.array([True, False, True]))}, "0.tar:s1", 3) == [0, 2]
    pairs = np.zeros(2, dtype=[("region", "<i4"), ("income", "<i4")])  # a structured array: no plain values
    with pytest.raises(ClipModuleError, match=r"^0.tar:s1: its npy metadata holds .* values, not whole numbers$"):
        _metadata({"npy": _npy(pairs)}, "0.tar:s1")
    with pytest.raises(ClipModuleError, match=r"^0.tar:s2: its npy attributes holds float64 values, not whole"):
        _target("attributes", {"npy": _npy(np.array([1.5, 0.0]))}, "0.tar:s2", 0)
    with pytest.raises(ClipModuleError, match=r"^0.tar:s3: its npy label vector holds .*U1 values"):
        _target("multilabel", {"npy": _npy(np.array(["a", "b"]))}, "0.tar:s3", 2)
