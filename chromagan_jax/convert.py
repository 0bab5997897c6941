"""Weight converters: ImageNet VGG16 and the authors' ChromaGAN Keras files -> Flax variables.

Sources (see ``docs/weights.md`` for where to get them):
  * Keras' ImageNet VGG16, ``vgg16_weights_tf_dim_ordering_tf_kernels.h5`` (with the
    classifier top) and ``..._notop.h5``: weight-only HDF5 (``model.save_weights`` layout);
    trained with 'caffe' input preprocessing.
  * torchvision's ``vgg16-397923af.pth``: a pickled ``state_dict`` (``features.N.weight``,
    ``classifier.{0,3,6}.weight``), read here WITHOUT torch; trained with 'torch'
    preprocessing.
  * The authors' generator ``my_model_colorization.h5`` (full-model HDF5 of standalone Keras 2
    / TF1, or the same model re-saved by Keras 3 ``model.save('x.h5')``) and a critic h5 saved
    by their training script; trained with no preprocessing ('none').

Outputs are NumPy float32 pytrees with the Flax module names of :mod:`chromagan_jax.models`:
  * ``vgg16_from_*``: ``VGG16Classifier`` params ``{'vgg16': {block1_conv1 .. block5_conv3},
    'fc1', 'fc2', 'predictions'}``, or ``{'vgg16': ...}`` only for a notop file;
  * ``chromagan_generator_from_keras``: ``{'params', 'batch_stats'}`` of ``Generator``;
  * ``chromagan_critic_from_keras``: ``{'params'}`` of ``Critic``.

Layouts: Keras/Flax conv kernels are HWIO and Dense kernels (in, out); torch's are OIHW and
(out, in). torchvision flattens the 7x7x512 map in NCHW order before ``classifier.0`` while
``VGG16Classifier`` flattens NHWC (as Keras), so that kernel's input axis is permuted — a
classic silent bug that still gives plausible-looking logits.

CLI (writes an Orbax checkpoint directory; never overwrites one)::

  python -m chromagan_jax.convert vgg16 vgg16_weights_tf_dim_ordering_tf_kernels.h5 OUT
  python -m chromagan_jax.convert vgg16 vgg16-397923af.pth OUT
  python -m chromagan_jax.convert generator my_model_colorization.h5 OUT
  python -m chromagan_jax.convert critic my_model_discriminator.h5 OUT
"""

import argparse
import collections
import io
import json
import math
import os
import pickle
import re
import struct
import sys
import zipfile
from typing import Any

import numpy as np

from chromagan_jax.errors import ConversionError, UserError

# Input preprocessing each weight source was trained with (see models.vgg_preprocess).
PREPROCESSING_KERAS = "caffe"
PREPROCESSING_TORCH = "torch"
PREPROCESSING_CHROMAGAN = "none"

# VGG16 convolution names, in network order, and their channel counts at width 1.
VGG16_CONVS = tuple(
  f"block{b}_conv{i}"
  for b, (n, _) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), start=1)
  for i in range(1, n + 1)
)
TRUNK_CONVS = VGG16_CONVS[:10]  # block1_conv1 .. block4_conv3: the generator's trunk.
VGG16_TOP = ("fc1", "fc2", "predictions")

# The ChromaGAN generator's own layers per kind, in the order of the authors' model
# definition. Keras (2 and 3) lists a functional model's layers by decreasing depth (longest
# path to an output), ties broken by traversal order. In this graph that order, restricted
# to one kind of layer, is exactly the definition order: the four global convs (depths
# 23..17) precede the mid-level ones (13, 11), which precede the decoder (8..1); the fusion
# Dense layers (14..12) precede the class head (2..0); the global BNs (22..16) precede the
# mid-level ones (12, 10). The file's auto-generated names (conv2d_7, ...) depend on what
# else was built in the session and are never used. Shapes are checked for every layer and,
# when the file holds its model config, conv strides too (the five 512->512 convs differ
# only by stride and position).
GENERATOR_CONVS = (
  "global_conv1",
  "global_conv2",
  "global_conv3",
  "global_conv4",
  "mid_conv1",
  "mid_conv2",
  "dec_conv1",
  "dec_conv2",
  "dec_conv3",
  "dec_conv4",
  "dec_conv5",
  "dec_conv6",
)
GENERATOR_BNS = ("global_bn1", "global_bn2", "global_bn3", "global_bn4", "mid_bn1", "mid_bn2")
GENERATOR_DENSES = (
  "global_fc1",
  "global_fc2",
  "global_fc3",
  "class_fc1",
  "class_fc2",
  "class_fc3",
)
GENERATOR_STRIDES = {"global_conv1": 2, "global_conv3": 2}  # Others: 1.
CRITIC_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
CRITIC_STRIDES = {"conv1": 2, "conv2": 2, "conv3": 2, "conv4": 1, "conv5": 1}

