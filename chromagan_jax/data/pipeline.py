"""Input pipeline: images from TFDS, a folder, or bundled photos -> uint8 RGB batches.

Every source yields dicts ``{'rgb': uint8 (local_batch, S, S, 3)}`` in [0, 255], with
``S = config.model.image_size``; eval batches add ``'mask'`` (bool, real examples). Colour
conversion to Lab happens later, on device. As in the reference (``cv2.resize`` to 224x224),
images are resized with **no crop**: the aspect ratio is not kept.

Sources (``config.data.source``):
  * ``'tfds'``: a TFDS dataset (``imagenet2012`` by default; its tars are a manual download)
    stored as ``array_record`` (random access by index; ``tfds build --file_format=
    array_record``, or ``tfds convert_format`` for a tfrecord copy: a tfrecord-only dataset
    gives that instruction in one line).
  * ``'folder'``: a directory (searched recursively) or a glob of image files, found by
    :func:`chromagan_jax.data.images.find`. Unreadable files are skipped with a warning naming
    each one (see ``skipped_files``), never crashing a long run; in training, the slot of an
    unreadable file is filled by the next readable one (sorted order), which keeps resumes
    exact.
  * ``'bundled'``: real colour photos that ship inside the scikit-image wheel (a demo set).

Every source is read by index, and every example is made by the same code: the encoded image
(a file, or a TFDS record's bytes) is decoded by :mod:`chromagan_jax.data.images` (alpha
composited on white), optionally cropped and flipped (``config.data.augment``) and resized
with ``images.resize``, in ``config.data.decode_processes`` worker processes
(:mod:`chromagan_jax.data.decode_workers`; Pillow holds the GIL, so threads would not decode in
parallel).

Training streams are infinite and deterministic given ``config.seed``: example t of a process
is item ``perm_e[t mod n]`` of its shard, ``perm_e`` a permutation seeded by (seed, process,
epoch ``e = t // n``), so the batches of ``create_train_iterator(config, start_step=k)`` are
batches k, k+1, ... of a run from 0, and starting there costs the same at any k (nothing is
read and skipped). Each process reads a disjoint slice of the data (multi-host); batch sizes
here are per process.
"""

import functools
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import jax
import ml_collections
import numpy as np
from absl import logging

from chromagan_jax.data import decode_workers, images, sources
from chromagan_jax.errors import DataError

# Examples per worker task: large enough to amortise a task's overhead, small enough that a
# batch is spread over several workers.
MAX_CHUNK = 32


# --------------------------------------------------------------------------------------------
# Unreadable files: warned about once per process, counted for the trainer's logs.

_skipped_lock = threading.Lock()


_skipped: dict[str, str] = {}  # path -> reason


def skipped_files() -> dict[str, str]:
  """Unreadable image files met so far in this process: {path: reason} (a copy)."""
  with _skipped_lock:
    return dict(_skipped)


def num_skipped_files() -> int:
  """How many distinct files this process has skipped so far (unreadable or near-grey)."""
  with _skipped_lock:
    return len(_skipped)


def num_skipped_grey() -> int:
  """How many of those were near-grey training photos (``config.data.min_colorfulness``)."""
  with _skipped_lock:
    return sum(r.startswith(decode_workers.NEAR_GREY) for r in _skipped.values())


def reset_skipped_files() -> None:
  """Forgets the skipped files (tests; a new run in the same process)."""
  with _skipped_lock:
    _skipped.clear()


def _record_skipped(path: str, reason: str) -> None:
  with _skipped_lock:
    first = path not in _skipped
    _skipped[path] = reason
  if first:
    what = "" if reason.startswith(decode_workers.NEAR_GREY) else "unreadable "
    logging.warning("skipping %simage %s: %s", what, path, reason)


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


