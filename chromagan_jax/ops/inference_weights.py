"""Inference weights prepared once per weight set; the drop-in conv and dot_general taking them.

Inference prepares what depends on the weights only once per weight set
(:func:`inference_filters`): the Winograd filter transforms, and for batch-1 calls the Dense
kernels transposed (:func:`dense_dot_general`: XLA:CPU's matrix-vector product is faster so).

:func:`conv_with` is the ``conv_general_dilated`` a Flax layer gets: plain convolutions by the
algorithm a chooser names (:mod:`cpu_conv`), everything else by XLA unchanged.
"""

import functools

import jax
from jax import lax

from chromagan_jax.ops import cpu_conv

# Inference-time weights: the Winograd filters G g G^T and, for single-row Dense calls, the
# transposed kernels depend on the weights only, so an inference program takes them as inputs
# (computed once per weight set, :func:`inference_filters`) instead of transforming in every
# call. The network passes them explicitly to each layer, keyed by the layer's params path.
TRANSPOSED = ":T"


class Recording:
  """Given as a network's ``prepared`` weights: records the keys of those it would take
  (``"<layer path>:m<tile>"``, ``"<layer path>:T"``) while the network runs as inference runs,
  so that :func:`inference_filters` prepares exactly those. A pytree without leaves, so that
  it passes through ``nn.remat``."""

  def __init__(self):
    self.keys: set[str] = set()


jax.tree_util.register_pytree_node(Recording, lambda r: ((), r), lambda r, _: r)


def prepared_weight(prepared, layer: str | None, suffix: str):
  """Layer ``layer``'s inference weight ``"<layer><suffix>"`` from ``prepared`` (a dict), None
  when it has none, or recorded (None) when ``prepared`` is a :class:`Recording`."""
  if prepared is None or layer is None:
    return None
  key = layer + suffix
  if isinstance(prepared, Recording):
    prepared.keys.add(key)
    return None
  return prepared.get(key)


def inference_filters(apply_fn, variables, *args) -> dict:
  """The transformed filters of every Winograd layer that ``apply_fn(variables, *args,
  prepared)`` runs, and the transposed kernels of its :func:`dense_dot_general` layers when they
  see one row: the ``prepared`` weights of that network at those input shapes.

  The network is traced abstractly (``jax.eval_shape``, nothing compiled) with a
  :class:`Recording` to learn which layers take which; then one small jitted program prepares
  them from ``variables['params'][<layer path>]['kernel']``.
  """
  recording = Recording()
  jax.eval_shape(lambda v, *a: apply_fn(v, *a, recording), variables, *args)
  keys = sorted(recording.keys)

  def transform(params):
    out = {}
    for key in keys:
      if key.endswith(TRANSPOSED):
        path, prepare = key[: -len(TRANSPOSED)], lambda kernel: kernel.T
      else:
        path, m = key.rsplit(":m", 1)
        prepare = functools.partial(cpu_conv.filter_transform, m=int(m))
      layer = functools.reduce(lambda tree, name: tree[name], path.split("/"), params)
      out[key] = prepare(layer["kernel"])
    return out

  return jax.jit(transform)(variables["params"])


def dispatch(name: str, x, w, strides, pads, prepared=None, layer: str | None = None):
  """:func:`run`, with layer ``layer``'s transformed filters from ``prepared`` when it has them."""
  if not name.startswith("winograd"):
    return cpu_conv.run(name, x, w, strides, pads)
  m = int(name[-1])
  return cpu_conv.run(name, x, w, strides, pads, u=prepared_weight(prepared, layer, f":m{m}"))


def dense_dot_general(
  lhs,
  rhs,
  dimension_numbers,
  precision=None,
  preferred_element_type=None,
  *,
  prepared=None,
  layer: str | None = None,
):
  """A drop-in ``dot_general`` for ``flax.linen.Dense(dot_general=functools.partial(...,
  prepared=, layer=))``: a single-row input is multiplied by the kernel stored transposed in
  ``prepared`` (:data:`TRANSPOSED`: XLA:CPU's matrix-vector product reads a row-major (N, K)
  kernel faster; with two or more rows it is slower, so only single rows take it); everything
  else by ``lax.dot_general`` unchanged."""
  dense = rhs.ndim == 2 and dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ()))
  # Symbolic dimensions (a shape-polymorphic export's batch) are not known to be one row.
  if dense and all(isinstance(d, int) and d == 1 for d in lhs.shape[:-1]):
    kernel_t = prepared_weight(prepared, layer, TRANSPOSED)
    if kernel_t is not None:
      return lax.dot_general(
        lhs,
        kernel_t,
        (((lhs.ndim - 1,), (1,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
      )
  return lax.dot_general(
    lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type
  )


def conv_with(choose, prepared=None, layer: str | None = None):
  """A drop-in ``conv_general_dilated`` (for ``flax.linen.Conv(conv_general_dilated=...)``)
  computing plain convs (:func:`is_plain`) by algorithm ``choose(lhs_shape, rhs_shape, strides,
  pads) -> name`` and everything else by ``lax.conv_general_dilated`` unchanged; Winograd
  layers take layer ``layer``'s transformed filters from ``prepared`` (:func:`dispatch`)."""

  def conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
  ):
    plain = cpu_conv.is_plain(
      lhs,
      rhs,
      dimension_numbers,
      lhs_dilation,
      rhs_dilation,
      feature_group_count,
      batch_group_count,
      preferred_element_type,
    )
    if plain:
      strides = tuple(int(s) for s in window_strides)
      pads = cpu_conv.explicit_pads(lhs.shape, rhs.shape, strides, padding)
      name = choose(tuple(lhs.shape), tuple(rhs.shape), strides, pads)
      if name != "xla":
        return dispatch(name, lhs, rhs, strides, pads, prepared, layer)
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )

  return conv