# Files written by the CLI next to the Orbax data.
INFO_FILE = "conversion.json"
PARAMS_ITEM = "params"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_BN_VARS = {
  "gamma": "scale",
  "beta": "bias",
  "moving_mean": "mean",
  "running_mean": "mean",
  "moving_variance": "var",
  "running_std": "var",  # Keras 1 name; it held the variance despite the name.
}


# ----------------------------------------------------------------------------------------
# HDF5 (Keras) reading.


class _Layer(collections.namedtuple("_Layer", "name weights")):
  """One Keras layer group: ``weights`` is a list of (weight name, float32 array)."""


def _var_name(weight_name: str) -> str:
  """'conv2d_1/kernel:0' -> 'kernel'; 'block1_conv1_W_1:0' -> 'block1_conv1_W_1'."""
  return weight_name.split(":")[0].rsplit("/", 1)[-1]


def _owner_name(weight_name: str) -> str | None:
  """'block1_conv1/kernel:0' -> 'block1_conv1' (None when the name has no layer part)."""
  parts = weight_name.split(":")[0].split("/")
  return parts[-2] if len(parts) >= 2 else None


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


def _sniff(path) -> str:
  """'hdf5', 'zip', 'pickle', 'dir' or 'unknown' from the file's first bytes."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return "dir"
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  with open(path, "rb") as f:
    head = f.read(8)
  if head.startswith(_HDF5_MAGIC):
    return "hdf5"
  if head.startswith(_ZIP_MAGIC):
    return "zip"
  if head[:1] == b"\x80":  # Pickle protocol >= 2: torch's legacy (pre-1.6) format.
    return "pickle"
  return "unknown"


def read_keras_h5(path) -> tuple[list[_Layer], dict | None]:
  """Layers of a Keras HDF5 file in file (``layer_names``) order, and its model config.

  Accepts weight-only files (``layer_names`` on the root) and full-model files (a
  ``model_weights`` group). Layers without weights are dropped. Raises ConversionError for
  files that are not HDF5, are truncated, or lack the Keras attributes.
  """
  import h5py  # noqa: PLC0415 (only the HDF5 paths need it)

  path = os.fspath(path)
  kind = _sniff(path)
  if kind != "hdf5":
    raise ConversionError(f"{path}: not an HDF5 file (a Keras .h5 was expected)")
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
    if names is None:
      raise ConversionError(
        f"{path}: HDF5 file without a 'layer_names' attribute: not a Keras 2 / legacy-h5 "
        "weights or model file (Keras 3 '.keras' / '.weights.h5' files are not supported; "
        "re-save with model.save('x.h5'))"
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
        layers.append(_Layer(name, weights))
    config = f.attrs.get("model_config")
  if config is not None:
    config = json.loads(config.decode("utf8") if isinstance(config, bytes) else config)
  return layers, config


def _kernel_bias(path, layer: _Layer, kernel_ndim: int) -> dict[str, np.ndarray]:
  """{'kernel', 'bias'} of a conv (kernel_ndim 4) or Dense (2) layer."""
  arrays = [a for _, a in layer.weights]
  ndims = sorted(a.ndim for a in arrays)
  if ndims != [1, kernel_ndim]:
    kind = {4: "a convolution", 2: "a Dense layer"}[kernel_ndim]
    shapes = [a.shape for a in arrays]
    raise ConversionError(
      f"{path}: layer {layer.name!r} is not {kind} with bias (found weight shapes {shapes})"
    )
  kernel = next(a for a in arrays if a.ndim == kernel_ndim)
  bias = next(a for a in arrays if a.ndim == 1)
  return {"kernel": kernel, "bias": bias}


def _batch_norm(path, layer: _Layer) -> tuple[dict, dict]:
  """(params {'scale', 'bias'}, batch_stats {'mean', 'var'}) of a Keras BatchNormalization."""
  named = {}
  for w, a in layer.weights:
    var = _var_name(w)
    for suffix, flax_name in _BN_VARS.items():
      if var == suffix or var.endswith("_" + suffix) or re.search(rf"_{suffix}_\d+$", var):
        named[flax_name] = a
  if len(named) != 4:  # Unrecognised names: Keras' order is gamma, beta, mean, variance.
    named = dict(zip(("scale", "bias", "mean", "var"), (a for _, a in layer.weights), strict=False))
  return {"scale": named["scale"], "bias": named["bias"]}, {
    "mean": named["mean"],
    "var": named["var"],
  }


def _conv_strides(config) -> dict[str, int]:
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


# ----------------------------------------------------------------------------------------
# Shape checks.


def _keystr(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def check_shapes(found, expected, source) -> None:
  """Raises ConversionError naming the first leaf of ``expected`` missing or misshaped.

  ``expected``: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``
  of the model's init); ``found``: the converted pytree; ``source``: the file, for the message.
  """
  import jax  # noqa: PLC0415

  found_flat = {_keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(found)}
  for p, leaf in jax.tree_util.tree_leaves_with_path(expected):
    key = _keystr(p)
    if key not in found_flat:
      raise ConversionError(f"{source}: no weights for {key} (expected shape {leaf.shape})")
    got = tuple(np.shape(found_flat[key]))
    if got != tuple(leaf.shape):
      raise ConversionError(f"{source}: {key}: expected shape {tuple(leaf.shape)}, found {got}")


def _check_vgg_chain(source, params, include_top: bool) -> None:
  """Checks VGG16's internal shape consistency (3x3 kernels, channels chaining, fc sizes)."""
  trunk = params["vgg16"]
  cin = 3
  for name in VGG16_CONVS:
    k, b = trunk[name]["kernel"], trunk[name]["bias"]
    if k.ndim != 4 or k.shape[:3] != (3, 3, cin) or b.shape != (k.shape[3],):
      raise ConversionError(
        f"{source}: layer {name}: expected kernel (3, 3, {cin}, C) and bias (C,), "
        f"found {k.shape} and {b.shape}"
      )
    cin = k.shape[3]
  if not include_top:
    return
  fc1 = params["fc1"]["kernel"]
  if fc1.ndim != 2 or fc1.shape[0] % cin:
    raise ConversionError(
      f"{source}: layer fc1: expected a (H*W*{cin}, F) kernel over the block5 map, "
      f"found {fc1.shape}"
    )
  fin = fc1.shape[1]
  for name in VGG16_TOP:
    k, b = params[name]["kernel"], params[name]["bias"]
    if name != "fc1" and (k.ndim != 2 or k.shape[0] != fin):
      raise ConversionError(f"{source}: layer {name}: expected kernel ({fin}, F), found {k.shape}")
    if b.shape != (k.shape[1],):
      raise ConversionError(
        f"{source}: layer {name}: expected bias ({k.shape[1]},), found {b.shape}"
      )
    fin = k.shape[1]


