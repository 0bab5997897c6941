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
config is :mod:`shapes`. The arrays are mapped onto the Flax names of
:mod:`chromagan_jax.model.networks` (NumPy float32 pytrees) by :mod:`keras_port` and
:mod:`torch_port`, onto the names and shapes of :mod:`layouts`; this module loads any source
by what the path holds; :mod:`initial` assembles what a training run starts from: the VGG16
teacher and trunk (``config.init.vgg16``), the generator (``init.generator``) and the critic
(``init.critic``), each checked against ``config.model``:
  * VGG16: ``VGG16Classifier`` params ``{'vgg16': {block1_conv1 .. block5_conv3}, 'fc1',
    'fc2', 'predictions'}``, or ``{'vgg16': ...}`` alone from a notop file;
  * generator: ``{'params', 'batch_stats'}`` of ``Generator``; critic: ``{'params'}``.

Layouts: Keras/Flax conv kernels are HWIO and Dense kernels (in, out); torch's are OIHW and
(out, in). torchvision flattens the 7x7x512 map in NCHW order before ``classifier.0`` while
``VGG16Classifier`` flattens NHWC (as Keras), so that kernel's input axis is permuted — a
classic silent bug that still gives plausible-looking logits.
"""

import os
from typing import Any

import jax
import numpy as np

from chromagan_jax.errors import ConversionError
from chromagan_jax.weights import (
  checkpoint,
  keras_h5,
  keras_port,
  layouts,
  msgpack_file,
  torch_pickle,
  torch_port,
)


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
    if require_top and not layouts.has_top(params):
      raise ConversionError(
        f"{path}: converted from a notop file (no fc1/fc2/predictions): the KL teacher "
        "needs VGG16 with its classifier top"
      )
    return params, config.converted.preprocessing
  if kind == "hdf5":
    if not require_top:
      layers, _ = keras_h5.read_layers(path)
      require_top = all(n in {layer.name for layer in layers} for n in layouts.VGG16_TOP)
    return keras_port.vgg16_from_keras(path, include_top=require_top), layouts.PREPROCESSING_KERAS
  if kind == "torch":
    params = torch_port.vgg16_from_torch(path)
    if require_top and not layouts.has_top(params):
      raise ConversionError(f"{path}: state dict has no classifier.* layers (no top)")
    return params, layouts.PREPROCESSING_TORCH
  if kind == "keras3" or keras_h5.looks_like_web_page(path):
    raise ConversionError(keras_h5.not_hdf5_message(path, layouts.EXPECTED_FILES["vgg16"]))
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
    return keras_port.chromagan_generator_from_keras(path)
  if kind not in ("dir", "msgpack"):
    raise ConversionError(
      f"{path}: not a Keras .h5 generator file, a msgpack weights file nor a checkpoint directory"
    )
  return jax.tree.map(np.asarray, checkpoint.load_generator(path)[0])


def load_critic(path) -> dict[str, Any]:
  """Critic ``{'params'}`` from a Keras h5 of the critic or a ``convert critic`` directory."""
  kind = source_kind(path)
  if kind in ("hdf5", "keras3") or kind == "unknown" and keras_h5.looks_like_web_page(path):
    return keras_port.chromagan_critic_from_keras(path)
  if kind != "dir":
    raise ConversionError(f"{path}: not a Keras .h5 critic file nor a converted critic directory")
  return jax.tree.map(np.asarray, checkpoint.load_item(path, checkpoint.CRITIC)[0])
