"""Tests of chromagan_jax.data.images, the one decoder / extension list / folder walk.

Every mode is checked on files the test writes from known arrays, against an expectation
computed here with NumPy (not by the decoder). Then the same files go through every consumer
(the training input pipeline, evaluate, colorize) and must come out as the same pixels.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import png_header_only, smooth_rgb
from PIL import Image

from chromagan_jax.configs import default
from chromagan_jax.data import images
from chromagan_jax.data import pipeline as ip
from chromagan_jax.evaluation import sources
from chromagan_jax.inference import folders

H, W = 10, 12


RGB = smooth_rgb(H, W, seed=1)
GREY = smooth_rgb(H, W, seed=2)[..., 0]
ALPHA = np.tile(np.linspace(0, 255, W).round().astype(np.uint8), (H, 1))
BITS = np.random.default_rng(5).integers(0, 2, (H, W)).astype(bool)
GREY16 = (np.arange(H * W).reshape(H, W) * 541).astype(np.uint16)  # Up to 64379.
# 32-bit integer grey: negative, 16-bit and beyond-16-bit values.
GREY32 = (np.arange(H * W).reshape(H, W).astype(np.int64) * 900 - 5000).astype(np.int32)
GREYF = np.linspace(-0.2, 1.2, H * W).reshape(H, W).astype(np.float32)
GREYF[0, :3] = (np.nan, 0.5, 1.0)
CMYK = np.random.default_rng(3).integers(0, 256, (H, W, 4), dtype=np.uint8)
PALETTE = np.array([[255, 0, 0], [0, 128, 255], [20, 200, 40], [250, 250, 10]], np.uint8)
INDICES = np.random.default_rng(4).integers(0, 4, (H, W)).astype(np.uint8)


def tile(grey):
  return np.repeat(grey[..., None], 3, -1)


def on_white(rgb, alpha):
  """Independent composite: float arithmetic, rounded."""
  a = alpha[..., None].astype(np.float64) / 255
  return np.round(rgb * a + 255 * (1 - a)).astype(np.uint8)


def _exif(orientation):
  exif = Image.Exif()
  exif[0x0112] = orientation
  return exif


def _write_modes(root):
  """Writes one file per accepted mode; returns {name: (expected rgb, expected alpha)}."""
  expected = {}

  def save(name, im, rgb, alpha=None, **kw):
    im.save(root / name, **kw)
    expected[name] = (rgb, alpha)

  save("rgb.png", Image.fromarray(RGB), RGB)
  save("grey.png", Image.fromarray(GREY), tile(GREY))
  save("bilevel.png", Image.fromarray(BITS), tile(BITS.astype(np.uint8) * 255))
  save("grey_alpha.png", Image.fromarray(np.dstack([GREY, ALPHA]), "LA"), tile(GREY), ALPHA)
  save("rgba.png", Image.fromarray(np.dstack([RGB, ALPHA])), RGB, ALPHA)
  pal = Image.fromarray(INDICES, "P")
  pal.putpalette(PALETTE.ravel().tolist())
  save("palette.gif", pal, PALETTE[INDICES])
  # Palette with a transparent entry (index 1) -> alpha 0 there, 255 elsewhere.
  save("palette_t.png", pal, PALETTE[INDICES], np.where(INDICES == 1, 0, 255), transparency=1)
  # Grey with a tRNS colour: pixels of that exact value are transparent.
  key = int(GREY[3, 4])
  save("grey_trns.png", Image.fromarray(GREY), tile(GREY), np.where(GREY == key, 0, 255),
       transparency=key)  # fmt: skip
  # 16- and 32-bit integer grey: one rule, clip to [0, 65535] then * 255 / 65535.
  save("grey16.png", Image.fromarray(GREY16), tile(np.round(GREY16 / 257.0)))
  # The scale never depends on the content: dark 16-bit data (all <= 255) stays dark.
  dark = (GREY16 // 300).astype(np.uint16)
  save("grey16_dark.png", Image.fromarray(dark), tile(np.round(dark / 257.0)))
  grey32 = np.round(np.clip(GREY32, 0, 65535) / 257.0)
  save("grey32.tif", Image.fromarray(GREY32, "I"), tile(grey32))
  greyf = np.round(np.clip(np.nan_to_num(GREYF.astype(np.float64)), 0, 1) * 255)
  save("greyf.tif", Image.fromarray(GREYF, "F"), tile(greyf))
  # CMYK without colour management: (255 - CMY) * (255 - K) / 255.
  cmyk = CMYK.astype(np.float64)
  save(
    "cmyk.tif", Image.fromarray(CMYK, "CMYK"), (255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255
  )
  save("lossless.webp", Image.fromarray(RGB), RGB, lossless=True)
  save("img.BMP", Image.fromarray(RGB), RGB, format="BMP")
  # EXIF orientation, on lossless PNGs: 6 = rotate 90 degrees clockwise to display, 3 = 180,
  # 8 = 90 counter-clockwise.
  for tag, k in ((6, -1), (3, 2), (8, 1)):
    save(f"exif{tag}.png", Image.fromarray(RGB), np.rot90(RGB, k=k), exif=_exif(tag))
  return expected


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
  root = tmp_path_factory.mktemp("modes")
  return root, _write_modes(root)


def test_every_mode_against_an_independent_expectation(modes):
  root, expected = modes
  for name, (rgb, alpha) in expected.items():
    photo = images.read(root / name)
    assert photo.rgb.dtype == np.uint8 and photo.rgb.shape == (*rgb.shape[:2], 3), name
    tol = 1 if name.startswith("cmyk") else 0  # Pillow's CMYK conversion rounds in integers.
    np.testing.assert_allclose(photo.rgb, rgb, atol=tol, rtol=0, err_msg=name)
    if alpha is None:
      assert photo.alpha is None, name
    else:
      np.testing.assert_array_equal(photo.alpha, alpha, err_msg=name)
    # Training and evaluation see the alpha composited on white; exact integer rounding.
    want = rgb if alpha is None else on_white(rgb, alpha)
    np.testing.assert_allclose(images.read_rgb(root / name), want, atol=tol, rtol=0)


def test_lossy_jpeg_and_cmyk_jpeg(tmp_path):
  Image.fromarray(RGB).save(tmp_path / "photo.jpg", quality=95, subsampling=0)
  Image.fromarray(CMYK, "CMYK").save(tmp_path / "cmyk.jpg", quality=95)
  assert np.abs(images.read(tmp_path / "photo.jpg").rgb.astype(int) - RGB).mean() < 4
  cmyk = CMYK.astype(np.float64)
  want = (255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255
  assert np.abs(images.read(tmp_path / "cmyk.jpg").rgb - want).mean() < 12
  assert images.read(tmp_path / "photo.jpg").format == "JPEG"


def test_decode_bytes_equals_decode_file(modes):
  root, expected = modes
  for name in expected:
    data = (root / name).read_bytes()
    from_bytes = images.decode(data, name=name)
    np.testing.assert_array_equal(from_bytes.rgb, images.read(root / name).rgb)
    assert from_bytes.source == name


def test_composite_on_white_is_exact():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
  alpha = rng.integers(0, 256, (50, 60), dtype=np.uint8)
  np.testing.assert_array_equal(images.composite_on_white(rgb, alpha), on_white(rgb, alpha))
  assert images.composite_on_white(rgb, None) is rgb


@pytest.mark.parametrize(
  "shape, size", [((37, 23), 16), ((9, 11), 16), ((300, 451), 224), ((50, 100), 224), ((3, 2), 8)]
)
def test_resize_is_tensorflows_bilinear_bit_for_bit(shape, size):
  rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
  ref = tf.image.resize(rgb, (size, size), method="bilinear", antialias=False)
  ref = tf.cast(tf.clip_by_value(tf.round(ref), 0, 255), tf.uint8).numpy()
  np.testing.assert_array_equal(images.resize(rgb, size), ref)
  square = rgb[: min(shape), : min(shape)]
  np.testing.assert_array_equal(images.resize(square, min(shape)), square)  # Identity.


# --------------------------------------------------------------------------------------------
# Finding files: one extension list, hidden files skipped.


@pytest.fixture()
def tree(tmp_path):
  for rel in ("a.jpg", "B.PNG", "c.jfif", "sub/d.webp", "sub/deep/e.tif", "out/f.png",
              ".hidden.png", "._a.jpg", ".git/g.png", "sub/.cache/h.png",
              "notes.txt", "sub/model.h5", "docs/readme.txt"):  # fmt: skip
    os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
    (tmp_path / rel).write_bytes(b"x")
  return tmp_path


def _rel(root, paths):
  return [os.path.relpath(p, root) for p in paths]


def test_walk_keeps_visible_images_sorted_and_honours_exclude(tree):
  visible = ["B.PNG", "a.jpg", "c.jfif", "out/f.png", "sub/d.webp", "sub/deep/e.tif"]
  assert _rel(tree, images.find(str(tree))) == visible
  assert _rel(tree, images.find(str(tree), exclude=str(tree / "out"))) == [
    v for v in visible if not v.startswith("out/")
  ]
  # Excluding the walked folder itself excludes nothing (colorize --output IN IN).
  assert _rel(tree, images.find(str(tree / "out"), exclude=str(tree / "out"))) == ["out/f.png"]
  # Globs: the same extension list and hidden rule; ** is recursive.
  assert _rel(tree, images.find(str(tree / "**" / "*"))) == visible
  assert _rel(tree, images.find(str(tree / "sub" / "*.webp"))) == ["sub/d.webp"]
  # A file named explicitly is always tried, whatever its name.
  assert images.find(str(tree / ".hidden.png")) == [str(tree / ".hidden.png")]
  assert images.find(str(tree / "notes.txt")) == [str(tree / "notes.txt")]
  for ext in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"):
    assert ext in images.IMAGE_EXTENSIONS


@pytest.mark.parametrize(
  "arg, message",
  [
    ("missing", "no such file or folder"),
    ("*.jpeg", "no files match this pattern"),
    ("*.txt", "none is an image"),
    ("docs", "folder has no image files"),
  ],
)
def test_find_errors_are_one_line_naming_the_path(tree, arg, message):
  with pytest.raises(images.ImageError, match=message) as e:
    images.find(str(tree / arg))
  assert str(e.value).startswith(str(tree / arg)) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# Bad files.


def _write_bad(root):
  jpeg = io.BytesIO()
  Image.fromarray(smooth_rgb(64, 64)).save(jpeg, "JPEG")
  files = {
    "empty.png": (b"", "empty file"),
    "notes.jpg": (b"this is not an image\n", "not an image file"),
    "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "cannot decode image"),
    "nopixels.png": (png_header_only(100, 100), "cannot decode image"),
    "bomb.png": (png_header_only(20000, 20000), "20000x20000 image"),
    # Beyond Pillow's own hard limit (2 x 89.5 MP): still our message, not Pillow's error.
    "huge.png": (png_header_only(30000, 30000), "exceeds the limit of 50,000,000 pixels"),
  }
  for name, (data, _) in files.items():
    (root / name).write_bytes(data)
  return {name: message for name, (_, message) in files.items()}


def test_bad_files_raise_one_line_naming_the_file(tmp_path):
  for name, message in _write_bad(tmp_path).items():
    with pytest.raises(images.ImageError, match=message) as e:
      images.read(tmp_path / name)
    assert str(e.value).startswith(f"{tmp_path / name}: "), str(e.value)
    assert "\n" not in str(e.value), name
  with pytest.raises(images.ImageError, match="cannot read"):
    images.read(tmp_path)  # A folder is not a file.
  # The limit is the caller's: an ordinary image over it is refused before decoding.
  Image.fromarray(RGB).save(tmp_path / "small.png")
  with pytest.raises(images.ImageError, match=f"{H * W:,} pixels"):
    images.read(tmp_path / "small.png", max_pixels=H * W - 1)
  assert images.read(tmp_path / "small.png", max_pixels=H * W).rgb.shape == (H, W, 3)
  # Pillow's global limit is left as it was.
  assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)


def test_bad_files_are_reported_by_every_consumer(tmp_path):
  bad = _write_bad(tmp_path)
  Image.fromarray(RGB).save(tmp_path / "good.png")
  ip.reset_skipped_files()
  config = _config(str(tmp_path), size=8)
  it = ip.create_train_iterator(config, process_index=0, process_count=1)
  for _ in range(2 * (len(bad) + 1)):  # Two epochs: every file is tried.
    next(it)
  assert sorted(os.path.basename(p) for p in ip.skipped_files()) == sorted(bad)
  logged = []
  batches = list(sources._folder_batches(str(tmp_path), 8, 4, images.DEFAULT_MAX_PIXELS,
                                          logged.append))  # fmt: skip
  assert [n for b in batches for n, m in zip(b[0], b[2], strict=False) if m] == [
    str(tmp_path / "good.png")
  ]
  for name in bad:
    assert sum(line.startswith(f"skipped {tmp_path / name}: ") for line in logged) == 1, name


# --------------------------------------------------------------------------------------------
# One file, the same pixels everywhere.

SIZE = 16


def _config(path, size=SIZE, batch_size=1):
  config = default.get_config()
  config.model.image_size = size
  config.data.source = "folder"
  config.data.path = path
  config.data.eval_path = path
  config.batch_size = batch_size
  return config


def test_the_same_file_gives_the_same_pixels_to_every_consumer(tmp_path):
  root = tmp_path / "photos"
  root.mkdir()
  # At the network size the resize is the identity: the decoded pixels themselves are compared.
  (rgb16, grey16) = (smooth_rgb(SIZE, SIZE, 7), (np.arange(SIZE * SIZE) * 250).reshape(SIZE, -1))
  alpha = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))
  Image.fromarray(np.dstack([rgb16, alpha])).save(root / "a_rgba.png")
  Image.fromarray(grey16.astype(np.uint16)).save(root / "b_grey16.png")
  pal = Image.fromarray(INDICES.repeat(2, 0)[:SIZE].repeat(2, 1)[:, :SIZE], "P")
  pal.putpalette(PALETTE.ravel().tolist())
  pal.save(root / "c_palette.png", transparency=2)
  Image.fromarray(rgb16).save(root / "d_exif.png", exif=_exif(6))
  Image.fromarray(CMYK.repeat(2, 0)[:SIZE].repeat(2, 1)[:, :SIZE], "CMYK").save(root / "e.tif")
  Image.fromarray(smooth_rgb(23, 37, 8)).save(root / "f_resized.png")  # Not at SIZE: resized.
  Image.fromarray(rgb16).save(root / ".hidden.png")
  (root / "notes.txt").write_text("x")
  files = sorted(str(p) for p in root.iterdir() if images.is_image_name(p.name))
  assert len(files) == 6
  truth = [images.resize(images.read_rgb(f), SIZE) for f in files]
  assert truth[0].shape == (SIZE, SIZE, 3) and not np.array_equal(truth[0], rgb16)  # On white.

  config = _config(str(root), batch_size=2)
  # Training, eval stream: every file in sorted order.
  evals = list(ip.create_eval_iterator(config, batch_size=2, process_index=0, process_count=1))
  got = np.concatenate([b["rgb"][b["mask"]] for b in evals])
  np.testing.assert_array_equal(got, np.stack(truth))
  # Training, train stream: one epoch is a permutation of the same images.
  train = np.concatenate(
    [next(it)["rgb"] for it in [ip.create_train_iterator(config, process_index=0,
                                                        process_count=1)] for _ in range(3)]
  )  # fmt: skip
  assert sorted(x.tobytes() for x in train) == sorted(x.tobytes() for x in truth)
  # evaluate --data DIR: the same files, the same pixels.
  batches = list(sources._folder_batches(str(root), SIZE, 4, images.DEFAULT_MAX_PIXELS, print))
  assert [n for b in batches for n, m in zip(b[0], b[2], strict=False) if m] == files
  np.testing.assert_array_equal(np.concatenate([b[1][b[2]] for b in batches]), np.stack(truth))
  # colorize: the same files; the same colour pixels, with the alpha kept beside them.
  inputs, errors = folders.collect_inputs([str(root)])
  assert errors == [] and [i.path for i in inputs] == files
  photos = list(folders._read_all(inputs, images.DEFAULT_MAX_PIXELS, print))
  for photo, want in zip(photos, truth, strict=True):
    np.testing.assert_array_equal(
      images.resize(images.composite_on_white(photo.rgb, photo.alpha), SIZE), want
    )
  np.testing.assert_array_equal(photos[0].alpha, alpha)
  assert photos[2].alpha is not None and photos[1].alpha is None
