"""Every shipped config loads, says what its docstring says, and builds a train state.

imagenet.py's recipe and ``:gpu`` are checked in imagenet_config_test; here each config file
is loaded as ``train.py --config=FILE[:ARG]`` would and its train state is traced
(``jax.eval_shape``: shapes only, no compile), so a field the code no longer reads or a model
size that does not build fails here rather than in a user's first run.
"""

import functools
import importlib

import jax
import pytest

from chromagan_jax import train_lib


def load(name, arg=None):
  module = importlib.import_module(f"configs.{name}")
  return module.get_config() if arg is None else module.get_config(arg)


def test_folder_config_trains_on_the_given_folder_with_the_reference_recipe():
  config = load("folder", "/photos/train")
  assert (config.data.source, config.data.path) == ("folder", "/photos/train")
  assert load("folder").data.path == ""  # then --config.data.path is required
  assert (config.model.image_size, config.model.width, config.batch_size) == (224, 1.0, 10)
  assert config.g_learning_rate == config.d_learning_rate == 2e-5
  assert config.dtype == "float32" and config.num_epochs > 0


def test_cpu_config_is_the_small_bundled_demo():
  config = load("cpu")
  assert config.data.source == "bundled" and config.data.augment
  assert (config.model.image_size, config.model.width) == (64, 0.25)
  assert config.num_train_steps == 300 and load("cpu", "20").num_train_steps == 20
  assert 0 < config.sample_every_steps <= config.num_train_steps
  assert 0 < config.checkpoint_every_steps <= config.num_train_steps


def test_imagenet_smoke_is_short_and_samples():
  config = load("imagenet", "smoke")
  assert config.data.source == "tfds" and config.data.tfds_name == "imagenet2012"
  assert config.num_train_steps == 20
  assert 0 < config.sample_every_steps <= 20 and 0 < config.checkpoint_every_steps <= 20


@pytest.mark.parametrize(
  ("name", "arg"),
  [("default", None), ("tiny", None), ("cpu", None), ("folder", "/x"), ("imagenet", "smoke")],
)
def test_config_builds_a_train_state(name, arg):
  config = load(name, arg)
  nets = train_lib.make_networks(config)
  state = jax.eval_shape(functools.partial(train_lib.init_state, nets, config), jax.random.key(0))
  size = config.model.image_size
  assert nets.generator.image_size == size
  # The first generator conv sees the tiled grey image; the critic's sees (L, ab).
  assert state.g_params["vgg16"]["block1_conv1"]["kernel"].shape[2] == 3
  assert state.d_params["conv1"]["kernel"].shape[2] == 3
