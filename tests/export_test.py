"""Tests of chromagan_jax.inference.exporter: each format against the JAX network on real photos.

The photos are scikit-image's bundled ones (sources.bundled_photos), resized and
turned into the network's L the way colorize does; the runtimes are ONNX Runtime, TFLite's
interpreter and TensorFlow's SavedModel loader.
"""

import hashlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ab_input_sensitivity, colourful_generator_variables, small_config
from PIL import Image
from skimage import color as skcolor

from chromagan_jax import export
from chromagan_jax.data import images, sources
from chromagan_jax.inference import engine, exporter
from chromagan_jax.ops import color
from chromagan_jax.weights import checkpoint

jax.config.update("jax_disable_most_optimizations", True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Exported vs JAX ab in float32 (ab in [0, 1]): measured max 1.6e-6 (TFLite), 1.3e-6 (ONNX),
# 1.1e-6 (SavedModel) on the bundled photos with the colourful test generator.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """A generator whose ab follows its input: a wrong network input (``L / 100``, a black
  image) moves ab by far more than TOLERANCE."""
  config = small_config()
  variables = colourful_generator_variables(config)
  sensitivity = ab_input_sensitivity(variables, config)
  assert sensitivity > 100 * TOLERANCE, sensitivity
  directory = tmp_path_factory.mktemp("ckpt")
  checkpoint.save_generator(directory, variables, config)
  return str(directory)


@pytest.fixture(scope="module")
def photos_rgb():
  """Every bundled photo at the network size, uint8 RGB (N, 64, 64, 3)."""
  paths = sources.bundled_photos("train") + sources.bundled_photos("holdout")
  size = small_config().model.image_size
  return np.stack([images.resize(images.read_rgb(p), size) for p in paths])


@pytest.fixture(scope="module")
def photos_l(photos_rgb):
  """Network L (N, 64, 64, 1) in [0, 1] of every bundled photo."""
  return np.asarray(color.rgb_to_net(photos_rgb)[0], np.float32)


@pytest.fixture(scope="module")
def reference(ckpt, photos_rgb):
  """ab of colorize's generator (XLA convs: the export's) on the photos."""
  variables, config = checkpoint.load_generator(ckpt, with_class_head=False)
  colorizer = engine.Colorizer(variables, config, conv_impl="xla")
  _, ab = engine.predict_ab(colorizer.model, colorizer.variables, photos_rgb)
  want = np.asarray(ab)
  # A real network output: not constant, inside [0, 1].
  assert want.std() > 1e-3 and 0.0 <= want.min() and want.max() <= 1.0
  return want


def _run_onnx(path, x):
  import onnxruntime as ort

  session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
  (inp,) = session.get_inputs()
  assert inp.name == exporter.INPUT_NAME and not isinstance(inp.shape[0], int)  # dynamic batch
  return session.run([exporter.OUTPUT_NAME], {exporter.INPUT_NAME: x})[0]


def _run_tflite(path, x):
  import tensorflow as tf

  interpreter = tf.lite.Interpreter(model_path=path)
  index = interpreter.get_input_details()[0]["index"]
  interpreter.resize_tensor_input(index, x.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(index, x)
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _run_saved_model(path, x):
  import tensorflow as tf

  serve = tf.saved_model.load(path).signatures["serving_default"]
  return serve(**{exporter.INPUT_NAME: tf.constant(x)})[exporter.OUTPUT_NAME].numpy()


def _run_msgpack(path, lightness):
  """The msgpack file holds weights, not a graph: run them through exporter.network_fn."""
  fn, _ = exporter.load(path)
  return np.asarray(jax.jit(fn)(lightness))


RUNNERS = {
  "onnx": _run_onnx,
  "tflite": _run_tflite,
  "saved_model": _run_saved_model,
  "msgpack": _run_msgpack,
}


# The OpenVINO formats (a folder, int8 calibrated on photos) are tests/openvino_test.py's.
@pytest.mark.parametrize("fmt", [f for f in exporter.FORMATS if not f.startswith("openvino")])
def test_export_matches_jax_on_real_photos(fmt, ckpt, photos_l, reference, tmp_path, capsys):
  out = str(tmp_path / f"model.{fmt}")
  if fmt in exporter.TF_FORMATS and exporter.tf_formats_problem():
    # jax >= 0.12 (Python 3.12): refused in one line naming the reason, nothing written.
    assert export.main(["--ckpt", ckpt, "--format", fmt, "--output", out]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --format {fmt}: jax ") and "\n" not in err
    assert not os.listdir(tmp_path)
    return
  assert export.main(["--ckpt", ckpt, "--format", fmt, "--output", out]) == 0
  for batch in (photos_l, photos_l[:1]):  # the batch dimension is dynamic
    got = RUNNERS[fmt](out, batch)
    assert got.shape == (len(batch), *reference.shape[1:])
    np.testing.assert_allclose(got, reference[: len(batch)], rtol=0, atol=TOLERANCE)


def test_export_refuses_to_overwrite_and_bad_checkpoints(ckpt, tmp_path, capsys):
  out = tmp_path / "model.onnx"
  out.write_bytes(b"precious")
  before = hashlib.sha256(out.read_bytes()).hexdigest()
  assert export.main(["--ckpt", ckpt, "--format", "onnx", "--output", str(out)]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "already exists" in err and "\n" not in err
  assert hashlib.sha256(out.read_bytes()).hexdigest() == before
  # Not a checkpoint: one line naming it; nothing written.
  missing = tmp_path / "nope"
  target = tmp_path / "new.onnx"
  assert export.main(["--ckpt", str(missing), "--format", "onnx", "--output", str(target)]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and str(missing) in err and "\n" not in err
  assert not target.exists() and sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_docs_onnx_example_colorizes_at_full_resolution(ckpt, tmp_path):
  """docs/colorize_onnx.py (onnxruntime + NumPy + Pillow only) keeps the photo's size and L,
  and its colours agree with colorize's: closely for a photo smaller than the network input
  (both resize the same way there), within Pillow's shrink filter for a larger one."""
  model = str(tmp_path / "model.onnx")
  assert export.main(["--ckpt", ckpt, "--format", "onnx", "--output", model]) == 0
  variables, config = checkpoint.load_generator(ckpt, with_class_head=False)
  full = images.read_rgb(sources.bundled_photos("holdout")[0])
  small = np.asarray(Image.fromarray(full).resize((48, 40), Image.BILINEAR))
  for name, rgb, ab_mean_tol in (("full", full, 3.0), ("small", small, 0.3)):
    photo, out = str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}_out.png")
    Image.fromarray(rgb).save(photo)
    script = os.path.join(ROOT, "docs", "colorize_onnx.py")
    subprocess.run([sys.executable, script, model, photo, out], check=True, capture_output=True)
    got = images.read_rgb(out)
    assert got.shape == rgb.shape, name
    lab_in, lab_out = skcolor.rgb2lab(rgb), skcolor.rgb2lab(got)
    # uint8 rounding moves L by < 1 where no channel is clipped (the test generator's strong
    # colours leave the sRGB gamut on ~5% of the pixels, where clipping moves L by more).
    in_gamut = np.all((got > 0) & (got < 255), axis=-1)
    assert in_gamut.mean() > 0.5, (name, in_gamut.mean())
    l_diff = np.abs(lab_out[..., 0] - lab_in[..., 0])[in_gamut]
    assert np.percentile(l_diff, 99) < 1.0, (name, np.percentile(l_diff, 99))
    want = skcolor.rgb2lab(engine.colorize([rgb], variables, config)[0])
    # Measured mean |ab - colorize's ab|: full 2.0 (Pillow filters the network input when
    # shrinking, colorize does not), small 0.12 (rounding); the network input of a black image
    # instead of the photo's L moves it by 13-14.
    ab_diff = np.abs(want[..., 1:] - lab_out[..., 1:]).mean()
    assert ab_diff < ab_mean_tol, (name, ab_diff)
