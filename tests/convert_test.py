"""Tests of the weights modules (keras_h5, torch_pickle, weights, shapes) and the convert CLI
against Keras models and a NumPy torchvision VGG16.

Each source model is built in Keras (or as a torchvision-layout state dict) with random
weights and non-trivial batch-norm statistics, written in the real file formats (Keras 3's
legacy h5 writer, the Keras 1/2 layouts written with h5py, torch.save's zip and legacy
formats written without torch), converted, and run in Flax on the same inputs as the source.
"""

import collections
import hashlib
import json
import logging
import os
import pickle
import shutil
import zipfile

import convert_formats
import h5py
import jax
import keras
import keras_reference
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import TORCH_CONVS, TORCH_LINEARS, assert_trees_equal, randomize
from keras.src.legacy.saving import legacy_h5_format

from chromagan_jax import convert
from chromagan_jax.errors import CheckpointError, ConversionError, ShapeError
from chromagan_jax.model import networks, shapes
from chromagan_jax.weights import (
  checkpoint,
  initial,
  keras_port,
  layouts,
  port,
  torch_pickle,
  torch_port,
)

# Small networks: XLA's optimisation passes cost more than they save here.
jax.config.update("jax_disable_most_optimizations", True)

REL_TOL = 1e-4  # float32 Flax vs float32 Keras / float64 NumPy, relative to the largest value.
WIDTH = 0.125
GEN_SIZE = 64
NUM_CLASSES = 10
FC_WIDTH = 512  # scaled(512, 1/8) = 64 units in the class head.
VGG_WIDTH = 1 / 16
VGG_FC = 256  # scaled(256, 1/16) = 16 units in fc1 / fc2.


def assert_rel_close(got, want, tol=REL_TOL):
  """max |got - want| <= tol * max |want|."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape
  err = np.max(np.abs(got - want)) / np.max(np.abs(want))
  assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


def save_keras3_weights_h5(model, path):
  """Keras 3's legacy-h5 weight writer (``save_weights`` to '.h5' in Keras 2)."""
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)


def grey_batch(size, n=2, seed=0):
  grey = np.random.default_rng(seed).uniform(0, 1, (n, size, size, 1)).astype(np.float32)
  return np.repeat(grey, 3, axis=-1)


# ----------------------------------------------------------------------------------------
# Keras VGG16.


def read_vgg16(path):
  """(VGG16 params, the preprocessing they were trained with) as training reads them."""
  weights = port.read(path, "vgg16")
  return weights.variables["params"], weights.preprocessing


@pytest.fixture(scope="module")
def keras_classifier(tmp_path_factory):
  """(Keras VGG16 with top at 64x64, width 1/16, logits; {layout: h5 path})."""
  model = keras_reference.build_keras_vgg16_classifier(
    GEN_SIZE, VGG_WIDTH, NUM_CLASSES, VGG_FC, activation=None
  )
  randomize(model, seed=1)
  d = tmp_path_factory.mktemp("vgg_top")
  files = {"keras3": str(d / "vgg16_keras3.h5"), "keras1": str(d / "vgg16_keras1.h5")}
  save_keras3_weights_h5(model, files["keras3"])
  layers, _ = convert_formats.keras2_layers(model, style="keras1")
  convert_formats.write_keras2_h5(files["keras1"], layers, weights_only=True)
  return model, files


def test_vgg16_classifier_from_keras_matches_keras_logits(keras_classifier):
  model, files = keras_classifier
  x = grey_batch(GEN_SIZE)
  want = model(x).numpy()
  teacher = networks.VGG16Classifier(width=VGG_WIDTH, num_classes=NUM_CLASSES, fc_width=VGG_FC)
  params = keras_port.vgg16_from_keras(files["keras1"])
  assert_rel_close(teacher.apply({"params": params}, x), want)
  # The Keras 3 writer's layout ('block1_conv1/kernel' names) gives the same arrays.
  assert_trees_equal(keras_port.vgg16_from_keras(files["keras3"]), params)
  loaded, preprocessing = read_vgg16(files["keras1"])
  assert preprocessing == "caffe"
  assert_trees_equal(loaded, params)
  # The generator's trunk: blocks 1-4 only.
  trunk = layouts.vgg16_trunk_params(params)
  assert list(trunk) == [
    f"block{b}_conv{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3)) for i in range(1, n + 1)
  ]
  np.testing.assert_array_equal(
    trunk["block4_conv3"]["kernel"], params["vgg16"]["block4_conv3"]["kernel"]
  )


