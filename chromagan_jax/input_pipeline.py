"""Input pipeline: images from TFDS, a folder, or bundled photos -> uint8 RGB batches.

Every source yields dicts ``{'rgb': uint8 (local_batch, S, S, 3)}`` in [0, 255], with
``S = config.model.image_size``; eval batches add ``'mask'`` (bool, real examples). Colour
conversion to Lab happens later, on device. As in the reference (``cv2.resize`` to 224x224),
images are resized with **no crop**: the aspect ratio is not kept.

Sources (``config.data.source``):
  * ``'tfds'``: a TFDS dataset (``imagenet2012`` by default; its tars are a manual download).
  * ``'folder'``: a directory (searched recursively) or a glob of image files, found and
    decoded by :mod:`chromagan_jax.images` (alpha composited on white). Unreadable files are
    skipped with a warning naming each one (see ``skipped_files``), never crashing a long
    run; in training, the slot of an unreadable file is filled by the next readable file
    (sorted order), which keeps resumes exact.
  * ``'bundled'``: real colour photos that ship inside the scikit-image wheel (a demo set).

Training streams are infinite and deterministic given ``config.seed``: the batches of
``create_train_iterator(config, start_step=k)`` are batches k, k+1, ... of a fresh iterator,
so a resumed run sees exactly the data it would have seen. Each process reads a disjoint
slice of the data (multi-host); batch sizes here are per process.

This is the only module that imports TensorFlow; the entry script hides accelerators from it.
"""

import functools
import os
import threading
from collections.abc import Iterator, Sequence
from importlib import metadata

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from chromagan_jax import images
from chromagan_jax.errors import DataError

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
TFDS_IMAGE_KEY = "image"

# Real colour photographs inside the scikit-image wheel (checked against its RECORD in the
# tests; samples such as 'eagle.png' are fetched by pooch at run time and never used). Left
# out: grey images, synthetic ones (color.png, logo.png, phantom.png, chessboard_RGB.png) and
# motorcycle_right.png, the stereo twin of motorcycle_left.png (a near-duplicate).
BUNDLED_TRAIN = (
  "astronaut.png",
  "hubble_deep_field.jpg",
  "ihc.png",
  "motorcycle_left.png",
  "retina.jpg",
  "rocket.jpg",
)
BUNDLED_HOLDOUT = ("chelsea.png", "coffee.png")  # The demo colorizes and scores these.

# Random crops of the optional augmentation (config.data.augment): the crop's side is this
# fraction of the image's short side, its aspect ratio jittered in [3/4, 4/3].
AUGMENT_MIN_SCALE = 0.35
AUGMENT_MAX_LOG_ASPECT = float(np.log(4 / 3))


# --------------------------------------------------------------------------------------------
# Unreadable files: warned about once per process, counted for the trainer's logs.

_skipped_lock = threading.Lock()
_skipped: dict[str, str] = {}  # path -> reason


def skipped_files() -> dict[str, str]:
  """Unreadable image files met so far in this process: {path: reason} (a copy)."""
  with _skipped_lock:
    return dict(_skipped)


def num_skipped_files() -> int:
  """How many distinct unreadable files this process has skipped so far."""
  with _skipped_lock:
    return len(_skipped)


def reset_skipped_files() -> None:
  """Forgets the skipped files (tests; a new run in the same process)."""
  with _skipped_lock:
    _skipped.clear()


def _record_skipped(path: str, reason: str) -> None:
  with _skipped_lock:
    first = path not in _skipped
    _skipped[path] = reason
  if first:
    logging.warning("skipping unreadable image %s: %s", path, reason)


# --------------------------------------------------------------------------------------------
# Decoding (chromagan_jax.images, the decoder colorize and evaluate use too).


class _Loader:
  """Decodes files by index, returning None (warned about, counted) for unreadable ones.

  Thread-safe: tf.data calls it from several threads. With ``cache`` the decoded arrays are
  kept in memory (small datasets only).
  """

  def __init__(self, files: Sequence[str], *, cache: bool):
    self.files = list(files)
    self._cache: dict[int, np.ndarray] | None = {} if cache else None

  def load(self, i: int) -> np.ndarray | None:
    if self._cache is not None and i in self._cache:
      return self._cache[i]
    path = self.files[i]
    try:
      rgb = images.read_rgb(path)
    except images.ImageError as e:  # Never crash a long run on one bad file.
      _record_skipped(path, str(e).removeprefix(f"{path}: "))
      return None
    if self._cache is not None:
      self._cache[i] = rgb
    return rgb


