"""Tests of evaluation/evaluator.py and the evaluate command: metrics against scikit-image
and hand computation, and a whole evaluation of a folder of real photos (scikit-image's
bundled ones)."""

import csv
import json
import math
import os
import warnings

import jax
import numpy as np
import pytest
from helpers import colourful_generator_variables
from PIL import Image
from skimage import color as skcolor
from skimage import data as skdata
from skimage import metrics as skmetrics

from chromagan_jax import evaluate
from chromagan_jax.configs import default
from chromagan_jax.evaluation import evaluator, scores
from chromagan_jax.model import networks
from chromagan_jax.runtime import machine
from chromagan_jax.weights import checkpoint

jax.config.update("jax_disable_most_optimizations", True)


def photo(name, size):
  """A bundled photo resized to ``size`` = (width, height), uint8 RGB."""
  image = getattr(skdata, name)()
  image = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
  return np.asarray(Image.fromarray(image[..., :3]).resize(size, Image.BILINEAR))


def test_psnr_and_ssim_match_skimage():
  rng = np.random.default_rng(0)
  truth = np.stack([photo("chelsea", (50, 40)), photo("coffee", (50, 40))])
  noise = rng.normal(0, [[[[6.0]]], [[[20.0]]]], truth.shape)
  pred = np.clip(np.round(truth + noise), 0, 255).astype(np.uint8)
  pred[1, :10] = 255 - pred[1, :10]  # a large structural error
  psnr = np.asarray(scores.psnr(pred, truth))
  ssim = np.asarray(scores.ssim_skimage(pred, truth))
  for i in range(2):
    ref_psnr = skmetrics.peak_signal_noise_ratio(truth[i], pred[i], data_range=255)
    ref_ssim = skmetrics.structural_similarity(truth[i], pred[i], channel_axis=-1, data_range=255)
    assert psnr[i] == pytest.approx(ref_psnr, abs=1e-3)
    assert ssim[i] == pytest.approx(ref_ssim, abs=2e-4)
  assert ssim[0] > ssim[1]
  assert np.isinf(np.asarray(scores.psnr(truth, truth))).all()
  np.testing.assert_allclose(np.asarray(scores.ssim_skimage(truth, truth)), 1.0, atol=1e-5)


def test_ssim_matches_tf_image_ssim():
  """``ssim`` is the reference's metric: tf.image.ssim (11x11 Gaussian window, std 1.5)."""
  import tensorflow as tf  # Only this test needs TensorFlow.

  rng = np.random.default_rng(1)
  truth = np.stack([photo(n, (64, 48)) for n in ("chelsea", "coffee", "astronaut")])
  noise = rng.normal(0, 1, truth.shape) * np.array([3.0, 12.0, 30.0])[:, None, None, None]
  pred = np.clip(np.round(truth + noise), 0, 255).astype(np.uint8)
  pred[2, :10] = 255 - pred[2, :10]
  ours = np.asarray(scores.ssim(pred, truth))
  # uint8 as the reference feeds it (TF then works in float32 on [0, 1]), and float64.
  ref_uint8 = tf.image.ssim(tf.constant(pred), tf.constant(truth), max_val=255).numpy()
  ref_f64 = tf.image.ssim(
    tf.constant(pred, tf.float64), tf.constant(truth, tf.float64), max_val=255.0
  ).numpy()
  # Measured: 4e-6 from TF's own float32 rounding, 7e-7 from float64.
  np.testing.assert_allclose(ours, ref_uint8, atol=1e-5)
  np.testing.assert_allclose(ours, ref_f64, atol=2e-6)
  assert ours[0] > ours[1] > ours[2]
  # Not the 7x7 uniform definition: the two differ by far more than the tolerance.
  assert np.abs(ours - np.asarray(scores.ssim_skimage(pred, truth))).max() > 1e-3


def test_colorfulness_hand_computed():
  # One red and one blue pixel: rg = R - G = (255, 0); yb = (R + G) / 2 - B = (127.5, -255).
  # Means 127.5 and -63.75; population standard deviations 127.5 and 191.25.
  two = np.array([[[[255, 0, 0], [0, 0, 255]]]], np.uint8)
  expected = math.sqrt(127.5**2 + 191.25**2) + 0.3 * math.sqrt(127.5**2 + 63.75**2)
  # One flat colour (200, 100, 50): no spread, rg = 100, yb = 150 - 50 = 100.
  flat = np.broadcast_to(np.array([200, 100, 50], np.uint8), (1, 3, 3, 3))
  grey = np.full((1, 4, 4, 3), 120, np.uint8)
  assert float(scores.colorfulness(two)[0]) == pytest.approx(expected, rel=1e-6)
  assert float(scores.colorfulness(flat)[0]) == pytest.approx(0.3 * math.sqrt(2e4), rel=1e-6)
  assert float(scores.colorfulness(grey)[0]) == 0.0