def test_vgg16_cli_round_trip(keras_classifier, tmp_path, capsys):
  _, files = keras_classifier
  out = str(tmp_path / "vgg16")
  assert convert.main(["vgg16", files["keras1"], out]) == 0
  assert "caffe" in capsys.readouterr().out
  params, preprocessing = read_vgg16(out)
  assert preprocessing == "caffe"
  assert_trees_equal(params, keras_port.vgg16_from_keras(files["keras1"]))
  # Never overwrites: a second conversion into the same directory fails in one line.
  assert convert.main(["vgg16", files["keras1"], out]) == 1
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and out in err and "not empty" in err


def test_keras_applications_notop_file_gives_the_trunk(tmp_path):
  vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
  randomize(vgg, seed=2)
  path = str(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
  save_keras3_weights_h5(vgg, path)
  params = keras_port.vgg16_from_keras(path, include_top=False)
  assert set(params) == {"vgg16"}
  for name in layouts.VGG16_CONVS:  # Block 5 too, by value.
    kernel, bias = vgg.get_layer(name).get_weights()
    np.testing.assert_array_equal(params["vgg16"][name]["kernel"], kernel)
    np.testing.assert_array_equal(params["vgg16"][name]["bias"], bias)
  x = grey_batch(32)
  want = keras.Model(vgg.input, vgg.get_layer("block4_conv3").output)(x).numpy()
  trunk = networks.VGG16Trunk(depth=4)
  got = trunk.apply({"params": layouts.vgg16_trunk_params(params)}, x)
  assert_rel_close(got, want)
  # Asked for the classifier top, a notop file is refused, naming the file; read by what it
  # holds, it gives the convolutions alone.
  with pytest.raises(ConversionError, match=rf"{path}.*notop"):
    keras_port.vgg16_from_keras(path)
  notop, preprocessing = read_vgg16(path)
  assert preprocessing == "caffe" and not networks.vgg16_has_top(notop)
  assert_trees_equal(notop, params)


# ----------------------------------------------------------------------------------------
# torchvision VGG16 (NumPy reference of torch's NCHW semantics).


def torch_vgg16_state_dict(seed, width=VGG_WIDTH, fc=VGG_FC, classes=NUM_CLASSES):
  rng = np.random.default_rng(seed)
  sd, cin = collections.OrderedDict(), 3
  channels = [networks.scaled(c, width) for n, c in networks.VGG16_BLOCKS for _ in range(n)]
  for idx, cout in zip(TORCH_CONVS, channels, strict=True):
    sd[f"features.{idx}.weight"] = rng.normal(0, 1 / np.sqrt(9 * cin), (cout, cin, 3, 3))
    sd[f"features.{idx}.bias"] = rng.normal(0, 0.1, (cout,))
    cin = cout
  sizes = [cin * 3 * 3, networks.scaled(fc, width), networks.scaled(fc, width), classes]
  for idx, fin, fout in zip(TORCH_LINEARS, sizes[:-1], sizes[1:], strict=True):
    sd[f"classifier.{idx}.weight"] = rng.normal(0, 1 / np.sqrt(fin), (fout, fin))
    sd[f"classifier.{idx}.bias"] = rng.normal(0, 0.1, (fout,))
  return collections.OrderedDict((k, v.astype(np.float32)) for k, v in sd.items())


def torch_vgg16_logits(sd, x_nchw):
  """torchvision VGG16 forward in NCHW with NumPy (avgpool is the identity at 7x7 maps)."""
  x = x_nchw.astype(np.float64)
  for idx in TORCH_CONVS:
    w, b = sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    x = np.maximum(np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None], 0)
    if idx + 2 not in TORCH_CONVS:  # A max-pool follows each block's last conv.
      n, c, h, wd = x.shape
      x = x.reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
  x = x.reshape(x.shape[0], -1)  # torch.flatten(x, 1): C, H, W order.
  for i, idx in enumerate(TORCH_LINEARS):
    x = x @ sd[f"classifier.{idx}.weight"].T + sd[f"classifier.{idx}.bias"]
    if i < 2:
      x = np.maximum(x, 0)
  return x


