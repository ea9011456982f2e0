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
