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

Reading the files is :mod:`keras_h5` and :mod:`torch_pickle`, our own formats
:mod:`checkpoint` and :mod:`msgpack_file`; :mod:`keras_port` and :mod:`torch_port` map the
arrays onto the Flax names of :mod:`chromagan_jax.model.networks` (the names of :mod:`layouts`).
:func:`read` is the one entry: any source of a network by what the path holds, as NumPy
variables that nothing has checked yet. The one shape check is
:func:`chromagan_jax.model.shapes.check`, called by whoever puts them into a model:
:mod:`initial` (a training run's starting weights against ``config.model``) and the
converter (against the model the file's first layers imply).
  * VGG16: ``VGG16Classifier`` params ``{'vgg16': {block1_conv1 .. block5_conv3}, 'fc1',
    'fc2', 'predictions'}``, or ``{'vgg16': ...}`` alone from a notop file;
  * generator: ``{'params', 'batch_stats'}`` of ``Generator``; critic: ``{'params'}``.

Layouts: Keras/Flax conv kernels are HWIO and Dense kernels (in, out); torch's are OIHW and
(out, in). torchvision flattens the 7x7x512 map in NCHW order before ``classifier.0`` while
``VGG16Classifier`` flattens NHWC (as Keras), so that kernel's input axis is permuted — a
classic silent bug that still gives plausible-looking logits.
"""

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from chromagan_jax.errors import ConversionError
from chromagan_jax.model import shapes
from chromagan_jax.weights import (
  checkpoint,
  keras_h5,
  keras_port,
  layouts,
  msgpack_file,
  torch_pickle,
  torch_port,
)


@dataclasses.dataclass(frozen=True)
class Weights:
  """A network's weights read from a path onto our names; no shape is checked yet.

  Attributes:
    variables: ``{'params', ...}`` as the network's init returns them (NumPy float32).
    preprocessing: for VGG16, the input preprocessing they were trained with (one of
      ``networks.VGG_PREPROCESSING``); None for the generator and the critic.
    layer_names: our layer name -> the file's own, where they differ (for messages).
  """

  variables: dict[str, Any]
  preprocessing: str | None
  layer_names: dict[str, str] = dataclasses.field(default_factory=dict)


def read(path, network: str) -> Weights:
  """The weights of ``network`` ('vgg16', 'generator' or 'critic') at ``path``, by what the
  path holds; see the module docstring for the sources. A path of the wrong kind raises
  ConversionError (or CheckpointError for a damaged checkpoint) naming it.
  """
  if network not in shapes.NETWORKS:
    raise ConversionError(
      f"unknown network {network!r}; expected one of {', '.join(shapes.NETWORKS)}"
    )
  path = os.fspath(path)
  return {"vgg16": _vgg16, "generator": _generator, "critic": _critic}[network](path)


def _numpy(tree):
  return jax.tree.map(np.asarray, tree)


def _is_keras_file(path, kind: str) -> bool:
  """An h5 (or a ``.keras`` archive / saved web page, refused by :mod:`keras_h5` in one line)."""
  return kind in ("hdf5", "keras3") or kind == "unknown" and keras_h5.looks_like_web_page(path)


def source_kind(path) -> str:
  """'hdf5', 'torch' (zip or legacy pickle), 'keras3' (a ``.keras`` zip), 'msgpack' (our
  weights file, :func:`msgpack_file.save_msgpack`), 'dir' or 'unknown' from the file's first
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
  if msgpack_file.is_msgpack_file(path):
    return "msgpack"
  if keras_h5.is_keras3_archive(path):
    return "keras3"
  if torch_pickle.file_kind(path):
    return "torch"
  return "unknown"


def _vgg16(path) -> Weights:
  """Keras .h5 (with top or notop), torchvision .pth or a ``convert vgg16`` directory."""
  kind = source_kind(path)
  if kind == "dir":
    params, config = checkpoint.load_item(path, checkpoint.VGG16)
    return Weights({"params": _numpy(params)}, config.converted.preprocessing)
  if kind == "hdf5":
    layers, _ = keras_h5.read_layers(path)
    top = all(n in {layer.name for layer in layers} for n in layouts.VGG16_TOP)
    params = keras_port.vgg16_from_keras(path, include_top=top)
    return Weights({"params": params}, layouts.PREPROCESSING_KERAS)
  if kind == "torch":
    return Weights({"params": torch_port.vgg16_from_torch(path)}, layouts.PREPROCESSING_TORCH)
  if kind == "keras3" or keras_h5.looks_like_web_page(path):
    raise ConversionError(keras_h5.not_hdf5_message(path, layouts.EXPECTED_FILES["vgg16"]))
  raise ConversionError(
    f"{path}: not a Keras .h5, a torch .pth or a converted directory (unrecognised content)"
  )


def _generator(path) -> Weights:
  """The authors' h5, a checkpoint directory (a training workdir, its ``checkpoints``
  directory or a ``convert generator`` output: the moving-average generator when it has one)
  or a msgpack weights file (``export --format msgpack --with_class_head``)."""
  kind = source_kind(path)
  if _is_keras_file(path, kind):
    variables, names = keras_port.chromagan_generator_from_keras(path)
    return Weights(variables, None, names)
  if kind == "msgpack":
    variables = checkpoint.read_msgpack(path)[0]
  elif kind == "dir":
    step, _ = checkpoint.load_config(path)
    variables = checkpoint.load_item(path, checkpoint.generator_item(path, step), step)[0]
  else:
    raise ConversionError(
      f"{path}: not a Keras .h5 generator file, a msgpack weights file nor a checkpoint directory"
    )
  return Weights(_numpy(variables), None)


def _critic(path) -> Weights:
  """A Keras h5 of the critic or a ``convert critic`` directory."""
  kind = source_kind(path)
  if _is_keras_file(path, kind):
    variables, names = keras_port.chromagan_critic_from_keras(path)
    return Weights(variables, None, names)
  if kind != "dir":
    raise ConversionError(f"{path}: not a Keras .h5 critic file nor a converted critic directory")
  return Weights(_numpy(checkpoint.load_item(path, checkpoint.CRITIC)[0]), None)
