"""Loading pickle-based files without running code from them.

A pickle can name any importable callable and have it called while loading (``os.system``...),
so a planted ``last.ckpt`` or ``*.pkl`` would run code on ``--resume`` or ``eval``. Everything
the package unpickles goes through this module:

- :func:`load_state`: training / experiment states written with ``torch.save``, loaded with
  ``torch.load(weights_only=True)`` plus the few numpy globals that a ``np.random.get_state()``
  (or any numpy array / scalar) needs;
- :func:`load_data_pickle`: third-party data pickles (mmdetection3d info files), read by a
  restricted unpickler that builds only builtin containers and numpy arrays / scalars.

Anything else in the file is refused with an error naming the file and the refused global.
"""

from __future__ import annotations

import builtins
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from perception.utils.image_io import DataError

__all__ = ["load_state", "load_data_pickle"]

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar as _scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar as _scalar  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

# The numpy globals a pickled array / scalar / dtype refers to, under both module spellings
# (numpy 1.x wrote ``numpy.core``, numpy 2 writes ``numpy._core``); ``_frombuffer``: protocol 5.
_NUMPY_GLOBALS: dict[str, Any] = {}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[f"{_core}.multiarray._reconstruct"] = _reconstruct
    _NUMPY_GLOBALS[f"{_core}.multiarray.scalar"] = _scalar
    _NUMPY_GLOBALS[f"{_core}.numeric._frombuffer"] = _frombuffer
_NUMPY_GLOBALS["numpy.ndarray"] = np.ndarray
_NUMPY_GLOBALS["numpy.dtype"] = np.dtype

_REFUSED = "refusing to load: it contains objects other than tensors and plain data (a planted or foreign file?)"


def _torch_allow_list() -> list[Any]:
    """``safe_globals`` entries for the numpy globals (with their other-numpy-version names where
    this torch accepts ``(object, name)`` pairs)."""
    # a dtype is rebuilt as ``np.dtype(...)`` then ``BUILD``, which torch checks against its class
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes["All"]}
    objs = [_reconstruct, _scalar, np.ndarray, np.dtype, *sorted(dtype_classes, key=lambda c: c.__name__)]
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):  # torch < 2.6: objects only
        return objs
    return objs + [(obj, name) for name, obj in _NUMPY_GLOBALS.items() if not isinstance(obj, type)]


def load_state(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` a state written by this package (tensors, numbers, strings, lists, tuples,
    dicts, numpy arrays such as an RNG state), running no code from the file.

    Raises ``ValueError`` naming the file when it holds anything else; ``FileNotFoundError``
    when it does not exist.
    """
    path = Path(path)
    safe_globals: Callable[..., Any] | None = getattr(torch.serialization, "safe_globals", None)
    try:
        if safe_globals is not None:
            with safe_globals(_torch_allow_list()):
                return torch.load(path, map_location=map_location, weights_only=True)
        torch.serialization.add_safe_globals(_torch_allow_list())  # torch 2.4: no context manager
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL \S+|got <[^>]*>", str(exc))
        raise ValueError(f"{path}: {_REFUSED}" + (f" ({found.group(0)})" if found else "")) from None


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (latin-1 only)."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


_BUILTINS = {name: getattr(builtins, name) for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray",
                                                      "bytes", "str", "int", "float", "complex", "bool")}
_DATA_GLOBALS: dict[str, Any] = {
    **{f"builtins.{name}": obj for name, obj in _BUILTINS.items()},
    **{f"__builtin__.{name}": obj for name, obj in _BUILTINS.items()},  # protocol-2 pickles from Python 2
    "collections.OrderedDict": dict,
    "_codecs.encode": _latin1_encode,
    **_NUMPY_GLOBALS,
}


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _DataUnpickler(pickle.Unpickler):
    """Builds builtin containers / numbers / strings and numpy arrays, scalars and dtypes only."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _DATA_GLOBALS.get(f"{module}.{name}")
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj


def load_data_pickle(path: str | Path) -> Any:
    """Unpickle a data file (dicts, lists, numbers, strings, numpy arrays) without running code.

    Raises :class:`DataError` naming the file (and the refused global, for a file that would
    build any other object); ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            return _DataUnpickler(fh).load()
        except _Refused as exc:
            raise DataError(f"{path}: refusing to load: the pickle asks for {exc.name}, not plain data or numpy "
                            "arrays (a planted or foreign file?)") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, RecursionError) as exc:
            raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
