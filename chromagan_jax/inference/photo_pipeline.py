"""Many photos through a :class:`engine.Colorizer` with decoding, the network, composing and
encoding overlapped, results in input order.

Run one after another the stages leave cores idle: the network keeps every core busy only
while it runs, and decoding, composing and encoding in between use about one. Here each stage
runs in threads of its own (the network in one, decoding in ``workers``, composing plus
encoding in ``workers``) and a coordinator (the calling thread) moves photos between them.
Threads, not processes: XLA, OpenCV and Pillow's encoders release the GIL, so the network,
composing and encoding run in parallel; Pillow's decoders hold it, but decoding is a small
share of the work and overlaps with the rest (the measured choice: docs/performance.md).

* Photos are batched to the network as they finish decoding, not in input order, so one slow
  decode does not hold a batch back; the generator's result for one photo does not depend on
  its position in the batch nor on the other photos (fixed batch shape), so results are the
  ones the sequential path gives, bit for bit (tests/colorize_test.py checks it).
* Memory is bounded: at most ``2 * batch_size + 2 * workers`` photos are held at full
  resolution at once (decoding, waiting for the network, in it, or composing), and the
  encoded results waiting for an earlier photo to finish are at most ``4 * batch_size`` ahead.
* Results come out in input order, so whoever writes files names them as the sequential path
  does.
"""

import concurrent.futures as cf
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from chromagan_jax.data.images import Photo
from chromagan_jax.errors import ImageError
from chromagan_jax.inference import engine

DEFAULT_WORKERS = 2
# Photos held at full resolution: one batch in the network, one decoding and composing (the
# network's previous batch composes while the next decodes: they share the room).
_BATCHES_ALIVE = 2
# Input-order results (encoded files) may run this many batches ahead of the oldest unfinished.
_BATCHES_AHEAD = 4


@dataclasses.dataclass
class Result:
  """One input's outcome, in input order.

  Attributes:
    source: the input as given to :func:`colorize_overlapped`.
    photo: the decoded photo with its pixels dropped (``rgb``/``alpha`` None); None when
      decoding failed.
    value: what ``finish`` returned; None when decoding failed.
    error: the :class:`ImageError` of a failed decode, else None.
  """

  source: Any
  photo: Photo | None = None
  value: Any = None
  error: ImageError | None = None


def colorize_overlapped(
  colorizer: engine.Colorizer,
  sources: Sequence[Any],
  read: Callable[[Any], Photo],
  finish: Callable[[Photo, np.ndarray, np.ndarray | None], Any],
  with_grey: bool = False,
  workers: int = DEFAULT_WORKERS,
) -> Iterator[Result]:
  """Yields a :class:`Result` per source, in order, each stage in threads of its own.

  Args:
    colorizer: runs the network (one batch at a time, ``colorizer.batch_size`` photos).
    sources: inputs, e.g. paths.
    read: source -> :class:`Photo` (in a decoding thread); :class:`ImageError` marks the
      source as failed (``Result.error``), anything else ends the run.
    finish: (photo, colour, grey-or-None) -> value, in a composing thread, right after the
      photo is composed (``colour``: uint8 (H, W, 3|4) as :meth:`engine.Colorizer.stream`
      yields it), e.g. encoding it to bytes; its exceptions end the run, so it catches what
      is a per-file failure itself.
    with_grey: also compose the grey rendering (``grey``; else None).
    workers: threads for decoding, and as many for composing and encoding.

  Raises:
    Whatever a stage raised other than ``read``'s ImageError; pending work is cancelled and the
    threads are gone before the exception (or the generator's close) propagates.
  """
  n, size = len(sources), colorizer.batch_size
  max_alive = _BATCHES_ALIVE * size + 2 * workers
  max_ahead = max(_BATCHES_AHEAD * size, max_alive)
  decoders = cf.ThreadPoolExecutor(workers, thread_name_prefix="decode")
  network = cf.ThreadPoolExecutor(1, thread_name_prefix="network")
  composers = cf.ThreadPoolExecutor(workers, thread_name_prefix="compose")

  def run_network(batch):
    _, ab = colorizer.predict_network([photo.rgb for _, photo in batch])
    return batch, np.asarray(ab)

  def compose(photo, ab):
    return finish(photo, *colorizer.compose_photo(photo, ab, with_grey=with_grey))

  decoding: dict[cf.Future, int] = {}
  composing: dict[cf.Future, tuple[int, Photo]] = {}
  ready: list[tuple[int, Photo]] = []  # Decoded, waiting for the network.
  in_network: cf.Future | None = None
  in_network_count = 0
  done: dict[int, Result] = {}
  next_read = next_out = 0
  try:
    while next_out < n:
      alive = len(decoding) + len(ready) + in_network_count + len(composing)
      while next_read < n and alive < max_alive and next_read - next_out < max_ahead:
        decoding[decoders.submit(read, sources[next_read])] = next_read
        next_read += 1
        alive += 1
      # A full batch; or a partial one when the photos decoding cannot fill it and no more
      # can start (the last photos, or the memory bounds reached): waiting would not help.
      if in_network is None and ready:
        if len(ready) + len(decoding) < size or len(ready) >= size:
          ready.sort(key=lambda x: x[0])  # The oldest first: results leave in input order.
          batch, ready = ready[:size], ready[size:]
          in_network, in_network_count = network.submit(run_network, batch), len(batch)
      while next_out in done:
        yield done.pop(next_out)
        next_out += 1
      if next_out >= n:
        break
      waiting = [*decoding, *composing, *([in_network] if in_network else [])]
      if not waiting:
        continue
      finished, _ = cf.wait(waiting, return_when=cf.FIRST_COMPLETED)
      for future in finished:
        if future in decoding:
          i = decoding.pop(future)
          try:
            photo = future.result()
          except ImageError as e:
            done[i] = Result(sources[i], error=e)
            continue
          ready.append((i, photo))
        elif future in composing:
          i, photo = composing.pop(future)
          value = future.result()
          meta = dataclasses.replace(photo, rgb=None, alpha=None)
          done[i] = Result(sources[i], photo=meta, value=value)
        else:
          batch, ab = future.result()
          in_network, in_network_count = None, 0
          for k, (i, photo) in enumerate(batch):
            composing[composers.submit(compose, photo, ab[k])] = (i, photo)
  finally:
    for pool in (decoders, network, composers):
      pool.shutdown(wait=False, cancel_futures=True)
    for pool in (decoders, network, composers):
      pool.shutdown(wait=True)