# --------------------------------------------------------------------------------------------
# Resizing and augmentation (TensorFlow, inside tf.data).


def resize(rgb: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, 3) -> uint8 (size, size, 3): bilinear, no crop, aspect ratio not kept.

  TF2's bilinear resize samples at half-pixel centres, like ``cv2.resize(INTER_LINEAR)``
  used by the reference, and with ``antialias=False`` neither filters when shrinking. OpenCV
  interpolates uint8 with 11-bit fixed-point weights, so the two can differ by 1 level.
  Results are rounded to the nearest integer, as OpenCV's saturate_cast does.
  """
  out = tf.image.resize(rgb, (size, size), method="bilinear", antialias=False)
  return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def random_crop_flip(rgb: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """A random crop (several scales, jittered aspect) and a random horizontal flip.

  Only for tiny training sets (config.data.augment; the reference uses no augmentation). The
  crop's side is in [AUGMENT_MIN_SCALE, 1] x the short side, so one photo yields views from
  whole-image to close-up. ``seed``: int32/int64 (2,) stateless seed; same seed, same crop.

  Args:
    rgb: uint8 (H, W, 3).
    seed: (2,) integer stateless seed.

  Returns:
    uint8 (h, w, 3) with h <= H, w <= W.
  """
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
  shape = tf.shape(rgb)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  side = tf.minimum(h, w) * tf.random.stateless_uniform((), seeds[0], AUGMENT_MIN_SCALE, 1.0)
  log_aspect = tf.random.stateless_uniform(
    (), seeds[1], -AUGMENT_MAX_LOG_ASPECT, AUGMENT_MAX_LOG_ASPECT
  )
  aspect = tf.exp(log_aspect)
  crop_h = tf.clip_by_value(tf.round(side / tf.sqrt(aspect)), 1.0, h)
  crop_w = tf.clip_by_value(tf.round(side * tf.sqrt(aspect)), 1.0, w)
  top = tf.floor(tf.random.stateless_uniform((), seeds[2]) * (h - crop_h + 1.0))
  left = tf.floor(tf.random.stateless_uniform((), seeds[3]) * (w - crop_w + 1.0))
  out = tf.image.crop_to_bounding_box(
    rgb,
    tf.cast(tf.minimum(top, h - crop_h), tf.int32),
    tf.cast(tf.minimum(left, w - crop_w), tf.int32),
    tf.cast(crop_h, tf.int32),
    tf.cast(crop_w, tf.int32),
  )
  return tf.image.stateless_random_flip_left_right(out, seeds[4])


def _example_fn(config, process_index: int):
  """(t, uint8 (H, W, 3)) -> uint8 (S, S, 3); t seeds the augmentation of example t."""
  size = config.model.image_size
  augment = bool(config.data.get("augment", False))
  base_seed = tf.constant([_u31(config.seed), process_index], tf.int64)

  def fn(t, rgb):
    rgb.set_shape([None, None, 3])
    if augment:
      rgb = random_crop_flip(rgb, tf.random.experimental.stateless_fold_in(base_seed, t))
    return resize(rgb, size)

  return fn


def _u31(x: int) -> int:
  """A non-negative int31 from any int (seeds for numpy and tf.data)."""
  return int(x) % (2**31 - 1)


# --------------------------------------------------------------------------------------------
# Multi-host and batch sizes.


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else int(process_index)
  count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= index < count:
    raise ValueError(f"process_index {index} is not in [0, {count})")
  return index, count


def local_batch_size(global_batch: int, process_count: int) -> int:
  """Per-process batch; the global batch must split evenly across processes."""
  if global_batch <= 0 or global_batch % process_count:
    raise DataError(
      f"batch_size {global_batch} is not a positive multiple of the {process_count} "
      "processes: set --config.batch_size to a multiple of the process count"
    )
  return global_batch // process_count


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True  # Exact resume needs the same order on every run.
  options.experimental_optimization.map_parallelization = True
  return options


def _numpy_iterator(ds: tf.data.Dataset, fatal: list) -> Iterator[dict[str, np.ndarray]]:
  """tf.data -> numpy batches; a DataError raised inside a loader surfaces as itself."""
  it = iter(ds.as_numpy_iterator())
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except tf.errors.OpError:
      if fatal:
        raise fatal[0] from None
      raise
    yield batch


# --------------------------------------------------------------------------------------------
# File lists: folder and bundled sources.


def find_images(path: str) -> list[str]:
  """Image files under a directory (recursive), matching a glob, or one file; sorted.

  ``images.find``: hidden files and folders are skipped. Raises DataError with what to do when
  there is nothing to read.
  """
  if not path:
    raise DataError(
      "config.data.path is empty: set --config.data.path to a directory of images or a glob "
      "such as '/photos/**/*.jpg'"
    )
  try:
    return images.find(path)
  except images.ImageError as e:
    raise DataError(f"{e}: set --config.data.path (or eval_path) to your photos") from None


def bundled_photos(split: str) -> list[str]:
  """Paths of the real colour photos shipped in the scikit-image wheel.

  Args:
    split: 'train' (the demo trains on these) or 'holdout' (held out for colorizing and
      evaluation; disjoint from 'train').

  Returns:
    Sorted absolute paths.
  """
  names = {"train": BUNDLED_TRAIN, "holdout": BUNDLED_HOLDOUT}.get(split)
  if names is None:
    raise ValueError(f"unknown bundled split {split!r}; known: 'train', 'holdout'")
  root = _skimage_data_dir()
  paths = [os.path.join(root, n) for n in sorted(names)]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise DataError(
      f"bundled photo {missing[0]} is missing: reinstall scikit-image "
      "(pip install --force-reinstall scikit-image)"
    )
  return paths


@functools.cache
def _skimage_data_dir() -> str:
  """skimage/data inside the installed wheel, located without importing scikit-image."""
  try:
    dist = metadata.distribution("scikit-image")
  except metadata.PackageNotFoundError:
    raise DataError("scikit-image is not installed: pip install scikit-image") from None
  return str(dist.locate_file(os.path.join("skimage", "data")))


def _train_files(config) -> list[str]:
  if config.data.source == "folder":
    return find_images(config.data.path)
  return bundled_photos("train")


def _eval_files(config) -> list[str]:
  if config.data.source == "folder":
    if not config.data.eval_path:
      raise DataError("no eval images: set --config.data.eval_path to a held-out directory or glob")
    return find_images(config.data.eval_path)
  return bundled_photos("holdout")


def _shard(files: list[str], process_index: int, process_count: int) -> list[str]:
  return files[process_index::process_count]


class _EpochOrder:
  """Example t of a process's stream -> file index: a fresh permutation per epoch.

  The permutation of epoch e is seeded by (seed, process, e), so example t depends only on t:
  a resumed stream starts at t = start_step * batch with nothing to skip or decode.
  """

  def __init__(self, n: int, seed: int, process_index: int):
    self.n = n
    self._key = (_u31(seed), process_index)
    self._lock = threading.Lock()
    self._perms: dict[int, np.ndarray] = {}

  def __call__(self, t: int) -> int:
    epoch, pos = divmod(int(t), self.n)
    with self._lock:
      perm = self._perms.get(epoch)
      if perm is None:
        perm = np.random.default_rng([*self._key, epoch]).permutation(self.n)
        self._perms = {epoch: perm, **{e: p for e, p in self._perms.items() if e > epoch - 2}}
    return int(perm[pos])


def _files_train_dataset(config, files, start, process_index, fatal) -> tf.data.Dataset:
  """Examples t = start, start+1, ... of the folder/bundled stream: (t, uint8 (H, W, 3))."""
  cache = bool(config.data.cache) or config.data.source == "bundled"
  loader = _Loader(files, cache=cache)
  order = _EpochOrder(len(files), config.seed, process_index)
  where = config.data.path if config.data.source == "folder" else "the bundled photos"

  def load(t):
    # An unreadable file is replaced by the next readable one in sorted order: example t
    # still depends on t alone, which keeps resumes exact.
    i = order(t)
    for k in range(len(files)):
      rgb = loader.load((i + k) % len(files))
      if rgb is not None:
        return rgb
    err = DataError(f"none of the {len(files)} image files in {where} is readable")
    fatal.append(err)
    raise err

  def load_tf(t):
    return t, tf.numpy_function(load, [t], tf.uint8, name="load_image")

  return tf.data.Dataset.range(start, tf.int64.max).map(
    load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )


def _files_eval_dataset(files: list[str], cache: bool) -> tf.data.Dataset:
  """All readable files in order: uint8 (H, W, 3); unreadable ones dropped (and warned)."""
  loader = _Loader(files, cache=cache)

  def load(i):
    rgb = loader.load(int(i))
    return (np.zeros((0, 0, 3), np.uint8), False) if rgb is None else (rgb, True)

  def load_tf(i):
    rgb, ok = tf.numpy_function(load, [i], (tf.uint8, tf.bool), name="load_image")
    return rgb, ok

  def is_ok(rgb, ok):
    del rgb
    return ok

  def image(rgb, ok):
    del ok
    return rgb

  ds = tf.data.Dataset.range(len(files)).map(
    load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  return ds.filter(is_ok).map(image)


# --------------------------------------------------------------------------------------------
# TFDS source.


def _tfds_builder(config):
  try:
    return tfds.builder(config.data.tfds_name, data_dir=config.data.data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(
      f"unknown TFDS dataset {config.data.tfds_name!r}: set --config.data.tfds_name"
    ) from None


def _missing_tfds_error(config, builder) -> DataError:
  name = config.data.tfds_name
  data_dir = config.data.data_dir or os.path.dirname(os.path.dirname(builder.data_dir))
  if name.startswith("imagenet2012"):
    manual_dir = config.data.manual_dir or os.path.join(data_dir, "downloads", "manual")
    return DataError(
      f"TFDS dataset {name} is not prepared in {data_dir}: download {IMAGENET_TARS[0]} and "
      f"{IMAGENET_TARS[1]} from https://image-net.org into {manual_dir}, then run "
      f"`tfds build {name} --manual_dir={manual_dir} --data_dir={data_dir}` "
      "(or use --config.data.source=folder / bundled)"
    )
  return DataError(
    f"TFDS dataset {name} is not prepared in {data_dir}: run "
    f"`tfds build {name} --data_dir={data_dir}` first"
  )


def _tfds_records(config, builder, split, *, shuffle_seed=None) -> tf.data.Dataset:
  """Undecoded examples of a TFDS split ('image' stays encoded bytes)."""
  read_config = tfds.ReadConfig(
    options=_options(),
    shuffle_seed=shuffle_seed,
    # The same file order every epoch: epochs differ by their seeded example shuffle, so
    # any epoch can be rebuilt without replaying the earlier ones.
    shuffle_reshuffle_each_iteration=False,
  )
  try:
    return builder.as_dataset(
      split=split,
      shuffle_files=shuffle_seed is not None,
      read_config=read_config,
      decoders={TFDS_IMAGE_KEY: tfds.decode.SkipDecoding()},
    )
  except AssertionError as e:
    if "could not find data" in str(e):
      raise _missing_tfds_error(config, builder) from None
    raise


def _tfds_num_examples(config, builder, split) -> int:
  n = int(_tfds_records(config, builder, split).cardinality())
  if n < 0:
    raise DataError(f"cannot count the examples of TFDS split {split!r} of {builder.name}")
  return n


def _decode_tfds_image(data: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/... bytes -> uint8 (H, W, 3); grey is replicated to 3 channels."""
  return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


