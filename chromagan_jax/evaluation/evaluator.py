"""Scores a colorizer against colour ground truth: PSNR, SSIM, colourfulness, chroma speckle.

The command line and the metrics it reports are described in ``chromagan_jax/evaluate.py``.
The library call takes a predict function (big_vision's evaluator habit) and never builds a
model: :func:`evaluate`; :func:`evaluate_checkpoint` loads a checkpoint's generator and
passes ``engine.colorize_small`` on it.
"""

import csv
import functools
import glob
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from chromagan_jax.data import decode_workers, images
from chromagan_jax.errors import EvalError, MissingExtraError
from chromagan_jax.inference import engine
from chromagan_jax.model import predict
from chromagan_jax.ops import color
from chromagan_jax.runtime import machine
from chromagan_jax.weights import checkpoint

DATA_RANGE = 255.0
# SSIM as tf.image.ssim (the reference's): an 11x11 Gaussian window of std 1.5 ...
SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# ... and as scikit-image's structural_similarity defaults: a uniform 7x7 window.
SKIMAGE_SSIM_WIN = 7
# Hasler & Suesstrunk's weight of the mean term: the one value, shared with the workers'
# near-grey test (input_workers imports NumPy and Pillow only).
COLORFULNESS_MEAN_WEIGHT = decode_workers.COLORFULNESS_MEAN_WEIGHT
FID_NOTE = "FID not implemented: it needs Inception weights, which are not bundled"
# The speckle measure's window (chroma_high_frequency).
CHROMA_HF_WIN = 3
METRICS = ("psnr", "ssim", "ssim_skimage", "colorfulness", "chroma_hf")
RESULTS = ("colorized", "baseline")
# Per-image CSV columns after the image name.
COLUMNS = tuple(f"{r}_{m}" for r in RESULTS for m in METRICS) + (
  "truth_colorfulness",
  "truth_chroma_hf",
)


# --------------------------------------------------------------------------------------------
# Metrics: batched, on device. Inputs are uint8 (or 0-255 float) RGB of shape (N, H, W, 3).


def psnr(pred, truth):
  """Per-image PSNR in dB, data range 255; +inf for identical images. -> (N,)."""
  diff = pred.astype(jnp.float32) - truth.astype(jnp.float32)
  mse = jnp.mean(diff * diff, axis=(1, 2, 3))
  return 10.0 * jnp.log10(DATA_RANGE**2 / mse)


def _box_mean(x):
  """Mean over every SKIMAGE_SSIM_WIN^2 window fully inside the image ('valid')."""
  win = SKIMAGE_SSIM_WIN
  window = (1, win, win, 1)
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), "VALID") / (win * win)


def _gaussian_window() -> np.ndarray:
  """tf.image.ssim's window: a normalised SSIM_WIN^2 Gaussian of std SSIM_SIGMA."""
  coords = np.arange(SSIM_WIN) - (SSIM_WIN - 1) / 2
  g = np.exp(-0.5 * (coords / SSIM_SIGMA) ** 2)
  window = np.outer(g, g)
  return window / window.sum()


def _gaussian_mean(x):
  """Gaussian-weighted mean over every SSIM_WIN^2 window fully inside the image ('valid')."""
  channels = x.shape[-1]
  kernel = jnp.asarray(np.tile(_gaussian_window()[:, :, None, None], (1, 1, 1, channels)))
  return jax.lax.conv_general_dilated(
    x,
    kernel.astype(x.dtype),
    (1, 1),
    "VALID",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
    precision=jax.lax.Precision.HIGHEST,
  )


