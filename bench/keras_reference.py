"""Keras 3 (TensorFlow backend) builds of ChromaGAN's networks, written from the spec.

An independent reference for the Flax models: the same architecture expressed with Keras'
own layers (``Conv2D(padding='same')``, ``BatchNormalization``, ``LeakyReLU``,
``UpSampling2D``, ``Flatten``, ``RepeatVector``), whose semantics are what the authors'
released weights were trained with. Layer names equal the Flax module names, so weights are
copied by name with :func:`flax_to_keras` / :func:`keras_to_flax`. Used by the model tests,
the weight-converter tests and the benchmarks (the TF/Keras contender). It lives in
``bench/`` so that the benchmarks do not import ``tests/``; the tests put ``bench/`` on
``sys.path`` (``tests/conftest.py``).

Nothing here is imported from ``chromagan_jax``: the VGG16 block table, the channel scaling
and the LeakyReLU slope (Keras' default) are written again from the spec, so a mistake in the
Flax models cannot be copied into their reference. ``width`` scales channel counts as
``round(channels * width)`` (at least 1), so a small Keras build (e.g. ``image_size=64,
width=0.125``) matches a small Flax build.
"""

import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

# VGG16's convolution blocks (number of 3x3 convs, channels): Simonyan & Zisserman, config D.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def scaled(channels, width):
  """Channel count of a layer built at width multiplier ``width`` (at least 1)."""
  return max(1, int(round(channels * width)))


# Flax variable name <-> Keras weight name, per layer kind.
_PARAM_NAMES = {"kernel": "kernel", "bias": "bias", "scale": "gamma"}
_BN_BIAS = "beta"
_STAT_NAMES = {"mean": "moving_mean", "var": "moving_variance"}
# Keras layers that Flax nests under its ``vgg16`` sub-module.
_TRUNK_LAYER = re.compile(r"block\d_conv\d$")


def build_keras_vgg16_trunk(image_size=224, width=1.0, depth=4, name="vgg16"):
  """Nested Keras model ``block1_conv1 .. block{depth}_conv3`` (3x3 'same' + ReLU).

  Max-pools (``block{b}_pool``) follow every block but the last, as in the ChromaGAN trunk.
  Input (N, image_size, image_size, 3); output stride 2**(depth-1).
  """
  inputs = keras.Input((image_size, image_size, 3), name=f"{name}_input")
  x = inputs
  for b, (n, c) in enumerate(VGG16_BLOCKS[:depth], start=1):
    if b > 1:
      x = layers.MaxPooling2D(2, strides=2, name=f"block{b - 1}_pool")(x)
    for i in range(1, n + 1):
      x = layers.Conv2D(
        scaled(c, width), 3, padding="same", activation="relu", name=f"block{b}_conv{i}"
      )(x)
  return keras.Model(inputs, x, name=name)


def build_keras_generator(image_size=224, width=1.0, num_classes=1000, fc_width=4096):
  """ChromaGAN's colorization model: l3 (N, S, S, 3) -> [ab (N, S, S, 2), probs (N, C)].

  Keras defaults throughout (bias on, BN momentum 0.99 / epsilon 1e-3); ReLU before BN in the
  global and mid-level branches; the trunk is a nested model named ``vgg16``.
  """
  w = lambda c: scaled(c, width)
  conv = lambda c, k, name, strides=1, act="relu": layers.Conv2D(
    c, k, strides=strides, padding="same", activation=act, name=name
  )
  l3 = keras.Input((image_size, image_size, 3), name="l3")
  trunk = build_keras_vgg16_trunk(image_size, width, depth=4)(l3)

  g = trunk
  for i, stride in enumerate((2, 1, 2, 1), start=1):
    g = conv(w(512), 3, f"global_conv{i}", strides=stride)(g)
    g = layers.BatchNormalization(name=f"global_bn{i}")(g)
  flat = layers.Flatten(name="global_flatten")(g)
  f = flat
  for i, n in enumerate((1024, 512, 256), start=1):
    f = layers.Dense(w(n), name=f"global_fc{i}")(f)
  c = flat
  for i in (1, 2):
    c = layers.Dense(scaled(fc_width, width), name=f"class_fc{i}")(c)
  probs = layers.Dense(num_classes, activation="softmax", name="class_fc3")(c)

  m = conv(w(512), 3, "mid_conv1")(trunk)
  m = layers.BatchNormalization(name="mid_bn1")(m)
  m = conv(w(256), 3, "mid_conv2")(m)
  m = layers.BatchNormalization(name="mid_bn2")(m)

  h = m.shape[1]
  f = layers.RepeatVector(h * h, name="global_repeat")(f)
  f = layers.Reshape((h, h, w(256)), name="global_reshape")(f)
  x = layers.Concatenate(name="fusion")([m, f])

  x = conv(w(256), 1, "dec_conv1")(x)
  x = conv(w(128), 3, "dec_conv2")(x)
  x = layers.UpSampling2D(2, name="dec_up1")(x)
  x = conv(w(64), 3, "dec_conv3")(x)
  x = conv(w(64), 3, "dec_conv4")(x)
  x = layers.UpSampling2D(2, name="dec_up2")(x)
  x = conv(w(32), 3, "dec_conv5")(x)
  x = conv(2, 3, "dec_conv6", act="sigmoid")(x)
  ab = layers.UpSampling2D(2, name="dec_up3")(x)
  return keras.Model(l3, [ab, probs], name="colorization")


