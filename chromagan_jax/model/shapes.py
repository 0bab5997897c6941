"""Do weights fit a model? The one shape checker and the one "made for which config".

Every place that puts saved or outside weights into a model checks them here first: weight
files and converted directories (``config.init.vgg16``, ``.generator``, ``.critic`` and
``python -m chromagan_jax.convert``, see :mod:`chromagan_jax.weights.port`) and training
checkpoints on resume (:mod:`chromagan_jax.weights.checkpoint`).
Unchecked, a mismatch surfaces as an
anonymous ``dot_general`` error inside the jitted step, or (Orbax) not at all. The error is
one :class:`~chromagan_jax.errors.ShapeError` line naming the weights, the first parameter
that differs and, from :func:`made_for`, the config the weights were made for.

This module sits below both :mod:`checkpoint` and :mod:`weights` (which reads checkpoints).
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from chromagan_jax.errors import ConversionError, ShapeError
from chromagan_jax.model import networks

# Channels of VGG16's first and last convolutions at width 1 (networks.VGG16_BLOCKS): the
# width multiplier is read from the first, the flattened map's depth is the last.
_VGG_FIRST_CHANNELS = networks.VGG16_BLOCKS[0][1]
_VGG_LAST_CHANNELS = networks.VGG16_BLOCKS[-1][1]
# The square map the first dense layer flattens is image_size / 32 on a side: the trunk's
# three pools and the global branch's two stride-2 convs (generator), or five pools (VGG16).
MAP_STRIDE = 32
# The generator's global-branch convolutions' channels at width 1 (its branches' width).
_GLOBAL_CHANNELS = 512
# The critic's first convolution's channels at width 1.
_CRITIC_FIRST_CHANNELS = networks.CRITIC_LAYERS[0][0]
FIELD_ORDER = ("image_size", "width", "trunk_width", "num_classes", "fc_width")


def _params(variables) -> Mapping[str, Any]:
  return variables["params"] if "params" in variables else variables


def made_for(variables, source: str = "weights") -> dict[str, Any]:
  """The ``config.model`` fields that generator, VGG16 classifier or critic weights fit.

  Read from the shapes alone, so it works for any source (the authors' h5, a converted or a
  trained checkpoint). ``variables``: ``{'params', ...}`` or the params themselves, NumPy or
  ``jax.ShapeDtypeStruct`` leaves. Returns ``image_size``, ``width``, ``num_classes`` and
  ``fc_width`` for a generator or a VGG16 classifier (and ``trunk_width`` for a generator
  whose VGG16 trunk is wider than its branches), ``width`` alone for a critic or a VGG16
  trunk. ``source`` names the weights in errors.
  """
  params = _params(variables)
  if "conv1" in params:  # The critic.
    return {"width": params["conv1"]["kernel"].shape[3] / _CRITIC_FIRST_CHANNELS}
  width = params["vgg16"]["block1_conv1"]["kernel"].shape[3] / _VGG_FIRST_CHANNELS
  fields = {}
  if "global_fc1" in params:  # The generator: its branches may be narrower than its trunk.
    first, fc, classes = "global_fc1", "class_fc1", "class_fc3"
    trunk_width = width
    width = params["global_conv1"]["kernel"].shape[3] / _GLOBAL_CHANNELS
    if width != trunk_width:
      fields["trunk_width"] = trunk_width
  elif "fc1" in params:  # VGG16 with its classifier top.
    first, fc, classes = "fc1", "fc1", "predictions"
  else:  # A trunk: any input size.
    return {"width": width}
  channels = networks.scaled(_VGG_LAST_CHANNELS, width)
  rows = params[first]["kernel"].shape[0]
  side = math.isqrt(max(1, rows // channels))
  if rows != side * side * channels:
    raise ConversionError(
      f"{source}: {first}: expected kernel (H*W*{channels}, F) over a square feature map, "
      f"found {tuple(params[first]['kernel'].shape)}"
    )
  return {
    "image_size": MAP_STRIDE * side,
    "width": width,
    **fields,
    "num_classes": int(params[classes]["kernel"].shape[1]),
    "fc_width": int(round(params[fc]["kernel"].shape[1] / width)),
  }


def describe(fields: Mapping[str, Any]) -> str:
  """'image_size=224, width=1.0, num_classes=1000, fc_width=4096' (known fields in order)."""
  return ", ".join(f"{k}={fields[k]}" for k in FIELD_ORDER if k in fields)


def mismatch(
  source: str,
  detail: str,
  *,
  target: str = "config.model",
  made_for_fields: Callable[[], Mapping[str, Any]] | None = None,
  remedy: str | None = None,
) -> ShapeError:
  """The one message: ``<source> does not fit <target>: <detail>; they were made for <fields>:
  <remedy>``.

  ``made_for_fields`` (called only here) gives the fields the weights were made for, and
  ``remedy`` (default "use that model config") what to do; without ``made_for_fields`` the
  message ends with ``remedy`` alone, if given.
  """
  msg = f"{source} does not fit {target}: {detail}"
  if made_for_fields is not None:
    msg += f"; they were made for {describe(made_for_fields())}: "
    msg += remedy or "use that model config"
  elif remedy:
    msg += f"; {remedy}"
  return ShapeError(msg)


def _has_shape(x) -> bool:
  return hasattr(x, "shape")


def check_shapes(found, expected, source: str, **message) -> None:
  """Raises :class:`ShapeError` at the first leaf of ``expected`` missing or misshaped in
  ``found``, compared by key path.

  Args:
    found: the weights, a pytree of arrays (anything with a ``shape``).
    expected: what the model needs: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g.
      ``jax.eval_shape`` of its init). Extra leaves in ``found`` are ignored.
    source: names the weights (a file, ``'generator of FILE'``), first in the message.
    **message: ``target``, ``made_for_fields``, ``remedy`` of :func:`mismatch`.
  """
  # Leaves are anything with a shape (arrays, ShapeDtypeStructs, Orbax's array metadata).
  found_flat = dict(jax.tree_util.tree_leaves_with_path(found, is_leaf=_has_shape))
  for path, leaf in jax.tree_util.tree_leaves_with_path(expected):
    got = found_flat.get(path)
    got_shape = None if got is None else tuple(getattr(got, "shape", None) or np.shape(got))
    if got_shape != tuple(leaf.shape):
      detail = (
        f"{jax.tree_util.keystr(path)} expected shape {tuple(leaf.shape)}, "
        f"found {'nothing' if got is None else got_shape}"
      )
      raise mismatch(source, detail, **message)