def _ssim(pred, truth, local_mean, cov_norm: float):
  """Mean SSIM per image over the windows of ``local_mean`` and the channels. -> (N,).

  ``cov_norm`` scales the local (co)variances: 1 for population statistics, n / (n - 1) for
  sample ones. Second moments are taken about the mid-grey 127.5 to keep float32
  cancellation small.
  """
  x = pred.astype(jnp.float32) - DATA_RANGE / 2
  y = truth.astype(jnp.float32) - DATA_RANGE / 2
  ux, uy = local_mean(x), local_mean(y)
  vx = cov_norm * (local_mean(x * x) - ux * ux)
  vy = cov_norm * (local_mean(y * y) - uy * uy)
  vxy = cov_norm * (local_mean(x * y) - ux * uy)
  # Back to absolute means for the luminance term.
  ux, uy = ux + DATA_RANGE / 2, uy + DATA_RANGE / 2
  c1 = (SSIM_K1 * DATA_RANGE) ** 2
  c2 = (SSIM_K2 * DATA_RANGE) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  return jnp.mean(s, axis=(1, 2, 3))


def ssim(pred, truth):
  """Per-image SSIM as the reference computes it: ``tf.image.ssim(pred, truth, max_val=255)``.

  11x11 Gaussian windows of std 1.5, K1 = 0.01, K2 = 0.03, population (co)variances
  (TensorFlow's ``compensation=1``), mean over the windows fully inside the image and over
  the channels. Images must be at least 11x11. -> (N,).
  """
  return _ssim(pred, truth, _gaussian_mean, 1.0)


def ssim_skimage(pred, truth):
  """Per-image SSIM as scikit-image's ``structural_similarity(..., channel_axis=-1,
  data_range=255)``: uniform 7x7 windows, sample covariance, mean over the interior
  (scikit-image crops the 3-pixel border the windows do not cover) and the channels. -> (N,).
  """
  n = SKIMAGE_SSIM_WIN * SKIMAGE_SSIM_WIN
  return _ssim(pred, truth, _box_mean, n / (n - 1.0))


def colorfulness(rgb):
  """Hasler & Suesstrunk (2003) colourfulness of 0-255 RGB, population statistics. -> (N,)."""
  r, g, b = jnp.moveaxis(rgb.astype(jnp.float32), -1, 0)
  rg = r - g
  yb = 0.5 * (r + g) - b
  axes = (1, 2)
  std = jnp.sqrt(jnp.var(rg, axis=axes) + jnp.var(yb, axis=axes))
  mean = jnp.sqrt(jnp.mean(rg, axis=axes) ** 2 + jnp.mean(yb, axis=axes) ** 2)
  return std + COLORFULNESS_MEAN_WEIGHT * mean