def _even_shard(n: int, process_index: int, process_count: int) -> range:
  """Process ``process_index``'s contiguous slice of range(n) (sizes differ by at most 1)."""
  return range(n * process_index // process_count, n * (process_index + 1) // process_count)


# --------------------------------------------------------------------------------------------
# Worker processes.


@functools.cache
def _workers(processes: int) -> decode_workers.Workers:
  """One pool per process count, shared by the train and eval iterators of this process."""
  return decode_workers.Workers(processes)


def _results(workers, spec, chunks, ahead):
  """``workers.map``; a worker killed under us is one DataError line, not a hang."""
  try:
    yield from workers.map(spec, chunks, ahead)
  except BrokenProcessPool:
    _workers.cache_clear()  # The next iterator starts a fresh pool.
    raise DataError(
      f"a decode worker process died (killed for memory?): lower --config.data.decode_processes "
      f"(now {workers.processes}) or free memory, then resume"
    ) from None


def _decode_processes(config) -> int:
  n = config.data.decode_processes
  return decode_workers.default_processes() if n is None else int(n)


def _spec(config, process_index: int, *, train: bool) -> decode_workers.ExampleSpec:
  return decode_workers.ExampleSpec(
    size=config.model.image_size,
    augment=train and bool(config.data.augment),
    seed=config.seed,
    process_index=process_index,
    cache=bool(config.data.cache) or config.data.source == "bundled",
    min_colorfulness=float(config.data.min_colorfulness) if train else 0.0,
  )


def _chunk_size(batch: int, processes: int) -> int:
  return max(1, min(MAX_CHUNK, -(-batch // max(1, processes))))


def _ahead(config, processes: int, chunk: int, batch: int) -> int:
  """Chunks in flight: every worker busy, plus ``config.data.prefetch`` batches ready."""
  return 2 * processes + int(config.data.prefetch) * -(-batch // chunk)


def _replacement(spec, items: sources._Items, t: int, i: int) -> np.ndarray:
  """Example t when item i is unreadable: the next readable item (t alone decides it)."""
  for k in range(1, items.n):
    source, name = items((i + k) % items.n)
    try:
      return decode_workers.make_example(spec, t, source, name)
    except images.ImageError as e:
      _record_skipped(name, str(e).removeprefix(f"{name}: "))
  raise DataError(
    f"none of the {items.n} images in {items.where} is usable (unreadable or near-grey; "
    "config.data.min_colorfulness=0 keeps near-grey photos)"
  )


def _train_stream(config, items: sources._Items, start: int, batch: int, process_index: int):
  processes = _decode_processes(config)
  workers = _workers(processes)
  spec = _spec(config, process_index, train=True)
  order = decode_workers.EpochOrder(items.n, config.seed, process_index)
  chunk = _chunk_size(batch, processes)

  def chunks():
    t = start
    while True:
      yield [(u, *items(order(u))) for u in range(t, t + chunk)]
      t += chunk

  rgbs, t = [], start
  for results in _results(workers, spec, chunks(), _ahead(config, processes, chunk, batch)):
    for rgb, error in results:
      if rgb is None:
        i = order(t)
        _record_skipped(items(i)[1], error)
        rgb = _replacement(spec, items, t, i)
      rgbs.append(rgb)
      t += 1
      if len(rgbs) == batch:
        yield {"rgb": np.stack(rgbs)}
        rgbs = []


def _eval_stream(config, items: sources._Items, batch: int, num_batches: int, process_index: int):
  processes = _decode_processes(config)
  workers = _workers(processes)
  spec = _spec(config, process_index, train=False)
  chunk = _chunk_size(batch, processes)
  starts = range(0, items.n, chunk)
  chunks = ([(0, *items(i)) for i in range(k, min(k + chunk, items.n))] for k in starts)
  size = config.model.image_size
  rgbs, i = [], 0
  for results in _results(workers, spec, chunks, _ahead(config, processes, chunk, batch)):
    for rgb, error in results:
      if rgb is None:
        _record_skipped(items(i)[1], error)
      else:
        rgbs.append(rgb)
      i += 1
  # Every process yields num_batches batches (global arrays need them all), padded with zeros.
  real = len(rgbs)
  pad = num_batches * batch - real
  rgbs.extend([np.zeros((size, size, 3), np.uint8)] * pad)
  mask = np.arange(num_batches * batch) < real
  for k in range(num_batches):
    yield {
      "rgb": np.stack(rgbs[k * batch : (k + 1) * batch]),
      "mask": mask[k * batch : (k + 1) * batch],
    }


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
    return len(sources._tfds_source(config, config.data.train_split))
  return len(sources._train_files(config))


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
      start_step, start_step + 1, ... of a run from 0. Starting costs the same at any step:
      example positions map to items by a seeded per-epoch permutation, nothing is skipped.
    process_index: this process (default ``jax.process_index()``).
    process_count: all processes (default ``jax.process_count()``).

  Returns:
    An iterator of {'rgb': uint8 (config.batch_size // process_count, S, S, 3)}.
  """
  source = _check_source(config)
  process_index, process_count = _process(process_index, process_count)
  batch = local_batch_size(config.batch_size, process_count)
  if source == "tfds":
    split = config.data.train_split
    n = len(sources._tfds_source(config, split))
    items = sources._tfds_items(config, split, _even_shard(n, process_index, process_count))
  else:
    files = sources._train_files(config)[process_index::process_count]
    items = sources._file_items(files, sources._where(config))
  if items.n == 0:
    raise DataError(
      f"process {process_index} of {process_count} got no training examples from "
      f"{items.where}: use at least as many images as processes"
    )
  return _train_stream(config, items, int(start_step) * batch, batch, process_index)


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
  if source == "tfds":
    split = config.data.eval_split
    total = len(sources._tfds_source(config, split))
    if num_examples is not None:
      total = min(total, int(num_examples))
    items = sources._tfds_items(config, split, _even_shard(total, process_index, process_count))
  else:
    files = sources._eval_files(config)
    if num_examples is not None:
      files = files[: int(num_examples)]
    total = len(files)
    items = sources._file_items(files[process_index::process_count], sources._where(config))
  if total == 0:
    raise DataError("the eval set is empty")
  per_process = -(-total // process_count)
  num_batches = -(-per_process // batch_size)
  return _eval_stream(config, items, batch_size, num_batches, process_index)
