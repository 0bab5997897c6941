"""Training and eval examples made in worker processes: decode, augment, resize.

Decoding JPEG/PNG/WebP with Pillow holds the GIL for most of its time, so threads cannot
decode in parallel. :class:`Workers` runs :func:`make_examples` in a pool of processes
started with ``spawn`` (forking a process that runs JAX or TensorFlow threads can deadlock);
each task is a chunk of examples, and results come back in task order, a bounded number of
chunks ahead. The work per example is the ONE decoder (:func:`chromagan_jax.data.images.decode`),
alpha composited on white, an optional random crop/flip, then the training resize
(:func:`chromagan_jax.data.images.resize`): only (S, S, 3) uint8 arrays cross the process boundary.

This module imports NumPy and Pillow only (through ``images``), so workers start in a fraction
of a second and never load TensorFlow or JAX.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from chromagan_jax.data import images

# Random crops of the optional augmentation (config.data.augment): the crop's side is this
# fraction of the image's short side, its aspect ratio jittered in [3/4, 4/3].
AUGMENT_MIN_SCALE = 0.35
AUGMENT_MAX_LOG_ASPECT = float(np.log(4 / 3))
# Hasler & Suesstrunk's weight of the mean term (evaluate.colorfulness uses this one too).
COLORFULNESS_MEAN_WEIGHT = 0.3
# Near-grey test (config.data.min_colorfulness): colourfulness is measured on the photo
# shrunk to at most this side, which is fast and changes the value by well under 1 unit.
COLORFULNESS_THUMB_SIDE = 256
# Prefix of the reason a near-grey training photo is skipped with (input_pipeline counts them).
NEAR_GREY = "near-grey photo"
# A worker's decoded-image cache (config.data.cache, the bundled photos) holds at most this
# many images; it is meant for demo-sized sets.
CACHE_MAX_IMAGES = 1024


def u31(x: int) -> int:
  """A non-negative int31 from any int (seeds)."""
  return int(x) % (2**31 - 1)


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """How to turn a decoded image into an example (picklable, sent with each task).

  Attributes:
    size: output side S (``config.model.image_size``).
    augment: random crop + flip before the resize (``config.data.augment``).
    seed: ``config.seed``; with ``process_index`` and the example's position t it seeds the
      augmentation of example t.
    process_index: this JAX process.
    cache: keep decoded images in the worker's memory (small sets only).
    min_colorfulness: photos whose Hasler-Suesstrunk colourfulness (0-255 RGB; the grey
      photo scores 0, the shared real photos' median ~41) is below this are refused as
      near-grey (``config.data.min_colorfulness``; 0 keeps every photo).
    max_pixels: decompression-bomb limit passed to the decoder.
  """

  size: int
  augment: bool = False
  seed: int = 0
  process_index: int = 0
  cache: bool = False
  min_colorfulness: float = 0.0
  max_pixels: int = images.DEFAULT_MAX_PIXELS


class EpochOrder:
  """Example t of a process's stream -> item index: a fresh permutation per epoch.

  The permutation of epoch e is seeded by (seed, process, e), so example t depends only on t:
  a resumed stream starts at t = start_step * batch with nothing to read, skip or decode, in
  time independent of t.
  """

  def __init__(self, n: int, seed: int, process_index: int):
    self.n = n
    self._key = (u31(seed), process_index)
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


def random_crop_flip(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random crop (several scales, jittered aspect) and a random horizontal flip.

  Only for tiny training sets (config.data.augment; the reference uses no augmentation). The
  crop's side is in [AUGMENT_MIN_SCALE, 1] x the short side, so one photo yields views from
  whole-image to close-up.

  Args:
    rgb: uint8 (H, W, 3).
    rng: the example's generator; the same state gives the same crop.

  Returns:
    uint8 (h, w, 3) with 1 <= h <= H, 1 <= w <= W.
  """
  h, w = rgb.shape[:2]
  side = min(h, w) * rng.uniform(AUGMENT_MIN_SCALE, 1.0)
  aspect = np.exp(rng.uniform(-AUGMENT_MAX_LOG_ASPECT, AUGMENT_MAX_LOG_ASPECT))
  crop_h = int(np.clip(round(side / np.sqrt(aspect)), 1, h))
  crop_w = int(np.clip(round(side * np.sqrt(aspect)), 1, w))
  top = int(rng.integers(0, h - crop_h + 1))
  left = int(rng.integers(0, w - crop_w + 1))
  out = rgb[top : top + crop_h, left : left + crop_w]
  return out[:, ::-1] if rng.uniform() < 0.5 else out


def colorfulness(rgb: np.ndarray) -> float:
  """Hasler & Suesstrunk (2003) colourfulness of uint8 RGB (H, W, 3), population statistics.

  The NumPy twin of ``evaluation.scores.colorfulness`` (workers import no JAX): 0 for a
  grey image, ~15 for a faded or sepia-toned photo, 40-60 for typical colour photos.
  """
  step = max(1, -(-max(rgb.shape[:2]) // COLORFULNESS_THUMB_SIDE))
  r, g, b = np.moveaxis(rgb[::step, ::step].astype(np.float64), -1, 0)
  rg, yb = r - g, 0.5 * (r + g) - b
  std = np.sqrt(rg.var() + yb.var())
  mean = np.hypot(rg.mean(), yb.mean())
  return float(std + COLORFULNESS_MEAN_WEIGHT * mean)


def check_colourful(rgb: np.ndarray | None, spec: ExampleSpec, name: str) -> None:
  """Raises images.ImageError (reason starting NEAR_GREY) for a near-grey training photo.

  ``rgb`` None: the photo was measured before (each photo is measured once per process).
  """
  if spec.min_colorfulness <= 0:
    return
  value = _colourfulness.get(name)
  if value is None:
    value = _colourfulness[name] = colorfulness(rgb)
  if value < spec.min_colorfulness:
    raise images.ImageError(
      f"{name}: {NEAR_GREY} (colourfulness {value:.1f} < config.data.min_colorfulness="
      f"{spec.min_colorfulness:g}; set it to 0 to train on it)"
    )


_cache: collections.OrderedDict = collections.OrderedDict()  # Per process: name -> rgb.
_colourfulness: dict[str, float] = {}  # Per process: name -> colourfulness (measured once).


def _decoded(spec: ExampleSpec, source, name: str) -> np.ndarray:
  if spec.cache and name in _cache:
    return _cache[name]
  rgb = images.read_rgb(source, spec.max_pixels, name=name)
  if spec.cache:
    _cache[name] = rgb
    while len(_cache) > CACHE_MAX_IMAGES:
      _cache.popitem(last=False)
  return rgb


def make_example(spec: ExampleSpec, t: int, source, name: str) -> np.ndarray:
  """One example: uint8 (S, S, 3). Raises images.ImageError (one line naming ``name``).

  Args:
    spec: see :class:`ExampleSpec`.
    t: the example's position in its stream (seeds its augmentation).
    source: a file path or the encoded bytes (a TFDS record's image).
    name: how messages (and the cache) name it.
  """
  if spec.min_colorfulness > 0 and name in _colourfulness:  # Known: no need to decode.
    check_colourful(None, spec, name)
  rgb = _decoded(spec, source, name)
  check_colourful(rgb, spec, name)
  if spec.augment:
    rgb = random_crop_flip(rgb, np.random.default_rng([u31(spec.seed), spec.process_index, t]))
  return images.resize(rgb, spec.size)


def make_examples(spec: ExampleSpec, items: Sequence[tuple]) -> list[tuple]:
  """:func:`make_example` over (t, source, name) items -> [(uint8 (S, S, 3) or None, why)].

  An item that cannot be read gives (None, the reason, without the name) instead of raising:
  the caller decides (skip it, or fill its slot with another file).
  """
  out = []
  for t, source, name in items:
    try:
      out.append((make_example(spec, t, source, name), None))
    except images.ImageError as e:
      out.append((None, str(e).removeprefix(f"{name}: ")))
  return out


@contextlib.contextmanager
def _without_main_module():
  """Spawned workers would re-import the parent's ``__main__`` (train.py: JAX, TensorFlow,
  seconds and hundreds of MB each); the tasks only need this module, so hide it meanwhile."""
  main = sys.modules.get("__main__")
  saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
  try:
    for k in saved:
      if k == "__file__":
        delattr(main, k)
      else:
        setattr(main, k, None)
    yield
  finally:
    for k, v in saved.items():
      setattr(main, k, v)


def _init_worker():
  """Workers ignore SIGINT/SIGTERM: those are for the trainer, which checkpoints and stops
  (then closes the pool). Ctrl-C in a terminal, `timeout`, or a scheduler signalling the whole
  process group reach the workers too; dying there made the trainer report "a decode worker
  process died (killed for memory?)" instead of saving the current step.

  And a worker exits as soon as its parent is gone. Its task queue does not tell it: the
  siblings hold the queue's pipe open, so after a SIGKILL of the trainer (the OOM killer, a
  preempted host) the workers and multiprocessing's resource tracker were left running, idle,
  holding their decoded-image caches, with nothing to end them (seen after a test's killed
  trainer). The parent's sentinel (a pipe only the parent holds open) is ready exactly when
  the parent has exited; the resource tracker then exits with the last worker."""
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
  parent = multiprocessing.parent_process()
  if parent is not None:
    threading.Thread(
      target=_exit_when_ready, args=(parent.sentinel,), name="exit-with-parent", daemon=True
    ).start()


def _exit_when_ready(sentinel):
  multiprocessing.connection.wait([sentinel])
  os._exit(1)  # Not sys.exit: no cleanup to wait for, and the main thread may be mid-task.


def default_processes() -> int:
  """The CPU cores this process may use (its affinity mask)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


class Workers:
  """Runs :func:`make_examples` on chunks of items, in worker processes, in order.

  A ``concurrent.futures`` pool rather than ``multiprocessing.Pool``: a worker that dies (e.g.
  killed for memory) fails the pending tasks with ``BrokenProcessPool`` instead of leaving
  them unanswered forever.

  Args:
    processes: worker processes; 0 runs everything in the calling thread (tests, debugging).
  """

  def __init__(self, processes: int):
    if processes < 0:
      raise ValueError(f"processes must be >= 0, got {processes}")
    self.processes = processes
    self._pool = None
    if processes:
      self._pool = concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
      )

  def _submit(self, spec, chunk):
    # Workers are started on demand inside submit(); the parent's __main__ stays hidden then.
    with _without_main_module():
      return self._pool.submit(make_examples, spec, chunk)

  def map(
    self, spec: ExampleSpec, chunks: Iterable[Sequence[tuple]], ahead: int
  ) -> Iterator[list[tuple]]:
    """``make_examples(spec, chunk)`` for each chunk, in order, up to ``ahead`` in flight.

    Raises:
      concurrent.futures.process.BrokenProcessPool: a worker died.
    """
    if self._pool is None:
      for chunk in chunks:
        yield make_examples(spec, chunk)
      return
    pending = collections.deque()
    for chunk in chunks:
      pending.append(self._submit(spec, chunk))
      if len(pending) >= max(1, ahead):
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()

  def pids(self) -> list[int]:
    """Process ids of the workers started so far (benchmarks count their CPU time)."""
    return [] if self._pool is None else list(self._pool._processes or {})

  def close(self):
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)
      self._pool = None

  def __del__(self):
    self.close()
