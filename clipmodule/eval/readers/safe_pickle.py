"""A pickle reader that admits numpy arrays and plain containers only (CIFAR's python batches).

`pickle.load` runs whatever callable a pickle names: a downloaded "dataset" can execute code. Here every
global the pickle asks for must be one of the few that rebuild a numpy array (and `_codecs.encode`, which
Python 3 writes for bytes in protocol 2); anything else — `os.system`, `builtins.eval`, a class with a
`__reduce__` — is refused before it is called. Dicts, lists, tuples, str, bytes, numbers need no global.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError

ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names a global outside ALLOWED_GLOBALS."""


class ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedPickle(f"{module}.{name}")
        return super().find_class(module, name)


def load_array_pickle(path: Path) -> Any:
    """The object pickled in `path` (py2 pickles read as latin-1, as torchvision does); a pickle that
    would call anything but numpy's array rebuilding is refused with one line naming the call."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ClipModuleError(f"{path}: unreadable ({error.strerror})") from None
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedPickle as error:
        raise ClipModuleError(f"{path}: refused: the pickle calls {error}, not just numpy arrays and plain "
                              "containers (a pickle can run code; this one is not a dataset batch)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ClipModuleError(f"{path}: not a readable pickle ({str(error).splitlines()[0][:120]})") from None
