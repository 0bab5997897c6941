"""ChromaGAN networks in Flax Linen: the generator, the PatchGAN critic and the VGG16 teacher.

Layer names follow Keras' VGG16 (``block1_conv1`` ... ``block5_conv3``, ``fc1``, ``fc2``,
``predictions``) so weight files map 1:1; the ChromaGAN-specific layers have descriptive
names (``global_conv1`` ... ``dec_conv6``) that the converter maps from the authors' h5.

Shapes and values (paper configuration, ``image_size=224``, ``width=1``):
  * ``Generator()(l3)``: ``l3`` (N, 224, 224, 3) grey tiled to 3 channels in [0, 1] ->
    ``ab`` (N, 224, 224, 2) in [0, 1] and the class distribution (N, 1000), rows sum to 1.
    ``Generator(with_class_head=False)`` is the inference network: the same ab, no class
    distribution (None) and none of the head's ~124 M parameters (see :data:`CLASS_HEAD`).
  * ``Critic()(ab, L)``: ab (N, 224, 224, 2), L (N, 224, 224, 1) in [0, 1] -> (N, 28, 28, 1)
    unbounded Wasserstein scores.
  * ``VGG16Classifier()(l3)``: ImageNet logits (N, 1000).

``width`` scales every channel count (not the 2 ab channels nor the classes) and
``image_size`` sets the input size, so tests run the same code at e.g. 64x64 and width 1/8.
``dtype`` is the compute dtype (e.g. bfloat16); parameters stay in ``param_dtype`` and the
outputs are returned in float32.
"""

import functools
import importlib.metadata
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from chromagan_jax.ops import inference_weights
from chromagan_jax.ops.conv_policy import ConvPolicy

# Keras' BatchNormalization defaults (Flax's momentum has the same meaning).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
# Keras' LeakyReLU default slope, used by the reference critic.
LEAKY_SLOPE = 0.3

# VGG16 convolutional blocks: (number of 3x3 convs, channels).
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# The generator's trunk: VGG16 blocks 1-4 (block4_conv3's map, stride 8).
TRUNK_DEPTH = 4
# VGG16's classifier top, in order.
VGG16_TOP = ("fc1", "fc2", "predictions")
# The generator's global branch: strides of its four 3x3 convolutions.
GLOBAL_STRIDES = (2, 1, 2, 1)
# The critic's 4x4 convolutions before the 1-channel output one: (channels, stride).
CRITIC_LAYERS = ((64, 2), (128, 2), (256, 2), (512, 1))

# Initialisers of every conv and Dense layer (generator, critic and VGG16 teacher), as the
# reference's: its Keras Conv2D and Dense layers keep Keras' defaults, glorot_uniform kernels
# (U(+-sqrt(6 / (fan_in + fan_out))), fans counting the kernel's receptive field as Keras
# does) and zero biases (../shared/spec/chromagan.md, "Keras defaults apply";
# keras.applications' VGG16 built without weights uses the same). Flax's default would be
# lecun_normal. Batch norm starts as Keras' too: scale 1, bias 0, mean 0, variance 1 (Flax's
# defaults). The trunk and the teacher usually start from ImageNet weights instead.
KERNEL_INIT = nn.initializers.glorot_uniform()
BIAS_INIT = nn.initializers.zeros

# Input normalisation expected by different VGG16 weight sources. The reference feeds the
# grey image in [0, 1] tiled to 3 channels with no normalisation ("none"); Keras' ImageNet
# weights were trained with caffe preprocessing (BGR, 0-255, mean subtracted) and
# torchvision's with mean/std normalisation of [0, 1] RGB.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
VGG_PREPROCESSING = ("none", "caffe", "torch")


def vgg16_has_top(params) -> bool:
  """Whether VGG16 params include the classifier (fc1, fc2, predictions), not only the
  convolutions of a notop file."""
  return all(n in params for n in VGG16_TOP)


def vgg_preprocess(x, mode: str = "none"):
  """Applies a VGG16 weight source's input normalisation to RGB ``x`` in [0, 1]."""
  if mode == "none":
    return x
  if mode == "caffe":
    return x[..., ::-1] * 255.0 - jnp.asarray(_CAFFE_MEAN_BGR, x.dtype)
  if mode == "torch":
    return (x - jnp.asarray(_TORCH_MEAN, x.dtype)) / jnp.asarray(_TORCH_STD, x.dtype)
  raise ValueError(f"unknown vgg_preprocessing {mode!r}; expected one of {VGG_PREPROCESSING}")


def scaled(channels: int, width: float) -> int:
  """Channel count at width multiplier ``width`` (at least 1)."""
  return max(1, int(round(channels * width)))


