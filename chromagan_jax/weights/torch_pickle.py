"""torch ``.pth`` state dicts read without torch: NumPy arrays from torch.save's two formats.

torchvision's ImageNet VGG16 (``vgg16-397923af.pth``) is the file this exists for. Only
OrderedDict, torch's tensor-rebuild functions and storage types are unpickled; anything else
(arbitrary classes, code) raises :class:`ConversionError`, so a malicious pickle cannot run.
Mapping the arrays onto our models is :mod:`chromagan_jax.weights.torch_port`.
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from chromagan_jax.errors import ConversionError

ZIP_MAGIC = b"PK\x03\x04"
# Pickle protocol >= 2 starts with this opcode: torch's legacy (pre-1.6) format.
_PICKLE_PROTO = b"\x80"


def file_kind(path) -> str | None:
  """'zip' (torch >= 1.6) or 'pickle' (legacy) from the file's first bytes; None otherwise."""
  with open(path, "rb") as f:
    head = f.read(len(ZIP_MAGIC))
  if head.startswith(ZIP_MAGIC):
    return "zip"
  if head[:1] == _PICKLE_PROTO:
    return "pickle"
  return None


_TORCH_STORAGE_DTYPES = {
  "FloatStorage": "<f4",
  "DoubleStorage": "<f8",
  "HalfStorage": "<f2",
  "BFloat16Storage": "bfloat16",
  "LongStorage": "<i8",
  "IntStorage": "<i4",
  "ShortStorage": "<i2",
  "CharStorage": "i1",
  "ByteStorage": "u1",
  "BoolStorage": "?",
}
# torch.serialization's legacy format: pickled magic number and protocol version.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL = 1001


class _StorageType(collections.namedtuple("_StorageType", "dtype")):
  """Stands for ``torch.FloatStorage`` etc. in the pickle."""


class _Storage(collections.namedtuple("_Storage", "key dtype numel offset")):
  """A persistent storage reference; ``offset`` (elements) is non-zero for legacy views."""


class _TensorRef(collections.namedtuple("_TensorRef", "storage offset size stride")):
  """A tensor to build once the storages' bytes are known."""


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  del unused  # requires_grad, backward hooks, metadata.
  return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
  del unused
  return data


def _dtype(name):
  if name == "bfloat16":
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a state dict, allowing only torch's tensor-rebuild functions and storages."""

  def __init__(self, file, source):
    super().__init__(file)
    self.source = source

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if (module, name) == ("torch", "Size"):  # torch.Size((2, 3)) -> (2, 3).
      return tuple
    if module == "torch" and name in _TORCH_STORAGE_DTYPES:
      return _StorageType(_TORCH_STORAGE_DTYPES[name])
    raise ConversionError(
      f"{self.source}: refusing to unpickle {module}.{name}: only plain tensor state dicts "
      "(torchvision's .pth files) are supported"
    )

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
      raise ConversionError(f"{self.source}: unsupported persistent id {pid!r}")
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise ConversionError(f"{self.source}: unsupported storage type {storage_type!r}")
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # Legacy view: (view_key, offset, size) into the root storage.
      return _Storage(str(key), storage_type.dtype, int(view[2]), int(view[1]))
    return _Storage(str(key), storage_type.dtype, int(numel), 0)


def _materialize(source, obj, storages: dict[str, np.ndarray]):
  """Replaces every _TensorRef in a (nested) dict/list by a NumPy array."""
  if isinstance(obj, _TensorRef):
    data = storages[obj.storage.key]
    start = obj.storage.offset + obj.offset
    end = start + sum((n - 1) * s for n, s in zip(obj.size, obj.stride, strict=True)) + 1
    if any(n == 0 for n in obj.size):
      return np.zeros(obj.size, data.dtype)
    if start < 0 or end > data.size:
      raise ConversionError(
        f"{source}: tensor needs elements [{start}, {end}) of storage {obj.storage.key} with "
        f"{data.size} (truncated or corrupt file?)"
      )
    view = np.lib.stride_tricks.as_strided(
      data[start:],
      shape=obj.size,
      strides=tuple(s * data.itemsize for s in obj.stride),
      writeable=False,
    )
    return np.array(view)
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(source, v, storages)) for k, v in obj.items())
  if isinstance(obj, list | tuple):
    return type(obj)(_materialize(source, v, storages) for v in obj)
  return obj