def _tfds_train_dataset(config, start, process_index, process_count) -> tf.data.Dataset:
  """Examples t = start, ... of the TFDS stream: (t, uint8 (H, W, 3)), decoded after skip."""
  builder = _tfds_builder(config)
  split = tfds.split_for_jax_process(
    config.data.train_split, process_index=process_index, process_count=process_count
  )
  seed = _u31(config.seed * 1_000_003 + process_index)
  records = _tfds_records(config, builder, split, shuffle_seed=seed)
  n = int(records.cardinality())
  if n <= 0:
    raise DataError(f"TFDS split {config.data.train_split!r} of {builder.name} has no examples")
  first_epoch, offset = divmod(start, n)

  def epoch(e):
    return records.shuffle(config.data.shuffle_buffer, seed=(seed + 7919 * e) % (2**31 - 1))

  ds = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch)
  ds = ds.skip(offset)  # Reads but never decodes the skipped examples.
  ds = ds.map(lambda ex: ex[TFDS_IMAGE_KEY])
  ds = tf.data.Dataset.zip((tf.data.Dataset.range(start, tf.int64.max), ds))
  return ds.map(
    lambda t, data: (t, _decode_tfds_image(data)),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )


def _tfds_eval_split(config, num_examples: int | None) -> str:
  split = config.data.eval_split
  if num_examples is None:
    return split
  if "[" in split:
    raise DataError(
      f"eval_split {split!r} is already sliced; pass num_examples=None or an unsliced split"
    )
  return f"{split}[:{int(num_examples)}]"


