"""Outside weights onto our models: ImageNet VGG16 and the authors' ChromaGAN files.

Sources (see ``docs/weights.md`` for where to get them):
  * Keras' ImageNet VGG16, ``vgg16_weights_tf_dim_ordering_tf_kernels.h5`` (with the
    classifier top) and ``..._notop.h5``: weight-only HDF5 (``model.save_weights`` layout);
    trained with 'caffe' input preprocessing.
  * torchvision's ``vgg16-397923af.pth``: a pickled ``state_dict`` (``features.N.weight``,
    ``classifier.{0,3,6}.weight``), read WITHOUT torch; trained with 'torch' preprocessing.
  * The authors' generator ``my_model_colorization.h5`` (full-model HDF5 of standalone Keras 2
    / TF1, or the same model re-saved by Keras 3 ``model.save('x.h5')``) and a critic h5 saved
    by their training script; trained with no preprocessing ('none').
  * Directories: ``python -m chromagan_jax.convert`` outputs and training workdirs
    (:mod:`chromagan_jax.weights.checkpoint`).

Reading the files is :mod:`keras_h5` and :mod:`torch_pickle`; checking shapes against a
config is :mod:`shapes`. This module maps the arrays onto the Flax names of
:mod:`chromagan_jax.model.networks` (NumPy float32 pytrees) and loads what a training run starts
from: the VGG16 teacher and trunk (``config.vgg_weights``), the generator (``init_from``) and
the critic (``init_critic_from``), each checked against ``config.model``:
  * VGG16: ``VGG16Classifier`` params ``{'vgg16': {block1_conv1 .. block5_conv3}, 'fc1',
    'fc2', 'predictions'}``, or ``{'vgg16': ...}`` alone from a notop file;
  * generator: ``{'params', 'batch_stats'}`` of ``Generator``; critic: ``{'params'}``.

Layouts: Keras/Flax conv kernels are HWIO and Dense kernels (in, out); torch's are OIHW and
(out, in). torchvision flattens the 7x7x512 map in NCHW order before ``classifier.0`` while
``VGG16Classifier`` flattens NHWC (as Keras), so that kernel's input axis is permuted — a
classic silent bug that still gives plausible-looking logits.
"""

import dataclasses
import math
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from chromagan_jax.errors import ConversionError, ShapeError
from chromagan_jax.model import networks, shapes
from chromagan_jax.weights import checkpoint, keras_h5, torch_pickle

# Input preprocessing each weight source was trained with (see networks.vgg_preprocess).
PREPROCESSING_KERAS = "caffe"
PREPROCESSING_TORCH = "torch"
PREPROCESSING_CHROMAGAN = "none"

