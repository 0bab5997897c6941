"""The generator as an OpenVINO IR: written from the ONNX export, in float32 or quantized to
int8 by NNCF calibrated on photos, and run as the :class:`engine.Colorizer`'s network stage.

  python -m chromagan_jax.export --ckpt DIR --format openvino-int8 --calib PHOTOS --output OUT
  python colorize.py --ckpt DIR --network OUT --output colorized/ photos/

The IR keeps the exported contract (:mod:`exporter`): input ``L`` (N, S, S, 1), Lab L / 100
in [0, 1]; output ``ab`` (N, S, S, 2) in [0, 1]. ``OUT`` is a folder holding ``chromagan.xml``
(the graph), ``chromagan.bin`` (its weights) and ``chromagan.json`` (where it came from).
int8 because XLA's int8 convolutions are slower on CPU than its float32 ones while OpenVINO's
use VNNI (docs/performance.md "Reduced precision"). OpenVINO and NNCF are the 'openvino'
extra, imported here on use only.
"""

import importlib.metadata
import json
import os
import threading
from collections.abc import Callable

import jax
import numpy as np

from chromagan_jax import extras
from chromagan_jax.data import decode_workers, images
from chromagan_jax.errors import UserError
from chromagan_jax.ops import color

FORMATS = ("openvino", "openvino-int8")
# File names inside an export folder.
MODEL_XML = "chromagan.xml"
SIDECAR = "chromagan.json"
DEFAULT_CALIB_COUNT = 32
# A network runner: uint8 RGB (N, S, S, 3) -> (L (N, S, S), ab (N, S, S, 2)), both in [0, 1].
Network = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def require_openvino(feature: str, quantize: bool = False):
  """OpenVINO (and NNCF when ``quantize``), or the one line naming the 'openvino' extra."""
  if quantize:
    extras.require("nncf", "openvino", feature)
  return extras.require("openvino", "openvino", feature)


@jax.jit
def _net_lightness(rgb):
  return color.rgb_to_net(rgb)[0]


def net_lightness(rgb: np.ndarray) -> np.ndarray:
  """uint8 RGB (N, S, S, 3) -> float32 (N, S, S, 1) network input L / 100 in [0, 1], by the
  formula the JAX path uses (:func:`color.rgb_to_net`)."""
  return np.asarray(_net_lightness(rgb), np.float32)


def calibration_inputs(folder: str, size: int, count: int = DEFAULT_CALIB_COUNT) -> np.ndarray:
  """Network inputs (n, S, S, 1) of the first ``count`` photos of ``folder`` sorted by path
  (n = min(count, photos)), prepared as the Colorizer prepares them: decoded
  (:func:`images.read`), resized to S (:func:`images.resize`), their L / 100.

  Raises:
    UserError: no photos there, ``count`` < 1, or an unreadable photo (naming it).
  """
  if count < 1:
    raise UserError(f"--calib_count must be >= 1, got {count}")
  paths = images.find(folder)[:count]
  rgbs = np.stack([images.resize(images.read(p).rgb, size) for p in paths])
  return net_lightness(rgbs)


def write_ir(onnx_path: str, xml_path: str, calib: np.ndarray | None = None) -> None:
  """Converts the ONNX export at ``onnx_path`` to an IR at ``xml_path`` (+ ``.bin``), float32
  weights; with ``calib`` (n, S, S, 1) quantized by ``nncf.quantize`` (post-training, default
  preset: int8 weights per channel, int8 activations) on its n inputs."""
  ov = require_openvino("OpenVINO export", quantize=calib is not None)
  model = ov.convert_model(onnx_path)
  if calib is not None:
    nncf = extras.require("nncf", "openvino", "OpenVINO export")
    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    model = nncf.quantize(model, dataset, subset_size=len(calib))
  ov.save_model(model, xml_path, compress_to_fp16=False)


def versions() -> dict:
  """Versions of the packages an IR depends on ({name: version or None})."""
  out = {}
  for name in ("openvino", "nncf", "jax2onnx"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def write_sidecar(folder: str, info: dict) -> None:
  """``folder/chromagan.json``: ``info`` (checkpoint, step, image size, calibration) with the
  package versions."""
  with open(os.path.join(folder, SIDECAR), "w") as f:
    json.dump({**info, "versions": versions()}, f, indent=2)
    f.write("\n")


def xml_path(path: str) -> str:
  """The IR's ``.xml`` of ``path``: the file itself, or ``chromagan.xml`` in an export folder."""
  return os.path.join(path, MODEL_XML) if os.path.isdir(path) else path


def load_network(path: str, image_size: int, batch_size: int, threads: int | None = None):
  """The IR at ``path`` (``.xml`` or export folder) compiled for the CPU at a fixed batch.

  Args:
    image_size: S of the checkpoint the Colorizer was built from; the IR's must match.
    batch_size: images per call (the Colorizer pads every batch to it).
    threads: inference threads (default: the cores this process may use).

  Returns:
    A :data:`Network`: uint8 RGB (batch_size, S, S, 3) -> (L (batch_size, S, S), ab
    (batch_size, S, S, 2)), NumPy float32 in [0, 1]. Calls from several threads take turns
    (one infer request, as the JAX path runs one batch at a time).

  Raises:
    UserError: no IR there, or its input size is not ``image_size`` (one line).
  """
  ov = require_openvino("colorize --network")
  xml = xml_path(path)
  if not os.path.isfile(xml) or not xml.endswith(".xml"):
    raise UserError(f"{path}: not an OpenVINO IR (.xml) nor an export folder holding {MODEL_XML}")
  core = ov.Core()
  model = core.read_model(xml)
  shape = model.inputs[0].partial_shape
  dims = [d.get_length() if d.is_static else None for d in shape]
  if len(dims) != 4 or dims[1:] != [image_size, image_size, 1]:
    raise UserError(
      f"{xml}: the network's input is {shape} but the checkpoint's images are "
      f"{image_size}x{image_size} (L: [N,{image_size},{image_size},1]); export the IR from "
      "this checkpoint"
    )
  model.reshape([batch_size, image_size, image_size, 1])
  threads = threads or decode_workers.default_processes()
  compiled = core.compile_model(
    model,
    "CPU",
    {
      "INFERENCE_NUM_THREADS": threads,
      "NUM_STREAMS": 1,
      "PERFORMANCE_HINT": "LATENCY",
      # Not bf16, which the CPU plugin may pick by itself on some CPUs: the error measured
      # for the int8 IR is with float32 between its int8 layers.
      "INFERENCE_PRECISION_HINT": "f32",
    },
  )
  request = compiled.create_infer_request()
  lock = threading.Lock()

  def network(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lightness = net_lightness(rgb)
    with lock:
      ab = request.infer([lightness])[0].copy()  # A copy: the request reuses its buffer.
    return lightness[..., 0], ab

  return network
