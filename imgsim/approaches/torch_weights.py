"""Reading PyTorch's legacy (non-zip) ``.pth`` files without torch, and without running code.

A legacy file is a run of pickles: a magic number, a protocol version, system info, the state
dict (whose tensors refer to storages by persistent id), the list of storage keys, and then each
storage's raw little-endian bytes after an 8-byte element count. The state dict is read by an
unpickler that resolves only the handful of globals such a file needs and refuses every other
one, so a crafted file cannot execute anything.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle  # only through _RestrictedUnpickler below, which refuses arbitrary globals
import struct
from typing import Any

import numpy as np

from imgsim.errors import ImgsimError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeWeightsError(pickle.UnpicklingError):
    """The file asked for a Python global that a weights file has no business using."""


class WeightsFormatError(ImgsimError, ValueError):
    """The file is not a legacy PyTorch checkpoint, or it is damaged."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str


@dataclasses.dataclass
class _StorageRef:
    key: str
    dtype: Any
    numel: int


@dataclasses.dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _StorageRef, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves the globals of a state dict and nothing else."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(
            f"refusing to load {module}.{name}: a weights file may only reference tensors and "
            "dictionaries"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsFormatError(f"unexpected persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1], pid[2], pid[3], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise WeightsFormatError(f"unexpected storage type {storage_type!r:.80}")
        return _StorageRef(str(key), _STORAGE_DTYPES[storage_type.name], int(numel))


def _load_pickle(fh: io.BufferedIOBase) -> Any:
    return _RestrictedUnpickler(fh).load()


def read_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a legacy PyTorch state dict into numpy arrays.

    Args:
        path: A ``.pth`` file written by ``torch.save`` with ``_use_new_zipfile_serialization=False``.

    Returns:
        An ordered mapping from parameter name to array, in the file's order and dtypes.

    Raises:
        UnsafeWeightsError: The file references a global other than tensors and dicts.
        WeightsFormatError: The file is not a legacy checkpoint, or is truncated.
    """
    with open(path, "rb") as fh:
        if fh.read(2)[:1] != b"\x80":
            raise WeightsFormatError(f"{path} is not a legacy torch file (a zip archive?)")
        fh.seek(0)
        try:
            if _load_pickle(fh) != MAGIC_NUMBER:
                raise WeightsFormatError(f"{path}: wrong magic number")
            if _load_pickle(fh) != PROTOCOL_VERSION:
                raise WeightsFormatError(f"{path}: unsupported protocol version")
            sys_info = _load_pickle(fh)
            if not sys_info.get("little_endian", True):
                raise WeightsFormatError(f"{path}: big-endian files are not supported")
            state = _load_pickle(fh)
            keys = _load_pickle(fh)
        except (EOFError, struct.error) as err:
            raise WeightsFormatError(f"{path} is truncated") from err
        if not isinstance(state, dict):
            raise WeightsFormatError(f"{path} does not hold a state dict")
        refs = {ref.storage.key: ref.storage for ref in state.values() if isinstance(ref, _TensorRef)}
        buffers: dict[str, np.ndarray] = {}
        for key in keys:
            header = fh.read(8)
            if len(header) != 8:
                raise WeightsFormatError(f"{path} is truncated (storage {key})")
            (numel,) = struct.unpack("<q", header)
            dtype = np.dtype(refs[key].dtype) if key in refs else np.dtype(np.float32)
            raw = fh.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise WeightsFormatError(f"{path} is truncated (storage {key})")
            buffers[key] = np.frombuffer(raw, dtype=dtype)
    out: dict[str, np.ndarray] = collections.OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = buffers[ref.storage.key]
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=[s * item for s in ref.stride]
        )
        out[name] = np.array(view)  # copy: detach from the file buffer and make it contiguous
    return out
