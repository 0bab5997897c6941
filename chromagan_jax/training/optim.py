"""The optimizers of ChromaGAN's two networks: Adam, learning-rate schedules, the trunk's
learning-rate scale and the adversarial weight's schedule, all read from the config.
"""

from typing import Any

import jax.numpy as jnp
import optax

from chromagan_jax.errors import ConfigError

# The generator's params subtree of its VGG16 trunk (what config.optimizer.freeze_trunk freezes).
TRUNK = "vgg16"


def compute_dtype(config) -> Any:
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(config, peak: float, total_steps: int | None = None):
  """``peak`` (config.optimizer.schedule 'constant', the reference's), or a function of the step.

  'cosine' (a deviation, for short runs from scratch: configs/folder.py:small) decays from
  ``peak`` to ``config.optimizer.final_fraction * peak`` over ``total_steps`` along a half
  cosine, so the last steps refine instead of jumping around at full size.
  """
  if config.optimizer.schedule == "constant":
    return peak
  if not total_steps or total_steps <= 0:
    raise ConfigError("config.optimizer.schedule='cosine' needs the number of training steps")
  return optax.cosine_decay_schedule(peak, total_steps, alpha=config.optimizer.final_fraction)


def adversarial_weight(config):
  """The generator's adversarial weight: ``config.loss.adv`` (the reference's), or a function
  of the step ramping linearly from it to ``config.gan.adv_final`` between the two steps of
  ``config.gan.adv_ramp_steps`` (a deviation, see configs/default.py)."""
  if config.gan.adv_final is None:
    return float(config.loss.adv)
  start, end = (int(s) for s in config.gan.adv_ramp_steps)
  return optax.linear_schedule(
    float(config.loss.adv), float(config.gan.adv_final), end - start, transition_begin=start
  )


def adam(config, learning_rate):
  """Adam with the reference's hyper-parameters; ``learning_rate`` a number or a schedule.

  Keras adds epsilon to sqrt(v) before the bias correction; optax after. At eps=1e-7 the
  difference is far below the gradient noise.
  """
  return optax.adam(
    learning_rate, b1=config.optimizer.b1, b2=config.optimizer.b2, eps=config.optimizer.eps
  )


def generator_optimizer(config, learning_rate):
  """Adam for the generator; with ``config.optimizer.trunk_lr_scale`` != 1 (a deviation, see
  configs/default.py) the VGG16 trunk's updates are scaled by it after Adam, i.e. the trunk
  trains at ``trunk_lr_scale`` times the rest's rate (Adam's update is linear in the rate).
  """
  scale = float(config.optimizer.trunk_lr_scale)
  if scale == 1.0:
    return adam(config, learning_rate)
  trunk_only = lambda params: {name: name == TRUNK for name in params}
  return optax.chain(adam(config, learning_rate), optax.masked(optax.scale(scale), trunk_only))