# ----------------------------------------------------------------------------------------
# VGG16.


def _not_vgg16(source, names) -> None:
  """Raises for VGG19 (block*_conv4) or batch-norm VGG16 layouts."""
  extra = sorted(n for n in names if re.fullmatch(r"block\d_conv[4-9]", n))
  if extra:
    raise ConversionError(
      f"{source}: has layers {extra}: this is VGG19 (or another VGG), VGG16 was expected"
    )


def vgg16_from_keras(path, include_top: bool = True) -> dict[str, Any]:
  """VGG16Classifier params from Keras' ImageNet VGG16 HDF5 file.

  ``include_top=False`` reads only the 13 convolutions (works on both files) and returns
  ``{'vgg16': {...}}``. With ``include_top=True`` a notop file raises ConversionError.
  The weights expect 'caffe' preprocessing (BGR, 0-255, mean subtracted).
  """
  layers, _ = read_keras_h5(path)
  by_name = {layer.name: layer for layer in layers}
  _not_vgg16(path, by_name)
  missing = [n for n in VGG16_CONVS if n not in by_name]
  if missing:
    raise ConversionError(
      f"{path}: no VGG16 layers {missing[:3]}{'...' if len(missing) > 3 else ''} "
      f"(found {[layer.name for layer in layers][:5]}...): not a Keras VGG16 weights file"
    )
  params = {"vgg16": {n: _kernel_bias(path, by_name[n], 4) for n in VGG16_CONVS}}
  if include_top:
    missing = [n for n in VGG16_TOP if n not in by_name]
    if missing:
      raise ConversionError(
        f"{path}: has no classifier top (layers {missing} missing): a '_notop' file? The "
        "KL teacher needs vgg16_weights_tf_dim_ordering_tf_kernels.h5 (with top)"
      )
    params.update({n: _kernel_bias(path, by_name[n], 2) for n in VGG16_TOP})
  _check_vgg_chain(path, params, include_top)
  return params


