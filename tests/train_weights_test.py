"""Training from given weights, end to end: config.init.vgg16 (trunk + KL teacher), .generator,
.critic.

Each weight file is made here from a Keras build (``keras_reference``) of the tiny config's
networks with random weights, written in the real formats (the keras.applications VGG16 h5,
the authors' Keras 2 model h5, torchvision's .pth, converted directories). A spy around the
trainer's step records what ``train_and_evaluate`` feeds its first step, so "step 0" is the
state the trainer really trains from, compared with the Keras model's own weights by name.
"""

import logging
import os
import re
import subprocess
import sys

import convert_formats
import jax
import keras_reference
import numpy as np
import pytest
from helpers import TORCH_CONVS, TORCH_LINEARS, assert_trees_equal, randomize

from chromagan_jax import convert
from chromagan_jax.configs import tiny
from chromagan_jax.errors import UserError
from chromagan_jax.model import networks, shapes
from chromagan_jax.ops import color
from chromagan_jax.training import train_step, trainer
from chromagan_jax.weights import checkpoint, layouts

# The tiny config's model: every file below is built at these sizes unless a test says not.
_CONFIG = tiny.get_config().model
SIZE, WIDTH = _CONFIG.image_size, _CONFIG.width
NUM_CLASSES, FC_WIDTH = _CONFIG.num_classes, _CONFIG.fc_width
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Errors train.py turns into one `error: ...` line.
USER_ERRORS = UserError


def _config(num_train_steps=2, **weights):
  config = tiny.get_config()
  config.num_train_steps = num_train_steps
  config.checkpoint_every_steps = 1000  # Only the final save.
  for k, v in weights.items():  # config.init's fields: vgg16, generator, critic.
    config.init[k] = str(v)
  return config


def _host(tree):
  return jax.tree.map(np.array, tree)  # Copies: the step donates the state's buffers.


@pytest.fixture
def first_step(monkeypatch):
  """A spy on the trainer's step: what ``train_and_evaluate`` gives it and gets back.

  Records ``with_teacher``, the first step's (state, batch, teacher) as host copies, every
  step's metrics and the teacher the last step was given.
  """
  seen = {"metrics": []}
  real = train_step.make_train_step

  def make_train_step(nets, config, mesh, with_teacher):
    step = real(nets, config, mesh, with_teacher)
    seen["with_teacher"] = with_teacher

    def spied(state, batch, teacher_params):
      with jax.transfer_guard("allow"):  # The loop disallows transfers around the step.
        if "state" not in seen:
          seen.update(state=_host(state), batch=_host(batch), teacher=_host(teacher_params))
        new_state, metrics = step(state, batch, teacher_params)
        seen["metrics"].append(_host(metrics))
        seen["last_teacher"] = _host(teacher_params)
      return new_state, metrics

    return spied

  monkeypatch.setattr(train_step, "make_train_step", make_train_step)
  return seen


def assert_one_line_naming(error, path):
  msg = str(error.value)
  assert isinstance(error.value, USER_ERRORS)
  assert str(path) in msg and "\n" not in msg, msg


# ----------------------------------------------------------------------------------------
# Weight files.


