"""configs/imagenet.py: the paper's recipe, and the ``:gpu`` variant with its LR rule."""

import math

import jax
import pytest
from helpers import parse_config_flags as _parse

from chromagan_jax.configs import default, imagenet
from chromagan_jax.training import trainer, validate


def test_reference_recipe_is_kept():
  config = imagenet.get_config()
  ref = default.get_config()
  assert (config.batch_size, config.dtype, config.num_epochs) == (10, "float32", 5.0)
  assert config.optimizer.g_learning_rate == config.optimizer.d_learning_rate == 2e-5
  assert (config.optimizer.b1, config.loss.to_dict()) == (0.5, ref.loss.to_dict())
  assert config.deterministic_ops


def test_gpu_variant_bf16_batch_multiple_of_devices_and_sqrt_lr():
  config = _parse("--config=configs/imagenet.py:gpu")
  assert (config.dtype, config.batch_size) == ("bfloat16", 256)
  # A multiple of every power-of-two device count up to 256 (8 GPUs: 32 each).
  assert all(config.batch_size % 2**k == 0 for k in range(9))
  want = 2e-5 * math.sqrt(256 / 10)
  assert (
    config.optimizer.g_learning_rate == pytest.approx(want) == pytest.approx(1.0119e-4, rel=1e-4)
  )
  assert config.optimizer.d_learning_rate == pytest.approx(want)
  # Only what a big accelerator needs changes: networks, losses, betas, epochs stay.
  ref = imagenet.get_config().to_dict()
  for field in ("model", "loss", "gan", "init", "num_epochs", "data"):
    assert config.to_dict()[field] == ref[field], field
  rates = ("g_learning_rate", "d_learning_rate")
  optimizer = {k: v for k, v in config.optimizer.items() if k not in rates}
  assert optimizer == {k: v for k, v in ref["optimizer"].items() if k not in rates}


def test_gpu_learning_rate_follows_the_batch_unless_set():
  config = _parse("--config=configs/imagenet.py:gpu", "--config.batch_size=1024")
  assert config.optimizer.g_learning_rate == pytest.approx(2e-5 * math.sqrt(102.4))
  assert config.optimizer.d_learning_rate == pytest.approx(2e-5 * math.sqrt(102.4))
  config = _parse(
    "--config=configs/imagenet.py:gpu",
    "--config.batch_size=64",
    "--config.optimizer.g_learning_rate=3e-5",
  )
  assert config.optimizer.g_learning_rate == 3e-5
  assert config.optimizer.d_learning_rate == pytest.approx(2e-5 * math.sqrt(6.4))
  # The config that checkpoints store is plain values.
  assert config.to_dict()["optimizer"]["d_learning_rate"] == pytest.approx(2e-5 * math.sqrt(6.4))


def test_arguments_combine_and_unknown_ones_are_refused():
  config = imagenet.get_config("gpu,smoke")
  assert (config.dtype, config.num_train_steps) == ("bfloat16", 20)
  assert imagenet.get_config("smoke").dtype == "float32"
  with pytest.raises(ValueError, match="unknown config argument 'tpu'; known: smoke, gpu"):
    imagenet.get_config("gpu,tpu")


def test_gpu_batch_passes_the_batch_check_on_eight_devices():
  validate.validate(imagenet.get_config("gpu"), jax.device_count())
  with pytest.raises(trainer.ConfigError, match="multiple of 8"):
    validate.validate(imagenet.get_config(), jax.device_count())