def chroma_high_frequency(rgb):
  """Speckle: mean squared (a, b) minus its CHROMA_HF_WIN^2 box mean, Lab units^2. -> (N,).

  Only windows fully inside the image count. Smooth colour scores near 0 whatever its
  saturation; pixel-scale chroma noise (the rainbow speckle of an undertrained GAN in grass or
  fur) scores high. Compare with the ground truth's own texture (``truth_chroma_hf``).
  """
  ab = color.rgb_to_lab(rgb.astype(jnp.float32) / 255.0)[..., 1:]
  win = CHROMA_HF_WIN
  mean = jax.lax.reduce_window(ab, 0.0, jax.lax.add, (1, win, win, 1), (1,) * 4, "VALID")
  inner = ab[:, win // 2 : ab.shape[1] - win // 2, win // 2 : ab.shape[2] - win // 2]
  return jnp.mean((inner - mean / (win * win)) ** 2, axis=(1, 2, 3))


@jax.jit
def score_batch(grey, colour, truth):
  """Scores a colorized batch and the grey baseline against the ground truth.

  Args:
    grey, colour, truth: uint8 RGB (N, S, S, 3): the input's L alone, the colorized result
      and the colour photo.

  Returns:
    A dict of (N,) arrays: ``{colorized,baseline}_{psnr,ssim,ssim_skimage,colorfulness,
    chroma_hf}``, ``truth_colorfulness`` and ``truth_chroma_hf``.
  """
  out = {"truth_colorfulness": colorfulness(truth), "truth_chroma_hf": chroma_high_frequency(truth)}
  for name, image in (("colorized", colour), ("baseline", grey)):
    out[f"{name}_psnr"] = psnr(image, truth)
    out[f"{name}_ssim"] = ssim(image, truth)
    out[f"{name}_ssim_skimage"] = ssim_skimage(image, truth)
    out[f"{name}_colorfulness"] = colorfulness(image)
    out[f"{name}_chroma_hf"] = chroma_high_frequency(image)
  return out


# --------------------------------------------------------------------------------------------
# Data: uint8 RGB batches at the network size, with names and a validity mask.


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


# --------------------------------------------------------------------------------------------
# Videos: flicker (temporal stability) and PSNR, with and without temporal smoothing.

# Flicker is measured on FLICKER_BLOCK x FLICKER_BLOCK block means of Lab (so codec noise and
# film grain of single pixels do not count as change), over the blocks whose mean L in the
# input changed by less than FLICKER_STATIC_L (L units, 0-100) since the previous frame: where
# the picture is still, any change of colour is flicker.
FLICKER_BLOCK = 4
FLICKER_STATIC_L = 1.0
VIDEO_RESULTS = ("colorized", "unsmoothed", "truth")


@jax.jit
def block_lab(rgb):
  """uint8 RGB (H, W, 3) -> Lab block means (H // FLICKER_BLOCK, W // FLICKER_BLOCK, 3)."""
  b = FLICKER_BLOCK
  h, w = rgb.shape[0] // b, rgb.shape[1] // b
  lab = color.rgb_to_lab(rgb[: h * b, : w * b])
  return lab.reshape(h, b, w, b, 3).mean(axis=(1, 3))


class FlickerMeter:
  """Streams frames and measures flicker: the mean absolute frame-to-frame change of ab (Lab
  units, mean of |da| and |db|) in static blocks of the reference video (see FLICKER_*).

  Every named video is measured on the same blocks, chosen from the reference's L, so their
  figures compare. Frame pairs across a shot cut are skipped.
  """

  def __init__(self, names: Sequence[str]):
    self.names = tuple(names)
    self.prev = None
    self.total = dict.fromkeys(self.names, 0.0)
    self.blocks = 0
    self.pairs_blocks = 0

  def update(self, reference_rgb, frames: dict, cut: bool = False):
    """reference_rgb: uint8 (H, W, 3), the input; frames: name -> uint8 (H, W, 3)."""
    cur = {"reference": block_lab(reference_rgb)}
    cur.update({name: block_lab(frames[name]) for name in self.names})
    cur = jax.device_get(cur)
    if self.prev is not None and not cut:
      ref_l = cur["reference"][..., 0]
      static = np.abs(ref_l - self.prev["reference"][..., 0]) < FLICKER_STATIC_L
      self.blocks += int(static.sum())
      self.pairs_blocks += static.size
      for name in self.names:
        change = np.abs(cur[name][..., 1:] - self.prev[name][..., 1:]).mean(axis=-1)
        self.total[name] += float(change[static].sum())
    self.prev = cur

  def result(self) -> dict:
    """name -> flicker (None when no static block was seen), and the static fraction."""
    out = {n: (self.total[n] / self.blocks if self.blocks else None) for n in self.names}
    out["static_fraction"] = self.blocks / self.pairs_blocks if self.pairs_blocks else None
    return out


def evaluate_video(
  path: str,
  colorizer: engine.Colorizer,
  smoothing: float | None = None,
  cut_threshold: float | None = None,
  progress: bool = False,
) -> dict:
  """Colorizes the colour video ``path`` from its L, with and without temporal smoothing, and
  measures both against it (before any encoding: the codec's own error is left out).

  Returns a dict: ``frames``, ``cuts``, ``smoothing``, ``flicker`` (colorized = smoothed,
  unsmoothed, truth = the input's own colours; see :class:`FlickerMeter`) and ``psnr`` (mean
  per-frame PSNR in dB on uint8 RGB at full resolution, colorized and unsmoothed, against
  the input).

  Raises:
    video_files.VideoError: the file cannot be decoded.
  """
  from chromagan_jax.data import video_files
  from chromagan_jax.inference import temporal

  smoothing = temporal.DEFAULT_SMOOTHING if smoothing is None else smoothing
  cut_threshold = temporal.CUT_THRESHOLD if cut_threshold is None else cut_threshold
  smoother = temporal.TemporalSmoother(smoothing, cut_threshold)
  meter = FlickerMeter(VIDEO_RESULTS)
  psnr_sum = {"colorized": 0.0, "unsmoothed": 0.0}
  frames = 0
  bar = tqdm.tqdm(unit="frame", disable=not progress, file=sys.stderr, desc=os.path.basename(path))

  def run(batch):
    nonlocal frames
    lightness, ab = colorizer.predict_network(batch)
    smoothed, cuts = smoother(lightness, ab, len(batch))
    for i, rgb in enumerate(batch):
      outs = {
        "colorized": colorizer.compose_full(rgb, smoothed[i]),
        "unsmoothed": colorizer.compose_full(rgb, ab[i]),
        "truth": rgb,
      }
      meter.update(rgb, outs, cut=bool(cuts[i]))
      for name in psnr_sum:
        psnr_sum[name] += float(psnr(outs[name][None], rgb[None])[0])
    frames += len(batch)
    bar.update(len(batch))

  batch = []
  for rgb in video_files.iter_frames(path):
    batch.append(rgb)
    if len(batch) == colorizer.batch_size:
      run(batch)
      batch = []
  if batch:
    run(batch)
  bar.close()
  if not frames:
    raise video_files.VideoError(f"{path}: no video frame could be decoded")
  flicker = meter.result()
  return {
    "video": path,
    "frames": frames,
    "cuts": smoother.cuts,
    "smoothing": smoothing,
    "static_fraction": flicker.pop("static_fraction"),
    "flicker": flicker,
    "psnr": {name: total / frames for name, total in psnr_sum.items()},
    "notes": [
      f"flicker: mean |d ab| (Lab units) between consecutive frames over {FLICKER_BLOCK}x"
      f"{FLICKER_BLOCK} blocks whose input L changed by < {FLICKER_STATIC_L}; pairs across "
      "cuts skipped",
      "psnr: mean per-frame PSNR (dB, uint8 RGB, full resolution) against the input video",
      "measured before encoding",
    ],
  }


def format_video_table(result: dict) -> str:
  """The :func:`evaluate_video` result as a small text table."""

  def cell(value, fmt):
    return "-" if value is None else format(value, fmt)

  lines = [
    f"{result['video']}: {result['frames']} frames, {result['cuts']} cut(s), smoothing "
    f"{result['smoothing']}, static blocks {cell(result['static_fraction'], '.1%')}",
    f"{'':<34}{'flicker (ab)':>14}{'PSNR (dB)':>11}",
  ]
  labels = {
    "colorized": "colorized (smoothed)",
    "unsmoothed": "colorized, no smoothing",
    "truth": "ground truth",
  }
  for name in VIDEO_RESULTS:
    lines.append(
      f"{labels[name]:<34}{cell(result['flicker'][name], '.3f'):>14}"
      f"{cell(result['psnr'].get(name), '.2f'):>11}"
    )
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Running and reporting.


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
    means[result] = {m: _mean([r[f"{result}_{m}"] for r in rows]) for m in METRICS}
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
  if uses_pipeline(data):
    if config is None:
      raise EvalError(f"--data {data} reads the input pipeline, which needs a config")
    batches = _pipeline_batches(config, data, batch_size, max_images)
  else:
    if not (os.path.exists(data) or glob.has_magic(data)):
      raise EvalError(
        f"{data}: no such file, folder or pattern (or use tfds[:NAME[:SPLIT]] or bundled)"
      )
    batches = _folder_batches(data, image_size, batch_size, max_pixels, log)

  rows = []
  bar = tqdm.tqdm(unit="img", disable=not progress, file=sys.stderr, total=max_images)
  for names, rgb, mask in batches:
    rgb = jnp.asarray(rgb)
    metrics = jax.device_get(score_batch(*predict_fn(rgb), rgb))
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
