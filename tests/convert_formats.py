"""Writers of the real weight-file formats, for the converter tests (no torch, no tf-keras).

* :func:`write_keras2_h5`: Keras 2 HDF5 written as standalone Keras 2.x / TF1 did — either a
  weight-only file (``model.save_weights``: ``layer_names`` on the root) or a full-model file
  (``model_config`` + ``model_weights`` group + ``optimizer_weights``). String attributes are
  fixed-length byte arrays, weight names carry the TF ``:0`` suffix and a weight named
  ``conv2d_6/kernel:0`` is a dataset ``conv2d_6/kernel:0`` inside the layer's group (so h5py
  nests it one group deeper), exactly as ``keras/engine/saving.py`` did with ``create_dataset``.
* :func:`keras2_layers`: turns a (Keras 3) functional model into that layout's layer list,
  with Keras 2 style auto-generated names (``conv2d_6`` ...), a nested sub-model renamed
  ``model_1`` whose weights are named by their VGG layers (``block1_conv1/kernel:0``).
* :func:`save_torch_zip` / :func:`save_torch_legacy`: ``torch.save(state_dict)`` in the zip
  format (torch >= 1.6) and the legacy pickle stream (torchvision's 2017 files), following
  ``torch/serialization.py``: protocol-2 pickle with ``torch._utils._rebuild_tensor_v2``
  (``_rebuild_tensor`` in legacy files) and ``('storage', torch.FloatStorage, key, 'cpu',
  numel)`` persistent ids; zip records ``<prefix>/data.pkl``, ``byteorder``, ``data/<key>``
  (64-byte aligned, stored uncompressed), ``version``, ``.data/serialization_id``.
"""

import collections
import io
import json
import pickle
import re
import struct
import zipfile

import h5py
import numpy as np

# ----------------------------------------------------------------------------------------
# Keras 2 HDF5.


def _bytes_array(strings):
  return np.array([s.encode("utf8") for s in strings]) if strings else []


def write_keras2_h5(path, layers, model_config=None, weights_only=False):
  """Writes ``layers`` [(layer name, [(weight name, array)])] in the Keras 2 HDF5 layout."""
  with h5py.File(path, "w") as f:
    if weights_only:
      root = f
    else:
      f.attrs["keras_version"] = b"2.1.6"
      f.attrs["backend"] = b"tensorflow"
      if model_config is not None:
        f.attrs["model_config"] = json.dumps(model_config).encode("utf8")
      f.attrs["training_config"] = json.dumps({"loss": "mse"}).encode("utf8")
      root = f.create_group("model_weights")
    root.attrs["layer_names"] = _bytes_array([name for name, _ in layers])
    root.attrs["backend"] = b"tensorflow"
    root.attrs["keras_version"] = b"2.1.6"
    for name, weights in layers:
      group = root.create_group(name)
      group.attrs["weight_names"] = _bytes_array([w for w, _ in weights])
      for w, value in weights:
        group.create_dataset(w, data=np.asarray(value, np.float32))
    if not weights_only:
      opt = f.create_group("optimizer_weights")
      opt.attrs["weight_names"] = _bytes_array(["Adam/iterations:0"])
      opt.create_dataset("Adam/iterations:0", data=np.array(7, np.int64))


def _snake(class_name):
  """Keras 2's ``_to_snake_case``: 'Conv2D' -> 'conv2d', 'UpSampling2D' -> 'up_sampling2d'."""
  name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
  return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def keras2_layers(model, first_index=1, style="tf", scope_suffix=""):
  """(layers, model_config) of a Keras 3 functional ``model`` in Keras 2 naming.

  Layers keep Keras' ``model.layers`` order (the algorithm Keras 2 used too). Auto names are
  renumbered per class from ``first_index`` (as if earlier models had used lower numbers).
  ``style='keras1'`` names weights like the keras.applications files ('fc1_W_1:0').
  ``scope_suffix`` ('_1') is appended to every weight's layer scope, as TF1 uniquified a
  name scope already used in the graph ('block1_conv1_1/kernel:0', 'conv2d_6_1/bias:0');
  layer (group) names keep theirs, as Keras 2 saved them.
  """
  counters = collections.Counter()
  layers, config_layers = [], []
  for layer in model.layers:
    cls = type(layer).__name__
    if cls in ("Functional", "Model"):
      new_name = f"model_{first_index + counters['model']}"
      counters["model"] += 1
      weights = []
      for v in layer.trainable_weights + layer.non_trainable_weights:
        owner, var = v.path.split("/")[-2:]
        weights.append((f"{owner}{scope_suffix}/{var}:0", v.numpy()))
      config_layers.append(
        {"class_name": "Model", "name": new_name, "config": {"name": new_name, "layers": []}}
      )
    else:
      if re.fullmatch(r"block\d_\w+|fc\d|predictions|flatten", layer.name):
        new_name = layer.name  # keras.applications names are not auto-generated.
      else:
        key = "input" if cls == "InputLayer" else _snake(cls)
        new_name = f"{key}_{first_index + counters[key]}"
        counters[key] += 1
      weights = []
      for v in layer.trainable_weights + layer.non_trainable_weights:
        var = v.path.split("/")[-1]
        if style == "keras1":
          short = {"kernel": "W", "bias": "b"}.get(var, var)
          weights.append((f"{new_name}_{short}_1:0", v.numpy()))
        else:
          weights.append((f"{new_name}{scope_suffix}/{var}:0", v.numpy()))
      cfg = {"name": new_name}
      if cls == "Conv2D":
        cfg["strides"] = list(layer.strides)
      config_layers.append({"class_name": cls, "name": new_name, "config": cfg})
    layers.append((new_name, weights))
  config = {"class_name": "Model", "config": {"name": "model_9", "layers": config_layers}}
  return layers, config


