"""Keras HDF5 weight files read with h5py: layers in file order, their arrays, the model config.

Reads standalone Keras 1/2 (TF1) files and Keras 3's legacy ``.h5`` (``model.save('x.h5')``,
``save_weights('x.h5')``): weight-only files (``layer_names`` on the root) and full-model
files (a ``model_weights`` group plus the JSON ``model_config``). Arrays come back as float32
NumPy; mapping them onto our models is :mod:`chromagan_jax.weights.keras_port`.
"""

import collections
import json
import os
import re
import zipfile

import h5py
import numpy as np

from chromagan_jax.errors import ConversionError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path) -> bool:
  """Whether the file starts with the HDF5 signature."""
  with open(path, "rb") as f:
    return f.read(len(HDF5_MAGIC)) == HDF5_MAGIC


# How HTML pages start (after a byte-order mark and whitespace): what a failed download saves.
_WEB_PAGE_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml", b"<meta")
# Members of a Keras 3 '.keras' archive (a zip).
_KERAS3_ARCHIVE = ("config.json", "model.weights.h5")
KERAS3_REMEDY = (
  "load it in Keras 3 (keras.saving.load_model('x.keras'), or build the model and "
  "model.load_weights('x.weights.h5')), save the legacy format with model.save('x.h5') and "
  "convert that"
)


def looks_like_web_page(path) -> bool:
  """Whether the file starts like an HTML/XML page (a download that saved an error page)."""
  with open(path, "rb") as f:
    head = f.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
  return head.startswith(_WEB_PAGE_STARTS)


def is_keras3_archive(path) -> bool:
  """Whether the file is a Keras 3 ``.keras`` zip archive (config.json + model.weights.h5)."""
  try:
    with zipfile.ZipFile(path) as zf:
      names = set(zf.namelist())
  except (zipfile.BadZipFile, OSError):
    return False
  return all(n in names for n in _KERAS3_ARCHIVE)


def not_hdf5_message(path, expected: str | None = None) -> str:
  """One line saying what a non-HDF5 file given as Keras weights is, and what to do.

  ``expected``: the real file's name and size range, named when the file looks like a
  failed download (an HTML page).
  """
  size = os.path.getsize(path)
  if looks_like_web_page(path):
    real = f"; the real file is {expected}" if expected else ""
    return (
      f"{path}: not an HDF5 file: it starts like a web page ({size:,} bytes of HTML), which "
      "is what a failed download saves (Google Drive answers large files, exceeded quotas "
      "and private links with a page instead of the file); download it again, in a browser "
      f"if needed ('Download anyway'){real}"
    )
  if is_keras3_archive(path):
    return f"{path}: a Keras 3 '.keras' archive, not a legacy Keras .h5: {KERAS3_REMEDY}"
  return f"{path}: not an HDF5 file (a Keras .h5 was expected; {size:,} bytes)"


def _is_keras3_weights(f) -> bool:
  """Whether an open HDF5 file has Keras 3's ``.weights.h5`` layout (weights by object path)."""
  return any(k in f for k in ("layers", "vars", "_layer_checkpoint_dependencies"))


class Layer(collections.namedtuple("Layer", "name weights")):
  """One Keras layer group: ``weights`` is a list of (weight name, float32 array)."""


def var_name(weight_name: str) -> str:
  """'conv2d_1/kernel:0' -> 'kernel'; 'block1_conv1_W_1:0' -> 'block1_conv1_W_1'."""
  return weight_name.split(":")[0].rsplit("/", 1)[-1]


def owner_name(weight_name: str) -> str | None:
  """'block1_conv1/kernel:0' -> 'block1_conv1' (None when the name has no layer part)."""
  parts = weight_name.split(":")[0].split("/")
  return parts[-2] if len(parts) >= 2 else None


# TF1 Keras names a layer's variables inside a TF ``name_scope``, which TF makes unique in the
# graph: a second VGG16 built in the same process (a teacher built before ``load_model``, a
# notebook cell run twice) saves ``block1_conv1_1/kernel:0``. Keras loads such files by
# position; the converter strips the suffix where it reads names.
_VGG_SCOPE = re.compile(r"(block\d_conv\d)(?:_\d+)?")


def vgg_scope(scope: str | None) -> str | None:
  """'block1_conv1' or its TF1-uniquified 'block1_conv1_1' -> 'block1_conv1'; else None."""
  m = _VGG_SCOPE.fullmatch(scope or "")
  return m.group(1) if m else None


def _attr_strings(group, name: str) -> list[str] | None:
  """A Keras string-list attribute, possibly chunked (``name0``, ``name1``, ...) when large."""
  if name in group.attrs:
    values = list(group.attrs[name])
  elif f"{name}0" in group.attrs:
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
      values.extend(group.attrs[f"{name}{chunk}"])
      chunk += 1
  else:
    return None
  return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_layers(path, expected: str | None = None) -> tuple[list[Layer], dict | None]:
  """Layers of a Keras HDF5 file in file (``layer_names``) order, and its model config.

  Accepts weight-only files (``layer_names`` on the root) and full-model files (a
  ``model_weights`` group). Layers without weights are dropped. Raises ConversionError for
  files that are not HDF5 (:func:`not_hdf5_message`; ``expected`` names the real file and
  its size), are truncated, or lack the Keras attributes (Keras 3 files say how to convert).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  if not is_hdf5(path):
    raise ConversionError(not_hdf5_message(path, expected))
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ConversionError(
      f"{path}: cannot read this HDF5 file (truncated or corrupt?): {e}"
    ) from None
  layers = []
  with f:
    root = f["model_weights"] if "model_weights" in f else f
    names = _attr_strings(root, "layer_names")
    if names is None and _is_keras3_weights(f):
      raise ConversionError(
        f"{path}: a Keras 3 '.weights.h5' file (weights stored by object path, without layer "
        f"names), not a legacy Keras .h5: {KERAS3_REMEDY}"
      )
    if names is None:
      raise ConversionError(
        f"{path}: HDF5 file without a 'layer_names' attribute: not a Keras 2 / legacy-h5 "
        "weights or model file"
      )
    for name in names:
      if name not in root:
        raise ConversionError(f"{path}: layer {name!r} is listed but has no group (truncated?)")
      group = root[name]
      weight_names = _attr_strings(group, "weight_names") or []
      weights = []
      for w in weight_names:
        try:
          weights.append((w, np.asarray(group[w], dtype=np.float32)))
        except (OSError, KeyError, ValueError) as e:
          raise ConversionError(
            f"{path}: cannot read weight {w!r} of layer {name!r} (truncated file?): {e}"
          ) from e
      if weights:
        layers.append(Layer(name, weights))
    config = f.attrs.get("model_config")
  if config is not None:
    config = json.loads(config.decode("utf8") if isinstance(config, bytes) else config)
  return layers, config


def conv_strides(config) -> dict[str, int]:
  """Conv2D layer name -> stride (first axis) found anywhere in a Keras model config."""
  strides = {}

  def walk(node):
    if isinstance(node, dict):
      if node.get("class_name") == "Conv2D" and isinstance(node.get("config"), dict):
        cfg = node["config"]
        if "name" in cfg and "strides" in cfg:
          s = cfg["strides"]
          strides[cfg["name"]] = int(s[0] if isinstance(s, list | tuple) else s)
      for v in node.values():
        walk(v)
    elif isinstance(node, list):
      for v in node:
        walk(v)

  walk(config)
  return strides