# --------------------------------------------------------------------------------------------
# Public API.


def _check_source(config) -> str:
  source = config.data.source
  if source not in ("tfds", "folder", "bundled"):
    raise DataError(f"unknown data source {source!r}; known: 'tfds', 'folder', 'bundled'")
  return source


def num_train_examples(config: ml_collections.ConfigDict) -> int:
  """Training examples over all processes (one epoch), counting unreadable files too."""
  if _check_source(config) == "tfds":
    builder = _tfds_builder(config)
    return _tfds_num_examples(config, builder, config.data.train_split)
  return len(_train_files(config))


def create_train_iterator(
  config: ml_collections.ConfigDict,
  *,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Infinite, deterministic training batches of this process, from step ``start_step``.

  Args:
    config: the full config (uses ``seed``, ``batch_size``, ``model.image_size``, ``data``).
    start_step: the number of batches already consumed; batches come out exactly as batches
      start_step, start_step + 1, ... of a run from 0.
    process_index: this process (default ``jax.process_index()``).
    process_count: all processes (default ``jax.process_count()``).

  Returns:
    An iterator of {'rgb': uint8 (config.batch_size // process_count, S, S, 3)}.
  """
  source = _check_source(config)
  process_index, process_count = _process(process_index, process_count)
  batch = local_batch_size(config.batch_size, process_count)
  start = int(start_step) * batch
  fatal: list[DataError] = []
  if source == "tfds":
    ds = _tfds_train_dataset(config, start, process_index, process_count)
  else:
    files = _shard(_train_files(config), process_index, process_count)
    if not files:
      raise DataError(
        f"process {process_index} of {process_count} got no training images: "
        "use at least as many images as processes"
      )
    ds = _files_train_dataset(config, files, start, process_index, fatal)
  ds = ds.map(
    _example_fn(config, process_index), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  ds = ds.batch(batch, drop_remainder=True).map(lambda rgb: {"rgb": rgb})
  ds = ds.prefetch(config.data.prefetch).with_options(_options())
  return _numpy_iterator(ds, fatal)


def create_eval_iterator(
  config: ml_collections.ConfigDict,
  *,
  num_examples: int | None = None,
  batch_size: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Finite eval batches, in order (no shuffle, no augmentation), padded to full batches.

  Reads the TFDS eval split, ``config.data.eval_path`` ('folder') or the bundled holdout
  photos. Every process yields the same number of batches (needed for global arrays); the
  padding examples are zeros with ``mask`` False. Unreadable files are skipped.

  Args:
    config: the full config.
    num_examples: use only the first ``num_examples`` of the eval set (None: all).
    batch_size: per-process batch (default config.batch_size // process_count).
    process_index: this process (default ``jax.process_index()``).
    process_count: all processes (default ``jax.process_count()``).

  Returns:
    An iterator of {'rgb': uint8 (batch_size, S, S, 3), 'mask': bool (batch_size,)}.
  """
  source = _check_source(config)
  process_index, process_count = _process(process_index, process_count)
  if batch_size is None:
    batch_size = local_batch_size(config.batch_size, process_count)
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  size = config.model.image_size
  if source == "tfds":
    builder = _tfds_builder(config)
    split = _tfds_eval_split(config, num_examples)
    total = _tfds_num_examples(config, builder, split)
    local = tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count
    )
    ds = _tfds_records(config, builder, local).map(
      lambda ex: _decode_tfds_image(ex[TFDS_IMAGE_KEY]), num_parallel_calls=tf.data.AUTOTUNE
    )
  else:
    files = _eval_files(config)
    if num_examples is not None:
      files = files[: int(num_examples)]
    total = len(files)
    ds = _files_eval_dataset(_shard(files, process_index, process_count), bool(config.data.cache))
  if total == 0:
    raise DataError("the eval set is empty")
  per_process = -(-total // process_count)
  num_batches = -(-per_process // batch_size)

  def real(rgb):
    rgb.set_shape([None, None, 3])
    return {"rgb": resize(rgb, size), "mask": tf.constant(True)}

  padding = tf.data.Dataset.from_tensors(
    {"rgb": tf.zeros((size, size, 3), tf.uint8), "mask": tf.constant(False)}
  ).repeat()
  ds = ds.map(real, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.concatenate(padding).take(num_batches * batch_size).batch(batch_size)
  ds = ds.prefetch(config.data.prefetch).with_options(_options())
  return _numpy_iterator(ds, [])
