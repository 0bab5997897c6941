"""Tests of chromagan_jax.data.pipeline: folder, bundled and (mocked) TFDS sources.

Decoding is tested in images_test.py; here resizing is checked against scikit-image's
bilinear resize, and the stream's determinism, exact resume and process sharding against
fresh iterators.
"""

import contextlib
import gc
import io
import logging
import os
import signal
import subprocess
import sys
import time
from importlib import metadata

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import smooth_rgb
from PIL import Image
from skimage import transform

from chromagan_jax.configs import default
from chromagan_jax.data import images, sources
from chromagan_jax.data import pipeline as ip

SIZE = 16  # Output side of the tests' batches.


def _config(source="folder", path="", batch_size=4, **data):
  config = default.get_config()
  config.model.image_size = SIZE
  config.data.source = source
  config.data.path = path
  config.batch_size = batch_size
  config.data.decode_processes = 0  # In this process; test_worker_processes_... covers the pool.
  for k, v in data.items():
    config.data[k] = v
  return config


def _take(it, n):
  return [next(it)["rgb"] for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# A folder of every kind of file the pipeline must handle, plus unreadable ones.

RGB = smooth_rgb(10, 12, seed=1)
GREY = smooth_rgb(10, 12, seed=2)[..., 0]
ALPHA = np.tile(np.linspace(0, 255, 12).round().astype(np.uint8), (10, 1))
GREY16 = (np.arange(120).reshape(10, 12) * 541).astype(np.uint16)  # Up to 64379.
CMYK = np.random.default_rng(3).integers(0, 256, (10, 12, 4), dtype=np.uint8)
PALETTE = np.array([[255, 0, 0], [0, 128, 255], [20, 200, 40], [250, 250, 10]], np.uint8)
INDICES = np.random.default_rng(4).integers(0, 4, (10, 12)).astype(np.uint8)


def _write_mixed_folder(root):
  """Writes 11 readable images (nested), 2 unreadable ones, and 2 files to ignore."""
  os.makedirs(root / "sub" / "deeper")
  Image.fromarray(RGB).save(root / "rgb.png")
  Image.fromarray(RGB).save(root / "photo.jpg", quality=95, subsampling=0)
  Image.fromarray(GREY).save(root / "grey.png")
  Image.fromarray(np.dstack([RGB, ALPHA])).save(root / "rgba.png")
  Image.fromarray(GREY16).save(root / "grey16.png")
  Image.fromarray(CMYK, "CMYK").save(root / "cmyk.tif")
  Image.fromarray(CMYK, "CMYK").save(root / "sub" / "cmyk.jpg", quality=95)
  pal = Image.fromarray(INDICES, "P")
  pal.putpalette(PALETTE.ravel().tolist())
  pal.save(root / "sub" / "palette.gif")
  Image.fromarray(RGB).save(root / "sub" / "lossless.webp", lossless=True)
  Image.fromarray(RGB).save(root / "sub" / "deeper" / "img.BMP")
  Image.fromarray(RGB).save(root / "sub" / "deeper" / "img.tiff")
  jpeg = io.BytesIO()
  Image.fromarray(smooth_rgb(64, 64)).save(jpeg, "JPEG")
  (root / "corrupt.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
  (root / "zero.png").write_bytes(b"")
  (root / "notes.txt").write_text("not an image")
  Image.fromarray(RGB).save(root / ".hidden.png")
  return root


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
  return _write_mixed_folder(tmp_path_factory.mktemp("mixed"))


COLOURS = [(30 * i + 10, 250 - 30 * i, (90 * i) % 256) for i in range(7)]


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
  """7 flat images, each a distinct colour (identifiable after any resize), mixed sizes."""
  root = tmp_path_factory.mktemp("colours")
  for i, c in enumerate(COLOURS):
    Image.fromarray(np.full((8 + i, 20 - i, 3), c, np.uint8)).save(root / f"c{i}.png")
  return root


def _colour_ids(images):
  """Index into COLOURS of each flat image in (N, S, S, 3)."""
  ids = []
  for img in images:
    assert np.ptp(img.reshape(-1, 3), axis=0).max() == 0  # Flat: one image, not a blend.
    ids.append(COLOURS.index(tuple(int(v) for v in img[0, 0])))
  return ids


# ---------------------------------------------------------------------------------------------
# Decoding.


def test_find_images_recursive_and_filtered(mixed_folder):
  names = sorted(os.path.relpath(p, mixed_folder) for p in sources.find_images(str(mixed_folder)))
  assert names == sorted(
    [
      "cmyk.tif",
      "corrupt.jpg",
      "grey.png",
      "grey16.png",
      "photo.jpg",
      "rgb.png",
      "rgba.png",
      "zero.png",
      "sub/cmyk.jpg",
      "sub/palette.gif",
      "sub/lossless.webp",
      "sub/deeper/img.BMP",
      "sub/deeper/img.tiff",
    ]
  )
  assert sources.find_images(str(mixed_folder / "sub" / "*.gif")) == [
    str(mixed_folder / "sub" / "palette.gif")
  ]


def test_folder_source_decodes_with_the_images_module(mixed_folder):
  """Decoding itself is tested in images_test; here: the stream holds those pixels."""
  config = _config(path="", eval_path=str(mixed_folder / "rgba.png"), batch_size=1)
  got = next(ip.create_eval_iterator(config, batch_size=1, process_index=0, process_count=1))
  want = images.resize(images.read_rgb(mixed_folder / "rgba.png"), SIZE)
  np.testing.assert_array_equal(got["rgb"][0], want)


# ---------------------------------------------------------------------------------------------
# Folder stream.


def test_folder_batches_skip_and_count_unreadable_files(mixed_folder, caplog):
  ip.reset_skipped_files()
  config = _config(path=str(mixed_folder), batch_size=4)
  assert ip.num_train_examples(config) == 13
  caplog.set_level(logging.WARNING)
  batches = _take(ip.create_train_iterator(config, process_index=0, process_count=1), 5)
  for b in batches:  # 20 examples > 13 files: every file was tried at least once.
    assert b.shape == (4, SIZE, SIZE, 3) and b.dtype == np.uint8
  skipped = ip.skipped_files()
  assert sorted(os.path.basename(p) for p in skipped) == ["corrupt.jpg", "zero.png"]
  assert ip.num_skipped_files() == 2
  for path in skipped:
    assert path in caplog.text
  assert "empty file" in skipped[str(mixed_folder / "zero.png")]
  # Each file is warned about once per process, however many epochs meet it.
  assert caplog.text.count("corrupt.jpg") == 1


def test_near_grey_training_photos_are_skipped_counted_and_kept_on_request(tmp_path, caplog):
  """A folder mixing colour photos with black-and-white and near-grey ones (users' folders)."""
  colour = [smooth_rgb(24, 32, seed=s) for s in range(3)]
  bw = np.repeat(smooth_rgb(24, 32, seed=7)[..., :1], 3, axis=-1)  # Colourfulness 0.
  faded = (0.97 * bw + 0.03 * colour[0]).round().astype(np.uint8)  # A trace of colour.
  for i, rgb in enumerate(colour):
    Image.fromarray(rgb).save(tmp_path / f"colour{i}.png")
  Image.fromarray(bw).save(tmp_path / "bw.png")
  Image.fromarray(faded).save(tmp_path / "faded.png")
  # The worker's NumPy colourfulness is evaluate's metric (the thumbnail is the whole image).
  from chromagan_jax.data import decode_workers
  from chromagan_jax.evaluation import scores

  for rgb in (*colour, bw, faded):
    want = float(scores.colorfulness(rgb[None])[0])
    assert decode_workers.colorfulness(rgb) == pytest.approx(want, rel=1e-5, abs=1e-4)
  assert decode_workers.colorfulness(faded) < 5 < min(map(decode_workers.colorfulness, colour))

  ip.reset_skipped_files()
  caplog.set_level(logging.WARNING)
  config = _config(path=str(tmp_path), batch_size=5, min_colorfulness=5.0)
  seen = np.concatenate(
    _take(ip.create_train_iterator(config, process_index=0, process_count=1), 4)
  )
  assert sorted(os.path.basename(p) for p in ip.skipped_files()) == ["bw.png", "faded.png"]
  assert ip.num_skipped_grey() == 2 and ip.num_skipped_files() == 2
  assert "skipping image" in caplog.text and "near-grey photo (colourfulness" in caplog.text
  # Every training example is a colour photo (resized at SIZE: compare colourfulness).
  assert min(decode_workers.colorfulness(x) for x in seen) > 5
  # Eval batches are never filtered.
  config.data.eval_path = str(tmp_path)
  ev = next(ip.create_eval_iterator(config, batch_size=5, process_index=0, process_count=1))
  assert ev["mask"].all()
  # 0 keeps them: the same stream then holds grey examples.
  ip.reset_skipped_files()
  config.data.min_colorfulness = 0.0
  seen = np.concatenate(
    _take(ip.create_train_iterator(config, process_index=0, process_count=1), 4)
  )
  assert ip.num_skipped_files() == 0
  assert min(decode_workers.colorfulness(x) for x in seen) < 1
  # All photos near-grey: one line saying what to do.
  config.data.min_colorfulness = 1e6
  with pytest.raises(ip.DataError, match="min_colorfulness=0 keeps"):
    next(ip.create_train_iterator(config, process_index=0, process_count=1))


@pytest.mark.parametrize("shape", [(37, 23), (9, 11)])
def test_resize_matches_scikit_image_bilinear(tmp_path, shape):
  img = smooth_rgb(*shape, seed=5)
  Image.fromarray(img).save(tmp_path / "one.png")
  config = _config(path=str(tmp_path), batch_size=1)
  got = next(ip.create_train_iterator(config, process_index=0, process_count=1))["rgb"][0]
  # Independent reference: half-pixel-centre bilinear, edge clamping, no anti-aliasing
  # (= cv2.resize INTER_LINEAR up to OpenCV's fixed-point rounding).
  ref = transform.resize(
    img.astype(np.float64),
    (SIZE, SIZE),
    order=1,
    mode="edge",
    anti_aliasing=False,
    preserve_range=True,
  )
  assert np.abs(got.astype(np.float64) - ref).max() <= 1.0


def test_epochs_are_permutations_reshuffled_per_epoch(colour_folder):
  config = _config(path=str(colour_folder), batch_size=7)
  it = ip.create_train_iterator(config, process_index=0, process_count=1)
  epochs = [_colour_ids(b) for b in _take(it, 3)]
  for ids in epochs:
    assert sorted(ids) == list(range(7))
  assert len({tuple(ids) for ids in epochs}) == 3
  # A different seed gives a different order.
  config.seed = 1
  other = _colour_ids(
    next(ip.create_train_iterator(config, process_index=0, process_count=1))["rgb"]
  )
  assert other != epochs[0]


def test_deterministic_and_exact_resume_despite_unreadable_files(mixed_folder):
  config = _config(path=str(mixed_folder), batch_size=2)
  run = lambda start, n: _take(
    ip.create_train_iterator(config, start_step=start, process_index=0, process_count=1), n
  )
  first = run(0, 9)  # 18 examples: crosses the epoch boundary at 13.
  np.testing.assert_array_equal(np.stack(run(0, 9)), np.stack(first))
  np.testing.assert_array_equal(np.stack(run(5, 4)), np.stack(first[5:]))


def test_process_shards_are_disjoint_and_cover_the_set(colour_folder):
  config = _config(path=str(colour_folder), batch_size=2)
  train, evals = [], []
  for index, n in ((0, 4), (1, 3)):  # 7 files: 4 for process 0, 3 for process 1.
    it = ip.create_train_iterator(config, process_index=index, process_count=2)
    train.append(set(_colour_ids(np.concatenate(_take(it, n)))))
    eval_config = _config(eval_path=str(colour_folder))
    batches = list(
      ip.create_eval_iterator(eval_config, batch_size=2, process_index=index, process_count=2)
    )
    assert len(batches) == 2  # Same count on both processes: ceil(ceil(7 / 2) / 2).
    evals.append(set(_colour_ids(np.concatenate([b["rgb"][b["mask"]] for b in batches]))))
  for sets in (train, evals):
    assert len(sets[0]) == 4 and len(sets[1]) == 3
    assert not sets[0] & sets[1]
    assert sets[0] | sets[1] == set(range(7))


def test_eval_batches_are_padded_and_masked(colour_folder):
  config = _config(path="", eval_path=str(colour_folder))
  batches = list(ip.create_eval_iterator(config, batch_size=3, process_index=0, process_count=1))
  assert [b["mask"].tolist() for b in batches] == [[True] * 3, [True] * 3, [True, False, False]]
  assert all(b["rgb"].shape == (3, SIZE, SIZE, 3) and b["rgb"].dtype == np.uint8 for b in batches)
  real = np.concatenate([b["rgb"][b["mask"]] for b in batches])
  assert _colour_ids(real) == list(range(7))  # In sorted file order, no shuffle.
  assert not batches[-1]["rgb"][1:].any()
  few = list(
    ip.create_eval_iterator(config, num_examples=4, batch_size=3, process_index=0, process_count=1)
  )
  assert [int(b["mask"].sum()) for b in few] == [3, 1]


def test_batch_not_divisible_by_processes(colour_folder):
  config = _config(path=str(colour_folder), batch_size=4)
  with pytest.raises(ip.DataError, match="multiple of the 3 processes"):
    ip.create_train_iterator(config, process_index=0, process_count=3)


@pytest.mark.parametrize(
  "path, message",
  [
    ("", "config.data.path is empty"),
    ("{tmp}/missing", "no such file or folder"),
    ("{tmp}/*.jpg", "no files match this pattern"),
    ("{tmp}/texts", "folder has no image files"),
    ("{tmp}/texts/*", "none is an image"),
  ],
)
def test_folder_errors_are_one_line(tmp_path, path, message):
  (tmp_path / "texts").mkdir()
  (tmp_path / "texts" / "a.txt").write_text("x")
  config = _config(path=path.format(tmp=tmp_path))
  for fn in (ip.num_train_examples, ip.create_train_iterator):
    with pytest.raises(ip.DataError, match=message) as e:
      fn(config)
    assert "\n" not in str(e.value)


def test_no_eval_path_is_a_data_error(colour_folder):
  with pytest.raises(ip.DataError, match="eval_path"):
    ip.create_eval_iterator(_config(path=str(colour_folder)), batch_size=2)


# ---------------------------------------------------------------------------------------------
# Bundled photos.


def test_bundled_photos_ship_in_the_wheel_are_colour_and_split_disjoint():
  train, holdout = sources.bundled_photos("train"), sources.bundled_photos("holdout")
  assert len(train) >= 5 and 2 <= len(holdout) <= 3
  assert not set(train) & set(holdout)
  # Installed by the wheel itself (its RECORD), not fetched by pooch into a cache.
  record = {str(f).replace(os.sep, "/") for f in metadata.files("scikit-image")}
  for path in train + holdout:
    assert "skimage/data/" + os.path.basename(path) in record, path
    rgb = images.read_rgb(path)
    chroma = rgb.max(-1).astype(np.int32) - rgb.min(-1)
    assert chroma.mean() > 8, f"{path} is nearly grey"
    packed = (rgb[::2, ::2].astype(np.int32) << [16, 8, 0]).sum(-1)
    assert len(np.unique(packed)) > 5000, f"{path} looks synthetic (few distinct colours)"
  with pytest.raises(ValueError, match="unknown bundled split"):
    sources.bundled_photos("test")


def test_bundled_augmented_stream_is_varied_and_resumable():
  config = _config(source="bundled", batch_size=4, augment=True)
  assert ip.num_train_examples(config) == len(sources.bundled_photos("train"))
  first = _take(ip.create_train_iterator(config, process_index=0, process_count=1), 3)
  views = np.concatenate(first).reshape(12, -1).astype(np.float64)
  # 12 crops of 6 photos: all distinct views (an epoch's repeat of a photo is a new crop).
  assert len({v.tobytes() for v in views}) == 12
  resumed = next(ip.create_train_iterator(config, start_step=2, process_index=0, process_count=1))
  np.testing.assert_array_equal(resumed["rgb"], first[2])
  holdout = list(ip.create_eval_iterator(config, batch_size=4, process_index=0, process_count=1))
  assert len(holdout) == 1 and holdout[0]["mask"].sum() == len(sources.bundled_photos("holdout"))


# ---------------------------------------------------------------------------------------------
# TFDS source.


def test_tfds_source_with_mock_imagenet():
  config = _config(source="tfds", batch_size=2)
  config.data.tfds_name = "imagenet2012"
  with tfds.testing.mock_data(num_examples=6):
    assert ip.num_train_examples(config) == 6
    run = lambda start, n: _take(
      ip.create_train_iterator(config, start_step=start, process_index=0, process_count=1), n
    )
    first = run(0, 6)  # Two epochs of 3 batches.
    for b in first:
      assert b.shape == (2, SIZE, SIZE, 3) and b.dtype == np.uint8
    np.testing.assert_array_equal(np.stack(run(2, 4)), np.stack(first[2:]))
    keys = [[x.tobytes() for x in np.concatenate(first[e : e + 3])] for e in (0, 3)]
    assert sorted(keys[0]) == sorted(keys[1]) and len(set(keys[0])) == 6
    assert keys[0] != keys[1]  # Reshuffled per epoch.
    evals = list(ip.create_eval_iterator(config, batch_size=4, process_index=0, process_count=1))
    assert [b["mask"].tolist() for b in evals] == [[True] * 4, [True, True, False, False]]


def test_tfds_missing_imagenet_names_the_tars(tmp_path):
  config = _config(source="tfds")
  config.data.tfds_name = "imagenet2012"
  config.data.data_dir = str(tmp_path)
  for fn in (ip.num_train_examples, ip.create_train_iterator):
    with pytest.raises(ip.DataError) as e:
      fn(config)
    message = str(e.value)
    assert "\n" not in message
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    manual = os.path.join(str(tmp_path), "downloads", "manual")
    assert f"tfds build imagenet2012 --manual_dir={manual}" in message
    assert "--config.data.data_dir=DIR" in message  # An option train.py's flags accept.


def test_unknown_source_and_dataset():
  with pytest.raises(ip.DataError, match="unknown data source"):
    ip.num_train_examples(_config(source="webdataset"))
  config = _config(source="tfds")
  config.data.tfds_name = "no_such_dataset_xyz"
  with pytest.raises(ip.DataError, match="unknown TFDS dataset"):
    ip.num_train_examples(config)


def test_tfrecord_only_dataset_is_one_line_saying_how_to_convert(monkeypatch):
  config = _config(source="tfds")
  config.data.tfds_name = "imagenet2012"

  def tfrecord_only(self, *args, **kwargs):
    raise NotImplementedError("Random access data source for file format TFRECORD ...")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", tfrecord_only)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  for fn in (ip.num_train_examples, ip.create_train_iterator):
    with pytest.raises(ip.DataError, match="stored as tfrecord") as e:
      fn(config)
    assert "\n" not in str(e.value) and "--out_file_format=array_record" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Worker processes and resume cost.


def test_worker_processes_give_the_same_batches_as_in_process(mixed_folder):
  """The pool (spawned processes) and in-process decoding: identical streams, skips too."""
  for config in (
    _config(path=str(mixed_folder), eval_path=str(mixed_folder), batch_size=3),
    _config(source="bundled", batch_size=4, augment=True),
  ):
    streams = []
    for processes in (0, 2):
      config.data.decode_processes = processes
      ip.reset_skipped_files()
      train = _take(ip.create_train_iterator(config, start_step=3, process_index=0,
                                             process_count=1), 6)  # fmt: skip
      evals = list(ip.create_eval_iterator(config, batch_size=4, process_index=0,
                                           process_count=1))  # fmt: skip
      streams.append((train, [b["rgb"] for b in evals], [b["mask"] for b in evals],
                      sorted(ip.skipped_files())))  # fmt: skip
    for a, b in zip(*streams, strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _Counting:
  """Counts what a stream reads: decoded images (folder) or records fetched (TFDS)."""

  def __init__(self, inner=None):
    self.inner, self.calls = inner, 0

  def __call__(self, *args, **kwargs):
    self.calls += 1
    return self.inner(*args, **kwargs)

  def __getitem__(self, i):
    self.calls += 1
    return self.inner[i]

  def __len__(self):
    return len(self.inner)


def test_resume_reads_only_the_resumed_batch(colour_folder, monkeypatch):
  """Starting at step 10**6 reads exactly one batch's images (no skipping through data)."""
  config = _config(path=str(colour_folder), batch_size=3)
  counter = _Counting(images.read_rgb)
  monkeypatch.setattr(images, "read_rgb", counter)
  far = next(ip.create_train_iterator(config, start_step=10**6, process_index=0, process_count=1))
  assert counter.calls == 3
  # And it is the batch an uninterrupted stream has there: example t is perm_e[t mod 7].
  t = np.arange(3 * 10**6, 3 * 10**6 + 3)
  perms = {e: np.random.default_rng([config.seed, 0, e]).permutation(7) for e in set(t // 7)}
  assert _colour_ids(far["rgb"]) == [int(perms[u // 7][u % 7]) for u in t]


def test_tfds_resume_fetches_only_the_resumed_batch(monkeypatch):
  config = _config(source="tfds", batch_size=2)
  config.data.tfds_name = "imagenet2012"
  real = sources._tfds_source
  counters = []

  def counting_source(*args):
    counters.append(_Counting(real(*args)))
    return counters[-1]

  with tfds.testing.mock_data(num_examples=6):
    first = _take(ip.create_train_iterator(config, process_index=0, process_count=1), 9)
    monkeypatch.setattr(sources, "_tfds_source", counting_source)
    resumed = next(ip.create_train_iterator(config, start_step=8, process_index=0,
                                            process_count=1))  # fmt: skip
  np.testing.assert_array_equal(resumed["rgb"], first[8])
  assert sum(c.calls for c in counters) == 2  # The 2 records of batch 8, nothing before.


def test_a_killed_worker_is_one_line_not_a_hang(colour_folder):
  config = _config(path=str(colour_folder), batch_size=2, decode_processes=1)
  it = ip.create_train_iterator(config, process_index=0, process_count=1)
  next(it)
  for pid in ip._workers(1).pids():
    os.kill(pid, signal.SIGKILL)
  with pytest.raises(ip.DataError, match="decode worker process died") as e:
    for _ in range(100):  # Batches already decoded may still come out first.
      next(it)
  assert "\n" not in str(e.value)
  # The next iterator gets a fresh pool.
  fresh = next(ip.create_train_iterator(config, process_index=0, process_count=1))
  assert fresh["rgb"].shape == (2, SIZE, SIZE, 3)


def test_workers_leave_sigint_and_sigterm_to_the_trainer(colour_folder):
  """Ctrl-C, `timeout` or a scheduler signal the whole process group: the workers survive it
  (the trainer checkpoints, then stops), where dying made it report a worker killed for
  memory. SIGKILL still kills them (previous test)."""
  config = _config(path=str(colour_folder), batch_size=2, decode_processes=1)
  it = ip.create_train_iterator(config, process_index=0, process_count=1)
  first = next(it)
  (pid,) = ip._workers(1).pids()
  for sig in (signal.SIGINT, signal.SIGTERM):
    os.kill(pid, sig)
  time.sleep(0.5)
  os.kill(pid, 0)  # Still alive (raises ProcessLookupError otherwise).
  for _ in range(20):  # Well past the batches decoded ahead before the signals.
    batch = next(it)
  assert batch["rgb"].shape == first["rgb"].shape
  assert ip._workers(1).pids() == [pid]


_ORPHAN_SCRIPT = """
import time
from chromagan_jax.data import decode_workers
if __name__ == "__main__":
  workers = decode_workers.Workers(2)
  deadline = time.monotonic() + 60
  # The pool starts a worker per task submitted while none is idle: on a loaded machine the
  # first may finish before the second task comes, so tasks come until both workers exist.
  while len(workers.pids()) < 2 and time.monotonic() < deadline:
    assert list(workers.map(decode_workers.ExampleSpec(size=8), [[]] * 4, ahead=4)) == [[]] * 4
  print(*workers.pids(), flush=True)
  time.sleep(600)
"""


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  try:  # A zombie (exited, not yet reaped by init) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc/PID/stat (Linux)")
def test_workers_exit_when_the_trainer_is_killed(tmp_path):
  """SIGKILL of the trainer (the OOM killer, a preempted host) leaves no decode worker
  running: they were left idle, holding their caches, with nothing to end them."""
  script = tmp_path / "train_lib.py"
  script.write_text(_ORPHAN_SCRIPT)
  proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
  try:
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
  finally:
    proc.kill()
    proc.wait()
  deadline = time.monotonic() + 20
  while any(_alive(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.1)
  left = [p for p in pids if _alive(p)]
  for p in left:  # Failing, but not leaking them into the rest of the run.
    with contextlib.suppress(ProcessLookupError):  # It may exit meanwhile.
      os.kill(p, signal.SIGKILL)
  assert not left, f"workers {left} outlived their killed parent"


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_closing_an_in_process_stream_is_clean(colour_folder):
  it = ip.create_train_iterator(_config(path=str(colour_folder)), process_index=0, process_count=1)
  next(it)
  it.close()  # GeneratorExit passes the worker-death handler without touching the pool.
  del it
  gc.collect()
