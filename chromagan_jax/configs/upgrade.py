"""Brings a config saved by any earlier version to today's grouped layout.

Checkpoints keep the config they were trained with (the ``config`` item). Those written before
the fields were grouped hold ~20 flat top-level fields, and older ones lack fields added since.
:func:`upgrade` is the one place that knows either: readers then use ``config.optimizer.*``
etc. and never repeat a default.
"""

import copy
from typing import Any

import ml_collections

from chromagan_jax.configs import default

# Old flat field -> (group, field) in today's config.
MOVED = {
  "g_learning_rate": ("optimizer", "g_learning_rate"),
  "d_learning_rate": ("optimizer", "d_learning_rate"),
  "lr_schedule": ("optimizer", "schedule"),
  "lr_final_fraction": ("optimizer", "final_fraction"),
  "adam_b1": ("optimizer", "b1"),
  "adam_b2": ("optimizer", "b2"),
  "adam_eps": ("optimizer", "eps"),
  "freeze_trunk": ("optimizer", "freeze_trunk"),
  "trunk_lr_scale": ("optimizer", "trunk_lr_scale"),
  "ema_decay": ("optimizer", "ema_decay"),
  "colour_loss": ("loss", "colour"),
  "critic_steps": ("gan", "critic_steps"),
  "adv_final": ("gan", "adv_final"),
  "adv_ramp_steps": ("gan", "adv_ramp_steps"),
  "bn_update_in_critic_step": ("gan", "bn_update_in_critic_step"),
  "vgg_weights": ("init", "vgg16"),
  "init_from": ("init", "generator"),
  "init_critic_from": ("init", "critic"),
}


def upgrade(config) -> ml_collections.ConfigDict:
  """Today's grouped config from ``config`` (a ConfigDict or dict, flat or grouped).

  Moves each old flat field to its group (:data:`MOVED`), then fills every field the saved
  config lacks with :func:`default.get_config`'s value: the value a run saved before the field
  existed was trained with. Fields unknown today (e.g. a converted checkpoint's ``converted``)
  are kept. Idempotent; the argument is not modified.
  """
  saved = config.to_dict() if hasattr(config, "to_dict") else copy.deepcopy(dict(config))
  grouped: dict[str, Any] = {}
  for key, value in saved.items():
    if key in MOVED:
      group, field = MOVED[key]
      grouped.setdefault(group, {})[field] = value
    elif isinstance(value, dict) and isinstance(grouped.get(key), dict):
      grouped[key].update(value)
    else:
      grouped[key] = value
  return ml_collections.ConfigDict(_fill(grouped, default.get_config().to_dict()))


def _fill(saved: dict, defaults: dict) -> dict:
  """``saved`` with the fields it lacks (recursively) taken from ``defaults``."""
  out = dict(saved)
  for key, value in defaults.items():
    if key not in out:
      out[key] = value
    elif isinstance(value, dict) and isinstance(out[key], dict):
      out[key] = _fill(out[key], value)
  return out
