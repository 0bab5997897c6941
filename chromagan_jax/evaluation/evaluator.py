"""Scores a colorizer against colour ground truth: PSNR, SSIM, colourfulness, chroma speckle.

The command line and the metrics it reports are described in ``chromagan_jax/evaluate.py``.
The library call takes a predict function (big_vision's evaluator habit) and never builds a
model: :func:`evaluate`; :func:`evaluate_checkpoint` loads a checkpoint's generator and
passes ``engine.colorize_small`` on it. The metrics are :mod:`scores`, the data
:mod:`sources`, videos :mod:`video_flicker`.
"""

import csv
import functools
import glob
import json
import math
import os
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from chromagan_jax.data import images
from chromagan_jax.errors import EvalError
from chromagan_jax.evaluation import scores, sources
from chromagan_jax.inference import engine
from chromagan_jax.model import predict
from chromagan_jax.runtime import machine
from chromagan_jax.weights import checkpoint

FID_NOTE = "FID not implemented: it needs Inception weights, which are not bundled"


RESULTS = ("colorized", "baseline")


# Per-image CSV columns after the image name.
COLUMNS = tuple(f"{r}_{m}" for r in RESULTS for m in scores.METRICS) + (
  "truth_colorfulness",
  "truth_chroma_hf",
)


def _mean(values: Sequence[float]) -> float | None:
  """Mean of the finite values (identical images give PSNR = inf), None if there are none."""
  finite = [v for v in values if math.isfinite(v)]
  return float(np.mean(finite)) if finite else None


def summarize(rows: Sequence[dict], meta: dict) -> dict:
  """Means of the per-image rows, next to ``meta`` (checkpoint, data, size, notes)."""
  summary = dict(meta)
  summary["num_images"] = len(rows)
  means = {}
  for result in RESULTS:
    means[result] = {m: _mean([r[f"{result}_{m}"] for r in rows]) for m in scores.METRICS}
  means["truth"] = {
    m: _mean([r[f"truth_{m}"] for r in rows]) for m in ("colorfulness", "chroma_hf")
  }
  summary["mean"] = means
  summary["num_identical"] = {
    result: sum(1 for r in rows if math.isinf(r[f"{result}_psnr"])) for result in RESULTS
  }
  summary["notes"] = [
    "PSNR/SSIM on uint8 RGB (data range 255) at the network size; PSNR means skip images "
    "identical to the ground truth (PSNR = inf; counted in num_identical)",
    "baseline: the grey input (a = b = 0)",
    "ssim: tf.image.ssim's definition (11x11 Gaussian window, std 1.5), the reference's; "
    "ssim_skimage: scikit-image's defaults (7x7 uniform window)",
    "chroma_hf: mean squared Lab (a, b) minus its 3x3 box mean (speckle; compare the truth's)",
    FID_NOTE,
  ]
  return summary


def format_table(summary: dict) -> str:
  """The summary as a small text table."""
  mean = summary["mean"]

  def cell(value, fmt):
    return "-" if value is None else format(value, fmt)

  source = ""
  if "step" in summary:
    ema = " (moving average)" if summary.get("ema") else ""
    source = f"checkpoint {summary['checkpoint']} step {summary['step']}{ema}, "
  lines = [
    f"{summary['num_images']} images at {summary['image_size']}x{summary['image_size']}, "
    f"{source}data {summary['data']}",
    f"{'':<24}{'PSNR (dB)':>10}{'SSIM':>8}{'SSIM (skimage)':>16}{'colourfulness':>15}"
    f"{'chroma HF':>11}",
  ]
  labels = {"colorized": "colorized", "baseline": "grey baseline (ab=0)"}
  for result in RESULTS:
    m = mean[result]
    lines.append(
      f"{labels[result]:<24}{cell(m['psnr'], '.2f'):>10}{cell(m['ssim'], '.4f'):>8}"
      f"{cell(m['ssim_skimage'], '.4f'):>16}{cell(m['colorfulness'], '.2f'):>15}"
      f"{cell(m['chroma_hf'], '.2f'):>11}"
    )
  truth, hf = (cell(mean["truth"][k], ".2f") for k in ("colorfulness", "chroma_hf"))
  lines.append(f"{'ground truth':<24}{'':>10}{'':>8}{'':>16}{truth:>15}{hf:>11}")
  lines.append(FID_NOTE + ".")
  return "\n".join(lines)


