"""Tests of the OpenVINO network stage (chromagan_jax/inference/openvino_network.py): the IR
export (float32, and int8 calibrated on photos) and colorize --network against JAX.

The test generator has non-negative kernels in every layer but the last (so the network is
smooth in its input, as trained ones are, rather than chaotic like a random ReLU network, whose
int8 error is as large as its signal) and a last layer with zero spatial mean (ab follows
the photo's structure). Its int8 error, like a trained network's, is a fraction of its ab.
"""

import io
import json
import os
import shutil

import numpy as np
import pytest
from helpers import _numpy_generator_variables, app_colorizers, small_config
from skimage import color as skcolor

from chromagan_jax import colorize, export
from chromagan_jax.data import images, sources, synthetic
from chromagan_jax.errors import UserError
from chromagan_jax.inference import engine, openvino_network
from chromagan_jax.weights import checkpoint

pytest.importorskip("openvino")
pytest.importorskip("nncf")

# float32 IR vs JAX, ab in [0, 1]: measured max 1.0e-6 on the bundled photos.
FP32_TOLERANCE = 1e-5
# int8 IR vs JAX in Lab units (ab * 255): measured mean |Δab| 1.3 (ab's own mean deviation
# 5.6), correlation 0.994. Calibrating on L * 100 or L / 100 instead of L gives a mean of
# 5.6-6.0 and a correlation of 0.57-0.93.
INT8_MEAN_LAB = 2.5
INT8_MIN_CORRELATION = 0.97
# int8 must change ab somewhat: an IR left in float32 would pass the tolerance above.
INT8_MIN_MEAN_LAB = 0.05


def smooth_generator_variables(config, seed=0, strength=4.0):
  def kernel(rng, shape, fan_in, last):
    if last:
      k = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
      return strength * (k - k.mean(axis=(0, 1), keepdims=True))
    # Mean 1 / fan_in: each layer averages its inputs, neither growing nor shrinking them.
    return np.abs(rng.standard_normal(shape)) * np.sqrt(np.pi / 2) / fan_in

  return _numpy_generator_variables(config, seed, kernel)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  config = small_config()
  directory = tmp_path_factory.mktemp("ckpt")
  checkpoint.save_generator(directory, smooth_generator_variables(config), config)
  return str(directory)


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory):
  """(calibration folder: the bundled training photos, inputs: the held-out ones)."""
  calib, inputs = tmp_path_factory.mktemp("calib"), tmp_path_factory.mktemp("inputs")
  for folder, split in ((calib, "train"), (inputs, "holdout")):
    for path in sources.bundled_photos(split):
      shutil.copy(path, folder)
  return str(calib), str(inputs)


@pytest.fixture(scope="module")
def irs(ckpt, photo_dirs, tmp_path_factory):
  """{format: export folder} for both OpenVINO formats, written by the export command."""
  out = tmp_path_factory.mktemp("irs")
  paths = {}
  for fmt in openvino_network.FORMATS:
    paths[fmt] = str(out / fmt)
    argv = ["--ckpt", ckpt, "--format", fmt, "--output", paths[fmt]]
    if fmt == "openvino-int8":
      argv += ["--calib", photo_dirs[0], "--calib_count", "4"]
    assert export.main(argv) == 0
  return paths


@pytest.fixture(scope="module")
def rgbs():
  """Every bundled photo at full size, uint8 RGB."""
  paths = sources.bundled_photos("train") + sources.bundled_photos("holdout")
  return [images.read_rgb(p) for p in paths]


def network_ab(ckpt, rgbs, network=None):
  """(L, ab) of the Colorizer's network stage (NumPy, padding rows dropped)."""
  variables, config = checkpoint.load_generator(ckpt, with_class_head=False)
  colorizer = engine.Colorizer(
    variables, config, batch_size=len(rgbs), conv_impl="xla", network=network
  )
  return tuple(np.asarray(x)[: len(rgbs)] for x in colorizer.predict_network(rgbs))


@pytest.fixture(scope="module")
def reference(ckpt, rgbs):
  lightness, ab = network_ab(ckpt, rgbs)
  assert ab.std() * 255 > 3.0  # A real output: ab varies across the photos.
  return lightness, ab


def test_export_writes_the_ir_and_its_sidecar(irs, ckpt, photo_dirs, capsys):
  for fmt, folder in irs.items():
    assert sorted(os.listdir(folder)) == ["chromagan.bin", "chromagan.json", "chromagan.xml"]
    with open(os.path.join(folder, "chromagan.json")) as f:
      info = json.load(f)
    assert info["format"] == fmt and info["checkpoint"] == ckpt and info["step"] == 0
    assert info["image_size"] == small_config().model.image_size
    assert info["versions"]["openvino"] and info["versions"]["nncf"]
    want = None if fmt == "openvino" else {"photos": 4, "order": "sorted by path"}
    got = info["calibration"] and {k: info["calibration"][k] for k in ("photos", "order")}
    assert got == want, fmt
  # Only the two folders: nothing staged is left beside them.
  assert sorted(os.listdir(os.path.dirname(irs["openvino"]))) == sorted(irs)
  # Never overwritten without --overwrite; --calib belongs to openvino-int8 alone.
  calib = ["--calib", photo_dirs[0]]
  for fmt, extra in (("openvino", []), ("openvino", calib), ("openvino-int8", []), ("onnx", calib)):
    argv = ["--ckpt", ckpt, "--format", fmt, "--output", irs["openvino"], *extra]
    assert export.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err


