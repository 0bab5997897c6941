"""Evaluation data: uint8 RGB batches at the network size, with names and a validity mask.

A folder, file or glob is read as training reads ``config.data.source='folder'``; ``tfds`` and
``bundled`` go through the input pipeline, so the pixels scored are those training sees.
"""

from collections.abc import Iterator

import numpy as np

from chromagan_jax.data import images
from chromagan_jax.errors import EvalError, MissingExtraError


def _folder_batches(path, size, batch_size, max_pixels, log) -> Iterator[tuple]:
  """Batches of a folder/glob/file, read as training reads ``config.data.source='folder'``:
  ``images.find``, ``images.read_rgb`` (alpha on white) and the training resize
  (``images.resize``), so the pixels are those a training batch holds."""
  try:
    files = images.find(path)
  except images.ImageError as e:
    raise EvalError(str(e)) from None
  names, batch = [], []
  for file in files:
    try:
      rgb = images.read_rgb(file, max_pixels)
    except images.ImageError as e:
      log(f"skipped {e}")
      continue
    batch.append(images.resize(rgb, size))
    names.append(file)
    if len(batch) == batch_size:
      yield names, np.stack(batch), np.ones(len(batch), bool)
      names, batch = [], []
  if batch:
    yield _pad_batch(names, np.stack(batch), batch_size)


def _pad_batch(names, rgb, batch_size):
  n = len(names)
  rgb = np.concatenate([rgb, np.zeros((batch_size - n, *rgb.shape[1:]), rgb.dtype)])
  return names, rgb, np.arange(batch_size) < n


def _pipeline_batches(config, spec, batch_size, max_images) -> Iterator[tuple]:
  """Batches of ``pipeline.create_eval_iterator``: TFDS (``tfds[:NAME[:SPLIT]]``) or
  the photos bundled with scikit-image (``bundled``, the held-out ones)."""
  try:
    from chromagan_jax.data import pipeline
  except ImportError as e:
    raise EvalError(f"{spec} needs chromagan_jax.data.pipeline ({e})") from None
  config = config.copy_and_resolve_references()
  parts = spec.split(":")
  config.data.source = "tfds" if is_tfds(spec) else "bundled"
  if len(parts) > 1 and parts[1]:
    config.data.tfds_name = parts[1]
  if len(parts) > 2 and parts[2]:
    config.data.eval_split = parts[2]
  prefix = f"{config.data.tfds_name}/{config.data.eval_split}" if is_tfds(spec) else "bundled"
  index = 0
  try:
    iterator = pipeline.create_eval_iterator(
      config, num_examples=max_images, batch_size=batch_size, process_index=0, process_count=1
    )
    for batch in iterator:
      rgb, mask = np.asarray(batch["rgb"]), np.asarray(batch["mask"]).astype(bool)
      names = [f"{prefix}/{index + i}" for i in range(len(rgb))]
      index += int(mask.sum())
      yield names, rgb, mask
  except MissingExtraError:
    raise  # Its own line, naming the extra.
  except (OSError, ValueError) as e:  # pipeline.DataError is a ValueError.
    raise EvalError(f"cannot read {spec}: {e}") from None


def is_tfds(spec: str) -> bool:
  """``tfds`` or ``tfds:NAME[:SPLIT]`` selects TFDS."""
  return spec == "tfds" or spec.startswith("tfds:")


def uses_pipeline(spec: str) -> bool:
  """TFDS and ``bundled`` go through the input pipeline; anything else is a path or glob."""
  return is_tfds(spec) or spec == "bundled"
