"""ChromaGAN's losses: colour L2, the class-distribution KL and the WGAN-GP terms.

All functions are pure and return float32 scalars (means over the batch). The weights and
signs of the reference (``ChromaGAN.py``) are applied in :func:`generator_loss` and
:func:`critic_loss`; the defaults live in the config, not here.

Precision: inputs may come from bfloat16 networks; every input is cast to float32 before any
arithmetic and every reduction accumulates in float32 (``_f32``, ``_mean``, ``_sum``), so a
bf16 compute dtype changes the networks' outputs but never how the losses are summed. There
is no matmul here (the reductions are reductions, not dots), so no matmul precision setting
(TF32 on GPU, one-pass bf16 on TPU) reaches them; ``tests/losses_test.py`` checks both.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

# Keras' ``kld`` clips both distributions to [epsilon, 1] with Keras' epsilon.
KERAS_EPSILON = 1e-7


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def _mean(x, axis=None):
  """Mean in float32 of ``x`` cast to float32 (bf16 network outputs included)."""
  return jnp.mean(_f32(x), axis=axis, dtype=jnp.float32)


def _sum(x, axis=None):
  return jnp.sum(_f32(x), axis=axis, dtype=jnp.float32)


def mse(pred, target):
  """Mean squared error over every element (Keras ``mse`` averaged over the batch)."""
  return _mean(jnp.square(_f32(pred) - _f32(target)))


def kl_divergence(p_true, p_pred):
  """Keras' ``kld``: ``sum_c p_true * log(p_true / p_pred)`` with both clipped to [1e-7, 1].

  ``p_true`` and ``p_pred``: (N, C) distributions; returns the mean over N.
  """
  p_true = jnp.clip(_f32(p_true), KERAS_EPSILON, 1.0)
  p_pred = jnp.clip(_f32(p_pred), KERAS_EPSILON, 1.0)
  return _mean(_sum(p_true * jnp.log(p_true / p_pred), axis=-1))


def wasserstein(scores, sign):
  """Keras-reference Wasserstein term ``mean(sign * scores)``: sign -1 real, +1 fake."""
  return _mean(sign * _f32(scores))


def gradient_penalty(critic_fn: Callable, ab_real, ab_fake, lightness, eps):
  """WGAN-GP term ``mean_i (1 - ||d D(ab_hat_i, L_i) / d ab_hat_i||_2)^2``.

  Only ab is interpolated (``ab_hat = eps * ab_real + (1 - eps) * ab_fake``, one ``eps`` per
  sample, shape (N,)); L is shared. The norm runs over every entry of a sample's ab
  gradient. The gradient of the summed scores equals the per-sample gradients because the
  critic has no cross-sample coupling (no batch norm).

  Args:
    critic_fn: ``(ab, L) -> scores`` (N, ...).
    ab_real, ab_fake: (N, H, W, 2); lightness: (N, H, W, 1); eps: (N,) in [0, 1].
  """
  # Interpolated in float32 (the critic casts to its compute dtype itself).
  e = _f32(eps).reshape((-1,) + (1,) * (ab_real.ndim - 1))
  ab_hat = e * _f32(ab_real) + (1.0 - e) * _f32(ab_fake)
  grads = jax.grad(lambda x: _sum(critic_fn(x, lightness)))(ab_hat)
  sq_norms = _sum(jnp.square(_f32(grads).reshape(grads.shape[0], -1)), axis=-1)
  # sqrt has an infinite derivative at 0: a sample whose ab gradient vanishes would make the
  # critic's parameter gradient NaN. Its norm is 0 and its (sub)gradient is taken as 0.
  positive = sq_norms > 0
  norms = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq_norms, 1.0)), 0.0)
  return _mean(jnp.square(1.0 - norms))


COLOUR_LOSSES = ("l2", "l1")


def generator_loss(
  ab_fake, ab_real, p_fake, p_teacher, d_fake, weights: Mapping[str, float], colour: str = "l2"
):
  """``w_mse * MSE + w_kl * KL(p_teacher || p_fake) + w_adv * mean(D(fake))``.

  The reference weights are ``w_mse=1.0, w_kl=0.003, w_adv=-0.1`` (the generator maximises
  the critic's score of its output). ``p_teacher=None`` drops the KL term ("w/o class").
  ``colour="l1"`` (``config.loss.colour``, a deviation) puts the mean absolute ab error in the
  MSE's place, weighted by ``w_mse``; the MSE is still reported. Where the colour is
  uncertain, L2's optimum is the mean colour (greyish between two hues); L1's is a median,
  flat between the hues, which leaves the choice to the critic.
  Returns (total, metrics dict).
  """
  terms = {"mse": mse(ab_fake, ab_real), "adv": _mean(d_fake)}
  if colour == "l1":
    terms["l1"] = _mean(jnp.abs(_f32(ab_fake) - _f32(ab_real)))
  elif colour != "l2":
    raise ValueError(f"colour loss {colour!r}: expected one of {COLOUR_LOSSES}")
  total = weights["mse"] * terms["l1" if colour == "l1" else "mse"] + weights["adv"] * terms["adv"]
  if p_teacher is not None:
    terms["kl"] = kl_divergence(p_teacher, p_fake)
    total = total + weights["kl"] * terms["kl"]
  terms["total"] = total
  return total, terms


def critic_loss(d_real, d_fake, gp, weights: Mapping[str, float]):
  """``w_real * mean(D(real)) + w_fake * mean(D(fake)) + w_gp * GP``.

  The reference weights are ``w_real=-1, w_fake=1, w_gp=10``. Returns (total, metrics dict).
  """
  terms = {
    "real": _mean(d_real),
    "fake": _mean(d_fake),
    "gp": _f32(gp),
  }
  total = weights["real"] * terms["real"] + weights["fake"] * terms["fake"] + weights["gp"] * gp
  terms["total"] = total
  return total, terms
