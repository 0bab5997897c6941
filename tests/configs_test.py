"""Every shipped config loads, says what its docstring says, and builds a train state; the
configs are part of the package and the top-level configs/*.py files only point there.

imagenet.py's recipe and ``:gpu`` are checked in imagenet_config_test; here each config file
is loaded as ``train.py --config=FILE[:ARG]`` would and its train state is traced
(``jax.eval_shape``: shapes only, no compile), so a field the code no longer reads or a model
size that does not build fails here rather than in a user's first run.
"""

import functools
import importlib
import importlib.util
import os

import jax
import pytest
from helpers import parse_config_flags

import chromagan_jax
from chromagan_jax import demo
from chromagan_jax.training import train_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("default", "imagenet", "cpu", "folder", "tiny")


def load(name, arg=None):
  module = importlib.import_module(f"chromagan_jax.configs.{name}")
  return module.get_config() if arg is None else module.get_config(arg)


def test_folder_config_trains_on_the_given_folder_with_the_reference_recipe():
  config = load("folder", "/photos/train")
  assert (config.data.source, config.data.path) == ("folder", "/photos/train")
  assert load("folder").data.path == ""  # then --config.data.path is required
  assert (config.model.image_size, config.model.width, config.batch_size) == (224, 1.0, 10)
  assert config.optimizer.g_learning_rate == config.optimizer.d_learning_rate == 2e-5
  assert config.dtype == "float32" and config.num_epochs > 0
  assert not config.optimizer.freeze_trunk  # The reference trains the trunk.


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
  [
    ("default", None),
    ("tiny", None),
    ("cpu", None),
    ("folder", "/x"),
    ("folder", "small"),
    ("imagenet", "smoke"),
  ],
)
def test_config_builds_a_train_state(name, arg):
  config = load(name, arg)
  steps = config.num_train_steps if config.num_train_steps > 0 else None  # Cosine needs it.
  nets = train_state.make_networks(config, steps)
  state = jax.eval_shape(functools.partial(train_state.init_state, nets, config), jax.random.key(0))
  size = config.model.image_size
  assert nets.generator.image_size == size
  # The first generator conv sees the tiled grey image; the critic's sees (L, ab).
  assert state.g_params["vgg16"]["block1_conv1"]["kernel"].shape[2] == 3
  assert state.d_params["conv1"]["kernel"].shape[2] == 3


@pytest.mark.parametrize("name", NAMES)
def test_top_level_config_file_is_the_packaged_config(name):
  packaged = importlib.import_module(f"chromagan_jax.configs.{name}")
  package_dir = os.path.join(os.path.dirname(chromagan_jax.__file__), "configs")
  assert os.path.dirname(packaged.__file__) == package_dir
  # `--config=configs/NAME.py` loads the file by path, as ml_collections' config_flags does.
  spec = importlib.util.spec_from_file_location(
    f"config_file_{name}", os.path.join(ROOT, "configs", f"{name}.py")
  )
  top = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(top)
  assert top.get_config is packaged.get_config
  assert packaged.get_config().model.image_size > 0


def _leaves(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", NAMES)
def test_fields_that_default_to_none_can_be_set_on_the_command_line(name):
  """ml_collections refuses `--config.data.data_dir=DIR` when the field is a plain None
  ("Type NoneType ... is not supported for overriding"): such fields must be typed
  placeholders. Each is set through train.py's flag parsing."""
  unset = [path for path, value in _leaves(load(name)) if value is None]
  assert {"data.data_dir", "data.decode_processes", "model.trunk_width"} <= set(unset)
  overrides = [f"--config.{path}=3" for path in unset]
  config = parse_config_flags(f"--config={os.path.join(ROOT, 'configs', name + '.py')}", *overrides)
  values = dict(_leaves(config))
  for path in unset:
    assert values[path] in (3, "3"), path  # 3, 3.0 or "3" as the placeholder's type says.
  assert values["data.decode_processes"] == 3 and isinstance(values["data.decode_processes"], int)


def test_nothing_edits_sys_path_to_reach_the_configs():
  with open(demo.__file__) as f:
    assert "sys.path" not in f.read()
  for name in NAMES:
    with open(os.path.join(ROOT, "chromagan_jax", "configs", f"{name}.py")) as f:
      assert "from configs" not in f.read(), name