# VGG16 layer names in network order (the table is networks.VGG16_BLOCKS).
VGG16_CONVS = tuple(
  f"block{b}_conv{i}"
  for b, (n, _) in enumerate(networks.VGG16_BLOCKS, start=1)
  for i in range(1, n + 1)
)
# block1_conv1 .. block4_conv3: the generator's trunk (networks.TRUNK_DEPTH blocks).
TRUNK_CONVS = VGG16_CONVS[: sum(n for n, _ in networks.VGG16_BLOCKS[: networks.TRUNK_DEPTH])]
VGG16_TOP = networks.VGG16_TOP

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
_GLOBAL_CONVS = tuple(f"global_conv{i}" for i in range(1, len(networks.GLOBAL_STRIDES) + 1))
GENERATOR_CONVS = (
  *_GLOBAL_CONVS,
  "mid_conv1",
  "mid_conv2",
  *(f"dec_conv{i}" for i in range(1, 7)),
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
GENERATOR_STRIDES = dict(zip(_GLOBAL_CONVS, networks.GLOBAL_STRIDES, strict=True))  # Others: 1.
CRITIC_CONVS = tuple(f"conv{i}" for i in range(1, len(networks.CRITIC_LAYERS) + 2))
CRITIC_STRIDES = {f"conv{i}": s for i, (_, s) in enumerate(networks.CRITIC_LAYERS, start=1)}

# The real files' sizes, named when a download saved a web page instead (keras_h5.not_hdf5_message):
# the generator holds 171 M float32 values (685 MB), x3 with the Adam slots model.save keeps;
# the critic 2.8 M (11 MB).
EXPECTED_FILES = {
  "generator": "my_model_colorization.h5, 0.68-2.1 GB (with or without the optimizer state)",
  "critic": "my_model_discriminator.h5, 11-34 MB",
  "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels.h5, 553 MB (the _notop file 59 MB; "
  "torchvision's vgg16-397923af.pth 553 MB)",
}

_BN_VARS = {
  "gamma": "scale",
  "beta": "bias",
  "moving_mean": "mean",
  "running_mean": "mean",
  "moving_variance": "var",
  "running_std": "var",  # Keras 1 name; it held the variance despite the name.
}


# ----------------------------------------------------------------------------------------
# What a path holds.


def source_kind(path) -> str:
  """'hdf5', 'torch' (zip or legacy pickle), 'keras3' (a ``.keras`` zip), 'msgpack' (our
  weights file, :func:`checkpoint.save_msgpack`), 'dir' or 'unknown' from the file's first
  bytes.

  Raises ConversionError when nothing exists at ``path``.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    return "dir"
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  if keras_h5.is_hdf5(path):
    return "hdf5"
  if checkpoint.is_msgpack_file(path):
    return "msgpack"
  if keras_h5.is_keras3_archive(path):
    return "keras3"
  if torch_pickle.file_kind(path):
    return "torch"
  return "unknown"


# ----------------------------------------------------------------------------------------
# Keras layers -> Flax variables.


def _kernel_bias(path, layer: keras_h5.Layer, kernel_ndim: int) -> dict[str, np.ndarray]:
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


def _batch_norm(path, layer: keras_h5.Layer) -> tuple[dict, dict]:
  """(params {'scale', 'bias'}, batch_stats {'mean', 'var'}) of a Keras BatchNormalization."""
  named = {}
  for w, a in layer.weights:
    var = keras_h5.var_name(w)
    for suffix, flax_name in _BN_VARS.items():
      if var == suffix or var.endswith("_" + suffix) or re.search(rf"_{suffix}_\d+$", var):
        named[flax_name] = a
  if len(named) != 4:  # Unrecognised names: Keras' order is gamma, beta, mean, variance.
    named = dict(zip(("scale", "bias", "mean", "var"), (a for _, a in layer.weights), strict=False))
  return {"scale": named["scale"], "bias": named["bias"]}, {
    "mean": named["mean"],
    "var": named["var"],
  }


# ----------------------------------------------------------------------------------------
# VGG16.


def _not_vgg16(source, names) -> None:
  """Raises for VGG19 (block*_conv4) or batch-norm VGG16 layouts."""
  extra = sorted(n for n in names if re.fullmatch(r"block\d_conv[4-9]", n))
  if extra:
    raise ConversionError(
      f"{source}: has layers {extra}: this is VGG19 (or another VGG), VGG16 was expected"
    )


def _require_vgg16_layers(path, wanted, found, layers, what: str) -> None:
  """Raises naming the first VGG16 layers of ``wanted`` absent from ``found``."""
  missing = [n for n in wanted if n not in found]
  if missing:
    names = [layer.name for layer in layers][:6]
    raise ConversionError(
      f"{path}: no VGG16 layers {missing[:3]}{'...' if len(missing) > 3 else ''} (found "
      f"layers {names}...): not {what}"
    )


def vgg16_from_keras(path, include_top: bool = True) -> dict[str, Any]:
  """VGG16Classifier params from Keras' ImageNet VGG16 HDF5 file.

  ``include_top=False`` reads only the 13 convolutions (works on both files) and returns
  ``{'vgg16': {...}}``. With ``include_top=True`` a notop file raises ConversionError.
  The weights expect 'caffe' preprocessing (BGR, 0-255, mean subtracted).
  """
  layers, _ = keras_h5.read_layers(path, EXPECTED_FILES["vgg16"])
  by_name = {layer.name: layer for layer in layers}
  _not_vgg16(path, by_name)
  _require_vgg16_layers(path, VGG16_CONVS, by_name, layers, "a Keras VGG16 weights file")
  params = {"vgg16": {n: _kernel_bias(path, by_name[n], 4) for n in VGG16_CONVS}}
  if include_top:
    missing = [n for n in VGG16_TOP if n not in by_name]
    if missing:
      raise ConversionError(
        f"{path}: has no classifier top (layers {missing} missing): a '_notop' file? The "
        "KL teacher needs vgg16_weights_tf_dim_ordering_tf_kernels.h5 (with top)"
      )
    params.update({n: _kernel_bias(path, by_name[n], 2) for n in VGG16_TOP})
  _check_vgg16(path, params)
  return params


def vgg16_from_torch(path) -> dict[str, Any]:
  """VGG16Classifier params from a torchvision VGG16 state dict (``vgg16-397923af.pth``).

  Read without torch. OIHW -> HWIO, Linear (out, in) -> Dense (in, out), and fc1's input
  axis permuted from torchvision's NCHW flatten to NHWC. torchvision's adaptive average
  pool to 7x7 is the identity at 224x224 inputs (the only size the weights were trained at).
  A state dict without ``classifier.*`` gives ``{'vgg16': ...}`` only. 'torch' preprocessing.
  """
  state = torch_pickle.read_state_dict(path)
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
  _check_vgg16(path, params)
  return params


def _check_vgg16(path, params) -> None:
  """Checks VGG16 params against the VGG16 their first layer's width (and fc1) imply."""
  expected = abstract_variables({**_ANY_MODEL, **shapes.made_for(params, path)}, "vgg16")
  expected = expected["params"] if has_top(params) else {"vgg16": expected["params"]["vgg16"]}
  _check_file_layers(path, params, expected, {})


def vgg16_trunk_params(classifier_params) -> dict[str, Any]:
  """The generator's ``params['vgg16']`` (block1_conv1 .. block4_conv3) from VGG16 params.

  Accepts classifier params (``{'vgg16': ..., 'fc1': ...}``) or trunk-only ``{'vgg16': ...}``.
  """
  trunk = classifier_params["vgg16"]
  return {name: dict(trunk[name]) for name in TRUNK_CONVS}


def has_top(params) -> bool:
  """Whether VGG16 params include the classifier (fc1, fc2, predictions)."""
  return all(n in params for n in VGG16_TOP)


# ----------------------------------------------------------------------------------------
# ChromaGAN generator and critic (the authors' Keras files).


def _split_generator_layers(path, layers):
  """(trunk {block name: layer}, convs, bns, denses) of a generator file, in file order."""
  trunk, convs, bns, denses = {}, [], [], []
  for layer in layers:
    owners = {keras_h5.owner_name(w) for w, _ in layer.weights}
    if re.fullmatch(r"block\d_conv\d", layer.name):  # Trunk not nested (flattened model).
      trunk[layer.name] = layer
    elif any(keras_h5.vgg_scope(o) for o in owners):
      # The nested VGG sub-model: its weight names carry the VGG layer names.
      for owner in sorted(o for o in owners if o):
        ws = [(w, a) for w, a in layer.weights if keras_h5.owner_name(w) == owner]
        trunk[keras_h5.vgg_scope(owner) or owner] = keras_h5.Layer(f"{layer.name}/{owner}", ws)
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


def _assign(path, kind, flax_names, layers) -> list[tuple[str, keras_h5.Layer]]:
  if len(layers) != len(flax_names):
    raise ConversionError(
      f"{path}: found {len(layers)} {kind} layers "
      f"({[layer.name for layer in layers]}), ChromaGAN has {len(flax_names)}"
    )
  return list(zip(flax_names, layers, strict=True))


def _check_strides(path, pairs, config, expected: dict[str, int]) -> None:
  """Cross-checks conv strides against the file's model config, when it has one."""
  strides = keras_h5.conv_strides(config) if config else {}
  for flax_name, layer in pairs:
    if layer.name in strides and strides[layer.name] != expected.get(flax_name, 1):
      raise ConversionError(
        f"{path}: layer {layer.name!r} (mapped to {flax_name}) has stride "
        f"{strides[layer.name]}, expected {expected.get(flax_name, 1)}: the layer order in "
        "this file is not the authors' model definition order"
      )


def _generator_fields(path, params) -> dict[str, Any]:
  """The full ``config.model`` a converted generator is stored with."""
  fields = shapes.made_for(params, source=path)
  return {**fields, "vgg_preprocessing": PREPROCESSING_CHROMAGAN, "remat_trunk": False}


# Fill a model config where the shapes asked for do not depend on a field (e.g. the critic's
# on anything but the width, a VGG16 trunk's on the input size).
_ANY_MODEL = {
  "image_size": shapes.MAP_STRIDE,
  "width": 1.0,
  "num_classes": 1,
  "fc_width": 1,
  "vgg_preprocessing": PREPROCESSING_CHROMAGAN,
}


def abstract_variables(model_config, network: str) -> dict[str, Any]:
  """Shapes of the variables of ``config.model``'s ``network``: 'generator', 'critic' or
  'vgg16' (the teacher), as ``jax.ShapeDtypeStruct`` pytrees (nothing is computed)."""
  if not isinstance(model_config, ml_collections.ConfigDict):
    model_config = ml_collections.ConfigDict(dict(model_config))
  gen, critic, teacher = networks.models_from_config(model_config)
  s = model_config.image_size

  def shape(*dims):
    return jax.ShapeDtypeStruct(dims, jnp.float32)

  key = jax.random.key(0)
  if network == "critic":
    return jax.eval_shape(critic.init, key, shape(1, s, s, 2), shape(1, s, s, 1))
  model = {"generator": gen, "vgg16": teacher}[network]
  return jax.eval_shape(model.init, key, shape(1, s, s, 3))


def _combined_model(path, layers, wanted: str) -> None:
  """Raises for the authors' combined GAN file, naming the ``wanted`` one to use instead.

  Their ``train()`` saves ``my_model_combinedEpochN.h5`` (generator and frozen critic as two
  nested models, beside ``my_model_colorizationEpochN.h5`` and
  ``my_model_discriminatorEpochN.h5``). Its generator group holds the VGG trunk's weights
  with the branches' (in the colorization file only the VGG is nested) and its critic group
  only convolutions.
  """
  nested_generator = nested_critic = False
  for layer in layers:
    owners = {keras_h5.owner_name(w) for w, _ in layer.weights} - {None}
    if len(owners) < 2:
      continue
    vgg = {o for o in owners if keras_h5.vgg_scope(o)}
    ndims = {a.ndim for _, a in layer.weights}
    nested_generator |= bool(vgg) and len(vgg) < len(owners)
    nested_critic |= not vgg and ndims == {1, 4}
  if not (nested_generator and nested_critic):
    return
  base = os.path.basename(path)
  m = re.search(r"combined(Epoch\d+)?", base)
  epoch = (m.group(1) or "") if m else "EpochN"  # my_model_combined.h5 of forks: no epoch.
  raise ConversionError(
    f"{path}: this is the combined GAN model (generator and critic nested in one file, the "
    f"authors' my_model_combined{epoch}.h5), not the {wanted}; convert "
    f"my_model_{'colorization' if wanted == 'generator' else 'discriminator'}{epoch}.h5 "
    "of the same epoch instead"
  )


def chromagan_generator_with_config(path) -> tuple[dict[str, Any], dict[str, Any]]:
  """(``{'params', 'batch_stats'}``, the ``config.model`` fields they fit) from an h5 file."""
  layers, config = keras_h5.read_layers(path, EXPECTED_FILES["generator"])
  _combined_model(path, layers, "generator")
  trunk_layers, convs, bns, denses = _split_generator_layers(path, layers)
  _not_vgg16(path, trunk_layers)
  _require_vgg16_layers(path, TRUNK_CONVS, trunk_layers, layers, "a ChromaGAN generator file")
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
  fields = _generator_fields(path, params)
  expected = abstract_variables(fields, "generator")
  _check_file_layers(path, variables, expected, dict(conv_pairs + bn_pairs + dense_pairs))
  return variables, fields


def _check_file_layers(path, variables, expected, names) -> None:
  """Checks a converted file against the model its shapes imply, naming the file's layer."""
  try:
    shapes.check_shapes(variables, expected, path, target="the model its other layers imply")
  except ShapeError as e:
    msg = str(e)
    for flax_name, layer in names.items():
      key = f"['{flax_name}']"
      if key in msg:
        msg = msg.replace(key, f"{key} (file layer {layer.name!r})", 1)
        break
    raise ShapeError(msg) from None


def chromagan_generator_from_keras(path) -> dict[str, Any]:
  """Generator variables ``{'params', 'batch_stats'}`` from the authors' h5 (Keras 2 or 3).

  The model fields the weights fit (width 1, image_size 224 for the released file) are
  inferred from the shapes; see :func:`chromagan_generator_with_config`.
  """
  return chromagan_generator_with_config(path)[0]


def chromagan_critic_from_keras(path) -> dict[str, Any]:
  """Critic variables ``{'params': {conv1 .. conv5}}`` from a Keras h5 of the critic."""
  layers, config = keras_h5.read_layers(path, EXPECTED_FILES["critic"])
  _combined_model(path, layers, "critic")
  for layer in layers:
    if sorted(a.ndim for _, a in layer.weights) != [1, 4]:
      raise ConversionError(
        f"{path}: layer {layer.name!r} is not a convolution: the ChromaGAN critic has only "
        "convolutions (is this a generator file?)"
      )
  pairs = _assign(path, "convolution", CRITIC_CONVS, layers)
  _check_strides(path, pairs, config, CRITIC_STRIDES)
  variables = {"params": {name: _kernel_bias(path, layer, 4) for name, layer in pairs}}
  critic = abstract_variables({**_ANY_MODEL, **shapes.made_for(variables)}, "critic")
  _check_file_layers(path, variables, critic, dict(pairs))
  return variables


# ----------------------------------------------------------------------------------------
# Loading from any source: weight files, converted directories, training checkpoints.


def load_vgg16(path, require_top: bool = True) -> tuple[dict[str, Any], str]:
  """(VGG16 params, preprocessing the weights were trained with) from any supported source.

  ``path``: Keras .h5 (with top; notop only when ``require_top=False``), torchvision .pth,
  or a directory written by ``python -m chromagan_jax.convert vgg16``. Preprocessing is one
  of ``networks.VGG_PREPROCESSING``: 'caffe' (Keras), 'torch' (torchvision).
  """
  path = os.fspath(path)
  kind = source_kind(path)
  if kind == "dir":
    params, config = checkpoint.load_item(path, checkpoint.VGG16)
    params = jax.tree.map(np.asarray, params)
    if require_top and not has_top(params):
      raise ConversionError(
        f"{path}: converted from a notop file (no fc1/fc2/predictions): the KL teacher "
        "needs VGG16 with its classifier top"
      )
    return params, config.converted.preprocessing
  if kind == "hdf5":
    if not require_top:
      layers, _ = keras_h5.read_layers(path)
      require_top = all(n in {layer.name for layer in layers} for n in VGG16_TOP)
    return vgg16_from_keras(path, include_top=require_top), PREPROCESSING_KERAS
  if kind == "torch":
    params = vgg16_from_torch(path)
    if require_top and not has_top(params):
      raise ConversionError(f"{path}: state dict has no classifier.* layers (no top)")
    return params, PREPROCESSING_TORCH
  if kind == "keras3" or keras_h5.looks_like_web_page(path):
    raise ConversionError(keras_h5.not_hdf5_message(path, EXPECTED_FILES["vgg16"]))
  raise ConversionError(
    f"{path}: not a Keras .h5, a torch .pth or a converted directory (unrecognised content)"
  )


def load_generator_variables(path) -> dict[str, Any]:
  """Generator ``{'params', 'batch_stats'}`` from the authors' h5, a checkpoint directory or a
  msgpack weights file (``export --format msgpack --with_class_head``).

  A directory may be a training workdir, its ``checkpoints`` directory or the output of
  ``convert generator``. Any other file raises ConversionError naming it.
  """
  kind = source_kind(path)
  if kind in ("hdf5", "keras3") or kind == "unknown" and keras_h5.looks_like_web_page(path):
    return chromagan_generator_from_keras(path)
  if kind not in ("dir", "msgpack"):
    raise ConversionError(
      f"{path}: not a Keras .h5 generator file, a msgpack weights file nor a checkpoint directory"
    )
  return jax.tree.map(np.asarray, checkpoint.load_generator(path)[0])


def load_critic(path) -> dict[str, Any]:
  """Critic ``{'params'}`` from a Keras h5 of the critic or a ``convert critic`` directory."""
  kind = source_kind(path)
  if kind in ("hdf5", "keras3") or kind == "unknown" and keras_h5.looks_like_web_page(path):
    return chromagan_critic_from_keras(path)
  if kind != "dir":
    raise ConversionError(f"{path}: not a Keras .h5 critic file nor a converted critic directory")
  return jax.tree.map(np.asarray, checkpoint.load_item(path, checkpoint.CRITIC)[0])


# ----------------------------------------------------------------------------------------
# What a training run starts from.


def load_vgg(config) -> dict[str, Any] | None:
  """VGG16 params from ``config.vgg_weights`` (checked), or None with a warning.

  With the classifier top the params are the frozen KL teacher and (:func:`initial_weights`)
  the generator's trunk. A notop file (``..._notop.h5``, a torchvision state dict without
  ``classifier.*`` or its conversion) gives the 13 convolutions only: the trunk starts from
  them and the KL term is disabled, with a warning (:func:`has_top` tells the two apart).
  """
  if not config.vgg_weights:
    logging.warning(
      "config.vgg_weights is empty: the VGG16 trunk starts from random weights and the KL "
      "term is disabled ('ChromaGAN w/o class'). Convert ImageNet VGG16 weights with "
      "`python -m chromagan_jax.convert` for the full model."
    )
    return None
  params, preprocessing = load_vgg16(config.vgg_weights, require_top=False)
  # A VGG16 of another input size or width would otherwise fail inside the jitted step with
  # an anonymous dot_general shape error; the standard files fit only image_size=224, width=1
  # (the convolutions alone, of a notop file, fit any image size at width 1).
  expected = abstract_variables(config.model, "vgg16")["params"]
  if not has_top(params):
    expected = {"vgg16": expected["vgg16"]}
    logging.warning(
      "%s has no classifier top (notop): the VGG16 trunk starts from its convolutions and "
      "the KL term is disabled (no teacher)",
      config.vgg_weights,
    )
  shapes.check_shapes(
    params, expected, config.vgg_weights, made_for_fields=lambda: shapes.made_for(params)
  )
  if preprocessing != config.model.vgg_preprocessing:
    logging.warning(
      "%s was trained with %r input preprocessing but config.model.vgg_preprocessing=%r "
      "(the reference feeds grey [0, 1] without normalisation)",
      config.vgg_weights,
      preprocessing,
      config.model.vgg_preprocessing,
    )
  return params


@dataclasses.dataclass
class InitialWeights:
  """Host (NumPy) weights a fresh run starts from; None where the config gives none.

  Attributes:
    trunk: ``params['vgg16']`` of the generator (block1_conv1 .. block4_conv3).
    generator: ``{'params', 'batch_stats'}`` of the whole generator, trunk included.
    critic: the critic's ``params``.
  """

  trunk: dict[str, Any] | None = None
  generator: dict[str, Any] | None = None
  critic: dict[str, Any] | None = None


def initial_weights(config, vgg_params=None) -> InitialWeights:
  """The weights a fresh run of ``config`` starts from, each checked against ``config.model``.

  The VGG16 trunk comes from ``vgg_params`` (``config.vgg_weights``, already checked by
  :func:`load_vgg`); ``config.init_from`` (the authors' generator ``.h5``, a converted
  directory or a training workdir) sets the whole generator, trunk and batch statistics
  included; ``config.init_critic_from`` (a critic ``.h5`` or a converted critic directory)
  the critic. A mismatch raises ShapeError naming the file, the first parameter that differs
  and the model the weights were made for.
  """
  out = InitialWeights()
  if vgg_params is not None:
    out.trunk = vgg16_trunk_params(vgg_params)
  if not (config.init_from or config.init_critic_from):
    return out
  if config.init_from:
    variables = load_generator_variables(config.init_from)
    for collection in ("params", "batch_stats"):  # Parameters first: the clearer message.
      shapes.check_shapes(
        variables[collection],
        abstract_variables(config.model, "generator")[collection],
        f"generator of {config.init_from}",
        made_for_fields=lambda: shapes.made_for(variables),
      )
    out.generator = variables
  if config.init_critic_from:
    critic = load_critic(config.init_critic_from)
    shapes.check_shapes(
      critic["params"],
      abstract_variables(config.model, "critic")["params"],
      f"critic of {config.init_critic_from}",
      made_for_fields=lambda: shapes.made_for(critic),
    )
    out.critic = critic["params"]
  return out