@pytest.mark.parametrize("fmt", ["zip", "zip_named_shared_strided", "legacy", "legacy_shared"])
def test_vgg16_from_torch_matches_torch_semantics(tmp_path, fmt):
  sd = torch_vgg16_state_dict(seed=3)
  path = str(tmp_path / "vgg16-397923af.pth")
  if fmt == "zip":
    convert_formats.save_torch_zip(path, sd)
  elif fmt == "zip_named_shared_strided":
    convert_formats.save_torch_zip(
      path, sd, prefix="vgg16-397923af", shared=True, transpose_2d=True
    )
  else:
    convert_formats.save_torch_legacy(path, sd, shared=fmt == "legacy_shared")
  params, preprocessing = read_vgg16(path)
  assert preprocessing == "torch"
  # 96x96 input: a 3x3x32 block-5 map, so a missing NCHW -> NHWC permutation of fc1 shows.
  x = grey_batch(96)
  x[..., 1] *= 0.5  # Distinct channels, so an RGB/BGR or C-axis mix-up shows too.
  want = torch_vgg16_logits(sd, x.transpose(0, 3, 1, 2))
  teacher = networks.VGG16Classifier(width=VGG_WIDTH, num_classes=NUM_CLASSES, fc_width=VGG_FC)
  assert_rel_close(teacher.apply({"params": params}, x), want)


def test_torch_reader_refuses_other_pickled_objects(tmp_path):
  path = str(tmp_path / "evil.pth")
  convert_formats.save_torch_zip(path, {"a": np.zeros(3, np.float32)})
  with open(str(tmp_path / "data.pkl"), "wb") as f:
    pickle.dump({"a": collections.Counter()}, f, protocol=2)
  with zipfile.ZipFile(path, "w") as zf:
    zf.write(str(tmp_path / "data.pkl"), "archive/data.pkl")
  with pytest.raises(ConversionError, match="refusing to unpickle collections.Counter"):
    torch_pickle.read_state_dict(path)


# ----------------------------------------------------------------------------------------
# ChromaGAN generator and critic.


@pytest.fixture(scope="module")
def keras_generator(tmp_path_factory):
  """(Keras generator 64x64, width 1/8; Keras 3 h5 path; Keras 2 h5 path; Keras 2 layers)."""
  model = keras_reference.build_keras_generator(GEN_SIZE, WIDTH, NUM_CLASSES, FC_WIDTH)
  randomize(model, seed=4)
  d = tmp_path_factory.mktemp("generator")
  k3 = str(d / "my_model_colorization_keras3.h5")
  model.save(k3)
  # Keras 2 layout with auto names numbered from 6 (the critic took conv2d_1..5): numeric
  # order is the layer order but alphabetical order is not ('conv2d_10' < 'conv2d_6').
  layers, config = convert_formats.keras2_layers(model, first_index=6)
  k2 = str(d / "my_model_colorization.h5")
  convert_formats.write_keras2_h5(k2, layers, config)
  return model, k3, k2, layers, config


def test_generator_from_keras_files(keras_generator):
  model, k3, k2, layers, _ = keras_generator
  assert "model_6" in [name for name, _ in layers] and "conv2d_17" in [n for n, _ in layers]
  want_vars = keras_reference.keras_to_flax(model)  # By layer name: independent mapping.
  for path in (k2, k3):
    assert_trees_equal(keras_port.chromagan_generator_from_keras(path)[0], want_vars)
  x = grey_batch(GEN_SIZE)
  want_ab, want_p = (t.numpy() for t in model(x, training=False))
  # Non-trivial outputs: unsaturated ab, a spread class distribution.
  assert want_ab.std() > 0.02 and want_p.max() < 0.99
  gen = networks.Generator(
    image_size=GEN_SIZE, width=WIDTH, num_classes=NUM_CLASSES, fc_width=FC_WIDTH
  )
  ab, p = gen.apply(keras_port.chromagan_generator_from_keras(k2)[0], x)
  assert_rel_close(ab, want_ab)
  assert_rel_close(p, want_p)