def _torch_state_dict(vgg_params):
  """torchvision's VGG16 state dict of Flax-layout VGG16Classifier params.

  OIHW conv weights, (out, in) Linear weights, and classifier.0's input axis in torch's
  NCHW flatten order (the converter must undo that permutation).
  """
  sd = {}
  for i, name in zip(TORCH_CONVS, layouts.VGG16_CONVS, strict=True):
    sd[f"features.{i}.weight"] = vgg_params["vgg16"][name]["kernel"].transpose(3, 2, 0, 1)
    sd[f"features.{i}.bias"] = vgg_params["vgg16"][name]["bias"]
  for i, name in zip(TORCH_LINEARS, layouts.VGG16_TOP, strict=True):
    kernel = vgg_params[name]["kernel"]
    if name == "fc1":  # Rows h*W*C + w*C + c (NHWC flatten) -> columns c*H*W + h*W + w.
      channels = vgg_params["vgg16"]["block5_conv3"]["kernel"].shape[3]
      side = int(round((kernel.shape[0] // channels) ** 0.5))
      weight = kernel.reshape(side, side, channels, -1).transpose(3, 2, 0, 1)
      weight = weight.reshape(kernel.shape[1], -1)
    else:
      weight = kernel.T
    sd[f"classifier.{i}.weight"] = np.ascontiguousarray(weight)
    sd[f"classifier.{i}.bias"] = vgg_params[name]["bias"]
  return sd


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
  """(Keras VGG16 with top at the tiny config's size, {format: path of the same weights})."""
  model = keras_reference.build_keras_vgg16_classifier(SIZE, WIDTH, NUM_CLASSES, FC_WIDTH)
  randomize(model, seed=11)
  d = tmp_path_factory.mktemp("vgg16")
  h5 = d / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
  layers, _ = convert_formats.keras2_layers(model, style="keras1")  # keras.applications' file.
  convert_formats.write_keras2_h5(h5, layers, weights_only=True)
  converted = d / "vgg16_converted"
  convert.convert("vgg16", h5, converted)
  pth = d / "vgg16-397923af.pth"
  want = keras_reference.keras_to_flax(model)["params"]
  convert_formats.save_torch_zip(pth, _torch_state_dict(want), prefix="vgg16-397923af")
  return model, {"keras_h5": h5, "converted_dir": converted, "torch_pth": pth}


@pytest.fixture(scope="module")
def generator_files(tmp_path_factory):
  """{name: (Keras generator, authors'-layout h5, converted dir)} at width 1/8 and 1/4."""
  d = tmp_path_factory.mktemp("generator")
  out = {}
  for name, width in (("fits", WIDTH), ("wider", 2 * WIDTH)):
    model = keras_reference.build_keras_generator(SIZE, width, NUM_CLASSES, FC_WIDTH)
    randomize(model, seed=12)
    h5 = d / f"my_model_colorization_{name}.h5"
    layers, model_config = convert_formats.keras2_layers(model, first_index=6)
    convert_formats.write_keras2_h5(h5, layers, model_config)
    converted = d / f"chromagan_{name}"
    convert.convert("generator", h5, converted)
    out[name] = (model, h5, converted)
  return out


@pytest.fixture(scope="module")
def critic_files(tmp_path_factory):
  """{name: (Keras critic, Keras 2 h5, converted dir)} at width 1/8 and 1/4."""
  d = tmp_path_factory.mktemp("critic")
  out = {}
  for name, width in (("fits", WIDTH), ("wider", 2 * WIDTH)):
    model = keras_reference.build_keras_critic(SIZE, width)
    randomize(model, seed=13)
    h5 = d / f"my_model_discriminator_{name}.h5"
    layers, model_config = convert_formats.keras2_layers(model)
    convert_formats.write_keras2_h5(h5, layers, model_config)
    converted = d / f"critic_{name}"
    convert.convert("critic", h5, converted)
    out[name] = (model, h5, converted)
  return out


# ----------------------------------------------------------------------------------------
# VGG16 trunk and KL teacher.


@pytest.mark.parametrize("fmt", ["keras_h5", "converted_dir", "torch_pth"])
def test_init_vgg16_initialise_the_trunk_and_teach(vgg_files, fmt, first_step, tmp_path, caplog):
  model, files = vgg_files
  caplog.set_level(logging.INFO)
  config = _config(vgg16=files[fmt])
  state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2 and first_step["with_teacher"]

  want = keras_reference.keras_to_flax(model)["params"]  # By Keras layer name.
  assert_trees_equal(first_step["teacher"], want)
  # Training the trunk (donated with the state) leaves the frozen teacher intact.
  assert_trees_equal(first_step["last_teacher"], want)
  step0 = first_step["state"]
  trunk = {n: want["vgg16"][n] for n in layouts.TRUNK_CONVS}  # Blocks 1-4 of VGG16.
  assert_trees_equal(step0.g_params["vgg16"], trunk)
  # The files' own preprocessing differs from the reference's 'none': said, not changed.
  own = {"keras_h5": "caffe", "converted_dir": "caffe", "torch_pth": "torch"}[fmt]
  assert f"trained with '{own}' input preprocessing" in caplog.text
  assert "init.vgg16 is empty" not in caplog.text

  # The first step's KL term is KL(Keras VGG16's softmax || generator's class distribution)
  # on the first batch: the teacher really is the file's network.
  for metrics in first_step["metrics"]:
    assert np.isfinite(metrics["g/kl"]) and metrics["g/kl"] > 0
  l3 = np.asarray(color.gray_to_l3(color.rgb_to_net(first_step["batch"]["rgb"])[0]))
  p_t = model(l3).numpy()
  generator = networks.models_from_config(config.model)[0]
  (_, p_g), _ = generator.apply(
    {"params": step0.g_params, "batch_stats": step0.g_batch_stats},
    l3,
    train=True,
    mutable=["batch_stats"],
  )
  p_t, p_g = (np.clip(np.asarray(p, np.float64), 1e-7, 1) for p in (p_t, p_g))
  expected = np.mean(np.sum(p_t * np.log(p_t / p_g), axis=-1))
  assert expected > 1e-3  # A teacher distinct from the untrained head: the check can fail.
  np.testing.assert_allclose(first_step["metrics"][0]["g/kl"], expected, rtol=1e-3)


def test_without_init_vgg16_kl_is_off_with_a_warning(first_step, tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  config = _config(num_train_steps=1)
  assert config.loss.kl > 0
  trainer.train_and_evaluate(config, str(tmp_path))
  assert "init.vgg16 is empty" in caplog.text and "KL term is disabled" in caplog.text
  assert first_step["with_teacher"] is False and first_step["teacher"] is None
  (metrics,) = first_step["metrics"]
  assert "g/kl" not in metrics
  # The generator's loss is the colour and adversarial terms only.
  total = config.loss.mse * metrics["g/mse"] + config.loss.adv * metrics["g/adv"]
  np.testing.assert_allclose(metrics["g/total"], total, rtol=1e-6)


def test_notop_init_vgg16_initialise_the_trunk_without_a_teacher(
  vgg_files, first_step, tmp_path, caplog
):
  """A notop file (keras.applications' ``..._notop.h5``: the 13 convolutions) seeds the trunk;
  with no classifier there is no teacher, so the KL term is off, with a warning naming it."""
  model, _ = vgg_files
  layers, _ = convert_formats.keras2_layers(model, style="keras1")
  notop = [(name, w) for name, w in layers if name not in layouts.VGG16_TOP]
  assert len(notop) < len(layers)
  h5 = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
  convert_formats.write_keras2_h5(h5, notop, weights_only=True)
  caplog.set_level(logging.WARNING)
  trainer.train_and_evaluate(_config(num_train_steps=1, vgg16=h5), str(tmp_path / "w"))
  assert first_step["with_teacher"] is False and first_step["teacher"] is None
  want = keras_reference.keras_to_flax(model)["params"]["vgg16"]
  assert_trees_equal(
    first_step["state"].g_params["vgg16"], {n: want[n] for n in layouts.TRUNK_CONVS}
  )
  assert f"{h5} has no classifier top" in caplog.text and "KL term is disabled" in caplog.text
  assert "g/kl" not in first_step["metrics"][0]


def test_a_wider_trunk_takes_init_vgg16_under_narrow_branches(first_step, tmp_path):
  """config.model.trunk_width: the trunk (and the KL teacher) at the VGG16 file's width while
  the branches, decoder and critic stay at config.model.width; the checkpoint reads back."""
  model = keras_reference.build_keras_vgg16_classifier(SIZE, 2 * WIDTH, NUM_CLASSES, FC_WIDTH)
  randomize(model, seed=14)
  h5 = tmp_path / "vgg16_wide.h5"
  layers, _ = convert_formats.keras2_layers(model, style="keras1")
  convert_formats.write_keras2_h5(h5, layers, weights_only=True)
  config = _config(num_train_steps=1, vgg16=h5)
  with pytest.raises(USER_ERRORS, match=r"made for image_size=\d+, width=0.25"):  # No field.
    trainer.train_and_evaluate(config, str(tmp_path / "no"))
  config.model.trunk_width = 2 * WIDTH
  trainer.train_and_evaluate(config, str(tmp_path / "w"))
  want = keras_reference.keras_to_flax(model)["params"]
  assert first_step["with_teacher"] is True
  assert_trees_equal(first_step["teacher"], want)
  g = first_step["state"].g_params
  assert_trees_equal(g["vgg16"], {n: want["vgg16"][n] for n in layouts.TRUNK_CONVS})
  assert g["global_conv1"]["kernel"].shape == (3, 3, networks.scaled(512, 2 * WIDTH), 64)
  assert first_step["state"].d_params["conv1"]["kernel"].shape[3] == 8  # 64 x WIDTH.
  variables, saved = checkpoint.load_generator(tmp_path / "w")
  assert saved.model.trunk_width == 2 * WIDTH
  fields = {"image_size": SIZE, "width": WIDTH, "trunk_width": 2 * WIDTH}
  assert shapes.made_for(variables).items() >= fields.items()


def test_init_vgg16_of_another_input_size_is_one_clear_error(tmp_path):
  # The real keras.applications file is 224x224 at width 1; the trunk alone would fit any
  # size, the classifier's fc1 only the size it was trained at.
  model = keras_reference.build_keras_vgg16_classifier(2 * SIZE, WIDTH, NUM_CLASSES, FC_WIDTH)
  h5 = tmp_path / "vgg16_128.h5"
  layers, _ = convert_formats.keras2_layers(model, style="keras1")
  convert_formats.write_keras2_h5(h5, layers, weights_only=True)
  with pytest.raises(USER_ERRORS, match=r"\['fc1'\]\['kernel'\] expected shape \(256, 512\)") as e:
    trainer.train_and_evaluate(_config(vgg16=h5), str(tmp_path / "work"))
  assert_one_line_naming(e, h5)
  assert f"made for image_size={2 * SIZE}, width={WIDTH}" in str(e.value)


# ----------------------------------------------------------------------------------------
# config.init.generator: the authors' generator.


@pytest.mark.parametrize("fmt", ["h5", "converted_dir"])
def test_init_generator_loads_the_whole_generator(
  generator_files, vgg_files, fmt, first_step, tmp_path, caplog
):
  model, h5, converted = generator_files["fits"]
  caplog.set_level(logging.INFO)
  caplog.set_level(logging.INFO, logger="absl")  # Another test may have raised absl's level.
  weights = {"generator": h5 if fmt == "h5" else converted}
  vgg_model, vgg = vgg_files
  if fmt == "h5":  # With a teacher too: init.generator's trunk wins over the VGG16 file's.
    weights["vgg16"] = vgg["keras_h5"]
  state = trainer.train_and_evaluate(_config(**weights), str(tmp_path))
  assert int(state.step) == 2
  want = keras_reference.keras_to_flax(model)  # Keras weights by layer name.
  step0 = first_step["state"]
  assert_trees_equal(step0.g_params, want["params"])
  assert_trees_equal(step0.g_batch_stats, want["batch_stats"])
  assert f"generator initialised from {weights['generator']}" in caplog.text
  assert first_step["with_teacher"] is (fmt == "h5")
  if fmt == "h5":  # ... and the VGG16 file stays the teacher.
    assert_trees_equal(first_step["teacher"], keras_reference.keras_to_flax(vgg_model)["params"])
  assert all(np.isfinite(m["g/total"]) for m in first_step["metrics"])


@pytest.mark.parametrize("fmt", ["h5", "converted_dir"])
def test_init_generator_of_another_width_is_one_clear_error(generator_files, fmt, tmp_path):
  _, h5, converted = generator_files["wider"]
  path = h5 if fmt == "h5" else converted
  with pytest.raises(USER_ERRORS, match="does not fit config.model") as e:
    trainer.train_and_evaluate(_config(generator=path), str(tmp_path))
  assert_one_line_naming(e, path)
  assert "expected shape (512,), found (1024,)" in str(e.value)  # class_fc1 at 1/8 vs 1/4.
  assert f"made for image_size={SIZE}, width={2 * WIDTH}, num_classes=1000" in str(e.value)


def test_train_py_reports_a_mismatched_init_generator_in_one_line(generator_files, tmp_path):
  _, h5, _ = generator_files["wider"]
  cmd = [
    sys.executable,
    os.path.join(_ROOT, "train.py"),
    f"--config={os.path.join(_ROOT, 'configs', 'tiny.py')}",
    f"--workdir={tmp_path / 'work'}",
    f"--config.init.generator={h5}",
  ]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and str(h5) in errors[0] and "width=0.25" in errors[0], errors
  assert "Traceback" not in result.stderr


def test_init_generator_a_file_that_is_not_a_generator(vgg_files, tmp_path):
  for path, match in (
    (vgg_files[1]["torch_pth"], "not a Keras .h5 generator file"),
    (vgg_files[1]["keras_h5"], "not a ChromaGAN generator"),
    (tmp_path / "missing.h5", "no such file"),
  ):
    with pytest.raises(USER_ERRORS, match=match) as e:
      trainer.train_and_evaluate(_config(generator=path), str(tmp_path / "work"))
    assert_one_line_naming(e, path)


# ----------------------------------------------------------------------------------------
# config.init.critic: resuming the GAN from the authors' critic.


@pytest.mark.parametrize("fmt", ["h5", "converted_dir"])
def test_init_critic_loads_the_critic(critic_files, fmt, first_step, tmp_path):
  model, h5, converted = critic_files["fits"]
  path = h5 if fmt == "h5" else converted
  state = trainer.train_and_evaluate(_config(critic=path), str(tmp_path))
  assert int(state.step) == 2
  assert_trees_equal(first_step["state"].d_params, keras_reference.keras_to_flax(model)["params"])
  assert all(np.isfinite(m["d/total"]) for m in first_step["metrics"])


@pytest.mark.parametrize("fmt", ["h5", "converted_dir"])
def test_init_critic_of_another_width_is_one_clear_error(critic_files, fmt, tmp_path):
  _, h5, converted = critic_files["wider"]
  path = h5 if fmt == "h5" else converted
  with pytest.raises(USER_ERRORS, match=r"critic of .* does not fit config.model") as e:
    trainer.train_and_evaluate(_config(critic=path), str(tmp_path))
  assert_one_line_naming(e, path)
  # The file's own layer name beside ours, where it has one (an h5's auto-generated names).
  file_layer = r" \(file layer '\w+'\)" if fmt == "h5" else ""
  pattern = rf"\['params'\]\['conv1'\]{file_layer}\['bias'\] expected shape \(8,\), found \(16,\)"
  assert re.search(pattern, str(e.value)), str(e.value)
  assert f"made for width={2 * WIDTH}" in str(e.value)


# ----------------------------------------------------------------------------------------
# A checkpoint in the workdir wins over initial weights.


@pytest.mark.slow  # two training runs
def test_resume_ignores_config_init(generator_files, critic_files, first_step, tmp_path, caplog):
  workdir = str(tmp_path)
  before = _host(trainer.train_and_evaluate(_config(num_train_steps=1), workdir))
  first_step.clear()
  first_step["metrics"] = []
  caplog.set_level(logging.WARNING)
  config = _config(
    num_train_steps=2,
    generator=generator_files["fits"][1],
    critic=critic_files["fits"][1],
  )
  state = trainer.train_and_evaluate(config, workdir)
  assert int(state.step) == 2
  # The second run trains on from the workdir's step-1 state, generator and critic included.
  assert_trees_equal(first_step["state"], before)
  for field in ("generator", "critic"):
    assert f"config.init.{field} is ignored" in caplog.text
