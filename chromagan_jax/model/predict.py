"""The generator on uint8 RGB at the network size: what training's sample grids, evaluation
and inference share (one "predict" path, so every consumer sees the same pixels).

Plain functions, not jitted: a caller jits them with its own compiler options, or calls
them inside its own jitted program.
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from chromagan_jax.model import networks
from chromagan_jax.ops import color, inference_weights
from chromagan_jax.ops.conv_policy import ConvPolicy


def generator_from(config, conv: ConvPolicy) -> nn.Module:
  """The head-free inference generator (``with_class_head=False``: ab only) for ``config``: a
  full config, its ``model`` section, a dict of either, a :class:`networks.Generator` (kept as
  it is), or None (the paper's 224x224, width-1 network); its convolutions by ``conv`` (built
  at the entry, ``runtime.machine.conv_policy``), chosen for inference."""
  if config is None:
    model = networks.Generator(conv=conv.resolve(objective="fwd"))
  elif isinstance(config, nn.Module):
    model = config
  else:
    if not isinstance(config, ml_collections.ConfigDict):
      config = ml_collections.ConfigDict(config)
    model_config = config.model if "model" in config else config
    model = networks.models_from_config(model_config, conv, inference=True)[0]
  return model.clone(with_class_head=False)


def predict_ab_fn(model, variables, rgb, filters=None):
  """The generator on uint8 RGB at the network size: its L, then the predicted ab.

  Args:
    model: a :class:`networks.Generator` (static: modules are hashable).
    variables: its ``{'params', 'batch_stats'}``; inference mode (moving averages).
    rgb: uint8 (or 0-255 float) RGB (N, S, S, 3), S = ``model.image_size``; colour inputs
      are colorized from their L alone.
    filters: the model's inference weights prepared once (:func:`inference_filters`): Winograd
      filters transformed, and at batch 1 the Dense kernels transposed.

  Returns:
    (L (N, S, S, 1), ab (N, S, S, 2)), network values in [0, 1].
  """
  lightness, _ = color.rgb_to_net(rgb)
  l3 = color.gray_to_l3(lightness)
  # No prepared weights ({}: no Winograd layer) traces as training does, as it always has.
  return lightness, model.apply(variables, l3, train=False, prepared=filters or None)[0]


def colorize_small_fn(model, variables, rgb, filters=None):
  """The generator on uint8 RGB (N, S, S, 3) at the network size -> uint8 (grey, colour).

  ``grey`` is the input's L alone (a = b = 0: the grey baseline), ``colour`` its L with the
  predicted ab; both (N, S, S, 3). Train-time sample grids and ``evaluate`` use this; the
  full-resolution path (``inference.engine.Colorizer``) jits :func:`predict_ab_fn` and composes
  at the photo's size.
  """
  lightness, ab = predict_ab_fn(model, variables, rgb, filters)
  grey = color.net_to_rgb(lightness, jnp.full_like(ab, color.GREY_AB_NET))
  return color.to_uint8(grey), color.to_uint8(color.net_to_rgb(lightness, ab))


def inference_filters(model, variables, rgb) -> dict:
  """``model``'s Winograd filters for network inputs shaped like ``rgb`` (N, S, S, 3),
  transformed once per weight set rather than in every call, and at N = 1 its Dense kernels
  transposed (inference_weights.inference_filters); {} without Winograd layers."""
  if model.conv.impl == "xla":
    return {}
  apply = lambda v, x, prepared: model.apply(v, x, train=False, prepared=prepared)
  return inference_weights.inference_filters(apply, variables, jnp.zeros(rgb.shape, jnp.float32))