def _storage_dtypes(obj, out):
  if isinstance(obj, _TensorRef):
    out[obj.storage.key] = obj.storage.dtype
  elif isinstance(obj, dict):
    for v in obj.values():
      _storage_dtypes(v, out)
  elif isinstance(obj, list | tuple):
    for v in obj:
      _storage_dtypes(v, out)
  return out


def _read_torch_zip(path):
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ConversionError(f"{path}: corrupt zip archive (truncated .pth?): {e}") from e
  with zf:
    pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
      raise ConversionError(f"{path}: zip file without a single data.pkl: not a torch .pth")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in zf.namelist():
      byteorder = zf.read(prefix + "byteorder").decode().strip()
    try:
      obj = _TorchUnpickler(io.BytesIO(zf.read(pkl[0])), path).load()
      storages = {}
      for key, dtype in _storage_dtypes(obj, {}).items():
        dt = _dtype(dtype)
        if byteorder == "big" and dt.itemsize > 1:
          dt = dt.newbyteorder(">")
        storages[key] = np.frombuffer(zf.read(f"{prefix}data/{key}"), dt).astype(
          dt.newbyteorder("=")
        )
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError, ValueError) as e:
      if isinstance(e, ConversionError):
        raise
      raise ConversionError(
        f"{path}: cannot read torch archive (truncated or corrupt?): {e}"
      ) from None
  return _materialize(path, obj, storages)


def _read_torch_legacy(path):
  with open(path, "rb") as f:
    try:
      magic = pickle.load(f)
      if magic != _TORCH_LEGACY_MAGIC:
        raise ConversionError(f"{path}: a pickle but not a torch file (bad magic number)")
      protocol = pickle.load(f)
      if protocol != _TORCH_LEGACY_PROTOCOL:
        raise ConversionError(f"{path}: unsupported torch legacy protocol {protocol}")
      sys_info = pickle.load(f)
      if not sys_info.get("little_endian", True):
        raise ConversionError(f"{path}: big-endian legacy torch files are not supported")
      obj = _TorchUnpickler(f, path).load()
      keys = pickle.load(f)
      dtypes = _storage_dtypes(obj, {})
      storages = {}
      for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        dt = _dtype(dtypes.get(key, "<f4"))
        raw = f.read(numel * dt.itemsize)
        if len(raw) != numel * dt.itemsize:
          raise ConversionError(f"{path}: storage {key} is cut short (truncated file)")
        storages[str(key)] = np.frombuffer(raw, dt)
    except ConversionError:
      raise
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError, AttributeError) as e:
      raise ConversionError(
        f"{path}: cannot read torch file (truncated or corrupt?): {e}"
      ) from None
  return _materialize(path, obj, storages)


def read_state_dict(path) -> dict[str, np.ndarray]:
  """A torch-saved state dict as {key: float32 ndarray}, without importing torch.

  Reads both of torch.save's formats: the zip archive (torch >= 1.6: ``<name>/data.pkl``
  whose persistent ids point at ``<name>/data/<key>`` records) and the legacy pickle stream
  (torchvision's 2017 files: magic number, protocol, system info, the pickle, then the
  storages' raw bytes). Only OrderedDict, tensor-rebuild functions and storage types are
  unpickled; anything else raises ConversionError.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  kind = file_kind(path)
  if kind == "zip":
    obj = _read_torch_zip(path)
  elif kind == "pickle":
    obj = _read_torch_legacy(path)
  else:
    raise ConversionError(f"{path}: not a torch .pth file (neither a zip archive nor a pickle)")
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise ConversionError(f"{path}: holds a {type(obj).__name__}, a state dict was expected")
  return {k: np.asarray(v, np.float32) for k, v in obj.items() if isinstance(v, np.ndarray)}
