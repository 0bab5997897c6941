"""Keras layers -> Flax variables: ImageNet VGG16 and the authors' ChromaGAN generator and critic.

Takes the layers :mod:`keras_h5` reads (NumPy arrays, Keras' HWIO / (in, out) layouts, which
are Flax's) and names them as :mod:`layouts` says. Shapes are not checked here: whoever puts
the result into a model does, once (:func:`chromagan_jax.model.shapes.check`), and the
generator's and critic's mappings return the file's own layer names for that message.
"""

import os
import re
from typing import Any

import numpy as np

from chromagan_jax.errors import ConversionError
from chromagan_jax.weights import keras_h5, layouts

_BN_VARS = {
  "gamma": "scale",
  "beta": "bias",
  "moving_mean": "mean",
  "running_mean": "mean",
  "moving_variance": "var",
  "running_std": "var",  # Keras 1 name; it held the variance despite the name.
}


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
  layers, _ = keras_h5.read_layers(path, layouts.EXPECTED_FILES["vgg16"])
  by_name = {layer.name: layer for layer in layers}
  _not_vgg16(path, by_name)
  _require_vgg16_layers(path, layouts.VGG16_CONVS, by_name, layers, "a Keras VGG16 weights file")
  params = {"vgg16": {n: _kernel_bias(path, by_name[n], 4) for n in layouts.VGG16_CONVS}}
  if include_top:
    missing = [n for n in layouts.VGG16_TOP if n not in by_name]
    if missing:
      raise ConversionError(
        f"{path}: has no classifier top (layers {missing} missing): a '_notop' file? The "
        "KL teacher needs vgg16_weights_tf_dim_ordering_tf_kernels.h5 (with top)"
      )
    params.update({n: _kernel_bias(path, by_name[n], 2) for n in layouts.VGG16_TOP})
  return params


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


def chromagan_generator_from_keras(path) -> tuple[dict[str, Any], dict[str, str]]:
  """(Generator variables ``{'params', 'batch_stats'}``, our layer name -> the file's) from
  the authors' h5 (Keras 2 or 3).

  The file's layer names (conv2d_7, ...) are auto-generated; its layers are assigned to ours by
  kind and order (and strides, when the file keeps its model config).
  """
  layers, config = keras_h5.read_layers(path, layouts.EXPECTED_FILES["generator"])
  _combined_model(path, layers, "generator")
  trunk_layers, convs, bns, denses = _split_generator_layers(path, layers)
  _not_vgg16(path, trunk_layers)
  _require_vgg16_layers(
    path, layouts.TRUNK_CONVS, trunk_layers, layers, "a ChromaGAN generator file"
  )
  extra = sorted(set(trunk_layers) - set(layouts.TRUNK_CONVS))
  if extra:
    raise ConversionError(
      f"{path}: has VGG16 layers {extra} beyond block4_conv3: a VGG16 file? (not a ChromaGAN "
      "generator, whose trunk ends at block4_conv3)"
    )
  params = {"vgg16": {n: _kernel_bias(path, trunk_layers[n], 4) for n in layouts.TRUNK_CONVS}}
  batch_stats = {}
  conv_pairs = _assign(path, "convolution", layouts.GENERATOR_CONVS, convs)
  bn_pairs = _assign(path, "batch-norm", layouts.GENERATOR_BNS, bns)
  dense_pairs = _assign(path, "Dense", layouts.GENERATOR_DENSES, denses)
  _check_strides(path, conv_pairs, config, layouts.GENERATOR_STRIDES)
  for flax_name, layer in conv_pairs:
    params[flax_name] = _kernel_bias(path, layer, 4)
  for flax_name, layer in bn_pairs:
    params[flax_name], batch_stats[flax_name] = _batch_norm(path, layer)
  for flax_name, layer in dense_pairs:
    params[flax_name] = _kernel_bias(path, layer, 2)
  variables = {"params": params, "batch_stats": batch_stats}
  return variables, _file_names(conv_pairs + bn_pairs + dense_pairs)


def _file_names(pairs) -> dict[str, str]:
  return {flax_name: layer.name for flax_name, layer in pairs}


def chromagan_critic_from_keras(path) -> tuple[dict[str, Any], dict[str, str]]:
  """(Critic variables ``{'params': {conv1 .. conv5}}``, our layer name -> the file's) from a
  Keras h5 of the critic."""
  layers, config = keras_h5.read_layers(path, layouts.EXPECTED_FILES["critic"])
  _combined_model(path, layers, "critic")
  for layer in layers:
    if sorted(a.ndim for _, a in layer.weights) != [1, 4]:
      raise ConversionError(
        f"{path}: layer {layer.name!r} is not a convolution: the ChromaGAN critic has only "
        "convolutions (is this a generator file?)"
      )
  pairs = _assign(path, "convolution", layouts.CRITIC_CONVS, layers)
  _check_strides(path, pairs, config, layouts.CRITIC_STRIDES)
  variables = {"params": {name: _kernel_bias(path, layer, 4) for name, layer in pairs}}
  return variables, _file_names(pairs)