def test_chroma_high_frequency_matches_skimage_and_sees_speckle():
  """Speckle measure against scikit-image Lab and a hand-written 3x3 box mean."""
  truth = photo("coffee", (48, 40))
  lab = skcolor.rgb2lab(truth)
  rng = np.random.default_rng(1)
  lab[..., 1:] += rng.normal(0, 12.0, lab.shape[:2] + (2,))  # rainbow speckle, L kept
  speckled = np.clip(np.round(skcolor.lab2rgb(lab) * 255), 0, 255).astype(np.uint8)
  got = np.asarray(scores.chroma_high_frequency(np.stack([truth, speckled])))

  def reference(rgb):
    ab = skcolor.rgb2lab(rgb)[..., 1:]
    h, w = ab.shape[:2]
    box = sum(ab[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3)) / 9
    return np.mean((ab[1:-1, 1:-1] - box) ** 2)

  np.testing.assert_allclose(got, [reference(truth), reference(speckled)], rtol=2e-3)
  assert got[1] > 5 * got[0]  # The speckle shows; the photo's own texture is the floor.
  grey = np.repeat(skcolor.rgb2gray(truth)[..., None] * 255, 3, -1).round().astype(np.uint8)
  assert float(scores.chroma_high_frequency(grey[None])[0]) < 0.05


@pytest.fixture(scope="module")
def generator():
  """(variables, config): a small generator (image size 64, width 1/8) whose colours vary
  across the picture (a one-tint generator would make colorized ~ baseline)."""
  config = default.get_config()
  config.model.image_size = 64
  config.model.width = 1 / 8
  return colourful_generator_variables(config), config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, generator):
  directory = tmp_path_factory.mktemp("ckpt")
  checkpoint.save_generator(directory, *generator)
  return str(directory)


def colorized_reference(rgb, variables, config):
  """The colorized image without chromagan_jax.ops.color: scikit-image's L of the ground truth
  -> ``Generator.apply`` -> ab8 = clip(ab * 255) -> scikit-image ``lab2rgb`` -> uint8."""
  lab = skcolor.rgb2lab(rgb)
  l3 = np.repeat(lab[None, ..., :1] / 100.0, 3, axis=-1).astype(np.float32)
  conv = machine.conv_policy(config.model.get("conv_impl"))  # The config's, as before.
  gen = networks.models_from_config(config.model, conv)[0]
  ab = np.asarray(jax.jit(gen.apply, static_argnames="train")(variables, l3, train=False)[0])
  lab[..., 1:] = np.clip(ab[0].astype(np.float64) * 255.0, 0, 255) - 128.0
  with warnings.catch_warnings():  # a few negative Z values clipped: see the tolerances.
    warnings.simplefilter("ignore", UserWarning)
    return np.clip(np.round(skcolor.lab2rgb(lab) * 255), 0, 255).astype(np.uint8)


def grey_baseline_reference(rgb):
  """scikit-image: the photo's L with a = b = 0, back to uint8 RGB."""
  lab = skcolor.rgb2lab(rgb)
  lab[..., 1:] = 0
  return np.clip(np.round(skcolor.lab2rgb(lab) * 255), 0, 255).astype(np.uint8)


def hasler(rgb):
  r, g, b = np.moveaxis(rgb.astype(np.float64), -1, 0)
  rg, yb = r - g, 0.5 * (r + g) - b
  return np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())


