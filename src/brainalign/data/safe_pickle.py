"""Restricted unpickling for the pickles the pipeline must read.

- The fold file (a joblib pickle of one numpy array): nothing but numpy array reconstruction is
  allowed, and the result must be one numeric ndarray.
- The lab release's ``df_roi_meta.pkl`` (a pandas DataFrame): only the pandas and numpy globals
  that a plain DataFrame of numbers and strings needs.
- Reference outputs (a dict of numpy arrays, with classes of a package we do not install
  mapped to inert stand-ins): :func:`load_numpy_pickle`.

Anything else (``os.system``, ``builtins.eval``, ``pandas.eval`` ...) is refused before it can
run.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.errors import InputError

_NUMPY_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("joblib.numpy_pickle", "NDArrayWrapper"),
}

_DATAFRAME_GLOBALS = _NUMPY_ARRAY_GLOBALS | {
    ("builtins", "slice"),
    ("builtins", "bytearray"),
    ("builtins", "object"),
    ("__builtin__", "slice"),
    ("__builtin__", "bytearray"),
    ("__builtin__", "object"),
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("pandas", "DataFrame"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas", "Series"),
    ("pandas.core.series", "Series"),
    ("pandas", "Index"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas", "RangeIndex"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas", "Categorical"),
    ("pandas.core.arrays.categorical", "Categorical"),
    ("pandas", "CategoricalDtype"),
    ("pandas.core.dtypes.dtypes", "CategoricalDtype"),
    ("pandas", "CategoricalIndex"),
    ("pandas.core.indexes.category", "CategoricalIndex"),
    ("pandas", "StringDtype"),
    ("pandas.core.arrays.string_", "StringDtype"),
    ("pandas.core.arrays.string_", "StringArray"),
    ("pandas.arrays", "StringArray"),
    ("pandas.arrays", "ArrowStringArray"),
    ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas.core.internals.blocks", "new_block"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    ("pyarrow.lib", "_restore_array"),
    ("pyarrow.lib", "py_buffer"),
    ("pyarrow.lib", "type_for_alias"),
}


def _legacy_location(module: str, name: str) -> tuple[str, str]:
    """Map older pandas class locations (e.g. Int64Index) to current ones, as read_pickle does."""
    try:
        from pandas.compat.pickle_compat import _class_locations_map
    except ImportError:  # pragma: no cover - depends on the pandas version
        return module, name
    return _class_locations_map.get((module, name), (module, name))


class _JoblibArrayStub:
    """Stands in for joblib's NumpyArrayWrapper: receives its state, runs no joblib code."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, to hook BUILD
    """Unpickler that resolves only allow-listed globals and reads joblib's inline arrays."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, fh: io.BytesIO, allowed: set[tuple[str, str]], where: Path,
                 stand_ins: dict[tuple[str, str], type] | None = None) -> None:
        super().__init__(fh)
        self._fh = fh
        self._allowed = allowed
        self._where = where
        self._stand_ins = stand_ins or {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._stand_ins:
            return self._stand_ins[(module, name)]
        if (module, name) not in self._allowed and module.startswith("pandas"):
            module, name = _legacy_location(module, name)
        if (module, name) not in self._allowed:
            raise InputError(
                self._where,
                f"refusing to unpickle global {module}.{name}: not on the allow-list "
                "(the file may be malicious or of an unexpected kind)",
            )
        if module == "joblib.numpy_pickle":
            return _JoblibArrayStub
        return super().find_class(module, name)

    def _load_build(self) -> None:
        pickle._Unpickler.load_build(self)
        obj = self.stack[-1]
        if isinstance(obj, _JoblibArrayStub):
            self.stack[-1] = self._read_inline_array(obj)

    dispatch[pickle.BUILD[0]] = _load_build

    def _read_inline_array(self, wrapper: _JoblibArrayStub) -> np.ndarray:
        """joblib writes the array's raw bytes right after the wrapper's BUILD opcode."""
        if getattr(wrapper, "subclass", np.ndarray) is not np.ndarray:
            raise InputError(self._where, "expected a plain numpy.ndarray in the joblib pickle")
        dtype = np.dtype(wrapper.dtype)
        if dtype.hasobject:
            raise InputError(self._where, "refusing an object-dtype array in the joblib pickle")
        if getattr(wrapper, "numpy_array_alignment_bytes", None):
            padding = self._fh.read(1)
            self._fh.read(padding[0])
        count = int(np.prod(wrapper.shape, dtype=np.int64))
        raw = self._fh.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise InputError(self._where, "joblib pickle is truncated")
        order = "F" if getattr(wrapper, "order", "C") == "F" else "C"
        return np.frombuffer(raw, dtype=dtype).reshape(wrapper.shape, order=order).copy()


def _load(path: Path, allowed: set[tuple[str, str]],
          stand_ins: dict[tuple[str, str], type] | None = None) -> Any:
    if not path.is_file():
        raise InputError(path, "file not found")
    return _load_bytes(path.read_bytes(), path, allowed, stand_ins)


def _load_bytes(data: bytes, where: str | Path, allowed: set[tuple[str, str]],
                stand_ins: dict[tuple[str, str], type] | None = None) -> Any:
    where = Path(where)
    if not data:
        raise InputError(where, "file is empty")
    try:
        return _RestrictedUnpickler(io.BytesIO(data), allowed, where, stand_ins).load()
    except InputError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many types
        raise InputError(where, f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def load_numeric_array_pickle(path: str | Path) -> np.ndarray:
    """Load a (joblib or plain) pickle that must hold exactly one numeric numpy array.

    joblib stores an array's bytes inline after the wrapper object; plain pickles embed them via
    numpy's reconstructor. Both are read here without importing any non-allow-listed global.
    """
    path = Path(path)
    obj = _load(path, _NUMPY_ARRAY_GLOBALS)
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "biuf":
        raise InputError(path, f"expected one numeric numpy array, found {type(obj).__name__}")
    return obj


def load_dataframe_pickle(path: str | Path):  # -> pandas.DataFrame
    """Load a pickled pandas DataFrame of numbers and strings without arbitrary code execution."""
    import pandas as pd

    path = Path(path)
    obj = _load(path, _DATAFRAME_GLOBALS)
    if not isinstance(obj, pd.DataFrame):
        raise InputError(path, f"expected a pandas DataFrame, found {type(obj).__name__}")
    return obj


class StandIn:
    """An inert stand-in for a class a pickle names: it records what it is given, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def load_numpy_pickle(path: str | Path,
                      stand_ins: dict[tuple[str, str], type] | None = None,
                      data: bytes | None = None) -> Any:
    """Load a plain pickle of builtin containers and numpy arrays (e.g. a dict of arrays).

    ``stand_ins`` maps ``(module, name)`` globals the file names (classes of a package we do
    not install) to inert local classes; every other global but numpy's array reconstruction
    is refused before it runs. ``data``: the file's bytes when already read (``path`` then only
    names it in errors, e.g. a member of an archive).
    """
    if data is not None:
        return _load_bytes(data, path, _NUMPY_ARRAY_GLOBALS, stand_ins)
    return _load(Path(path), _NUMPY_ARRAY_GLOBALS, stand_ins)
