"""Exports the head-free generator as ONNX, TFLite, a TensorFlow SavedModel or an OpenVINO IR.

  python -m chromagan_jax.export --ckpt DIR --format onnx --output chromagan.onnx
  python -m chromagan_jax.export --ckpt DIR --format tflite --output chromagan.tflite
  python -m chromagan_jax.export --ckpt DIR --format saved_model --output chromagan_savedmodel/
  python -m chromagan_jax.export --ckpt DIR --format openvino-int8 --calib PHOTOS --output OUT/

The exported network (README "Export"; ``docs/colorize_onnx.py`` runs it):
  * input ``L``: float32 (N, S, S, 1), the Lab lightness of the photo resized to S x S
    (S = the model's ``image_size``, 224 for the paper's model), divided by 100: in [0, 1];
    the batch dimension N is dynamic;
  * output ``ab``: float32 (N, S, S, 2) in [0, 1], the reference's 8-bit encoding over 255:
    ``a = 255 * ab[..., 0] - 128``, ``b = 255 * ab[..., 1] - 128``.
Pre-processing (resize the photo to S x S, its L) and post-processing (upsample ab to the
photo's size, join with the full-resolution L, Lab -> sRGB) stay outside the model, as in
``colorize.py``. Only what ab depends on is exported (no class head), with XLA's plain
convolutions (``conv_impl='xla'``) so that each runtime picks its own convolution kernels.

Converters (chosen for being maintained for current JAX and installable beside this
project's TensorFlow 2.21 / jax 0.10 on Python 3.11):
  * ONNX: ``jax2onnx`` converts the jaxpr straight to ONNX operators (opset 21). The other
    route, jax2tf + tf2onnx, no longer works: jax2tf now only emits ``XlaCallModule`` ops
    (StableHLO), which tf2onnx cannot translate. jax2onnx's package metadata pins
    ``orbax-checkpoint<0.11.37`` and pulls equinox, huggingface-hub and netron, none of which
    the conversion of a Flax linen function needs, so it is installed with ``--no-deps``
    (``make export-deps``, see pyproject.toml's ``export`` extra for the rest).
  * SavedModel and TFLite: ``jax.experimental.jax2tf`` (part of JAX) wraps the function as
    a ``tf.function`` with a symbolic batch dimension; TensorFlow saves it, and its TFLite
    converter lowers the StableHLO to TFLite builtin ops (no Flex/TF ops needed at run time).
  * OpenVINO (``openvino``, ``openvino-int8``): the ONNX export converted by OpenVINO, the
    int8 one quantized by NNCF on calibration photos (:mod:`openvino_network`); a folder.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Callable

import jax
import jax.numpy as jnp

from chromagan_jax import extras
from chromagan_jax.errors import UserError
from chromagan_jax.inference import openvino_network
from chromagan_jax.model import networks
from chromagan_jax.ops import color
from chromagan_jax.ops.conv_policy import ConvPolicy
from chromagan_jax.weights import checkpoint, msgpack_file

FORMATS = ("onnx", "tflite", "saved_model", "msgpack", *openvino_network.FORMATS)
INPUT_NAME = "L"
OUTPUT_NAME = "ab"
# The exported graph uses XLA's plain convolutions: runtimes choose their own kernels, and the
# Winograd / im2col rewrites of cpu_conv.py would only obscure the graph.
EXPORT_CONV = ConvPolicy("xla")
# jax2onnx's target opset (ONNX Runtime >= 1.16 runs it).
ONNX_OPSET = 21


class ExportError(UserError):
  """The export cannot be made (output exists, converter missing); one-line message."""


def network_fn(model: networks.Generator, variables) -> Callable:
  """``L`` (N, S, S, 1) in [0, 1] -> ``ab`` (N, S, S, 2) in [0, 1] of the head-free ``model``.

  ``variables`` (with or without the class head) are closed over, so they become constants
  of the exported graph.
  """
  model = model.clone(with_class_head=False, conv=EXPORT_CONV)
  variables = jax.tree.map(jnp.asarray, networks.without_class_head(variables))

  def fn(lightness):
    return model.apply(variables, color.gray_to_l3(lightness), train=False)[0]

  return fn


def load(ckpt, step=None) -> tuple[Callable, int]:
  """(:func:`network_fn` of checkpoint ``ckpt``, image size S); reads no class-head array."""
  variables, config = checkpoint.load_generator(ckpt, step, with_class_head=False)
  model = networks.models_from_config(config.model, EXPORT_CONV)[0]
  return network_fn(model, variables), int(config.model.image_size)


def to_onnx(fn: Callable, size: int):
  """An ``onnx.ModelProto`` of ``fn`` with a dynamic batch dimension ``N``."""
  # jax2onnx imports every plugin it ships and logs each one whose library (equinox, dm-pix)
  # is absent, with a traceback; none is needed for this network.
  logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)
  logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)  # benign shape-info notes
  # jax2onnx 0.17.1 (the newest) checks isinstance(..., jax._src.core.ClosedJaxpr), a class
  # jax 0.12 folded into Jaxpr (jax.extend.core.ClosedJaxpr is Jaxpr there): give it the alias.
  from jax._src import core as jax_core

  if not hasattr(jax_core, "ClosedJaxpr"):
    jax_core.ClosedJaxpr = jax_core.Jaxpr
  try:
    from jax2onnx import to_onnx as jax2onnx_to_onnx  # An optional dependency.
  except ImportError as e:
    raise ExportError(
      f"ONNX export needs jax2onnx ({e}): pip install --no-deps jax2onnx==0.17.1 "
      "(or `make export-deps` in a clone)"
    ) from None
  return jax2onnx_to_onnx(
    fn,
    [("N", size, size, 1)],
    input_names=[INPUT_NAME],
    output_names=[OUTPUT_NAME],
    opset=ONNX_OPSET,
    model_name="chromagan_generator",
  )


def require_tensorflow():
  """TensorFlow, for the TFLite and SavedModel formats (the 'export' extra)."""
  return extras.require("tensorflow", "export", "TFLite and SavedModel export")


def to_tf_function(fn: Callable, size: int):
  """A ``tf.function`` of ``fn`` (jax2tf) with input signature (None, S, S, 1) float32."""
  tf = require_tensorflow()  # Only for the TF formats (seconds to import).
  from jax.experimental import jax2tf

  converted = jax2tf.convert(
    fn, polymorphic_shapes=[f"(n, {size}, {size}, 1)"], native_serialization_platforms=("cpu",)
  )
  return tf.function(
    lambda lightness: {OUTPUT_NAME: converted(lightness)},
    input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, name=INPUT_NAME)],
    autograph=False,
  )


def to_tflite(fn: Callable, size: int) -> bytes:
  """A TFLite flatbuffer of ``fn`` (builtin ops only), dynamic batch."""
  tf = require_tensorflow()

  tf_fn = to_tf_function(fn, size)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([tf_fn.get_concrete_function()])
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter.convert()


def save_saved_model(fn: Callable, size: int, directory: str) -> None:
  """Writes a SavedModel whose ``serving_default`` signature maps ``L`` to ``ab``."""
  tf = require_tensorflow()

  module = tf.Module()
  module.serve = to_tf_function(fn, size)
  tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})


TF_FORMATS = ("tflite", "saved_model")


def tf_formats_problem() -> str | None:
  """Why the TensorFlow formats cannot be exported with this jax, or None when they can.

  jax2tf serialises the network as StableHLO inside an XlaCallModule op. With jax 0.12
  (Python 3.12; measured with TensorFlow 2.21) TensorFlow cannot read jax's newer StableHLO
  (SavedModel: "failed to deserialize portable artifact") and TFLite cannot convert the op.
  """
  if jax.__version_info__[:2] < (0, 12):  # Integers whatever the release's suffix.
    return None
  return (
    f"jax {jax.__version__} serialises StableHLO that TensorFlow's SavedModel and TFLite "
    "cannot read or convert (needs jax < 0.12, i.e. Python 3.11 here); --format onnx works"
  )


def export_msgpack(ckpt, staged: str, step=None, with_class_head: bool = False) -> str:
  """Writes the generator of ``ckpt`` (head-free unless ``with_class_head``) and its config as
  one msgpack file (:func:`msgpack_file.save_msgpack`); returns the payload's SHA-256.

  Weights, not a graph: read back by ``colorize.py --ckpt FILE`` and
  ``--config.init.generator=FILE``.
  """
  variables, config = checkpoint.load_generator(ckpt, step, with_class_head=with_class_head)
  config = config.to_dict()
  config["exported"] = {"from": str(ckpt), "with_class_head": with_class_head}
  return msgpack_file.save_msgpack(staged, variables, config)


def export_openvino(
  ckpt, fmt: str, folder: str, step=None, calib: str | None = None, calib_count: int = 32
) -> None:
  """Writes the IR of checkpoint ``ckpt`` into the new folder ``folder`` (``chromagan.xml``,
  ``.bin``, ``.json``): float32 for ``openvino``, int8 calibrated on the first ``calib_count``
  photos of the folder ``calib`` for ``openvino-int8``."""
  step, config = checkpoint.load_config(ckpt, step)
  fn, size = load(ckpt, step)
  inputs = None
  if fmt == "openvino-int8":
    inputs = openvino_network.calibration_inputs(calib, size, calib_count)
  os.makedirs(folder)
  onnx = extras.require("onnx", "export", "ONNX export")
  onnx_path = os.path.join(folder, "chromagan.onnx")  # Only while converting.
  onnx.save(to_onnx(fn, size), onnx_path)
  openvino_network.write_ir(onnx_path, os.path.join(folder, openvino_network.MODEL_XML), inputs)
  os.remove(onnx_path)
  converted = config.get("converted") or {}
  openvino_network.write_sidecar(
    folder,
    {
      "format": fmt,
      "checkpoint": os.path.abspath(os.fspath(ckpt)),
      "step": step,
      "converted_from_sha256": converted.get("sha256"),
      "image_size": size,
      "input": f"{INPUT_NAME} (N, {size}, {size}, 1) float32, Lab L / 100",
      "output": f"{OUTPUT_NAME} (N, {size}, {size}, 2) float32 in [0, 1], a = 255 ab - 128",
      "calibration": None
      if inputs is None
      else {"folder": os.path.abspath(calib), "photos": len(inputs), "order": "sorted by path"},
    },
  )


def export(
  ckpt,
  fmt: str,
  output: str,
  step=None,
  overwrite: bool = False,
  with_class_head: bool = False,
  calib: str | None = None,
  calib_count: int = openvino_network.DEFAULT_CALIB_COUNT,
) -> str:
  """Exports checkpoint ``ckpt`` in format ``fmt`` to ``output`` (a file; a folder for
  ``saved_model`` and the OpenVINO formats), written beside it first and moved into place
  when complete.

  ``with_class_head`` (msgpack only) keeps the class head, for fine-tuning from the file.
  ``calib``, ``calib_count`` (``openvino-int8`` only, required there): the photo folder the
  int8 ranges are calibrated on, and how many of its photos (sorted by path).

  Raises:
    UserError: unknown format, output exists (without ``overwrite``), bad checkpoint, a
      missing extra, no calibration photos.
  """
  if fmt not in FORMATS:
    raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
  if fmt in TF_FORMATS and (problem := tf_formats_problem()):
    raise ExportError(f"--format {fmt}: {problem}")
  if (calib is not None) != (fmt == "openvino-int8"):
    raise ExportError("--calib PHOTOS is needed by --format openvino-int8, and only by it")
  # A missing extra fails before the checkpoint loads. The 'openvino' extra brings ONNX too.
  if fmt in openvino_network.FORMATS:
    openvino_network.require_openvino("OpenVINO export", quantize=fmt == "openvino-int8")
  if fmt in TF_FORMATS:
    require_tensorflow()
  else:
    extras.require("onnx", "export", "ONNX export")
  output = os.path.abspath(output)
  if os.path.lexists(output) and not overwrite:
    raise ExportError(f"{output}: already exists; not overwritten (pass --overwrite)")
  if with_class_head and fmt != "msgpack":
    raise ExportError(f"--with_class_head applies to --format msgpack, not {fmt}")
  if fmt not in ("msgpack", *openvino_network.FORMATS):
    fn, size = load(ckpt, step)
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
  try:
    staged = os.path.join(tmp, os.path.basename(output))
    if fmt == "msgpack":
      digest = export_msgpack(ckpt, staged, step, with_class_head)
      logging.info("%s: payload sha256 %s", output, digest)
    elif fmt in openvino_network.FORMATS:
      export_openvino(ckpt, fmt, staged, step, calib, calib_count)
    elif fmt == "onnx":
      onnx = extras.require("onnx", "export", "ONNX export")

      onnx.save(to_onnx(fn, size), staged)
    elif fmt == "tflite":
      with open(staged, "wb") as f:
        f.write(to_tflite(fn, size))
    else:
      save_saved_model(fn, size, staged)
    if os.path.isdir(output) and not os.path.islink(output):
      shutil.rmtree(output)
    os.replace(staged, output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return output
