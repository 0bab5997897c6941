"""upgrade(): a config saved before the fields were grouped (or before a field existed) reads back
as today's grouped config, with the saved values and today's defaults for what it lacks."""

import json

import numpy as np
import pytest

from chromagan_jax.configs import default, upgrade
from chromagan_jax.errors import CheckpointError
from chromagan_jax.training import trainer
from chromagan_jax.weights import checkpoint, msgpack_file

# An old checkpoint's flat `config` item (as JSON gives it back: tuples as lists), every moved
# field set to a value other than today's default.
OLD_FLAT = {
  "seed": 3,
  "batch_size": 8,
  "num_train_steps": 4,
  "g_learning_rate": 1e-3,
  "d_learning_rate": 2e-3,
  "lr_schedule": "cosine",
  "lr_final_fraction": 0.1,
  "adam_b1": 0.9,
  "adam_b2": 0.99,
  "adam_eps": 1e-8,
  "freeze_trunk": True,
  "trunk_lr_scale": 0.5,
  "ema_decay": 0.995,
  "colour_loss": "l1",
  "critic_steps": 2,
  "adv_final": -0.5,
  "adv_ramp_steps": [10, 20],
  "bn_update_in_critic_step": False,
  "vgg_weights": "/w/vgg16",
  "init_from": "/w/generator.h5",
  "init_critic_from": "/w/critic.h5",
  "model": {"image_size": 64, "width": 0.25},  # Saved before conv_impl etc. existed.
  "loss": {"mse": 0.5},
  "converted": {"sha256": "abc"},  # Unknown today: kept.
}

NEW_PATHS = {
  "g_learning_rate": "optimizer.g_learning_rate",
  "d_learning_rate": "optimizer.d_learning_rate",
  "lr_schedule": "optimizer.schedule",
  "lr_final_fraction": "optimizer.final_fraction",
  "adam_b1": "optimizer.b1",
  "adam_b2": "optimizer.b2",
  "adam_eps": "optimizer.eps",
  "freeze_trunk": "optimizer.freeze_trunk",
  "trunk_lr_scale": "optimizer.trunk_lr_scale",
  "ema_decay": "optimizer.ema_decay",
  "colour_loss": "loss.colour",
  "critic_steps": "gan.critic_steps",
  "adv_final": "gan.adv_final",
  "adv_ramp_steps": "gan.adv_ramp_steps",
  "bn_update_in_critic_step": "gan.bn_update_in_critic_step",
  "vgg_weights": "init.vgg16",
  "init_from": "init.generator",
  "init_critic_from": "init.critic",
}


def _at(config, path):
  for part in path.split("."):
    config = config[part]
  return config


def test_an_old_flat_config_reads_back_grouped_with_its_values_and_todays_defaults():
  old = json.loads(json.dumps(OLD_FLAT))
  config = upgrade.upgrade(old)
  assert old == OLD_FLAT  # The argument is not modified.
  for name, path in NEW_PATHS.items():
    value = _at(config, path)
    assert (list(value) if isinstance(value, tuple) else value) == OLD_FLAT[name], path
    assert name not in config, name  # Nothing left at the top under its old name.
  # Saved values win over the defaults, in groups too; missing fields take today's default.
  want = default.get_config()
  assert (config.seed, config.model.image_size, config.model.width) == (3, 64, 0.25)
  assert config.loss.mse == 0.5 and config.loss.kl == want.loss.kl
  assert config.model.conv_impl == want.model.conv_impl == "auto"
  assert config.data.to_dict() == want.data.to_dict()
  assert config.checkpoint_every_steps == want.checkpoint_every_steps
  assert config.converted.sha256 == "abc"
  # Every field of today's config is there, and nothing of the old layout beside it.
  assert set(config.keys()) == set(want.keys()) | {"converted"}
  for group in ("optimizer", "gan", "init", "loss"):
    assert set(config[group].keys()) == set(want[group].keys()), group


def test_a_grouped_config_is_unchanged_and_every_old_field_is_mapped():
  want = default.get_config()
  assert upgrade.upgrade(want).to_dict() == want.to_dict()
  assert upgrade.upgrade(upgrade.upgrade(OLD_FLAT)).to_dict() == upgrade.upgrade(OLD_FLAT).to_dict()
  assert {name: ".".join(upgrade.MOVED[name]) for name in upgrade.MOVED} == NEW_PATHS


def test_configs_read_back_from_checkpoints_are_upgraded(tmp_path):
  """checkpoint.load_config (here of a msgpack weights file, step 0) upgrades what it reads,
  so the resume check compares grouped fields, an old run's missing ones as their defaults."""
  variables = {"params": {"w": np.zeros(2, np.float32)}, "batch_stats": {}}
  old = str(tmp_path / "old.msgpack")
  msgpack_file.save_msgpack(old, variables, {k: v for k, v in OLD_FLAT.items() if k != "loss"})
  step, config = checkpoint.load_config(old)
  assert step == 0 and config.optimizer.schedule == "cosine" and config.init.vgg16 == "/w/vgg16"
  assert config.loss.to_dict() == {**default.get_config().loss.to_dict(), "colour": "l1"}
  with pytest.raises(CheckpointError, match=r"trained with config.optimizer.schedule='cosine'"):
    trainer.check_resume_config(old, 0, default.get_config())
  older = str(tmp_path / "older.msgpack")  # Saved before schedule and trunk_lr_scale existed.
  msgpack_file.save_msgpack(older, variables, {"model": OLD_FLAT["model"]})
  trainer.check_resume_config(older, 0, default.get_config())
