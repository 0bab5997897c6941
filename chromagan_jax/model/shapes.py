"""Do weights fit a model? The one shape check, and the one "made for which config".

Every place that puts saved or outside weights into a model checks them here, once, with
:func:`check` against the network that a model config builds: the starting weights of a
training run against ``config.model`` (:mod:`chromagan_jax.weights.initial`), a file being
converted against the model its own first layers imply (``python -m chromagan_jax.convert``)
and a checkpoint or msgpack file against the config stored with it
(:mod:`chromagan_jax.weights.checkpoint`). A resumed train state is compared leaf by leaf
with :func:`check_shapes`. Unchecked, a mismatch surfaces as an anonymous ``dot_general``
error inside the jitted step, or (Orbax) not at all. The error is one
:class:`~chromagan_jax.errors.ShapeError` line naming the weights, the first parameter that
differs (and the file's own layer name, when it has one) and, from :func:`made_for`, the config
the weights were made for.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
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
NETWORKS = ("generator", "critic", "vgg16")
# Why a generator lacks its class head (it cannot tell what it was made for).
HEAD_FREE_REMEDY = (
  "the file holds the head-free generator (enough to colorize); fine-tuning needs the full "
  "one: python -m chromagan_jax.export --format msgpack --with_class_head"
)
# Fills a model config where the shapes asked for do not depend on a field (e.g. the critic's
# on anything but the width, a VGG16 trunk's on the input size): see :func:`implied_model`.
_ANY_MODEL = {
  "image_size": MAP_STRIDE,
  "width": 1.0,
  "num_classes": 1,
  "fc_width": 1,
  "vgg_preprocessing": "none",
}


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


def _keystr(path, layer_names: Mapping[str, str]) -> str:
  """``['params']['dec_conv3'] (file layer 'conv2d_9')['kernel']``: the first key that names
  a layer of ``layer_names`` is followed by the file's own name for it."""
  out, named = "", False
  for key in path:
    out += jax.tree_util.keystr((key,))
    name = getattr(key, "key", None)
    if not named and name in layer_names:
      out += f" (file layer {layer_names[name]!r})"
      named = True
  return out


def check_shapes(
  found, expected, source: str, layer_names: Mapping[str, str] | None = None, **message
) -> None:
  """Raises :class:`ShapeError` at the first leaf of ``expected`` missing or misshaped in
  ``found``, compared by key path.

  Args:
    found: the weights, a pytree of arrays (anything with a ``shape``).
    expected: what the model needs: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g.
      ``jax.eval_shape`` of its init). Extra leaves in ``found`` are ignored.
    source: names the weights (a file, ``'generator of FILE'``), first in the message.
    layer_names: our layer name -> the file's (e.g. ``{'dec_conv3': 'conv2d_9'}``), named in
      the message beside ours.
    **message: ``target``, ``made_for_fields``, ``remedy`` of :func:`mismatch`.
  """
  # Leaves are anything with a shape (arrays, ShapeDtypeStructs, Orbax's array metadata).
  found_flat = dict(jax.tree_util.tree_leaves_with_path(found, is_leaf=_has_shape))
  for path, leaf in jax.tree_util.tree_leaves_with_path(expected):
    got = found_flat.get(path)
    got_shape = None if got is None else tuple(getattr(got, "shape", None) or np.shape(got))
    if got_shape != tuple(leaf.shape):
      detail = (
        f"{_keystr(path, layer_names or {})} expected shape {tuple(leaf.shape)}, "
        f"found {'nothing' if got is None else got_shape}"
      )
      raise mismatch(source, detail, **message)


def abstract_variables(model_config, network: str, with_class_head: bool = True):
  """Shapes of the variables of ``network`` ('generator', 'critic' or 'vgg16', the teacher)
  built from ``model_config`` (``config.model`` or a dict of its fields), as
  ``jax.ShapeDtypeStruct`` pytrees ``{'params', ...}``: nothing is computed.

  ``with_class_head=False``: the generator without :data:`networks.CLASS_HEAD`.
  """
  if not isinstance(model_config, ml_collections.ConfigDict):
    model_config = ml_collections.ConfigDict(dict(model_config))
  gen, critic, teacher = networks.models_from_config(model_config)
  s = model_config.image_size

  def shape(*dims):
    return jax.ShapeDtypeStruct(dims, jnp.float32)

  key = jax.random.key(0)
  if network == "critic":
    return jax.eval_shape(critic.init, key, shape(1, s, s, 2), shape(1, s, s, 1))
  if network == "generator":
    gen = gen.clone(with_class_head=with_class_head)
    return jax.eval_shape(lambda k, x: gen.init(k, x, train=False), key, shape(1, s, s, 3))
  if network == "vgg16":
    return jax.eval_shape(teacher.init, key, shape(1, s, s, 3))
  raise ValueError(f"unknown network {network!r}; expected one of {NETWORKS}")


def implied_model(fields: Mapping[str, Any]) -> dict[str, Any]:
  """A model config of the fields weights were made for (:func:`made_for`), the fields their
  shapes do not fix filled in: what a file is checked against when no config is given."""
  return {**_ANY_MODEL, **fields}


def check(
  variables,
  model_config,
  network: str,
  source: str,
  *,
  target: str | None = None,
  remedy: str | None = None,
  layer_names: Mapping[str, str] | None = None,
  with_class_head: bool = True,
):
  """The one check of weights against a model: raises ShapeError at the first parameter of
  the ``network`` built from ``model_config`` that ``variables`` lack or shape otherwise.

  Args:
    variables: ``{'params', ...}`` as the network's init returns them (NumPy, jax arrays or
      array metadata); VGG16 params without the classifier top (a notop file) are checked
      against the convolutions alone. Extra leaves are ignored.
    model_config: ``config.model`` (or a dict of its fields) that builds the network.
    network: 'generator', 'critic' or 'vgg16'.
    source: names the weights, first in the message (a file, ``'generator of FILE'``).
    target: names ``model_config`` when it is the weights' own (the config stored with
      them, the model their other layers imply); then the message does not add what they
      were made for. None: ``config.model``, and the message ends with the fields the
      weights were made for (:func:`made_for`).
    remedy: what to do, ending the message (default: "use that model config"; for a
      generator without its class head where one is needed, how to export the full one).
    layer_names: our layer name -> the file's, named beside ours.
    with_class_head: False checks the generator without its class head.

  Returns:
    The abstract variables checked against (``jax.ShapeDtypeStruct`` leaves): what to restore.
  """
  expected = abstract_variables(model_config, network, with_class_head)
  params = variables["params"] if "params" in variables else {}
  compared = expected
  if network == "vgg16" and not networks.vgg16_has_top(params):
    compared = {"params": {"vgg16": expected["params"]["vgg16"]}}
  message = {"remedy": remedy}
  if network == "generator" and with_class_head and networks.CLASS_HEAD[0] not in params:
    message.update(target=target or "config.model", remedy=HEAD_FREE_REMEDY)
  elif target is None:
    message.update(target="config.model", made_for_fields=lambda: made_for(variables, source))
  else:
    message.update(target=target)
  # Parameters before batch statistics: the clearer message when both differ.
  for collection in sorted(compared, key=lambda c: c != "params"):
    check_shapes(
      {collection: variables[collection] if collection in variables else {}},
      {collection: compared[collection]},
      source,
      layer_names,
      **message,
    )
  return expected