def evaluate(
  predict_fn: Callable,
  data: str,
  output: str,
  *,
  image_size: int,
  config=None,
  meta: dict | None = None,
  batch_size: int = 8,
  max_images: int | None = None,
  max_pixels: int = images.DEFAULT_MAX_PIXELS,
  progress: bool = True,
  log=None,
) -> dict:
  """Evaluates ``predict_fn`` on ``data``; writes ``per_image.csv`` and ``summary.json`` to
  ``output`` and returns the summary dict.

  Args:
    predict_fn: uint8 RGB (N, S, S, 3) at the network size -> uint8 (grey, colour) of the
      same shape, e.g. ``functools.partial(engine.colorize_small, model, variables)``
      (what :func:`evaluate_checkpoint` passes). It is called on fixed-size batches (the last
      one padded with black images, whose scores are dropped).
    data: a folder, file or glob of colour photos; ``tfds[:NAME[:SPLIT]]`` or ``bundled``
      (through the input pipeline, which reads ``config.data``).
    image_size: S, the size photos are resized to.
    config: the training config (its ``data`` section); needed for tfds and bundled data.
    meta: recorded in the summary (e.g. the checkpoint and its step).

  Raises:
    UserError: bad data (one-line messages).
  """
  log = log or (lambda msg: tqdm.tqdm.write(msg, file=sys.stderr))
  if batch_size < 1:
    raise EvalError(f"batch_size must be >= 1, got {batch_size}")
  if sources.uses_pipeline(data):
    if config is None:
      raise EvalError(f"--data {data} reads the input pipeline, which needs a config")
    batches = sources._pipeline_batches(config, data, batch_size, max_images)
  else:
    if not (os.path.exists(data) or glob.has_magic(data)):
      raise EvalError(
        f"{data}: no such file, folder or pattern (or use tfds[:NAME[:SPLIT]] or bundled)"
      )
    batches = sources._folder_batches(data, image_size, batch_size, max_pixels, log)

  rows = []
  bar = tqdm.tqdm(unit="img", disable=not progress, file=sys.stderr, total=max_images)
  for names, rgb, mask in batches:
    rgb = jnp.asarray(rgb)
    metrics = jax.device_get(scores.score_batch(*predict_fn(rgb), rgb))
    for i, name in enumerate(names):
      if not mask[i] or (max_images is not None and len(rows) >= max_images):
        continue
      row = {"image": name}
      row.update({column: float(metrics[column][i]) for column in COLUMNS})
      rows.append(row)
      bar.update()
    if max_images is not None and len(rows) >= max_images:
      break
  bar.close()
  if not rows:
    raise EvalError(f"{data}: no image could be evaluated")

  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "per_image.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  summary = summarize(rows, {**(meta or {}), "data": data, "image_size": image_size})
  with open(os.path.join(output, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, allow_nan=False)
  return summary


def evaluate_checkpoint(
  ckpt, data: str, output: str, step: int | None = None, ema: bool | None = None, **kwargs
) -> dict:
  """:func:`evaluate` of the generator in checkpoint ``ckpt`` (latest step, or ``step``).

  ``ema``: as :func:`checkpoint.load_generator` (None: the moving average when there is one).
  ``kwargs`` go to :func:`evaluate`. Raises UserError for a bad checkpoint or data.
  """
  variables, config = checkpoint.load_generator(ckpt, step, with_class_head=False, ema=ema)
  step, _ = checkpoint.load_config(ckpt, step)
  model = predict.generator_from(config, machine.conv_policy(engine.conv_impl_of(config)))
  predict_fn = functools.partial(engine.colorize_small, model, variables)
  has_ema = checkpoint.has_generator_ema(ckpt, step)
  meta = {"checkpoint": str(ckpt), "step": step, "ema": has_ema and ema is not False}
  return evaluate(
    predict_fn, data, output, image_size=model.image_size, config=config, meta=meta, **kwargs
  )
