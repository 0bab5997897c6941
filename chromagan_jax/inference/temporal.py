"""Temporal smoothing and shot-cut detection of video predictions, at the network size, on device.

Temporal smoothing (:class:`TemporalSmoother`): per-frame predictions of the same object vary
from frame to frame (flicker). Within a shot the predicted ab, at the network resolution, is
an exponential moving average over time, weighted per pixel by how still the picture is there::

    w_t = strength * exp(-(|L_t - L_{t-1}| / MOTION_L_SCALE)^2)     (per pixel, network size)
    ab_t' = w_t * ab_{t-1}' + (1 - w_t) * ab_t

so static regions are averaged over ~1 / (1 - strength) frames while moving ones follow the
current prediction (no colour trails). At a shot cut (:func:`cut_score` above
``CUT_THRESHOLD``, computed from L alone) the average restarts from the new frame. Only ab is
smoothed: L is always the input frame's own, so no detail is blurred.
"""

import jax
import jax.numpy as jnp
import numpy as np

# Temporal smoothing (see the module docstring). strength 0.6 averages a static region over
# ~2.5 frames (1 / (1 - 0.6)); MOTION_L_SCALE is in L units (0-100): a pixel whose L changed by
# 3 units keeps exp(-1) = 37% of the smoothing, by 6 units 2%.
DEFAULT_SMOOTHING = 0.6
MOTION_L_SCALE = 3.0
# Shot cuts: cut_score is the L1 distance between the L histograms of consecutive frames
# (CUT_BINS bins over [0, 100], each normalised to sum 1; the distance lies in [0, 2]) plus
# the mean absolute difference of L on a CUT_GRID x CUT_GRID grid of block means, divided by
# CUT_MAD_SCALE L units. A pan or zoom moves content but keeps the histogram and, at block
# scale, most of the picture; a cut changes both (measured on tests/video_test.py's clip, a
# slow pan and zoom with grain: 0.10-0.16 between frames of a shot, 1.54 at the cut between
# two bundled photos).
CUT_BINS = 32
CUT_GRID = 8
CUT_MAD_SCALE = 25.0
CUT_THRESHOLD = 0.6


def cut_score(prev_l, cur_l):
  """How much two frames' network L (S, S) in [0, 1] differ as pictures; ~0 within a shot.

  Histogram L1 distance (in [0, 2]) + coarse block-mean MAD / CUT_MAD_SCALE; see CUT_*.
  """
  lightness = jnp.stack([prev_l, cur_l]) * 100.0
  bins = jnp.clip((lightness / 100.0 * CUT_BINS).astype(jnp.int32), 0, CUT_BINS - 1)
  hist = jax.vmap(lambda b: jnp.bincount(b.ravel(), length=CUT_BINS))(bins)
  hist = hist / hist.sum(axis=1, keepdims=True)
  s = lightness.shape[-1]
  g = CUT_GRID
  blocks = lightness[:, : s // g * g, : s // g * g].reshape(2, g, s // g, g, s // g)
  blocks = blocks.mean(axis=(2, 4))
  mad = jnp.mean(jnp.abs(blocks[1] - blocks[0]))
  return jnp.sum(jnp.abs(hist[1] - hist[0])) + mad / CUT_MAD_SCALE


@jax.jit
def _smooth_scan(carry, lightness, ab, valid, strength, threshold):
  """EMA over a batch. carry = (prev L (S, S), prev smoothed ab (S, S, 2), has_prev bool).

  Returns (carry, smoothed ab (N, S, S, 2), cut flags (N,) bool, cut scores (N,)).
  """

  def step(carry, x):
    prev_l, prev_ab, has_prev = carry
    cur_l, cur_ab, ok = x
    score = cut_score(prev_l, cur_l)
    cut = has_prev & (score > threshold)
    keep = has_prev & ~cut
    motion = (cur_l - prev_l) * 100.0 / MOTION_L_SCALE
    w = jnp.where(keep, strength * jnp.exp(-motion * motion), 0.0)[..., None]
    out = w * prev_ab + (1.0 - w) * cur_ab
    new = (cur_l, out, jnp.bool_(True))
    # Padding rows (ok = False) leave the state alone.
    carry = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, carry)
    return carry, (out, cut & ok, jnp.where(has_prev & ok, score, 0.0))

  carry, (out, cuts, scores) = jax.lax.scan(step, carry, (lightness, ab, valid))
  return carry, out, cuts, scores


class TemporalSmoother:
  """Exponential moving average of network ab within shots (see the module docstring).

  Args:
    strength: weight of the past in [0, 1); 0 passes predictions through (cuts still counted).
    cut_threshold: :func:`cut_score` above which the average restarts.
  """

  def __init__(self, strength: float = DEFAULT_SMOOTHING, cut_threshold: float = CUT_THRESHOLD):
    self.strength = float(strength)
    self.cut_threshold = float(cut_threshold)
    self.carry = None
    self.cuts = 0
    self.frames = 0

  def __call__(self, lightness, ab, n_valid: int):
    """lightness (N, S, S) in [0, 1], ab (N, S, S, 2) in [0, 1] (the first ``n_valid`` rows
    are frames, in order) -> (smoothed ab (N, S, S, 2), cut flags (n_valid,) numpy bool)."""
    if self.carry is None:
      s = lightness.shape[1:]
      self.carry = (jnp.zeros(s, jnp.float32), jnp.zeros((*s, 2), jnp.float32), jnp.bool_(False))
    valid = jnp.arange(lightness.shape[0]) < n_valid
    self.carry, out, cuts, _ = _smooth_scan(
      self.carry, lightness, ab, valid, self.strength, self.cut_threshold
    )
    cuts = np.asarray(cuts)[:n_valid]
    self.cuts += int(cuts.sum())
    self.frames += n_valid
    return out, cuts


# --------------------------------------------------------------------------------------------
# Decoding.