def upsample_nearest(x, factor: int = 2):
  """Nearest-neighbour upsampling of NHWC ``x`` (Keras ``UpSampling2D`` default)."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


XLA = ConvPolicy("xla")  # XLA's convolutions everywhere: the modules' default.


def _layer(module: nn.Module, name: str) -> str:
  """The params path of ``module``'s layer ``name`` from the network's root ("vgg16/block1_conv1"):
  the key of its prepared inference weights (``inference_weights.inference_filters``)."""
  return "/".join((*module.path, name))


def _conv_fn(module: nn.Module, name: str, prepared):
  """``module.conv``'s ``conv_general_dilated`` for layer ``name`` (None: flax's default)."""
  return module.conv.conv_general_dilated(
    prepared, _layer(module, name), initializing=module.is_initializing()
  )


# jaxlib 0.12's XLA:CPU computes the bfloat16 VGG trunk wrongly through its YNNPACK fusions:
# NaN or garbage that varies from run to run (found by tests/models_test.py under Python 3.12;
# float32, jaxlib 0.10 and accelerators are unaffected). This flag turns those fusions off.
CPU_BFLOAT16_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def cpu_bfloat16_problem(dtype, backend: str | None = None) -> str | None:
  """Why ``dtype`` computations cannot be trusted on this backend, or None when they can."""
  if jnp.dtype(dtype) != jnp.bfloat16 or (backend or jax.default_backend()) != "cpu":
    return None
  jaxlib_version = importlib.metadata.version("jaxlib")
  if (
    not jaxlib_version.startswith("0.12.")
    or CPU_BFLOAT16_FLAG in os.environ.get("XLA_FLAGS", "").split()
  ):
    return None
  return (
    f"bfloat16 on CPU with jaxlib {jaxlib_version} gives wrong results (its XLA:CPU YNNPACK "
    f"fusions); use float32 on CPU (bfloat16 is meant for GPU/TPU) or set "
    f"XLA_FLAGS={CPU_BFLOAT16_FLAG}"
  )


_max_pool_value = functools.partial(
  nn.max_pool, window_shape=(2, 2), strides=(2, 2), padding="VALID"
)


@jax.custom_jvp
def max_pool(x):
  """2x2 max-pool, stride 2, VALID: (N, H, W, C) -> (N, H // 2, W // 2, C), any dtype.

  The value is XLA's ``reduce_window`` (``nn.max_pool``). The derivative is written out
  instead of left to XLA's ``select_and_scatter``: with deterministic GPU ops
  (``config.deterministic_ops``, every config's default) XLA:GPU rewrites that into a sorted
  scatter, which is slow (bench/RESULTS.md) and cannot run past 2^31 scatter indices. The rule
  below has no scatter: strided slices, masks and selects. Same subgradient as
  ``select_and_scatter``: the first maximum of each window in row-major order takes the whole
  gradient, so gradients are bitwise those of ``nn.max_pool``, ties (ReLU zeros) included
  (tests/models_test.py).
  """
  return _max_pool_value(x)


@max_pool.defjvp
def _max_pool_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  y = _max_pool_value(x)
  h, w = y.shape[1:3]
  dy, taken = jnp.zeros_like(y), jnp.zeros(y.shape, bool)
  for k in range(4):  # Element k (row-major) of every window; the first x == max selects.
    rows, cols = slice(k // 2, 2 * h, 2), slice(k % 2, 2 * w, 2)
    hit = (x[:, rows, cols] == y) & ~taken
    dy, taken = dy + jnp.where(hit, dx[:, rows, cols], 0), taken | hit
  return y, dy


class VGG16Trunk(nn.Module):
  """VGG16 convolutions ``block1_conv1 .. block{depth}_conv3``, ReLU after each.

  Max-pools follow every block but the last one computed, so ``depth=4`` gives the
  ChromaGAN trunk (stride 8, 512 channels) and the classifier pools the block-5 output itself.
  """

  depth: int = TRUNK_DEPTH
  width: float = 1.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv: ConvPolicy = ConvPolicy()

  @nn.compact
  def __call__(self, x, prepared=None):
    """``prepared``: the inference weights (see :class:`Generator`), or None."""
    for b, (n, c) in enumerate(VGG16_BLOCKS[: self.depth], start=1):
      if b > 1:
        x = max_pool(x)
      for i in range(1, n + 1):
        name = f"block{b}_conv{i}"
        x = nn.Conv(
          scaled(c, self.width),
          (3, 3),
          padding="SAME",
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          conv_general_dilated=_conv_fn(self, name, prepared),
          kernel_init=KERNEL_INIT,
          bias_init=BIAS_INIT,
          name=name,
        )(x)
        x = nn.relu(x)
    return x


class VGG16Classifier(nn.Module):
  """Full ImageNet VGG16 (13 convs + fc1, fc2, predictions): the frozen KL teacher.

  Input: RGB (here the tiled grey image) in [0, 1]; ``preprocessing`` selects the weight
  source's normalisation. Returns logits (N, num_classes) in float32.
  """

  width: float = 1.0
  num_classes: int = 1000
  fc_width: int = 4096
  preprocessing: str = "none"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv: ConvPolicy = ConvPolicy()

  @nn.compact
  def __call__(self, x):
    x = vgg_preprocess(x.astype(self.dtype), self.preprocessing)
    x = VGG16Trunk(5, self.width, self.dtype, self.param_dtype, self.conv, name="vgg16")(x)
    x = max_pool(x)
    x = x.reshape(x.shape[0], -1)  # NHWC flatten, as Keras' Flatten.
    dense = lambda n, name: nn.Dense(
      n,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=KERNEL_INIT,
      bias_init=BIAS_INIT,
      name=name,
    )
    fc1, fc2, predictions = VGG16_TOP
    x = nn.relu(dense(scaled(self.fc_width, self.width), fc1)(x))
    x = nn.relu(dense(scaled(self.fc_width, self.width), fc2)(x))
    return dense(self.num_classes, predictions)(x).astype(jnp.float32)


# The generator's class-distribution head: the layers that only feed the KL loss (ab does not
# depend on them). At the paper's size they hold 123.6 M of the generator's 171.2 M parameters.
CLASS_HEAD = ("class_fc1", "class_fc2", "class_fc3")


def without_class_head(variables):
  """Generator variables ``{'params', 'batch_stats'}`` minus the class head's parameters."""
  out = dict(variables)
  out["params"] = {k: v for k, v in variables["params"].items() if k not in CLASS_HEAD}
  return out


class Generator(nn.Module):
  """ChromaGAN colorization network: l3 -> (ab, class distribution).

  ``train`` selects batch statistics (and updates ``batch_stats``) vs the moving averages.
  ``remat_trunk`` recomputes the VGG trunk's activations in the backward pass to save memory
  on accelerators at large batch. ``with_class_head=False`` leaves out the class head
  (:data:`CLASS_HEAD`, needed only by the KL loss): it returns ``(ab, None)``, has no head
  parameters and takes the variables of a full generator after :func:`without_class_head`.
  ``trunk_width`` (None: ``width``) sets the VGG16 trunk's width alone, e.g. 1 to take
  ImageNet VGG16 weights under narrower branches (a deviation: the reference has one width).
  """

  image_size: int = 224
  width: float = 1.0
  num_classes: int = 1000
  fc_width: int = 4096
  vgg_preprocessing: str = "none"
  remat_trunk: bool = False
  trunk_width: float | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv: ConvPolicy = ConvPolicy()
  with_class_head: bool = True

  def _conv(self, channels, kernel, name, prepared, strides=1, act=nn.relu):
    conv = nn.Conv(
      channels,
      (kernel, kernel),
      strides=(strides, strides),
      padding="SAME",
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_general_dilated=_conv_fn(self, name, prepared),
      kernel_init=KERNEL_INIT,
      bias_init=BIAS_INIT,
      name=name,
    )
    return lambda x: act(conv(x))

  def _bn(self, name, train):
    return nn.BatchNorm(
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )

  def _dense(self, features, name, prepared):
    return nn.Dense(
      features,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=KERNEL_INIT,
      bias_init=BIAS_INIT,
      # Batch-1 inference multiplies by a transposed kernel, prepared once (inference_weights).
      dot_general=functools.partial(
        inference_weights.dense_dot_general, prepared=prepared, layer=_layer(self, name)
      ),
      name=name,
    )

  @nn.compact
  def __call__(self, l3, train: bool = False, prepared=None):
    """``prepared``: inference weights prepared once per weight set
    (``inference_weights.inference_filters``), a ``inference_weights.Recording``, or None
    (training)."""
    if l3.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(
        f"Generator expects (N, {self.image_size}, {self.image_size}, 3) inputs, got {l3.shape}"
      )
    w = lambda c: scaled(c, self.width)
    x = vgg_preprocess(l3.astype(self.dtype), self.vgg_preprocessing)
    trunk_cls = nn.remat(VGG16Trunk) if self.remat_trunk else VGG16Trunk
    trunk_width = self.width if self.trunk_width is None else self.trunk_width
    trunk = trunk_cls(
      TRUNK_DEPTH, trunk_width, self.dtype, self.param_dtype, self.conv, name="vgg16"
    )(x, prepared)

    # Global branch: activation before batch norm, as in the reference.
    g = trunk
    for i, stride in enumerate(GLOBAL_STRIDES, start=1):
      g = self._conv(w(512), 3, f"global_conv{i}", prepared, strides=stride)(g)
      g = self._bn(f"global_bn{i}", train)(g)
    g = g.reshape(g.shape[0], -1)  # NHWC flatten.
    # Fusion vector: three linear Dense layers.
    f = g
    for i, n in enumerate((1024, 512, 256), start=1):
      f = self._dense(w(n), f"global_fc{i}", prepared)(f)
    # Class head: two linear Dense layers then a softmax over the classes.
    probs = None
    if self.with_class_head:
      c = g
      for name in CLASS_HEAD[:-1]:
        c = self._dense(scaled(self.fc_width, self.width), name, prepared)(c)
      logits = self._dense(self.num_classes, CLASS_HEAD[-1], prepared)(c)
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    # Mid-level branch.
    m = self._conv(w(512), 3, "mid_conv1", prepared)(trunk)
    m = self._bn("mid_bn1", train)(m)
    m = self._conv(w(256), 3, "mid_conv2", prepared)(m)
    m = self._bn("mid_bn2", train)(m)

    # Fusion: [mid, global vector repeated over the mid-level grid].
    h, wd = m.shape[1:3]
    f = jnp.broadcast_to(f[:, None, None, :], (f.shape[0], h, wd, f.shape[-1]))
    x = jnp.concatenate([m, f.astype(m.dtype)], axis=-1)

    # Decoder.
    x = self._conv(w(256), 1, "dec_conv1", prepared)(x)
    x = self._conv(w(128), 3, "dec_conv2", prepared)(x)
    x = upsample_nearest(x)
    x = self._conv(w(64), 3, "dec_conv3", prepared)(x)
    x = self._conv(w(64), 3, "dec_conv4", prepared)(x)
    x = upsample_nearest(x)
    x = self._conv(w(32), 3, "dec_conv5", prepared)(x)
    x = self._conv(2, 3, "dec_conv6", prepared, act=lambda y: y)(x)
    ab = jax.nn.sigmoid(x.astype(jnp.float32))
    return upsample_nearest(ab), probs


class Critic(nn.Module):
  """Markovian (PatchGAN) critic on (ab, L): LeakyReLU(0.3), no normalisation.

  Having no batch norm keeps each sample's score a function of that sample alone, which the
  per-sample gradient penalty requires.
  """

  width: float = 1.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv: ConvPolicy = ConvPolicy()

  @nn.compact
  def __call__(self, ab, lightness):
    x = jnp.concatenate([lightness, ab], axis=-1).astype(self.dtype)
    for i, (c, s) in enumerate(CRITIC_LAYERS, start=1):
      x = nn.Conv(
        scaled(c, self.width),
        (4, 4),
        strides=(s, s),
        padding="SAME",
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        conv_general_dilated=_conv_fn(self, f"conv{i}", None),
        kernel_init=KERNEL_INIT,
        bias_init=BIAS_INIT,
        name=f"conv{i}",
      )(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    x = nn.Conv(
      1,
      (4, 4),
      padding="SAME",
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_general_dilated=_conv_fn(self, f"conv{len(CRITIC_LAYERS) + 1}", None),
      kernel_init=KERNEL_INIT,
      bias_init=BIAS_INIT,
      name=f"conv{len(CRITIC_LAYERS) + 1}",
    )(x)
    return x.astype(jnp.float32)


def models_from_config(
  model_config, conv: ConvPolicy = XLA, dtype=jnp.float32, inference: bool = False
):
  """(Generator, Critic, VGG16Classifier) built from ``config.model``.

  ``conv`` (built at the entry from ``model_config.conv_impl``: ``runtime.machine.conv_policy``;
  default XLA's, for callers that need only shapes or parameters) applies to all three, resolved
  per network: the generator's convs chosen for training unless ``inference``, the critic's for
  its gradient penalty and the frozen teacher's for its forward pass.
  """
  common = dict(width=model_config.width, dtype=dtype)
  trunk_width = model_config.get("trunk_width")
  gen = Generator(
    image_size=model_config.image_size,
    num_classes=model_config.num_classes,
    fc_width=model_config.fc_width,
    vgg_preprocessing=model_config.vgg_preprocessing,
    remat_trunk=model_config.get("remat_trunk", False),
    trunk_width=trunk_width,
    conv=conv.resolve(dtype, "fwd" if inference else "train"),
    **common,
  )
  critic = Critic(conv=conv.resolve(dtype, "gp"), **common)
  teacher = VGG16Classifier(
    num_classes=model_config.num_classes,
    fc_width=model_config.fc_width,
    preprocessing=model_config.vgg_preprocessing,
    conv=conv.resolve(dtype, "fwd"),
    **{**common, "width": common["width"] if trunk_width is None else trunk_width},
  )
  return gen, critic, teacher