def build_keras_critic(image_size=224, width=1.0):
  """PatchGAN critic: [ab (N, S, S, 2), L (N, S, S, 1)] -> scores (N, S/8, S/8, 1).

  LeakyReLU uses Keras' default slope (0.3), as the authors' ``LeakyReLU()`` did.
  """
  ab = keras.Input((image_size, image_size, 2), name="ab")
  lightness = keras.Input((image_size, image_size, 1), name="L")
  x = layers.Concatenate(name="critic_concat")([lightness, ab])
  for i, (c, s) in enumerate(((64, 2), (128, 2), (256, 2), (512, 1)), start=1):
    x = layers.Conv2D(scaled(c, width), 4, strides=s, padding="same", name=f"conv{i}")(x)
    x = layers.LeakyReLU(name=f"leaky{i}")(x)
  x = layers.Conv2D(1, 4, padding="same", name="conv5")(x)
  return keras.Model([ab, lightness], x, name="critic")


def build_keras_vgg16_classifier(
  image_size=224, width=1.0, num_classes=1000, fc_width=4096, activation="softmax"
):
  """Keras VGG16 with its top, layer names as ``keras.applications.VGG16`` (flat, no nesting).

  Returns class probabilities (``activation='softmax'``, as Keras' VGG16) for input
  (N, S, S, 3); the Flax classifier returns the logits.
  """
  inputs = keras.Input((image_size, image_size, 3), name="input_layer")
  x = inputs
  for b, (n, c) in enumerate(VGG16_BLOCKS, start=1):
    for i in range(1, n + 1):
      x = layers.Conv2D(
        scaled(c, width), 3, padding="same", activation="relu", name=f"block{b}_conv{i}"
      )(x)
    x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
  x = layers.Flatten(name="flatten")(x)
  x = layers.Dense(scaled(fc_width, width), activation="relu", name="fc1")(x)
  x = layers.Dense(scaled(fc_width, width), activation="relu", name="fc2")(x)
  x = layers.Dense(num_classes, activation=activation, name="predictions")(x)
  return keras.Model(inputs, x, name="vgg16")


def _weighted_layers(model):
  """Yields every Keras layer holding weights, descending into nested models."""
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _weighted_layers(layer)
    elif layer.weights:
      yield layer


def _flax_modules(tree, out=None):
  """{module name: {var name: array}} of the leaf modules of a Flax variable collection."""
  out = {} if out is None else out
  for name, sub in tree.items():
    if any(hasattr(v, "shape") for v in sub.values()):
      if name in out:
        raise ValueError(f"module name {name!r} is not unique")
      out[name] = dict(sub)
    else:
      _flax_modules(sub, out)
  return out


def flax_to_keras(variables, model):
  """Copies Flax ``{'params', 'batch_stats'}`` into ``model`` by layer name.

  Every Keras weight must be set and every Flax variable used (or ``ValueError``).
  """
  params = _flax_modules(variables["params"])
  stats = _flax_modules(variables.get("batch_stats", {}))
  unused = set(params) | {f"{k}/stats" for k in stats}
  for layer in _weighted_layers(model):
    p = params.get(layer.name)
    if p is None:
      raise ValueError(f"no Flax parameters for Keras layer {layer.name!r}")
    values = {}
    is_bn = isinstance(layer, layers.BatchNormalization)
    for k, v in p.items():
      values[_BN_BIAS if (is_bn and k == "bias") else _PARAM_NAMES[k]] = v
    unused.discard(layer.name)
    if is_bn:
      for k, v in stats[layer.name].items():
        values[_STAT_NAMES[k]] = v
      unused.discard(f"{layer.name}/stats")
    names = [v.name for v in layer.weights]
    if sorted(names) != sorted(values):
      raise ValueError(f"layer {layer.name!r}: Keras weights {names}, Flax {sorted(values)}")
    layer.set_weights([np.asarray(values[n], np.float32) for n in names])
  if unused:
    raise ValueError(f"Flax variables not used by the Keras model: {sorted(unused)}")


def keras_to_flax(model):
  """Flax ``{'params': ..., 'batch_stats': ...}`` (NumPy leaves) from a Keras model.

  Trunk convolutions (``block*_conv*``) go under ``vgg16`` as in the Flax modules;
  ``batch_stats`` is omitted when the model has no batch norm.
  """
  params, stats = {}, {}
  inverse = {v: k for k, v in _PARAM_NAMES.items()} | {_BN_BIAS: "bias"}
  inverse_stats = {v: k for k, v in _STAT_NAMES.items()}
  for layer in _weighted_layers(model):
    for var in layer.weights:
      value = np.asarray(var.numpy())
      if var.name in inverse_stats:
        target, key = stats, inverse_stats[var.name]
      else:
        target, key = params, inverse[var.name]
      if _TRUNK_LAYER.match(layer.name):
        target = target.setdefault("vgg16", {})
      target.setdefault(layer.name, {})[key] = value
  out = {"params": params}
  if stats:
    out["batch_stats"] = stats
  return out
