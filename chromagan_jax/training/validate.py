"""One check of a training config before anything is built: every problem, one line each.

Each check is a pure function of the config (and the device and process counts) returning a
one-line problem or None; :func:`validate` runs them all and raises one ``ConfigError`` whose
lines are the problems, so a user fixes every field in one go instead of one per run.
Problems that depend on the data (the dataset size) are reported where the data is read.
"""

import math
from collections.abc import Callable

from chromagan_jax.errors import ConfigError
from chromagan_jax.model import losses, networks
from chromagan_jax.ops import conv_policy
from chromagan_jax.training import optim

Problem = str | None


def optimizer_schedule(config) -> Problem:
  if config.optimizer.schedule not in optim.LR_SCHEDULES:
    schedule = config.optimizer.schedule
    return f"config.optimizer.schedule={schedule!r}: expected one of {optim.LR_SCHEDULES}"
  return None


def adv_ramp(config) -> Problem:
  if config.gan.adv_final is None:
    return None
  start, end = (int(s) for s in config.gan.adv_ramp_steps)
  if not 0 <= start <= end:
    return (
      f"config.gan.adv_ramp_steps={tuple(config.gan.adv_ramp_steps)}: expected (start, end), "
      "0 <= start <= end"
    )
  return None


def trunk_lr_scale(config) -> Problem:
  scale = float(config.optimizer.trunk_lr_scale)
  if scale != 1.0 and (not 0.0 < scale < 1.0 or config.optimizer.freeze_trunk):
    return (
      f"config.optimizer.trunk_lr_scale={scale}: expected 0 < scale < 1 and "
      "config.optimizer.freeze_trunk off (True keeps the trunk fixed)"
    )
  return None


def freeze_trunk(config) -> Problem:
  if config.optimizer.freeze_trunk and not (config.init.vgg16 or config.init.generator):
    return (
      "config.optimizer.freeze_trunk=True keeps the VGG16 trunk as initialised, but no weights are "
      "given: set --config.init.vgg16 to ImageNet VGG16 weights (a notop file is enough) or "
      "--config.init.generator"
    )
  return None


def critic_steps(config) -> Problem:
  k = config.gan.critic_steps
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    return f"config.gan.critic_steps={k!r}: the critic's Adam steps per batch, 1 or more"
  return None


def loss_colour(config) -> Problem:
  if config.loss.colour not in losses.COLOUR_LOSSES:
    return f"config.loss.colour={config.loss.colour!r}: expected one of {losses.COLOUR_LOSSES}"
  return None


def dtype(config) -> Problem:
  if problem := networks.cpu_bfloat16_problem(optim.compute_dtype(config)):
    return f"config.dtype={config.dtype!r}: {problem}"
  return None


def conv_impl(config) -> Problem:
  impl = config.model.conv_impl
  if impl not in conv_policy.IMPLS:
    return f"config.model.conv_impl={impl!r}: expected one of {conv_policy.IMPLS}"
  return None


def nearest_valid_batch_sizes(batch_size: int, multiple: int) -> list[int]:
  """The multiples of ``multiple`` just below and above ``batch_size`` (positive ones only)."""
  below = batch_size // multiple * multiple
  return [b for b in (below, below + multiple) if b > 0]


def batch_size(config, devices: int, processes: int) -> Problem:
  """Unless the global batch splits evenly over ``devices`` and ``processes``."""
  multiple = math.lcm(devices, processes)
  if config.batch_size > 0 and config.batch_size % multiple == 0:
    return None
  over = f"the {devices} devices" + (f" of {processes} processes" if processes > 1 else "")
  sizes = " or ".join(map(str, nearest_valid_batch_sizes(config.batch_size, multiple)))
  return (
    f"batch_size={config.batch_size} does not split evenly over {over}: set "
    f"--config.batch_size={sizes} (a multiple of {multiple})"
  )


CHECKS: tuple[Callable, ...] = (
  optimizer_schedule,
  adv_ramp,
  trunk_lr_scale,
  freeze_trunk,
  critic_steps,
  loss_colour,
  dtype,
  conv_impl,
)


def problems(config, devices: int = 1, processes: int = 1) -> list[str]:
  """Every problem of ``config`` for ``devices`` devices over ``processes`` processes."""
  found = [check(config) for check in CHECKS] + [batch_size(config, devices, processes)]
  return [p for p in found if p]


def validate(config, devices: int = 1, processes: int = 1) -> None:
  """Raises one ConfigError listing every problem (one per line); returns when there is none."""
  if found := problems(config, devices, processes):
    raise ConfigError("\n".join(found))
