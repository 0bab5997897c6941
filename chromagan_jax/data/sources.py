"""What example i of each input source is read from: folder files, TFDS records, bundled photos.

Every source is read by index (see :mod:`pipeline`); here are the lists of items and the TFDS
reader, with one-line errors for a missing or unusable dataset.
"""

import functools
import os
from collections.abc import Callable
from importlib import metadata

from chromagan_jax import extras
from chromagan_jax.data import images
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


# --------------------------------------------------------------------------------------------
# Items: what example i of a source is read from.


class _Items:
  """A source's items by index: ``source(i)`` -> (path or encoded bytes, name for messages).

  Attributes:
    n: number of items.
    where: the dataset, named for messages.
  """

  def __init__(self, n: int, get: Callable[[int], tuple], where: str):
    self.n, self._get, self.where = n, get, where

  def __call__(self, i: int) -> tuple:
    return self._get(i)


def _file_items(files: list[str], where: str) -> _Items:
  return _Items(len(files), lambda i: (files[i], files[i]), where)


def _tfds_items(config, split: str, indices: range) -> _Items:
  source = _tfds_source(config, split)
  name = f"{config.data.tfds_name}/{split}"

  def get(i):
    k = indices[i]
    return source[k][TFDS_IMAGE_KEY], f"{name}[{k}]"

  return _Items(len(indices), get, f"TFDS {name}")


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
    raise extras.missing("demo", "the bundled photos source") from None
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


def _where(config) -> str:
  return config.data.path if config.data.source == "folder" else "the bundled photos"


# --------------------------------------------------------------------------------------------
# TFDS source: random access by index (array_record files).


def _tfds():
  """tensorflow-datasets (the 'train' extra), imported only for the 'tfds' source."""
  return extras.require("tensorflow_datasets", "train", "TFDS data")


def _tfds_builder(config):
  tfds = _tfds()
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
      f"`tfds build {name} --manual_dir={manual_dir} --data_dir={data_dir} "
      "--file_format=array_record` (prepared elsewhere: --config.data.data_dir=DIR; "
      "or use --config.data.source=folder / bundled)"
    )
  return DataError(
    f"TFDS dataset {name} is not prepared in {data_dir}: run "
    f"`tfds build {name} --data_dir={data_dir} --file_format=array_record` first "
    "(prepared elsewhere: --config.data.data_dir=DIR)"
  )


def _tfds_source(config, split: str):
  """The split as a random-access data source whose 'image' stays encoded bytes."""
  tfds = _tfds()
  builder = _tfds_builder(config)
  try:
    return builder.as_data_source(
      split=split, decoders={TFDS_IMAGE_KEY: tfds.decode.SkipDecoding()}
    )
  except (NotImplementedError, AssertionError, FileNotFoundError, ValueError) as e:
    if not _tfds_prepared(builder):
      raise _missing_tfds_error(config, builder) from None
    if isinstance(e, NotImplementedError):  # Prepared, but in a sequential format (tfrecord).
      name = config.data.tfds_name
      raise DataError(
        f"TFDS dataset {name} in {builder.data_dir} is stored as tfrecord, which cannot be "
        "read by index (exact resume at any step in constant time needs it): convert it with "
        f"`tfds convert_format --dataset_version_dir={builder.data_dir} "
        f"--out_file_format=array_record` or rebuild with `tfds build {name} "
        "--file_format=array_record`"
      ) from None
    raise DataError(f"cannot open TFDS split {split!r} of {builder.name}: {e}") from None


def _tfds_prepared(builder) -> bool:
  try:
    return bool(builder.is_prepared())
  except Exception:  # noqa: BLE001 - any failure to find the data means "not prepared".
    return False