def test_generator_cli_writes_a_colorize_checkpoint(keras_generator, tmp_path, capsys):
  _, _, k2, _, _ = keras_generator
  out = str(tmp_path / "authors")
  assert convert.main(["generator", k2, out]) == 0
  assert out in capsys.readouterr().out
  variables, config = checkpoint.load_generator(out)
  assert_trees_equal(
    jax.tree.map(np.asarray, variables), keras_port.chromagan_generator_from_keras(k2)[0]
  )
  assert config.model.image_size == GEN_SIZE and config.model.width == WIDTH
  assert config.model.num_classes == NUM_CLASSES and config.model.fc_width == FC_WIDTH
  assert config.model.vgg_preprocessing == "none"
  # The stored model config rebuilds a generator these variables fit.
  gen = networks.models_from_config(config.model)[0]
  shapes.check_shapes(
    variables, jax.eval_shape(gen.init, jax.random.key(0), grey_batch(GEN_SIZE, 1)), out
  )
  read = port.read(out, "generator").variables
  assert_trees_equal(read, jax.tree.map(np.asarray, variables))


def test_conversion_records_and_checks_the_source_sha256(keras_generator, tmp_path, capsys, caplog):
  _, _, k2, _, _ = keras_generator
  with open(k2, "rb") as f:
    want = hashlib.sha256(f.read()).hexdigest()
  size = os.path.getsize(k2)
  out = str(tmp_path / "authors")
  assert convert.main(["generator", k2, out, "--expect_sha256", want.upper()]) == 0
  assert f"sha256 {want}, {size:,} bytes" in capsys.readouterr().out
  _, config = checkpoint.load_config(out)
  assert config.converted.sha256 == want and config.converted.size_bytes == size
  # Loading it the way colorize / evaluate / the app do logs where it came from, once.
  caplog.set_level(logging.INFO)
  checkpoint.load_generator(out, with_class_head=False)
  lines = [r.getMessage() for r in caplog.records if want in r.getMessage()]
  assert len(lines) == 1 and k2 in lines[0] and f"{size:,} bytes" in lines[0]
  # Another file (here: one value of one kernel changed) is refused in one line.
  altered = str(tmp_path / "my_model_colorization.h5")
  shutil.copy(k2, altered)
  with h5py.File(altered, "r+") as f:
    name = f["model_weights"].attrs["layer_names"][-1].decode()
    group = f["model_weights"][name]
    kernel = group[group.attrs["weight_names"][0].decode()]
    kernel[0, 0] = kernel[0, 0] + 1
  assert convert.main(["generator", altered, str(tmp_path / "bad"), "--expect_sha256", want]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and f"not the expected {want}" in err
  assert not os.path.exists(tmp_path / "bad")


def test_generator_layer_order_is_checked_against_strides(keras_generator, tmp_path):
  _, _, _, layers, config = keras_generator
  names = [name for name, _ in layers]
  convs = [i for i, (name, _) in enumerate(layers) if name.startswith("conv2d_")]
  # Swap global_conv1 (stride 2) with mid_conv1 (stride 1): same shapes, different roles.
  i, j = convs[0], convs[4]
  swapped = list(layers)
  swapped[i], swapped[j] = layers[j], layers[i]
  path = str(tmp_path / "swapped.h5")
  convert_formats.write_keras2_h5(path, swapped, config)
  with pytest.raises(ConversionError, match=rf"{names[j]}.*global_conv1.*stride"):
    keras_port.chromagan_generator_from_keras(path)


def test_generator_shape_mismatch_names_file_layer_and_shapes(keras_generator, tmp_path):
  _, _, _, layers, config = keras_generator
  convs = [name for name, _ in layers if name.startswith("conv2d_")]
  bad_name = convs[8]  # dec_conv3: (3, 3, 16, 8) at width 1/8.
  bad = []
  for name, layer_weights in layers:
    if name == bad_name:
      layer_weights = [
        (w, np.zeros(a.shape[:-1] + (9,)) if a.ndim == 4 else a) for w, a in layer_weights
      ]
    bad.append((name, layer_weights))
  path = str(tmp_path / "bad.h5")
  convert_formats.write_keras2_h5(path, bad, config)
  # Read unchecked; the converter's one check (against the model the file's other layers
  # imply) names our layer and the file's.
  keras_port.chromagan_generator_from_keras(path)
  with pytest.raises(ShapeError) as e:
    convert.convert("generator", path, tmp_path / "out")
  msg = str(e.value)
  assert path in msg and "dec_conv3" in msg and bad_name in msg
  assert "expected shape (3, 3, 16, 8), found (3, 3, 16, 9)" in msg


@pytest.fixture(scope="module")
def keras_critic(tmp_path_factory):
  model = keras_reference.build_keras_critic(32, WIDTH)
  randomize(model, seed=5)
  d = tmp_path_factory.mktemp("critic")
  k3 = str(d / "critic_keras3.h5")
  model.save(k3)
  layers, config = convert_formats.keras2_layers(model)
  k2 = str(d / "my_model_discriminator.h5")
  convert_formats.write_keras2_h5(k2, layers, config)
  return model, k3, k2


def test_critic_from_keras_files(keras_critic, tmp_path):
  model, k3, k2 = keras_critic
  want_vars = keras_reference.keras_to_flax(model)
  for path in (k2, k3):
    assert_trees_equal(keras_port.chromagan_critic_from_keras(path)[0], want_vars)
  rng = np.random.default_rng(6)
  ab = rng.uniform(0, 1, (2, 32, 32, 2)).astype(np.float32)
  lightness = rng.uniform(0, 1, (2, 32, 32, 1)).astype(np.float32)
  want = model([ab, lightness]).numpy()
  got = networks.Critic(width=WIDTH).apply(
    keras_port.chromagan_critic_from_keras(k2)[0], ab, lightness
  )
  assert_rel_close(got, want)
  out = str(tmp_path / "critic")
  assert convert.main(["critic", k2, out]) == 0
  assert_trees_equal(port.read(out, "critic").variables, want_vars)
  # A critic directory is not VGG16 weights.
  with pytest.raises(CheckpointError, match="'critic' weights, 'vgg16' weights were expected"):
    port.read(out, "vgg16")


# ----------------------------------------------------------------------------------------
# TF1-renamed scopes: 'block1_conv1_1/kernel:0' when the graph already had a 'block1_conv1'.


def test_tf1_renamed_scopes_convert_like_the_plain_files(
  keras_generator, keras_critic, keras_classifier, tmp_path
):
  model, _, k2, _, _ = keras_generator
  layers, config = convert_formats.keras2_layers(model, first_index=6, scope_suffix="_1")
  assert ("model_6", "block1_conv1_1/kernel:0") in [(n, w[0][0]) for n, w in layers if w]
  renamed = str(tmp_path / "my_model_colorizationEpoch3.h5")
  convert_formats.write_keras2_h5(renamed, layers, config)
  want = keras_port.chromagan_generator_from_keras(k2)[0]
  assert_trees_equal(keras_port.chromagan_generator_from_keras(renamed)[0], want)
  out = str(tmp_path / "gen")
  assert convert.main(["generator", renamed, out]) == 0
  assert_trees_equal(jax.tree.map(np.asarray, checkpoint.load_generator(out)[0]), want)
  # config.init.generator / .critic read them too.
  critic_model, _, critic_k2 = keras_critic
  critic_layers, critic_config = convert_formats.keras2_layers(critic_model, scope_suffix="_2")
  critic = str(tmp_path / "my_model_discriminatorEpoch3.h5")
  convert_formats.write_keras2_h5(critic, critic_layers, critic_config)
  train_config = ml_collections.ConfigDict(
    {
      "init": {"vgg16": "", "generator": renamed, "critic": critic},
      "model": {**shapes.made_for(want), "vgg_preprocessing": "none", "remat_trunk": False},
    }
  )
  init = initial.starting_weights(train_config)
  assert_trees_equal(init.generator, want)
  assert_trees_equal({"params": init.critic}, keras_port.chromagan_critic_from_keras(critic_k2)[0])
  # Keras' VGG16 saved after another VGG16 was built in the same graph.
  vgg_model, files = keras_classifier
  vgg_layers, _ = convert_formats.keras2_layers(vgg_model, scope_suffix="_1")
  vgg = str(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
  convert_formats.write_keras2_h5(vgg, vgg_layers, weights_only=True)
  assert_trees_equal(read_vgg16(vgg)[0], keras_port.vgg16_from_keras(files["keras1"]))


# ----------------------------------------------------------------------------------------
# Bad inputs: one clear error naming the file.


def test_not_hdf5_and_cli_error_line(tmp_path, capsys):
  path = str(tmp_path / "weights.h5")
  with open(path, "w") as f:
    f.write("not weights\n")
  with pytest.raises(ConversionError, match=rf"{path}: not an HDF5 file"):
    keras_port.vgg16_from_keras(path)
  with pytest.raises(ConversionError, match=rf"{path}: not a Keras .h5, a torch"):
    port.read(path, "vgg16")
  assert convert.main(["generator", path, str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ") and path in err
  assert not os.path.exists(tmp_path / "out")


def test_combined_gan_file_names_the_file_to_convert(
  keras_generator, keras_critic, tmp_path, capsys
):
  """The authors' train() saves my_model_combinedEpochN.h5: both networks as nested models."""
  model, _, _, _, _ = keras_generator
  gen_layers, _ = convert_formats.keras2_layers(model, first_index=6)
  critic_model, _, _ = keras_critic
  critic_layers, _ = convert_formats.keras2_layers(critic_model)
  nested = lambda layers: [w for _, ws in layers for w in ws]
  combined = [
    ("input_3", []),
    ("input_4", []),
    ("model_3", nested(gen_layers)),
    ("model_1", nested(critic_layers)),
  ]
  path = str(tmp_path / "my_model_combinedEpoch7.h5")
  convert_formats.write_keras2_h5(path, combined, {"class_name": "Model", "config": {}})
  assert convert.main(["generator", path, str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "combined GAN model" in err
  assert "convert my_model_colorizationEpoch7.h5" in err
  with pytest.raises(ConversionError, match="convert my_model_discriminatorEpoch7.h5"):
    port.read(path, "critic")
  with pytest.raises(ConversionError, match="combined GAN model"):
    port.read(path, "generator")  # config.init.generator


def test_web_page_saved_as_weights_says_failed_download(tmp_path, capsys):
  page = (
    b"\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
    b"<body>Google Drive can't scan this file for viruses.</body></html>\n"
  )
  gen = str(tmp_path / "my_model_colorization.h5")
  pth = str(tmp_path / "vgg16-397923af.pth")
  for path in (gen, pth):
    with open(path, "wb") as f:
      f.write(page)
  assert convert.main(["generator", gen, str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and gen in err
  assert "web page" in err and "failed download" in err and "Google Drive" in err
  assert f"{len(page):,} bytes" in err and "my_model_colorization.h5, 0.68-2.1 GB" in err
  with pytest.raises(ConversionError, match=r"web page.*vgg16_weights_tf.*553 MB"):
    port.read(pth, "vgg16")
  with pytest.raises(ConversionError, match=r"web page.*my_model_discriminator.h5, 11-34 MB"):
    port.read(gen, "critic")


def test_keras3_files_say_how_to_get_the_legacy_h5(keras_critic, tmp_path, capsys):
  model, _, _ = keras_critic
  archive = str(tmp_path / "critic.keras")
  model.save(archive)
  weights = str(tmp_path / "critic.weights.h5")
  model.save_weights(weights)
  for path, what in ((archive, "'.keras' archive"), (weights, "'.weights.h5' file")):
    assert convert.main(["critic", path, str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and path in err and f"Keras 3 {what}" in err
    assert "model.save('x.h5')" in err
  with pytest.raises(ConversionError, match="Keras 3 '.keras' archive"):
    port.read(archive, "vgg16")  # A zip, but not torch's.


def test_truncated_files(keras_classifier, tmp_path):
  _, files = keras_classifier
  cut = str(tmp_path / "cut.h5")
  with open(files["keras1"], "rb") as f:
    data = f.read()
  with open(cut, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(ConversionError, match=rf"{cut}.*truncated"):
    keras_port.vgg16_from_keras(cut)
  sd = torch_vgg16_state_dict(seed=7)
  for save in (convert_formats.save_torch_zip, convert_formats.save_torch_legacy):
    full, cut = str(tmp_path / "full.pth"), str(tmp_path / "cut.pth")
    save(full, sd)
    shutil.copy(full, cut)
    with open(cut, "r+b") as f:
      f.truncate(int(os.path.getsize(full) * 0.6))
    with pytest.raises(ConversionError, match=rf"{cut}.*(truncated|corrupt)"):
      torch_port.vgg16_from_torch(cut)


def test_vgg19_and_wrong_model_files(keras_classifier, keras_generator, tmp_path):
  model, _ = keras_classifier
  layers, _ = convert_formats.keras2_layers(model, style="keras1")
  extra = (
    "block5_conv4",
    [("block5_conv4_W_1:0", np.zeros((3, 3, 32, 32))), ("block5_conv4_b_1:0", np.zeros(32))],
  )
  vgg19 = str(tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels.h5")
  convert_formats.write_keras2_h5(vgg19, layers + [extra], weights_only=True)
  with pytest.raises(ConversionError, match=rf"{vgg19}.*block5_conv4.*VGG19"):
    keras_port.vgg16_from_keras(vgg19)
  sd = torch_vgg16_state_dict(seed=8)
  sd["features.30.weight"] = np.zeros((32, 32, 3, 3), np.float32)
  sd["features.30.bias"] = np.zeros((32,), np.float32)
  pth = str(tmp_path / "vgg19.pth")
  convert_formats.save_torch_zip(pth, sd)
  with pytest.raises(ConversionError, match=rf"{pth}: has 14 convolutions"):
    torch_port.vgg16_from_torch(pth)
  # A generator file is not VGG16, and a VGG16 file is not a generator or a critic.
  _, _, k2, _, _ = keras_generator
  with pytest.raises(ConversionError, match=rf"{k2}: no VGG16 layers"):
    keras_port.vgg16_from_keras(k2)
  vgg = str(tmp_path / "vgg16.h5")
  convert_formats.write_keras2_h5(vgg, layers, weights_only=True)
  with pytest.raises(ConversionError, match=rf"{vgg}: .*block5_conv1.*not a ChromaGAN generator"):
    keras_port.chromagan_generator_from_keras(vgg)
  with pytest.raises(ConversionError, match=rf"{vgg}: layer 'fc1' is not a convolution"):
    keras_port.chromagan_critic_from_keras(vgg)


# ----------------------------------------------------------------------------------------
# Directories of earlier converters: params/ + conversion.json.


def write_legacy_conversion(directory, params, info):
  """The layout earlier converters wrote: an Orbax PyTree in params/ and conversion.json."""
  os.makedirs(directory)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, "params"), params)
    ckptr.wait_until_finished()
  with open(os.path.join(directory, "conversion.json"), "w") as f:
    json.dump(info, f)


def test_earlier_converted_directories_name_the_reconversion(keras_classifier, tmp_path):
  """The first week's layout is no longer read: one line with the command that converts the
  source file again."""
  _, files = keras_classifier
  old_vgg = str(tmp_path / "old_vgg16")
  info = {"kind": "vgg16", "source": files["keras1"], "preprocessing": "caffe"}
  write_legacy_conversion(old_vgg, keras_port.vgg16_from_keras(files["keras1"]), info)
  want = rf"{old_vgg}: converted by an earlier version .*convert vgg16 {files['keras1']} NEW_DIR"
  with pytest.raises(CheckpointError, match=want) as e:
    port.read(old_vgg, "vgg16")
  assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------
# The one "made for which config" reader and the one shape checker.


@pytest.mark.parametrize(
  "fields",
  [
    {"image_size": 64, "width": 0.125, "num_classes": 10, "fc_width": 512},
    {"image_size": 96, "width": 0.25, "num_classes": 1000, "fc_width": 4096},
    {"image_size": 224, "width": 1.0, "num_classes": 1000, "fc_width": 4096},
  ],
)
def test_made_for_reads_back_the_model_config(fields):
  model = {**fields, "vgg_preprocessing": "none"}
  for network in ("generator", "vgg16"):
    variables = shapes.abstract_variables(model, network)
    assert shapes.made_for(variables) == fields, network
  critic = shapes.abstract_variables(model, "critic")
  assert shapes.made_for(critic) == {"width": fields["width"]}
  trunk = {"vgg16": shapes.abstract_variables(model, "vgg16")["params"]["vgg16"]}
  assert shapes.made_for(trunk) == {"width": fields["width"]}


def test_made_for_reads_a_trunk_wider_than_the_branches():
  fields = {"image_size": 64, "width": 0.125, "trunk_width": 0.25, "num_classes": 10}
  fields["fc_width"] = 512
  model = {**fields, "vgg_preprocessing": "none"}
  assert shapes.made_for(shapes.abstract_variables(model, "generator")) == fields
  teacher = {**fields, "width": 0.25}  # The KL teacher is a VGG16 of the trunk's width.
  del teacher["trunk_width"]
  assert shapes.made_for(shapes.abstract_variables(model, "vgg16")) == teacher
  assert shapes.made_for(shapes.abstract_variables(model, "critic")) == {"width": 0.125}
  assert shapes.describe(fields) == (
    "image_size=64, width=0.125, trunk_width=0.25, num_classes=10, fc_width=512"
  )


def test_check_shapes_names_the_first_difference_and_what_the_weights_fit():
  small = {"image_size": 64, "width": 0.125, "num_classes": 10, "fc_width": 512}
  model = {**small, "vgg_preprocessing": "none"}
  expected = shapes.abstract_variables(model, "generator")
  shapes.check_shapes(expected, expected, "same")  # Fits: no error.
  wider = shapes.abstract_variables({**model, "width": 0.25}, "generator")
  with pytest.raises(ShapeError) as e:
    shapes.check_shapes(wider, expected, "w.h5", made_for_fields=lambda: shapes.made_for(wider))
  msg = str(e.value)
  assert msg.startswith("w.h5 does not fit config.model: ['batch_stats']['global_bn1']")
  assert "expected shape (64,), found (128,)" in msg
  assert msg.endswith("they were made for image_size=64, width=0.25, num_classes=10, "
                      "fc_width=512: use that model config")  # fmt: skip
  missing = {"params": dict(expected["params"]), "batch_stats": expected["batch_stats"]}
  del missing["params"]["dec_conv6"]
  pattern = r"\['params'\]\['dec_conv6'\]\['bias'\] expected shape \(2,\), found nothing"
  with pytest.raises(ShapeError, match=pattern + "$"):
    shapes.check_shapes(missing, expected, "m")


def test_check_is_the_one_check_against_the_network_a_model_config_builds():
  model = {"image_size": 64, "width": 0.125, "num_classes": 10, "fc_width": 512}
  model["vgg_preprocessing"] = "none"
  generator = shapes.abstract_variables(model, "generator")
  checked = shapes.check(generator, model, "generator", "same")  # Fits: what to restore.
  assert jax.tree.structure(checked) == jax.tree.structure(generator)
  # Parameters before batch statistics; the file's layer name beside ours; what they fit.
  wider = shapes.abstract_variables({**model, "width": 0.25}, "generator")
  with pytest.raises(ShapeError) as e:
    shapes.check(wider, model, "generator", "w.h5", layer_names={"class_fc1": "dense_4"})
  msg = str(e.value)
  assert msg.startswith(
    "w.h5 does not fit config.model: ['params']['class_fc1'] (file layer 'dense_4')['bias'] "
    "expected shape (64,), found (128,); they were made for image_size=64, width=0.25"
  )
  # Against the weights' own model (stored config, implied model): no "made for".
  with pytest.raises(ShapeError, match=r"does not fit its config: .* found \(128,\)$"):
    shapes.check(wider, model, "generator", "w", target="its config")
  # A notop VGG16 is checked against the convolutions alone, and still fits them or not.
  vgg = shapes.abstract_variables(model, "vgg16")["params"]
  shapes.check({"params": {"vgg16": vgg["vgg16"]}}, model, "vgg16", "notop.h5")
  wide_vgg = shapes.abstract_variables({**model, "width": 0.25}, "vgg16")["params"]
  with pytest.raises(ShapeError, match=r"notop.h5 .*\['vgg16'\]\['block1_conv1'\]"):
    shapes.check({"params": {"vgg16": wide_vgg["vgg16"]}}, model, "vgg16", "notop.h5")
  # A head-free generator fits colorizing, and says how to get the full one for training.
  head_free = networks.without_class_head(generator)
  shapes.check(head_free, model, "generator", "f.msgpack", with_class_head=False)
  with pytest.raises(ShapeError, match=r"class_fc1.*found nothing; .*--with_class_head$"):
    shapes.check(head_free, model, "generator", "f.msgpack")