def vgg16_from_torch(path) -> dict[str, Any]:
  """VGG16Classifier params from a torchvision VGG16 state dict (``vgg16-397923af.pth``).

  Read without torch. OIHW -> HWIO, Linear (out, in) -> Dense (in, out), and fc1's input
  axis permuted from torchvision's NCHW flatten to NHWC. torchvision's adaptive average
  pool to 7x7 is the identity at 224x224 inputs (the only size the weights were trained at).
  A state dict without ``classifier.*`` gives ``{'vgg16': ...}`` only. 'torch' preprocessing.
  """
  state = read_torch_state_dict(path)
  state = {k.removeprefix("module."): v for k, v in state.items()}
  if any(k.startswith("features.") and k.endswith("running_mean") for k in state):
    raise ConversionError(f"{path}: has batch-norm layers: this is vgg16_bn, plain VGG16 expected")

  def indexed(prefix):
    found = {}
    for k, v in state.items():
      m = re.fullmatch(rf"{prefix}\.(\d+)\.(weight|bias)", k)
      if m:
        found.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return [found[i] for i in sorted(found)]

  convs = indexed("features")
  if not convs:
    raise ConversionError(
      f"{path}: no 'features.N.weight' tensors (found {list(state)[:4]}...): not a "
      "torchvision VGG16 state dict"
    )
  if len(convs) != len(VGG16_CONVS):
    raise ConversionError(
      f"{path}: has {len(convs)} convolutions, VGG16 has {len(VGG16_CONVS)} "
      f"({'VGG19?' if len(convs) == 16 else 'another network?'})"
    )
  trunk = {}
  for name, layer in zip(VGG16_CONVS, convs, strict=True):
    w = layer.get("weight")
    if w is None or w.ndim != 4 or "bias" not in layer:
      raise ConversionError(f"{path}: {name}: expected an OIHW conv weight and a bias")
    trunk[name] = {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": layer["bias"]}
  params = {"vgg16": trunk}
  linears = indexed("classifier")
  if linears:
    if len(linears) != len(VGG16_TOP) or any(lin.get("weight") is None for lin in linears):
      raise ConversionError(
        f"{path}: expected 3 Linear layers classifier.0/3/6, found {len(linears)}"
      )
    channels = trunk[VGG16_CONVS[-1]]["kernel"].shape[3]
    for name, layer in zip(VGG16_TOP, linears, strict=True):
      w = layer["weight"]
      if w.ndim != 2 or "bias" not in layer:
        raise ConversionError(f"{path}: {name}: expected a (out, in) Linear weight and a bias")
      if name == "fc1":
        side = math.isqrt(w.shape[1] // channels)
        if w.shape[1] != side * side * channels:
          raise ConversionError(
            f"{path}: classifier.0: expected weight (F, {channels}*H*W) over a square map, "
            f"found {w.shape}"
          )
        # Input index c*H*W + h*W + w (NCHW flatten) -> h*W*C + w*C + c (NHWC flatten).
        kernel = w.reshape(w.shape[0], channels, side, side).transpose(2, 3, 1, 0)
        kernel = kernel.reshape(-1, w.shape[0])
      else:
        kernel = w.T
      params[name] = {"kernel": np.ascontiguousarray(kernel), "bias": layer["bias"]}
  _check_vgg_chain(path, params, include_top=bool(linears))
  return params


def vgg16_trunk_params(classifier_params) -> dict[str, Any]:
  """The generator's ``params['vgg16']`` (block1_conv1 .. block4_conv3) from VGG16 params.

  Accepts classifier params (``{'vgg16': ..., 'fc1': ...}``) or trunk-only ``{'vgg16': ...}``.
  """
  trunk = classifier_params["vgg16"]
  return {name: dict(trunk[name]) for name in TRUNK_CONVS}


def has_top(params) -> bool:
  """Whether VGG16 params include the classifier (fc1, fc2, predictions)."""
  return all(n in params for n in VGG16_TOP)


def load_vgg16(path, require_top: bool = True) -> tuple[dict[str, Any], str]:
  """(VGG16 params, preprocessing the weights were trained with) from any supported source.

  ``path``: Keras .h5 (with top; notop only when ``require_top=False``), torchvision .pth,
  or a directory written by ``python -m chromagan_jax.convert vgg16``. Preprocessing is one
  of ``models.VGG_PREPROCESSING``: 'caffe' (Keras), 'torch' (torchvision).
  """
  path = os.fspath(path)
  kind = _sniff(path)
  if kind == "dir":
    params, info = load_params(path, expect_kind="vgg16")
    if require_top and not has_top(params):
      raise ConversionError(
        f"{path}: converted from a notop file (no fc1/fc2/predictions): the KL teacher "
        "needs VGG16 with its classifier top"
      )
    return params, info["preprocessing"]
  if kind == "hdf5":
    return vgg16_from_keras(path, include_top=require_top), PREPROCESSING_KERAS
  if kind in ("zip", "pickle"):
    params = vgg16_from_torch(path)
    if require_top and not has_top(params):
      raise ConversionError(f"{path}: state dict has no classifier.* layers (no top)")
    return params, PREPROCESSING_TORCH
  raise ConversionError(
    f"{path}: not a Keras .h5, a torch .pth or a converted directory (unrecognised content)"
  )


# ----------------------------------------------------------------------------------------
# ChromaGAN generator and critic (the authors' Keras files).


def _split_generator_layers(path, layers):
  """(trunk {block name: layer}, convs, bns, denses) of a generator file, in file order."""
  trunk, convs, bns, denses = {}, [], [], []
  for layer in layers:
    owners = {_owner_name(w) for w, _ in layer.weights}
    if re.fullmatch(r"block\d_conv\d", layer.name):  # Trunk not nested (flattened model).
      trunk[layer.name] = layer
    elif any(o and re.fullmatch(r"block\d_conv\d", o) for o in owners):
      # The nested VGG sub-model: its weight names carry the VGG layer names.
      for owner in sorted(o for o in owners if o):
        ws = [(w, a) for w, a in layer.weights if _owner_name(w) == owner]
        trunk[owner] = _Layer(f"{layer.name}/{owner}", ws)
    else:
      ndims = sorted(a.ndim for _, a in layer.weights)
      if ndims == [1, 4]:
        convs.append(layer)
      elif ndims == [1, 2]:
        denses.append(layer)
      elif ndims == [1, 1, 1, 1]:
        bns.append(layer)
      else:
        shapes = [a.shape for _, a in layer.weights]
        raise ConversionError(
          f"{path}: layer {layer.name!r} with weight shapes {shapes} is not part of ChromaGAN "
          "(expected conv, batch-norm and Dense layers and a nested VGG16 trunk)"
        )
  return trunk, convs, bns, denses


def _assign(path, kind, flax_names, layers) -> list[tuple[str, _Layer]]:
  if len(layers) != len(flax_names):
    raise ConversionError(
      f"{path}: found {len(layers)} {kind} layers "
      f"({[layer.name for layer in layers]}), ChromaGAN has {len(flax_names)}"
    )
  return list(zip(flax_names, layers, strict=True))


def _check_strides(path, pairs, config, expected: dict[str, int]) -> None:
  """Cross-checks conv strides against the file's model config, when it has one."""
  strides = _conv_strides(config) if config else {}
  for flax_name, layer in pairs:
    if layer.name in strides and strides[layer.name] != expected.get(flax_name, 1):
      raise ConversionError(
        f"{path}: layer {layer.name!r} (mapped to {flax_name}) has stride "
        f"{strides[layer.name]}, expected {expected.get(flax_name, 1)}: the layer order in "
        "this file is not the authors' model definition order"
      )


def _infer_generator_model(path, params) -> dict[str, Any]:
  """The ``config.model`` fields (width, image_size, classes, fc width) the weights fit."""
  c64 = params["vgg16"]["block1_conv1"]["kernel"].shape[3]
  width = c64 / 64
  from chromagan_jax import models  # noqa: PLC0415

  c512 = models.scaled(512, width)
  fc_out = params["class_fc1"]["kernel"].shape[1]
  side = math.isqrt(max(1, params["global_fc1"]["kernel"].shape[0] // c512))
  if params["global_fc1"]["kernel"].shape[0] != side * side * c512:
    raise ConversionError(
      f"{path}: global_fc1: expected kernel (H*W*{c512}, F) over the square global feature "
      f"map, found {params['global_fc1']['kernel'].shape}"
    )
  return {
    "image_size": 32 * side,
    "width": width,
    "num_classes": int(params["class_fc3"]["kernel"].shape[1]),
    "fc_width": int(round(fc_out / width)),
    "vgg_preprocessing": PREPROCESSING_CHROMAGAN,
    "remat_trunk": False,
  }


def _generator_model(model_config):
  from chromagan_jax import models  # noqa: PLC0415

  return models.Generator(
    image_size=model_config["image_size"],
    width=model_config["width"],
    num_classes=model_config["num_classes"],
    fc_width=model_config["fc_width"],
    vgg_preprocessing=model_config["vgg_preprocessing"],
  )


def _abstract_variables(model, *inputs):
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in inputs]
  return jax.eval_shape(lambda *x: model.init(jax.random.key(0), *x), *shapes)


def chromagan_generator_with_config(path) -> tuple[dict[str, Any], dict[str, Any]]:
  """(``{'params', 'batch_stats'}``, the ``config.model`` fields they fit) from an h5 file."""
  layers, config = read_keras_h5(path)
  trunk_layers, convs, bns, denses = _split_generator_layers(path, layers)
  _not_vgg16(path, trunk_layers)
  missing = [n for n in TRUNK_CONVS if n not in trunk_layers]
  if missing:
    raise ConversionError(
      f"{path}: no VGG16 trunk layers {missing[:3]} (found layers "
      f"{[layer.name for layer in layers][:6]}...): not a ChromaGAN generator file"
    )
  extra = sorted(set(trunk_layers) - set(TRUNK_CONVS))
  if extra:
    raise ConversionError(
      f"{path}: has VGG16 layers {extra} beyond block4_conv3: a VGG16 file? (not a ChromaGAN "
      "generator, whose trunk ends at block4_conv3)"
    )
  params = {"vgg16": {n: _kernel_bias(path, trunk_layers[n], 4) for n in TRUNK_CONVS}}
  batch_stats = {}
  conv_pairs = _assign(path, "convolution", GENERATOR_CONVS, convs)
  bn_pairs = _assign(path, "batch-norm", GENERATOR_BNS, bns)
  dense_pairs = _assign(path, "Dense", GENERATOR_DENSES, denses)
  _check_strides(path, conv_pairs, config, GENERATOR_STRIDES)
  for flax_name, layer in conv_pairs:
    params[flax_name] = _kernel_bias(path, layer, 4)
  for flax_name, layer in bn_pairs:
    params[flax_name], batch_stats[flax_name] = _batch_norm(path, layer)
  for flax_name, layer in dense_pairs:
    params[flax_name] = _kernel_bias(path, layer, 2)
  variables = {"params": params, "batch_stats": batch_stats}
  names = dict(conv_pairs + bn_pairs + dense_pairs)
  model_config = _infer_generator_model(path, params)
  size = model_config["image_size"]
  expected = _abstract_variables(_generator_model(model_config), (1, size, size, 3))
  _check_with_layer_names(path, variables, expected, names)
  return variables, model_config


def _check_with_layer_names(path, variables, expected, names) -> None:
  """check_shapes, with the file's layer name added to the message."""
  try:
    check_shapes(variables, expected, path)
  except ConversionError as e:
    msg = str(e)
    for flax_name, layer in names.items():
      if f"/{flax_name}/" in msg:
        msg = msg.replace(f"/{flax_name}/", f"/{flax_name} (file layer {layer.name!r})/", 1)
        break
    raise ConversionError(msg) from None


def chromagan_generator_from_keras(path) -> dict[str, Any]:
  """Generator variables ``{'params', 'batch_stats'}`` from the authors' h5 (Keras 2 or 3).

  The model fields the weights fit (width 1, image_size 224 for the released file) are
  inferred from the shapes; see :func:`chromagan_generator_with_config`.
  """
  return chromagan_generator_with_config(path)[0]


def chromagan_critic_from_keras(path) -> dict[str, Any]:
  """Critic variables ``{'params': {conv1 .. conv5}}`` from a Keras h5 of the critic."""
  layers, config = read_keras_h5(path)
  for layer in layers:
    if sorted(a.ndim for _, a in layer.weights) != [1, 4]:
      raise ConversionError(
        f"{path}: layer {layer.name!r} is not a convolution: the ChromaGAN critic has only "
        "convolutions (is this a generator file?)"
      )
  pairs = _assign(path, "convolution", CRITIC_CONVS, layers)
  _check_strides(path, pairs, config, CRITIC_STRIDES)
  params = {name: _kernel_bias(path, layer, 4) for name, layer in pairs}
  from chromagan_jax import models  # noqa: PLC0415

  width = params["conv1"]["kernel"].shape[3] / 64
  expected = _abstract_variables(models.Critic(width=width), (1, 32, 32, 2), (1, 32, 32, 1))
  _check_with_layer_names(path, {"params": params}, expected, dict(pairs))
  return {"params": params}


def critic_width(critic_variables) -> float:
  """The ``config.model.width`` a converted critic was built with."""
  return critic_variables["params"]["conv1"]["kernel"].shape[3] / 64


def generator_model_fields(variables, source="generator") -> dict[str, Any]:
  """The ``config.model`` fields (image_size, width, num_classes, ...) generator variables fit.

  Inferred from the shapes, for any source (the authors' h5, a converted or trained
  checkpoint); ``source`` names it in errors.
  """
  return _infer_generator_model(source, variables["params"])


# ----------------------------------------------------------------------------------------
# torch .pth reading without torch.

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
    import ml_dtypes  # noqa: PLC0415

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


def read_torch_state_dict(path) -> dict[str, np.ndarray]:
  """A torch-saved state dict as {key: float32 ndarray}, without importing torch.

  Reads both of torch.save's formats: the zip archive (torch >= 1.6: ``<name>/data.pkl``
  whose persistent ids point at ``<name>/data/<key>`` records) and the legacy pickle stream
  (torchvision's 2017 files: magic number, protocol, system info, the pickle, then the
  storages' raw bytes). Only OrderedDict, tensor-rebuild functions and storage types are
  unpickled; anything else raises ConversionError.
  """
  path = os.fspath(path)
  kind = _sniff(path)
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


# ----------------------------------------------------------------------------------------
# Converted directories.


def save_params(directory, params, info: dict[str, Any]) -> None:
  """Writes ``params`` as an Orbax PyTree checkpoint plus ``conversion.json`` (``info``)."""
  import orbax.checkpoint as ocp  # noqa: PLC0415

  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, PARAMS_ITEM), params)
    ckptr.wait_until_finished()
  _write_info(directory, info)


def _write_info(directory, info) -> None:
  with open(os.path.join(directory, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
    f.write("\n")


def read_info(directory) -> dict[str, Any]:
  """The ``conversion.json`` of a converted directory."""
  file = os.path.join(os.fspath(directory), INFO_FILE)
  if not os.path.isfile(file):
    raise ConversionError(
      f"{directory}: no {INFO_FILE}: not a directory written by python -m chromagan_jax.convert"
    )
  with open(file) as f:
    return json.load(f)


def load_params(directory, expect_kind: str | None = None) -> tuple[dict[str, Any], dict]:
  """(params as NumPy arrays, info) of a directory written by :func:`save_params`."""
  import orbax.checkpoint as ocp  # noqa: PLC0415

  directory = os.path.abspath(os.fspath(directory))
  info = read_info(directory)
  if expect_kind and info.get("kind") != expect_kind:
    raise ConversionError(
      f"{directory}: holds converted {info.get('kind')!r} weights, {expect_kind!r} expected"
    )
  import jax  # noqa: PLC0415

  item = os.path.join(directory, PARAMS_ITEM)
  if not os.path.isdir(item):
    raise ConversionError(f"{directory}: no {PARAMS_ITEM}/ checkpoint next to {INFO_FILE}")
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(item)  # No target: NumPy arrays as saved.
  return jax.tree.map(np.asarray, params), info


def load_generator_variables(path) -> dict[str, Any]:
  """Generator ``{'params', 'batch_stats'}`` from the authors' h5 or a checkpoint directory.

  A directory may be a training workdir, its ``checkpoints`` directory or the output of
  ``convert generator``. Any other file raises ConversionError naming it.
  """
  kind = _sniff(path)
  if kind == "hdf5":
    return chromagan_generator_from_keras(path)
  if kind != "dir":
    raise ConversionError(f"{path}: not a Keras .h5 generator file nor a checkpoint directory")
  from chromagan_jax import checkpoint  # noqa: PLC0415

  return checkpoint.load_generator(path)[0]


def load_critic(path) -> dict[str, Any]:
  """Critic ``{'params'}`` from a Keras h5 of the critic or a ``convert critic`` directory."""
  kind = _sniff(path)
  if kind == "hdf5":
    return chromagan_critic_from_keras(path)
  if kind != "dir":
    raise ConversionError(f"{path}: not a Keras .h5 critic file nor a converted critic directory")
  params, _ = load_params(path, expect_kind="critic")
  return {"params": params}


# ----------------------------------------------------------------------------------------
# CLI.


def _count(tree) -> int:
  import jax  # noqa: PLC0415

  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def convert(kind: str, source, out) -> str:
  """Converts ``source`` into the directory ``out`` (must not exist or be empty).

  Returns a one-line summary. ``kind``: 'vgg16', 'generator' or 'critic'.
  """
  source, out = os.fspath(source), os.path.abspath(os.fspath(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ConversionError(f"{out}: already exists and is not empty; choose a new directory")
  info = {"kind": kind, "source": os.path.abspath(source)}
  if kind == "vgg16":
    sniffed = _sniff(source)
    if sniffed == "hdf5":
      layers, _ = read_keras_h5(source)
      top = all(n in {layer.name for layer in layers} for n in VGG16_TOP)
      params, pre = vgg16_from_keras(source, include_top=top), PREPROCESSING_KERAS
    else:
      params, pre = load_vgg16(source, require_top=False)
    info.update(preprocessing=pre, include_top=has_top(params))
    save_params(out, params, info)
    what = "VGG16 classifier" if has_top(params) else "VGG16 convolutions (notop)"
    summary = f"{what}, {_count(params):,} parameters, trained with {pre!r} preprocessing"
  elif kind == "generator":
    variables, model_config = chromagan_generator_with_config(source)
    from chromagan_jax import checkpoint  # noqa: PLC0415

    config = {"model": model_config, "converted_from": info["source"]}
    checkpoint.save_generator(out, variables, config)
    info.update(preprocessing=PREPROCESSING_CHROMAGAN, model=model_config)
    _write_info(out, info)
    summary = (
      f"ChromaGAN generator, {_count(variables):,} values (image_size "
      f"{model_config['image_size']}, width {model_config['width']}), colorize.py --ckpt {out}"
    )
  elif kind == "critic":
    variables = chromagan_critic_from_keras(source)
    info.update(width=critic_width(variables))
    save_params(out, variables["params"], info)
    summary = f"ChromaGAN critic, {_count(variables):,} parameters"
  else:
    raise ConversionError(f"unknown kind {kind!r}; expected vgg16, generator or critic")
  return f"wrote {out}: {summary} (from {source})"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m chromagan_jax.convert",
    description="Convert VGG16 / ChromaGAN weights into an Orbax checkpoint directory.",
  )
  parser.add_argument(
    "kind",
    choices=("vgg16", "generator", "critic"),
    help="vgg16: Keras .h5 (with top or _notop) or torchvision .pth; generator / critic: "
    "the authors' Keras .h5",
  )
  parser.add_argument("source", help="weight file to read")
  parser.add_argument("out", help="output directory (must not exist or be empty)")
  args = parser.parse_args(argv)
  try:
    print(convert(args.kind, args.source, args.out))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
