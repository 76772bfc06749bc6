"""The one place promptdiff unpickles anything: checkpoints and pickles that run no code.

A pickle can call any importable function while it loads (`os.system` included), so a checkpoint
or data file from someone else is a program. Every file the project reads that it did not just
write itself for a Lightning resume goes through here: PLMs (`plm.ckpt`, `plm_full.ckpt`), stage-1
diffusers (`init_diffuser`), expert policies, checkpoints named on the command line, and Prompt-DT's
trajectory pickles.

* `load_checkpoint(path)`: `torch.load(weights_only=True)`, whose unpickler only rebuilds tensors,
  containers and numbers, plus an explicit allow-list of the few other types our checkpoints hold
  (numpy arrays and scalars in Lightning's saved state). Anything else is refused with
  `UnsafeFileError` naming the file and the global it asked for.
* `load_pickle(path)`: a plain pickle of lists, dicts, tuples, strings, numbers and numpy arrays
  (Prompt-DT's data), through an unpickler whose only reachable globals are numpy's array builders.

Both raise `UnreadableFileError` (missing, empty, truncated or garbage file) and `UnsafeFileError`
(a global outside the allow-list), each a `ValueError` with the file named on one line.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["UnreadableFileError", "UnsafeFileError", "load_checkpoint", "load_pickle"]


class UnreadableFileError(ValueError):
    """The file is missing, empty, truncated or not the format asked for."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


class UnsafeFileError(UnreadableFileError):
    """The file asks for a global (a function or class) outside the allow-list: refused unread."""


# -- numpy's array builders (the globals a pickle of numpy arrays, scalars and dtypes names) ------
def _numpy_internal(module: str, name: str):
    try:
        from numpy import _core as core  # numpy >= 2.0
    except ImportError:  # numpy 1.x
        from numpy import core
    return getattr(getattr(core, module), name)


# numpy 1.x writes the module names `numpy.core.*`, numpy 2.x `numpy._core.*`; both resolve to this
# numpy's own objects. Protocols 2-4 rebuild arrays with `_reconstruct`, protocol 5 with `_frombuffer`.
_NUMPY_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}
for _core in ("numpy.core", "numpy._core"):
    for _module, _name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
        _NUMPY_GLOBALS[(f"{_core}.{_module}", _name)] = lambda module=_module, name=_name: _numpy_internal(module, name)
del _core, _module, _name


def _checkpoint_allow_list() -> list:
    """Globals a checkpoint may name besides torch's own tensor types: numpy arrays, scalars and dtypes
    (Lightning stores e.g. a callback's numpy score; numpy 2 pickles dtypes by their class)."""
    allowed = [builder() for builder in _NUMPY_GLOBALS.values()]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "int8", "uint8", "bool")]
    return allowed


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)|unsupported GLOBAL '?([\w.]+)|Unsupported operand (\d+)")


def load_checkpoint(path: str | Path, what: str = "checkpoint", map_location="cpu") -> Any:
    """A torch checkpoint (`torch.save` / Lightning) loaded without running any code from it.

    Raises FileNotFoundError when `path` is not a file, `UnsafeFileError` when it names a global outside the
    allow-list and `UnreadableFileError` when it is not a torch checkpoint at all; `what` names the file's
    role in the messages (e.g. "PLM checkpoint")."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        with torch.serialization.safe_globals(_checkpoint_allow_list()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = _UNSUPPORTED.search(text)
        if found is not None or "Weights only load failed" in text:
            name = next((g for g in (found.groups() if found else ()) if g), "a global outside the allow-list")
            raise UnsafeFileError(path, f"refusing to load this {what}: it asks for '{name}', which is not a tensor, "
                                  "number, container or numpy array (a checkpoint from an untrusted source? "
                                  "promptdiff never unpickles code)") from None  # fmt: skip
        raise UnreadableFileError(path, f"not a readable {what} ({_first_line(err)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UnreadableFileError(path, f"not a readable {what}, corrupt or truncated ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable globals are numpy's array builders.

    Every global a pickle names (to call it or to pass it as a class) goes through `find_class`, so
    refusing there keeps a pickle from running anything else."""

    def __init__(self, file, path: Path):
        # encoding="latin1" lets numpy arrays pickled under Python 2 load; Python 3 pickles are unchanged
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        builder = _NUMPY_GLOBALS.get((module, name))
        if builder is not None:
            return builder()
        if (module, name) == ("_codecs", "encode"):
            # protocols 0-2 store bytes (e.g. array data) as `_codecs.encode(text, "latin1")`
            return self._latin1_encode
        raise UnsafeFileError(self.path, f"refusing to load: the pickle asks for '{module}.{name}', "
                              "which is not a plain list/dict/numpy structure")  # fmt: skip

    def _latin1_encode(self, text, encoding="utf-8", *args):
        """`_codecs.encode`, limited to what pickle itself uses it for: str -> latin-1 bytes."""
        if args or not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
            raise UnsafeFileError(self.path, f"refusing to load: the pickle calls '_codecs.encode' with encoding "
                                  f"{encoding!r}; only the latin-1 form pickle uses for bytes is allowed")  # fmt: skip
        return text.encode("latin-1")


def load_pickle(path: str | Path) -> Any:
    """A pickle that may only hold lists, dicts, tuples, str/bytes/int/float/bool/None and numpy arrays,
    scalars and dtypes (`UnsafeFileError` for anything else, `UnreadableFileError` for a broken file)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnreadableFileError(path, f"cannot read the file ({err.strerror or err})") from None
    if not data:
        raise UnreadableFileError(path, "empty file (0 bytes), not a pickle")
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except UnreadableFileError:
        raise
    except EOFError:
        raise UnreadableFileError(path, "truncated pickle (the data ends before the pickle does)") from None
    except Exception as err:  # noqa: BLE001 - pickle raises many types for corrupt input
        problem = f"not a readable pickle, corrupt or truncated ({_first_line(err)})"
        raise UnreadableFileError(path, problem) from None


def first_non_finite(state: dict) -> str | None:
    """The name of the first floating-point tensor in `state` (a state dict) holding NaN or inf, else None: a
    diverged run's weights, refused by the loaders of PLMs and diffusers."""
    import torch

    return next((name for name, value in state.items() if torch.is_tensor(value) and value.is_floating_point()
                 and not torch.isfinite(value).all()), None)  # fmt: skip