def test_evaluate_folder(ckpt, generator, tmp_path, capsys):
  photos = tmp_path / "photos"
  photos.mkdir()
  # At the network size (64x64) the resize is the identity, so the ground truth is the file.
  truth = {name: photo(name, (64, 64)) for name in ("astronaut", "chelsea", "coffee")}
  for name, rgb in truth.items():
    Image.fromarray(rgb).save(photos / f"{name}.png")
  Image.fromarray(photo("rocket", (90, 70))).save(photos / "rocket.jpg")  # resized to 64x64
  (photos / "broken.png").write_bytes(b"not a png")
  out = tmp_path / "eval"
  status = evaluate.main(
    ["--ckpt", ckpt, "--data", str(photos), "--output", str(out), "--batch_size", "3"]
  )
  printed = capsys.readouterr()
  assert status == 0, printed.err
  assert "broken.png" in printed.err
  assert "FID not implemented" in printed.out and "grey baseline" in printed.out

  with open(out / "per_image.csv") as f:
    rows = {os.path.basename(r["image"]): r for r in csv.DictReader(f)}
  assert sorted(rows) == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
  for name, rgb in truth.items():
    row = {k: float(v) for k, v in rows[f"{name}.png"].items() if k != "image"}
    base = grey_baseline_reference(rgb)
    ref_psnr = skmetrics.peak_signal_noise_ratio(rgb, base, data_range=255)
    ref_ssim = skmetrics.structural_similarity(rgb, base, channel_axis=-1, data_range=255)
    assert row["baseline_psnr"] == pytest.approx(ref_psnr, abs=0.05), name
    assert row["baseline_ssim_skimage"] == pytest.approx(ref_ssim, abs=2e-3), name
    assert 0 < row["baseline_ssim"] <= 1, name
    assert row["baseline_colorfulness"] == pytest.approx(hasler(base), abs=0.2), name
    assert row["truth_colorfulness"] == pytest.approx(hasler(rgb), rel=1e-4), name
    colorized = colorized_reference(rgb, *generator)
    ref_psnr = skmetrics.peak_signal_noise_ratio(rgb, colorized, data_range=255)
    ref_ssim = skmetrics.structural_similarity(rgb, colorized, channel_axis=-1, data_range=255)
    # Measured: within 4e-4 dB, 2.2e-5 and 9e-5 relative (uint8 rounding of a few pixels).
    assert row["colorized_psnr"] == pytest.approx(ref_psnr, abs=0.01), name
    assert row["colorized_ssim_skimage"] == pytest.approx(ref_ssim, abs=2e-4), name
    assert row["colorized_colorfulness"] == pytest.approx(hasler(colorized), rel=1e-3), name
    # Really colourful and really different from the baseline: the check is not vacuous.
    assert row["colorized_colorfulness"] > row["baseline_colorfulness"] + 10, name
    assert abs(row["colorized_psnr"] - row["baseline_psnr"]) > 0.5, name

  with open(out / "summary.json") as f:
    summary = json.load(f)
  assert summary["num_images"] == 4 and summary["image_size"] == 64
  for result in ("colorized", "baseline"):
    for metric in ("psnr", "ssim", "ssim_skimage", "colorfulness"):
      mean = np.mean([float(r[f"{result}_{metric}"]) for r in rows.values()])
      assert summary["mean"][result][metric] == pytest.approx(mean, rel=1e-6)
  assert any("FID" in note for note in summary["notes"])


def test_evaluate_errors(ckpt, tmp_path, capsys):
  args = ["--ckpt", ckpt, "--output", str(tmp_path / "o")]
  assert evaluate.main(args + ["--data", str(tmp_path / "missing")]) == 1
  assert "no such file" in capsys.readouterr().err
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "x.png").write_bytes(b"")
  assert evaluate.main(args + ["--data", str(tmp_path / "bad"), "--no_progress"]) == 1
  err = capsys.readouterr().err
  assert "empty file" in err and "no image could be evaluated" in err
  assert evaluate.main(["--ckpt", str(tmp_path / "nock"), "--data", str(tmp_path)] + args[2:]) == 1
  assert "checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_bundled_through_input_pipeline(ckpt, tmp_path):
  """``--data bundled`` reads the held-out bundled photos via input_pipeline (TensorFlow)."""
  summary = evaluator.evaluate_checkpoint(
    ckpt, "bundled", str(tmp_path), batch_size=4, max_images=2, progress=False
  )
  assert summary["num_images"] == 2
  with open(tmp_path / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["image"] for r in rows] == ["bundled/0", "bundled/1"]
  assert all(float(r["truth_colorfulness"]) > 1 for r in rows)  # real colour photos


def test_evaluate_takes_a_predict_function(tmp_path):
  """No model needed: a perfect colorizer scores PSNR inf (skipped in means) and SSIM 1."""
  photos = tmp_path / "photos"
  photos.mkdir()
  for name in ("chelsea", "coffee"):
    Image.fromarray(photo(name, (32, 32))).save(photos / f"{name}.png")
  calls = []

  def predict_fn(rgb):  # uint8 (N, 32, 32, 3) -> (grey, colour): the truth itself.
    calls.append(rgb.shape)
    return np.repeat(np.asarray(rgb)[..., 1:2], 3, -1), rgb

  summary = evaluator.evaluate(
    predict_fn, str(photos), str(tmp_path / "o"), image_size=32, batch_size=4, progress=False
  )
  assert calls == [(4, 32, 32, 3)]  # One padded batch.
  assert summary["num_images"] == 2 and summary["num_identical"]["colorized"] == 2
  assert summary["mean"]["colorized"]["psnr"] is None
  assert summary["mean"]["colorized"]["ssim"] == pytest.approx(1.0, abs=1e-6)
  assert summary["mean"]["baseline"]["ssim"] < 0.99
  assert "checkpoint" not in evaluator.format_table(summary)
