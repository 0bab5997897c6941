"""Tests of colorize_lib, colorize_files and colorize.py on real photos (scikit-image's bundled
ones).

References are independent of chromagan_jax.ops.color: scikit-image's Lab conversion and resize,
NumPy rotations for EXIF orientation, file hashes for "inputs untouched".
"""

import functools
import hashlib
import io
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from helpers import (
  ab_input_sensitivity,
  colourful_generator_variables,
  png_header_only,
  random_generator_variables,
  resize_antialiased,
  small_config,
)
from PIL import Image
from skimage import color as skcolor
from skimage import data as skdata
from skimage import transform as sktransform

from chromagan_jax import colorize
from chromagan_jax.data import images
from chromagan_jax.inference import engine
from chromagan_jax.model import networks, predict, shapes
from chromagan_jax.runtime import machine
from chromagan_jax.weights import checkpoint

jax.config.update("jax_disable_most_optimizations", True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def colourful(tmp_path_factory):
  """(checkpoint directory, latest variables, config) of the colourful generator; step 1
  holds ``colourful_generator_variables(config, seed=1)``, the latest (step 2) seed 0."""
  config = small_config()
  variables = colourful_generator_variables(config)
  directory = tmp_path_factory.mktemp("colourful")
  checkpoint.save_generator(directory, colourful_generator_variables(config, 1), config, step=1)
  checkpoint.save_generator(directory, variables, config, step=2)
  return str(directory), variables, config


def reference_colorize(rgb, variables, config):
  """The reference inference without chromagan_jax.ops.color or engine.

  scikit-image bilinear resize to the network size (rounded to uint8, as training data),
  its Lab L / 100 tiled -> ``Generator.apply`` -> ab8 = clip(ab * 255) resized bilinearly
  to the input's size (antialiased when shrinking: ``helpers.resize_antialiased``) ->
  joined with the full-resolution L -> scikit-image ``lab2rgb``.

  Returns (rgb float in [0, 255] before rounding, in-gamut mask (H, W), ab8 - 128 at the
  network size).
  """
  size = config.model.image_size
  small = sktransform.resize(
    rgb.astype(np.float64), (size, size), order=1, mode="edge", anti_aliasing=False
  )
  small = np.clip(np.round(small), 0, 255).astype(np.uint8)
  l3 = np.repeat(skcolor.rgb2lab(small)[..., :1] / 100.0, 3, axis=-1)[None].astype(np.float32)
  gen = networks.models_from_config(config.model)[0]
  ab = np.asarray(_apply_generator(gen, variables, l3))[0].astype(np.float64)
  ab8 = np.clip(ab * 255.0, 0, 255)
  up = resize_antialiased(ab8, rgb.shape[:2])  # Antialiased when shrinking.
  lab = np.concatenate([lightness(rgb)[..., None], up - 128.0], axis=-1)
  # scikit-image clips out-of-gamut colours in XYZ, color.py in linear RGB: compare in gamut.
  with warnings.catch_warnings():  # "negative Z values clipped": those pixels are left out.
    warnings.simplefilter("ignore", UserWarning)
    linear = skcolor.lab2xyz(lab) @ skcolor.colorconv.rgb_from_xyz.T
    want = skcolor.lab2rgb(lab) * 255.0
  in_gamut = np.all((linear > 1e-4) & (linear < 1 - 1e-4), axis=-1)
  return want, in_gamut, ab8 - 128.0


@functools.partial(jax.jit, static_argnums=0)
def _apply_generator(gen, variables, l3):
  return gen.apply(variables, l3, train=False)[0]


def assert_matches_reference(result, rgb, variables, config, name=""):
  """``result`` (uint8) within 1 level of :func:`reference_colorize` on in-gamut pixels."""
  want, in_gamut, _ = reference_colorize(rgb, variables, config)
  assert result.shape == want.shape, name
  assert in_gamut.mean() > 0.6, (name, in_gamut.mean())
  diff = np.abs(result.astype(np.float64) - want)[in_gamut]
  # Measured: max 0.50, mean 0.25 (uint8 rounding of the same colour); a swapped, rotated or
  # wrongly computed ab is off by tens of levels.
  assert diff.max() <= 1.0 and diff.mean() < 0.35, (name, diff.max(), diff.mean())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """A checkpoint of a milder colourful generator (seeds 0 and 1 at steps 1 and 2): its ab
  follows the input, and most pixels stay inside the sRGB gamut (these tests check L)."""
  config = small_config()
  latest = colourful_generator_variables(config, 1, strength=1.0)
  sensitivity = ab_input_sensitivity(latest, config)
  assert sensitivity > 0.05, sensitivity  # ab in [0, 1]: > 13 levels of ab8.
  directory = tmp_path_factory.mktemp("ckpt")
  step1 = colourful_generator_variables(config, 0, strength=1.0)
  checkpoint.save_generator(directory, step1, config, step=1)
  checkpoint.save_generator(directory, latest, config, step=2)
  return str(directory)


@pytest.fixture(scope="module")
def generator(ckpt):
  return checkpoint.load_generator(ckpt)


def lightness(rgb_uint8):
  """scikit-image's Lab L in [0, 100] of uint8 RGB."""
  return skcolor.rgb2lab(rgb_uint8[..., :3])[..., 0]


def unclipped_l_error(result, rgb):
  """|L(result) - L(rgb)| on the pixels where no channel of ``result`` is clipped to 0 or 255
  (there the test generator's strong colours leave the sRGB gamut and clipping moves L);
  asserts that they are most. ``rgb``: uint8, or floats in [0, 255]."""
  result = result[..., :3]
  unclipped = np.all((result > 0) & (result < 255), axis=-1)
  assert unclipped.mean() > 0.6, unclipped.mean()
  err = np.abs(lightness(result) - skcolor.rgb2lab(np.asarray(rgb, np.float64) / 255.0)[..., 0])
  return err[unclipped]


def photo(name, size):
  """A bundled photo resized to ``size`` = (width, height), uint8."""
  im = Image.fromarray(getattr(skdata, name)())
  return np.asarray(im.resize(size, Image.BILINEAR))


def sha(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def run_cli(args):
  messages = []
  status = colorize.main(args, log=messages.append)
  return status, "\n".join(messages)


# --------------------------------------------------------------------------------------------
# Device math against scikit-image.


def test_network_resize_matches_skimage_bilinear():
  rgb = photo("astronaut", (150, 113))
  assert engine.pad_to_bucket(rgb).shape[:2] == (128, 160)
  # What Colorizer feeds the network: the training data's resize.
  ours = images.resize(rgb, 64)
  ref = sktransform.resize(
    rgb.astype(np.float64), (64, 64), order=1, mode="edge", anti_aliasing=False
  )
  ref = np.clip(np.round(ref), 0, 255)
  assert ours.dtype == np.uint8 and ours.shape == (64, 64, 3)
  assert np.abs(ours.astype(int) - ref).max() <= 1


def test_compose_matches_skimage_lab():
  rgb = photo("coffee", (120, 100))
  rng = np.random.default_rng(0)
  # A smooth ab field (network values in [0, 1]) of moderate colours: strong ones leave the
  # sRGB gamut, where scikit-image (clips XYZ) and color.py (clips linear RGB) differ.
  ab_small = rng.uniform(0.4, 0.6, (4, 4, 2))
  ab_net = sktransform.resize(ab_small, (64, 64), order=1).astype(np.float32)
  padded = engine.pad_to_bucket(rgb)
  ours = np.asarray(engine.compose(padded, ab_net, 100, 120)[:100, :120])
  ab8 = ab_net.astype(np.float64) * 255
  ab8_up = sktransform.resize(ab8, (100, 120), order=1, mode="edge", anti_aliasing=False)
  lab = np.concatenate([lightness(rgb)[..., None], ab8_up - 128], axis=-1)
  ref = np.round(skcolor.lab2rgb(lab) * 255)
  diff = np.abs(ours.astype(int) - ref)
  assert diff.max() <= 1, diff.max()
  # ab beyond [0, 1] is clipped (the reference's clip(ab * 255, 0, 255)).
  over = np.asarray(engine.compose(padded, ab_net + 2.0, 100, 120))
  at_one = np.asarray(engine.compose(padded, np.ones_like(ab_net), 100, 120))
  np.testing.assert_array_equal(over, at_one)
  assert np.abs(ours[..., 0].astype(int) - ours[..., 2]).mean() > 5  # really coloured.


# --------------------------------------------------------------------------------------------
# Python API.


def as_rgb(image):
  """Grey (H, W) / (H, W, 1) tiled, RGBA without alpha: the RGB whose L is colorized."""
  image = image if image.ndim == 3 else image[..., None]
  return np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]


def test_colorize_api_kinds(generator):
  variables, config = generator
  grey = photo("camera", (100, 90))
  rgb = photo("chelsea", (110, 97))
  alpha = (np.arange(100)[:, None] * np.ones((1, 100)) * 2.5).astype(np.uint8)
  rgba = np.concatenate([photo("coffee", (100, 100)), alpha[..., None]], axis=-1)
  tiny = np.full((1, 1, 3), 77, np.uint8)
  images = [grey, grey[..., None], as_rgb(grey), rgb, rgba, tiny]
  out = engine.colorize(images, variables, config, batch_size=4)
  assert [o.shape for o in out] == [
    (90, 100, 3), (90, 100, 3), (90, 100, 3), (97, 110, 3), (100, 100, 4), (1, 1, 3),
  ]  # fmt: skip
  assert all(o.dtype == np.uint8 for o in out)
  # The three encodings of one grey image give one result.
  np.testing.assert_array_equal(out[0], out[1])
  np.testing.assert_array_equal(out[0], out[2])
  np.testing.assert_array_equal(out[4][..., 3], alpha)
  for image, result in zip(images, out, strict=True):
    assert unclipped_l_error(result, as_rgb(image)).mean() < 0.5
  assert_matches_reference(out[3], rgb, variables, config)
  with pytest.raises(ValueError, match="uint8"):
    engine.colorize([grey.astype(np.float32)], variables, config)
  with pytest.raises(ValueError, match="shape"):
    engine.colorize([np.zeros((4, 4, 2), np.uint8)], variables, config)


def test_colorize_matches_an_independent_pipeline_whatever_the_batching(colourful):
  """Every output equals the scikit-image pipeline's, for any batch size and input order."""
  _, variables, config = colourful
  images = [
    photo("astronaut", (150, 120)),
    photo("camera", (90, 100)),  # grey (H, W)
    photo("chelsea", (100, 90)),
    np.dstack([photo("coffee", (130, 110)), np.full((110, 130), 200, np.uint8)]),  # RGBA
    photo("rocket", (120, 80)),
  ]
  # The test generator's colours vary across each picture, not one tint: tens of Lab units.
  _, _, ab = reference_colorize(images[0], variables, config)
  assert ab.std(axis=(0, 1)).min() > 10, ab.std(axis=(0, 1))
  out = engine.colorize(images, variables, config, batch_size=3)  # a padded last batch
  for i, (image, result) in enumerate(zip(images, out, strict=True)):
    assert_matches_reference(result[..., :3], as_rgb(image), variables, config, name=i)
  np.testing.assert_array_equal(out[3][..., 3], images[3][..., 3])
  one_by_one = engine.colorize(images, variables, config, batch_size=1)
  reversed_pairs = engine.colorize(images[::-1], variables, config, batch_size=2)[::-1]
  for i in range(len(images)):
    for other in (one_by_one[i], reversed_pairs[i]):
      assert np.abs(other.astype(int) - out[i]).max() <= 1, i  # float rounding at most.


def test_photos_smaller_than_the_network_input_get_antialiased_colours(colourful):
  """ab shrunk from the network size to a smaller photo is antialiased (a tent filter
  widened by the shrink factor): outputs match the reference resized with scikit-image's
  matching Gaussian prefilter (helpers.resize_antialiased), not plain bilinear sampling."""
  _, variables, config = colourful
  # Shrunk 2-4x on at least one axis (network input 64x64); (width, height).
  images = [photo("chelsea", (30, 20)), photo("astronaut", (16, 16)), photo("coffee", (24, 40))]
  out = engine.colorize(images, variables, config, batch_size=3)
  for i, (image, result) in enumerate(zip(images, out, strict=True)):
    want, in_gamut, _ = reference_colorize(image, variables, config)
    assert in_gamut.mean() > 0.8, (i, in_gamut.mean())
    diff = np.abs(result.astype(np.float64) - want)[in_gamut]
    # Measured: mean 0.51-0.75, 99th percentile 3.0-5.7 (a tent and a Gaussian differ at
    # sharp colour edges); without antialiasing mean 2.9-3.7, 99th percentile 19-27.
    assert diff.mean() < 1.2 and np.percentile(diff, 99) < 9.0, (i, diff.mean())


# --------------------------------------------------------------------------------------------
# Files of every kind through the command line.


def make_inputs(folder):
  """Writes one file per input kind; returns {name: (file name, reference RGB, alpha)}.

  The reference RGB is what the file shows (after EXIF orientation), as floats in [0, 255]
  (16-bit kept at full precision), computed without chromagan_jax.
  """
  os.makedirs(folder, exist_ok=True)
  kinds = {}

  def save(name, im, ref, alpha=None, **kwargs):
    im.save(os.path.join(folder, name), **kwargs)
    kinds[name] = (np.asarray(ref, np.float64), alpha)

  grey = photo("camera", (110, 100))
  save("grey.png", Image.fromarray(grey), np.repeat(grey[..., None], 3, -1))
  rgb = photo("chelsea", (120, 100))
  save("rgb.jpg", Image.fromarray(rgb), rgb, quality=95)  # ref: decoded below.
  save("rgb.tif", Image.fromarray(rgb), rgb)
  coffee = photo("coffee", (100, 100))
  alpha = np.tile(np.linspace(0, 255, 100).astype(np.uint8), (100, 1))
  save("rgba.png", Image.fromarray(np.dstack([coffee, alpha])), coffee, alpha)
  save("grey_alpha.png", Image.fromarray(np.dstack([grey, grey[::-1]]), "LA"),
       np.repeat(grey[..., None], 3, -1), grey[::-1])  # fmt: skip
  pal = Image.fromarray(coffee).quantize(64)
  save("palette.png", pal, np.asarray(pal.convert("RGB")))
  pal_t = Image.fromarray(coffee).quantize(64)
  pal_t.info["transparency"] = 0
  pal_alpha = np.where(np.asarray(pal_t) == 0, 0, 255).astype(np.uint8)
  save("palette_t.png", pal_t, np.asarray(pal_t.convert("RGB")), pal_alpha, transparency=0)
  grey16 = (photo("camera", (100, 110)).astype(np.uint16) * 257 + 100).clip(0, 65535)
  im16 = Image.fromarray(grey16.astype(np.uint16))
  assert im16.mode.startswith("I;16")
  save("grey16.png", im16, np.repeat(grey16[..., None] / 257.0, 3, -1))
  cmyk = Image.fromarray(rgb).convert("CMYK")
  save("cmyk.jpg", cmyk, rgb, quality=95)
  # Stored landscape, EXIF orientation 6: shown rotated 90 degrees clockwise.
  astro = photo("astronaut", (120, 100))
  exif = Image.Exif()
  exif[0x0112] = 6
  save("rotated.jpg", Image.fromarray(astro), np.rot90(astro, k=-1), exif=exif, quality=95)
  # JPEG references: what the files decode to (compression is not colorization's error).
  for name in ("rgb.jpg", "cmyk.jpg", "rotated.jpg"):
    with Image.open(os.path.join(folder, name)) as im:
      decoded = np.asarray(im.convert("RGB"), np.float64)
    kinds[name] = (np.rot90(decoded, k=-1) if name == "rotated.jpg" else decoded, None)
  return kinds


def test_cli_colorizes_every_input_kind(ckpt, tmp_path):
  inputs = tmp_path / "in"
  kinds = make_inputs(inputs)
  hashes = {name: sha(inputs / name) for name in kinds}
  out = tmp_path / "out"
  status, log = run_cli(["--ckpt", ckpt, "--output", str(out), "--batch_size", "4", str(inputs)])
  assert status == 0, log
  assert {name: sha(inputs / name) for name in kinds} == hashes  # inputs untouched.
  expected_names = {
    "grey.png": "grey.png", "rgb.jpg": "rgb.jpg", "rgb.tif": "rgb.png", "rgba.png": "rgba.png",
    "grey_alpha.png": "grey_alpha.png", "palette.png": "palette.png",
    "palette_t.png": "palette_t.png", "grey16.png": "grey16.png", "cmyk.jpg": "cmyk.jpg",
    "rotated.jpg": "rotated.jpg",
  }  # fmt: skip
  assert sorted(os.listdir(out)) == sorted(expected_names.values())
  for name, (ref, alpha) in kinds.items():
    path = out / expected_names[name]
    with Image.open(path) as im:
      assert im.format == ("JPEG" if name.endswith(".jpg") else "PNG"), name
      result = np.asarray(im)
    assert result.shape[:2] == ref.shape[:2], name
    assert result.shape[-1] == (3 if alpha is None else 4), name
    if alpha is not None:
      np.testing.assert_array_equal(result[..., 3], alpha, err_msg=name)
    err = unclipped_l_error(result, ref)
    # PNG: uint8 rounding (measured mean <= 0.15, 99th percentile <= 0.36); JPEG: plus
    # compression of the test generator's colour edges (measured up to 0.71 and 4.9).
    mean_tol, p99_tol = (0.4, 1.5) if path.suffix == ".png" else (1.0, 6.0)
    assert err.mean() < mean_tol and np.percentile(err, 99) < p99_tol, (name, err.mean())
  # The rotated photo is portrait (100 wide, 120 high) after EXIF orientation.
  assert np.asarray(Image.open(out / "rotated.jpg")).shape == (120, 100, 3)


def test_cli_colours_follow_the_exif_rotated_picture(colourful, tmp_path):
  """The network sees the photo as shown (after EXIF orientation), and each file gets its own
  colours: outputs equal the independent pipeline run on the displayed pixels."""
  ckpt_dir, variables, config = colourful
  inputs = tmp_path / "in"
  inputs.mkdir()
  astro = photo("astronaut", (120, 100))
  exif = Image.Exif()
  exif[0x0112] = 6  # Stored landscape, shown rotated 90 degrees clockwise.
  Image.fromarray(astro).save(inputs / "rotated.png", exif=exif)
  cat = photo("chelsea", (96, 110))
  Image.fromarray(cat).save(inputs / "cat.png")
  out = tmp_path / "out"
  status, log = run_cli(["--ckpt", ckpt_dir, "--output", str(out), "--batch_size", "2",
                         str(inputs)])  # fmt: skip
  assert status == 0, log
  shown = np.rot90(astro, k=-1)
  for name, rgb in (("rotated.png", shown), ("cat.png", cat)):
    with Image.open(out / name) as im:
      assert_matches_reference(np.asarray(im), rgb, variables, config, name=name)


def test_compare_and_step(colourful, tmp_path):
  ckpt, latest, config = colourful
  image = photo("chelsea", (100, 80))
  Image.fromarray(image).save(tmp_path / "cat.png")
  out = tmp_path / "out"
  args = ["--ckpt", ckpt, "--output", str(out), "--compare", str(tmp_path / "cat.png")]
  assert run_cli(args)[0] == 0
  side = np.asarray(Image.open(out / "cat_compare.png"))
  colour = np.asarray(Image.open(out / "cat.png"))
  assert side.shape == (80, 200, 3)
  np.testing.assert_array_equal(side[:, 100:], colour)
  grey = side[:, :100].astype(int)
  assert np.abs(grey - grey[..., :1]).max() <= 1  # neutral grey panel
  assert np.abs(lightness(side[:, :100]) - lightness(image)).max() < 1.0
  # Without --step the latest checkpoint (2) is used; --step 1 selects the other one.
  assert_matches_reference(colour, image, latest, config)
  assert run_cli(["--ckpt", ckpt, "--step", "1", "--output", str(tmp_path / "s1"),
                  str(tmp_path / "cat.png")])[0] == 0  # fmt: skip
  step1 = np.asarray(Image.open(tmp_path / "s1" / "cat.png"))
  assert_matches_reference(step1, image, colourful_generator_variables(config, 1), config)
  status, log = run_cli(["--ckpt", ckpt, "--step", "7", "--output", str(tmp_path / "s7"),
                         str(tmp_path / "cat.png")])  # fmt: skip
  assert status == 1 and "no checkpoint for step 7" in log
  status, log = run_cli(["--ckpt", str(tmp_path / "nope"), "--output", str(out), str(tmp_path)])
  assert status == 1 and "checkpoint" in log


def test_never_overwrites(ckpt, tmp_path):
  image = photo("coffee", (90, 70))
  src = tmp_path / "a.png"
  Image.fromarray(image).save(src)
  digest = sha(src)
  args = ["--ckpt", ckpt, "--output", str(tmp_path), str(src)]
  assert run_cli(args)[0] == 0  # output folder == input folder
  assert sha(src) == digest
  first = tmp_path / "a_colorized.png"
  first_digest = sha(first)
  status, log = run_cli(args)
  assert status == 0 and "a_colorized_2.png" in log
  assert sha(first) == first_digest and sha(src) == digest
  assert (tmp_path / "a_colorized_2.png").exists()
  # --overwrite replaces earlier outputs, never the input.
  os.remove(tmp_path / "a_colorized_2.png")
  assert run_cli(args + ["--overwrite"])[0] == 0
  assert sha(src) == digest
  assert sorted(os.listdir(tmp_path)) == ["a.png", "a_colorized.png"]


# --------------------------------------------------------------------------------------------
# Bad inputs.


def test_bad_inputs_are_reported_and_skipped(ckpt, tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "notes.jpg").write_text("this is not an image\n")
  (bad / "empty.png").write_bytes(b"")
  buf = io.BytesIO()
  Image.fromarray(photo("chelsea", (100, 100))).save(buf, format="JPEG")
  (bad / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  (bad / "bomb.png").write_bytes(png_header_only(20000, 20000))
  (bad / "nopixels.png").write_bytes(png_header_only(100, 100))
  good = tmp_path / "good"
  good.mkdir()
  Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(good / "tiny.png")

  out = tmp_path / "out"
  status, log = run_cli(["--ckpt", ckpt, "--output", str(out), str(bad), str(good),
                         str(tmp_path / "missing.png")])  # fmt: skip
  assert status == 0, log
  for name in ("notes.jpg", "empty.png", "truncated.jpg", "bomb.png", "nopixels.png"):
    assert f"skipped {bad / name}:" in log, name
  assert "not an image" in log and "empty file" in log
  assert "20000x20000" in log and "exceeds the limit" in log and "not decoded" in log
  assert "missing.png: no such file" in log
  assert np.asarray(Image.open(out / "tiny.png")).shape == (1, 1, 3)
  assert sorted(os.listdir(out)) == ["tiny.png"]
  # Only bad inputs: nothing written, non-zero exit, still no crash.
  status, log = run_cli(["--ckpt", ckpt, "--output", str(tmp_path / "out2"), str(bad)])
  assert status == 1 and "colorized 0 image(s)" in log
  # A lower limit rejects an ordinary image before decoding it.
  with pytest.raises(images.ImageError, match="exceeds the limit"):
    images.read(good / "tiny.png", max_pixels=0)


def test_script_entry_point(ckpt, tmp_path):
  Image.fromarray(photo("camera", (64, 64))).save(tmp_path / "g.png")
  help_text = subprocess.run(
    [sys.executable, os.path.join(ROOT, "colorize.py"), "--help"],
    capture_output=True, text=True, check=True, cwd=ROOT,
  ).stdout  # fmt: skip
  assert "JPEG inputs are written as JPEG" in help_text and "--max_pixels" in help_text
  proc = subprocess.run(
    [sys.executable, os.path.join(ROOT, "colorize.py"), "--ckpt", ckpt, "--output",
     str(tmp_path / "o"), str(tmp_path / "g.png"), "--no_progress"],
    capture_output=True, text=True, cwd=ROOT,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "o" / "g.png").exists()


def test_cli_conv_impl_switch_gives_the_same_colours(colourful, tmp_path):
  """--conv_impl changes only how convolutions are computed, not the picture."""
  ckpt, variables, config = colourful
  inputs = tmp_path / "in"
  inputs.mkdir()
  image = photo("astronaut", (96, 80))
  Image.fromarray(image).save(inputs / "a.png")
  results = {}
  for impl in ("xla", "winograd4"):
    out = tmp_path / impl
    status, log = run_cli(["--ckpt", ckpt, "--output", str(out), "--conv_impl", impl, str(inputs)])
    assert status == 0, log
    with Image.open(out / "a.png") as im:
      results[impl] = np.asarray(im).astype(int)
  assert np.abs(results["xla"] - results["winograd4"]).max() <= 1  # uint8 rounding only.
  assert_matches_reference(results["winograd4"], image, variables, config)
  with pytest.raises(SystemExit):  # argparse: "invalid choice: 'fast'".
    colorize.build_parser().parse_args(
      ["--ckpt", ckpt, "--output", "o", "--conv_impl", "fast", "x"]
    )


@pytest.mark.slow  # three colorize.py processes
def test_compilation_cache_skips_the_compile_of_a_second_run(ckpt, tmp_path):
  """By default colorize.py keeps its compiled programs under XDG_CACHE_HOME and reuses them."""
  Image.fromarray(photo("astronaut", (64, 48))).save(tmp_path / "a.png")
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(
    XDG_CACHE_HOME=str(tmp_path / "home_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",  # The small test model compiles fast.
    JAX_LOG_COMPILES="1",  # Makes JAX log cache hits as warnings.
  )

  def colorize(out, *flags):
    proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "colorize.py"), "--ckpt", ckpt, "--output",
       str(tmp_path / out), str(tmp_path / "a.png"), "--no_progress", *flags],
      capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr

  cache = tmp_path / "home_cache" / "chromagan_jax" / "xla"
  assert "cache hit" not in colorize("o1")
  assert cache.is_dir() and any(cache.iterdir())
  assert "Persistent compilation cache hit" in colorize("o2")
  assert sha(tmp_path / "o1" / "a.png") == sha(tmp_path / "o2" / "a.png")
  # An unusable cache directory costs the speed-up, not the run.
  (tmp_path / "file").write_text("")
  log = colorize("o3", "--compilation_cache", str(tmp_path / "file" / "cache"))
  assert f"compilation cache off: cannot create {tmp_path / 'file' / 'cache'}" in log
  assert sha(tmp_path / "o1" / "a.png") == sha(tmp_path / "o3" / "a.png")


def test_converted_checkpoint_colorizes_with_the_fast_algorithm_by_default(tmp_path):
  """A converted checkpoint's config names no conv_impl (read back as "auto"): every front
  end's colorizer (the CLI, the app, evaluate, video: engine.Colorizer; evaluate's metrics:
  evaluator) gets "auto", i.e. the Winograd rule on CPU, not XLA's convolutions."""
  config = small_config()
  variables = random_generator_variables(config)
  model = {**shapes.made_for(variables), "vgg_preprocessing": "none"}  # As convert writes it.
  assert "conv_impl" not in model
  ckpt = str(tmp_path / "converted")
  checkpoint.save_generator(ckpt, variables, {"model": model, "converted": {"kind": "generator"}})
  loaded, saved = checkpoint.load_generator(ckpt, with_class_head=False)
  assert saved.model.conv_impl == "auto"  # Filled in on reading (configs/upgrade.py).
  colorizer = engine.Colorizer(loaded, saved, batch_size=1)
  assert (colorizer.model.conv.impl, colorizer.model.conv.objective) == ("winograd", "fwd")
  policy = machine.conv_policy(engine.conv_impl_of(saved))
  assert predict.generator_from(saved, policy).conv.impl == "winograd"
  # A config that names its conv_impl keeps it.
  assert engine.Colorizer(variables, config, conv_impl="xla").model.conv.impl == "xla"


def test_overlapped_stages_write_the_sequential_paths_files_byte_for_byte(
  ckpt, tmp_path, monkeypatch
):
  """--workers 2 (decoding, the network, composing and encoding overlapped; photos batched as
  they finish decoding) writes the files --workers 0 (one stage after another) writes: same
  names, same bytes, same messages and exit status. 0a.png decodes slowly, so the overlapped
  path batches later photos before it, and 0a.tif would take its output name (0a.png) if
  results were written in the order they finish."""
  inputs = tmp_path / "in"
  (inputs / "sub").mkdir(parents=True)
  sizes = {"astronaut": (150, 120), "chelsea": (100, 90), "coffee": (200, 130),
           "rocket": (120, 80), "camera": (90, 100)}  # fmt: skip
  for i, (name, size) in enumerate(sizes.items()):
    Image.fromarray(photo(name, size)).save(inputs / f"{i}_{name}.jpg", quality=90)
  Image.fromarray(photo("chelsea", (30, 20))).save(inputs / "tiny.png")  # Below 64: XLA compose.
  Image.fromarray(photo("camera", (70, 64))).save(inputs / "sub" / "grey.png")
  rgba = np.dstack([photo("coffee", (80, 72)), np.full((72, 80), 180, np.uint8)])
  Image.fromarray(rgba).save(inputs / "sub" / "rgba.png")
  Image.fromarray(photo("astronaut", (90, 90))).save(inputs / "sub" / "rgba.tif")  # -> .png too
  Image.fromarray(photo("rocket", (64, 80))).save(inputs / "0a.png")
  Image.fromarray(photo("coffee", (80, 64))).save(inputs / "0a.tif")
  (inputs / "sub" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
  slow = str(inputs / "0a.png")
  read = images.read

  def slow_read(path, *args, **kwargs):
    if str(path) == slow:
      import time

      time.sleep(1.0)
    return read(path, *args, **kwargs)

  monkeypatch.setattr(images, "read", slow_read)
  runs = {}
  for workers in ("0", "2"):
    out = tmp_path / f"out{workers}"
    args = ["--ckpt", ckpt, "--output", str(out), "--batch_size", "3", "--compare",
            "--no_progress", "--workers", workers, str(inputs)]  # fmt: skip
    status, log = run_cli(args)
    files = {
      os.path.relpath(os.path.join(d, f), out): sha(os.path.join(d, f))
      for d, _, names in os.walk(out)
      for f in names
    }
    lines = sorted(line.replace(str(out), "OUT") for line in log.splitlines())
    runs[workers] = (status, files, lines)
  status, files, lines = runs["0"]
  assert status == 0 and len(files) == 2 * 11, files  # 11 photos and their _compare files.
  assert "sub/rgba_colorized.png" in files and "0a_colorized.png" in files
  assert any("corrupt.jpg: cannot decode image" in line for line in lines), lines
  assert runs["2"] == runs["0"]


def test_overlapped_stages_stop_cleanly_on_ctrl_c(ckpt, tmp_path, monkeypatch):
  """Ctrl-C (or an error) in a stage thread ends the run: it reaches the caller, the stage
  threads are gone, and the output folder holds only complete files (no temporary ones)."""
  import threading

  from chromagan_jax.inference import folders

  inputs = tmp_path / "in"
  inputs.mkdir()
  for i in range(8):
    Image.fromarray(photo("chelsea", (90 + i, 80))).save(inputs / f"{i}.png")
  compose, calls = engine.Colorizer.compose_full, []

  def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 5:
      raise KeyboardInterrupt
    return compose(*args, **kwargs)

  monkeypatch.setattr(engine.Colorizer, "compose_full", staticmethod(interrupted))
  out = tmp_path / "out"
  with pytest.raises(KeyboardInterrupt):
    folders.colorize_files([str(inputs)], str(out), ckpt, batch_size=2, progress=False,
                           log=lambda _: None, workers=2)  # fmt: skip
  stages = ("decode", "network", "compose")
  assert not [t.name for t in threading.enumerate() if t.name.startswith(stages)]
  written = sorted(os.listdir(out))
  assert len(written) < 8 and all(name.endswith(".png") for name in written), written
  for name in written:
    with Image.open(out / name) as im:
      im.load()