# ----------------------------------------------------------------------------------------
# torch.save formats.

_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage"}
_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001


class _Global:
  """A reference to ``module.name`` pickled with the GLOBAL opcode (no import needed)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # save_reduce() requires a callable; never called.
    raise NotImplementedError(f"{self.module}.{self.name} is a pickle placeholder")


class _Storage:
  def __init__(self, key, flat):
    self.key, self.flat = key, flat


class _Tensor:
  def __init__(self, rebuild, storage, offset, shape, stride):
    self.rebuild, self.storage = rebuild, storage
    self.offset, self.shape, self.stride = offset, shape, stride

  def __reduce__(self):
    args = (self.storage, self.offset, self.shape, self.stride)
    if self.rebuild.name == "_rebuild_tensor_v2":
      args += (False, collections.OrderedDict())  # requires_grad, backward hooks.
    return self.rebuild, args


class _TorchPickler(pickle._Pickler):  # Pure-Python pickler: overridable dispatch.
  dispatch = dict(pickle._Pickler.dispatch)

  def __init__(self, file, legacy):
    super().__init__(file, protocol=2)
    self.legacy = legacy
    self.globals = {}

  def glob(self, module, name):
    return self.globals.setdefault((module, name), _Global(module, name))

  def save_fake_global(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    self.memoize(obj)

  dispatch[_Global] = save_fake_global

  def persistent_id(self, obj):
    if not isinstance(obj, _Storage):
      return None
    storage_type = self.glob("torch", _STORAGE_NAMES[obj.flat.dtype])
    pid = ("storage", storage_type, obj.key, "cpu", obj.flat.size)
    return pid + (None,) if self.legacy else pid


def _tensors(state_dict, legacy, shared, transpose_2d):
  """(OrderedDict of _Tensor, {key: flat array}) laid out like torch would store them."""
  rebuild = _Global("torch._utils", "_rebuild_tensor" if legacy else "_rebuild_tensor_v2")
  storages, out = {}, collections.OrderedDict()
  if shared:  # One storage holding every tensor at an offset (a flattened-parameter buffer).
    flat = np.concatenate([np.ravel(v) for v in state_dict.values()]).astype(np.float32)
    storage = _Storage("0", flat)
    storages["0"] = flat
  offset = 0
  for i, (k, v) in enumerate(state_dict.items()):
    v = np.asarray(v, np.float32)
    if transpose_2d and v.ndim == 2:
      # Store the transpose and describe v as a strided (column-major) view of it.
      data, stride = np.ravel(v.T), (1, v.shape[0])
    else:
      data = np.ravel(v)
      stride = tuple(int(s) for s in np.cumprod((v.shape[1:] + (1,))[::-1])[::-1])
    if shared:
      flat[offset : offset + data.size] = data
      out[k] = _Tensor(rebuild, storage, offset, tuple(v.shape), stride)
      offset += data.size
    else:
      key = str(i) if not legacy else str(140_000_000 + 4096 * i)  # Legacy: ids as keys.
      storages[key] = data
      out[k] = _Tensor(rebuild, _Storage(key, data), 0, tuple(v.shape), stride)
  return out, storages


def _pickle(obj, legacy):
  buf = io.BytesIO()
  _TorchPickler(buf, legacy).dump(obj)
  return buf.getvalue()


def save_torch_zip(path, state_dict, prefix="archive", shared=False, transpose_2d=False):
  """``torch.save(state_dict, path)`` in the zip format, records under ``<prefix>/``."""
  tensors, storages = _tensors(state_dict, legacy=False, shared=shared, transpose_2d=transpose_2d)
  records = [("data.pkl", _pickle(tensors, legacy=False)), ("byteorder", b"little")]
  records += [(f"data/{k}", storages[k].astype("<f4").tobytes()) for k in sorted(storages)]
  records += [("version", b"3\n"), (".data/serialization_id", b"1234567890123456789")]
  with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
    for name, data in records:
      info = zipfile.ZipInfo(f"{prefix}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
      # Pad the local header's extra field so the data starts on a 64-byte boundary.
      header = 30 + len(info.filename) + 4
      pad = (-(raw.tell() + header)) % 64
      info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
      zf.writestr(info, data)


def save_torch_legacy(path, state_dict, shared=False):
  """``torch.save(state_dict, path, _use_new_zipfile_serialization=False)``."""
  tensors, storages = _tensors(state_dict, legacy=True, shared=shared, transpose_2d=False)
  sys_info = {
    "protocol_version": _PROTOCOL_VERSION,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
  }
  with open(path, "wb") as f:
    for header in (_MAGIC, _PROTOCOL_VERSION, sys_info):
      pickle.dump(header, f, protocol=2)
    f.write(_pickle(tensors, legacy=True))
    keys = sorted(storages)
    pickle.dump(keys, f, protocol=2)
    for k in keys:
      f.write(struct.pack("<q", storages[k].size))
      f.write(storages[k].astype("<f4").tobytes())
