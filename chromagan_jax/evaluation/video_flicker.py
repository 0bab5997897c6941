"""Videos: flicker (temporal stability) and PSNR, with and without temporal smoothing."""

import os
import sys
from collections.abc import Sequence

import jax
import numpy as np
import tqdm

from chromagan_jax.evaluation import scores
from chromagan_jax.inference import engine
from chromagan_jax.ops import color

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
        psnr_sum[name] += float(scores.psnr(outs[name][None], rgb[None])[0])
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