def test_fp32_ir_matches_jax(irs, ckpt, rgbs, reference):
  network = openvino_network.load_network(irs["openvino"], 64, len(rgbs))
  lightness, ab = network_ab(ckpt, rgbs, network)
  np.testing.assert_allclose(lightness, reference[0], rtol=0, atol=1e-6)
  np.testing.assert_allclose(ab, reference[1], rtol=0, atol=FP32_TOLERANCE)


def test_int8_ir_is_close_to_jax_but_not_equal(irs, ckpt, rgbs, reference):
  xml = os.path.join(irs["openvino-int8"], "chromagan.xml")  # The .xml itself works too.
  _, ab = network_ab(ckpt, rgbs, openvino_network.load_network(xml, 64, len(rgbs)))
  want = reference[1]
  error = np.abs(ab - want).mean() * 255
  centred = [(x - x.mean(axis=(0, 1, 2))).ravel() for x in (ab, want)]
  correlation = np.corrcoef(*centred)[0, 1]
  assert INT8_MIN_MEAN_LAB < error < INT8_MEAN_LAB, error
  assert correlation > INT8_MIN_CORRELATION, correlation


def test_colorize_with_network_matches_jax_colours(irs, ckpt, photo_dirs, tmp_path):
  """colorize.py --network writes every photo at its size, its L kept, its colours near the
  JAX path's; and the same run without --network is the JAX path."""
  inputs = photo_dirs[1]
  out_ov, out_jax = str(tmp_path / "ov"), str(tmp_path / "jax")
  common = ["--ckpt", ckpt, "--no_progress", "--conv_impl", "xla", inputs]
  assert colorize.main([*common, "--output", out_ov, "--network", irs["openvino-int8"]]) == 0
  assert colorize.main([*common, "--output", out_jax]) == 0
  names = sorted(os.listdir(inputs))
  assert sorted(os.listdir(out_ov)) == sorted(os.listdir(out_jax)) == names
  for name in names:
    got, want = (images.read_rgb(os.path.join(d, name)) for d in (out_ov, out_jax))
    assert got.shape == want.shape == images.read_rgb(os.path.join(inputs, name)).shape
    lab_got, lab_want = skcolor.rgb2lab(got), skcolor.rgb2lab(want)
    ab_error = np.abs(lab_got[..., 1:] - lab_want[..., 1:]).mean()
    assert INT8_MIN_MEAN_LAB < ab_error < INT8_MEAN_LAB, (name, ab_error)


def test_the_app_serves_the_ir_colours(irs, ckpt, photo_dirs, tmp_path, monkeypatch):
  """chromagan-app --network colorizes with the IR: an upload's result is the file colorize.py
  --network writes for it (batch 1 both), which differs from the JAX path's (test above)."""
  pytest.importorskip("flask")
  from chromagan_jax import app
  from chromagan_jax.inference import webapp

  create_app = webapp.create_app
  served = app_colorizers(monkeypatch)
  argv = ["--ckpt", ckpt, "--compilation_cache", "", "--network", irs["openvino-int8"]]
  assert app.main(argv) == 0
  (colorizer,) = served
  assert colorizer.variables is None and colorizer.batch_size == 1
  client = create_app(colorizer).test_client()
  name = sorted(os.listdir(photo_dirs[1]))[0]
  with open(os.path.join(photo_dirs[1], name), "rb") as f:
    upload = client.post("/colorize", data={"photo": (io.BytesIO(f.read()), name)})
  assert upload.status_code == 200, upload.json
  served_rgb = images.decode(client.get(upload.json["url"]).data).rgb
  out = str(tmp_path / "cli")
  argv = ["--ckpt", ckpt, "--no_progress", "--batch_size", "1", "--output", out]
  assert colorize.main([*argv, "--network", irs["openvino-int8"], photo_dirs[1]]) == 0
  np.testing.assert_array_equal(served_rgb, images.read(os.path.join(out, name)).rgb)


def test_colorize_a_video_with_network(irs, ckpt, rgbs, tmp_path):
  """Videos go through the same network stage: every frame written."""
  pytest.importorskip("av")
  clip = str(tmp_path / "clip.mp4")
  assert synthetic.write_clip(clip, synthetic.pan_zoom_frames(rgbs[:2], (96, 64), 3), (96, 64))
  logged = []
  argv = ["--ckpt", ckpt, "--output", str(tmp_path / "out"), "--no_progress", clip]
  assert colorize.main([*argv, "--network", irs["openvino-int8"]], log=logged.append) == 0
  assert any(": 6 frames" in line for line in logged), logged
  assert os.path.getsize(tmp_path / "out" / "clip.mp4") > 0


def test_a_mismatched_or_missing_ir_is_one_line(irs, ckpt, photo_dirs, tmp_path):
  with pytest.raises(UserError) as info:
    openvino_network.load_network(irs["openvino"], 32, 1)
  message = str(info.value)
  assert "[N,32,32,1]" in message and "64" in message and "\n" not in message
  logged = []
  argv = ["--ckpt", ckpt, "--output", str(tmp_path / "out"), "--no_progress", photo_dirs[1]]
  assert colorize.main([*argv, "--network", str(tmp_path / "nope.xml")], log=logged.append) == 1
  assert logged == [f"error: {tmp_path / 'nope.xml'}: not an OpenVINO IR (.xml) nor an export "
                    "folder holding chromagan.xml"]  # fmt: skip
  assert not os.path.exists(tmp_path / "out")
