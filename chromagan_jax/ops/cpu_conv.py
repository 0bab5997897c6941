"""Convolution algorithms for XLA:CPU in plain JAX: Winograd for 3x3 and 4x4 stride-1 convs,
im2col for the rest.

On CPU both XLA and TensorFlow/oneDNN run a direct 3x3 convolution at about the machine's
matmul peak, so the only way to be much faster is to do fewer multiplications. Winograd's
minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
computes each m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2 multiplies per
channel pair instead of 9 m^2: 2.25x fewer for m=2, 4x fewer for m=4. The per-channel products
become (m+2)^2 batched matmuls, and the tile transforms are cheap additions.

It also fixes XLA:CPU's slowest kernel: the convolution weight gradient (bench/RESULTS.md).
Because everything here is slices, additions and ``dot_general``, autodiff turns the weight
gradient into batched matmuls as well, and second derivatives (the critic's gradient penalty)
work unchanged.

Numerics: the transforms are exact in real arithmetic; in float32 the result differs from a
direct convolution by ~1e-6 (m=2) / ~1e-5 (m=4) relative, like any reordering of the sum.
Use it for float32 on CPU only: accelerators have their own convolution algorithms, and the
m=4 transform constants (up to 8) lose too much precision in bfloat16.

The same construction for 4x4 kernels, F(m x m, 4x4) from (m+3) x (m+3) tiles, computes the
critic's stride-1 conv4 (2.6x fewer multiplies for m=2, 5.2x for m=4).

The other convolutions (the critic's strided 4x4 ones, strided and 1x1 convs) are computed in
training by im2col: the kernel-sized patches are gathered with strided slices and multiplied by
the kernel in one matmul. Its weight gradient is a matmul too, and its second derivatives, which
the critic's gradient penalty needs, were 4-5x faster than XLA's own on the critic's middle
layers (bench/RESULTS.md). Forward-only programs keep XLA's convolution for them (:func:`rule`).

Inference prepares what depends on the weights only once per weight set
(:func:`inference_filters`): the Winograd filter transforms, and for batch-1 calls the Dense
kernels transposed (:func:`dense_dot_general`: XLA:CPU's matrix-vector product is faster so).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Transform matrices (B^T, G, A^T) of F(m x m, r x r), keyed (m, r): Y = A^T [(G g G^T) *
# (B^T d B)] A for an r x r filter g and an (m+r-1) x (m+r-1) input tile d. F(2x2, 3x3) and
# F(4x4, 3x3) are Lavin & Gray's (2016). F(2x2, 4x4) and F(4x4, 4x4) (the critic's 4x4 stride-1
# conv) are the Toom-Cook construction with the points 0, 1, -1, 2 (and -2, 1/2) and infinity:
# A^T and G are Vandermonde rows of the points, B^T solves the identity exactly in rationals, and
# each B^T row is scaled to integers (its inverse scale moved into G, applied to the weights),
# so the data transforms are exact in float32. tests/cpu_conv_test.py checks every identity.
_MATRICES = {
  (2, 3): (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
    [[1, 1, 1, 0], [0, 1, -1, -1]],
  ),
  (4, 3): (
    [
      [4, 0, -5, 0, 1, 0],
      [0, -4, -4, 1, 1, 0],
      [0, 4, -4, -1, 1, 0],
      [0, -2, -1, 2, 1, 0],
      [0, 2, -1, -2, 1, 0],
      [0, 4, 0, -5, 0, 1],
    ],
    [
      [1 / 4, 0, 0],
      [-1 / 6, -1 / 6, -1 / 6],
      [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6],
      [0, 0, 1],
    ],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
  ),
  (2, 4): (
    [[2, -1, -2, 1, 0], [0, 2, 1, -1, 0], [0, -2, 3, -1, 0], [0, -1, 0, 1, 0], [0, 2, -1, -2, 1]],
    [
      [1 / 2, 0, 0, 0],
      [1 / 2, 1 / 2, 1 / 2, 1 / 2],
      [1 / 6, -1 / 6, 1 / 6, -1 / 6],
      [1 / 6, 1 / 3, 2 / 3, 4 / 3],
      [0, 0, 0, 1],
    ],
    [[1, 1, 1, 1, 0], [0, 1, -1, 2, 1]],
  ),
  (4, 4): (
    [
      [4, -8, -5, 10, 1, -2, 0],
      [0, -4, 4, 9, -1, -2, 0],
      [0, -4, 12, -7, -3, 2, 0],
      [0, 2, -3, -4, 3, 2, 0],
      [0, 2, -5, 0, 5, -2, 0],
      [0, 4, 0, -5, 0, 1, 0],
      [0, -4, 8, 5, -10, -1, 2],
    ],
    [
      [1 / 4, 0, 0, 0],
      [1 / 6, 1 / 6, 1 / 6, 1 / 6],
      [1 / 18, -1 / 18, 1 / 18, -1 / 18],
      [1 / 72, 1 / 36, 1 / 18, 1 / 9],
      [1 / 120, -1 / 60, 1 / 30, -1 / 15],
      [32 / 45, 16 / 45, 8 / 45, 4 / 45],
      [0, 0, 0, 1 / 2],
    ],
    [
      [1, 1, 1, 1, 1, 1, 0],
      [0, 1, -1, 2, -2, 1 / 2, 0],
      [0, 1, 1, 4, 4, 1 / 4, 0],
      [0, 1, -1, 8, -8, 1 / 8, 1],
    ],
  ),
}
TILE_SIZES = (2, 4)  # m: output tiles of m x m.
KERNEL_SIZES = (3, 4)  # r: square stride-1 kernels Winograd computes.
_NHWC = ("NHWC", "HWIO", "NHWC")
_SAME_3X3_PADS = ((1, 1), (1, 1))


# XLA:CPU's YNNPACK fusions off for inference programs: XLA's own matmuls run the Winograd
# products and the 1x1/im2col convs faster there (bench/RESULTS.md); the train step keeps XLA's
# defaults. Accelerators ignore xla_cpu_* options.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def cpu_compiler_options(xla_flags: str) -> dict[str, str]:
  """:data:`CPU_COMPILER_OPTIONS` less those the ``XLA_FLAGS`` string sets (the user's choice)."""
  return {k: v for k, v in CPU_COMPILER_OPTIONS.items() if f"--{k}" not in xla_flags}


def _combine(matrix, terms):
  """``[sum_u matrix[i, u] * terms[u] for i]`` with the zero coefficients skipped."""
  out = []
  for row in np.asarray(matrix, np.float64):
    acc = None
    for coef, term in zip(row, terms, strict=True):
      if coef == 0:
        continue
      term = term if coef == 1 else term * float(coef)
      acc = term if acc is None else acc + term
    out.append(acc)
  return out


def _matrices(m: int, r: int):
  if m not in TILE_SIZES:
    raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
  if r not in KERNEL_SIZES:
    raise ValueError(f"Winograd kernel size must be one of {KERNEL_SIZES}, got {r}")
  return _MATRICES[m, r]


def filter_transform(w, m: int):
  """Winograd filter transform ``G g G^T`` of HWIO r x r ``w`` -> ((m+r-1)^2, Cin, Cout).

  It depends on the weights only: inference can compute it once per weight set
  (:func:`inference_filters`) instead of in every call.
  """
  r = w.shape[0]
  g = _matrices(m, r)[1]
  a = m + r - 1
  gw = _combine(g, [w[i] for i in range(r)])  # a x (r, Cin, Cout)
  u = jnp.stack([jnp.stack(_combine(g, [q[j] for j in range(r)])) for q in gw])
  return u.reshape(a * a, *w.shape[2:])


def winograd_conv(x, w, m: int, pads, u=None):
  """Stride-1 convolution of NHWC ``x`` with HWIO r x r ``w`` (r in :data:`KERNEL_SIZES`),
  zero padding ``pads`` ((top, bottom), (left, right)), by Winograd F(m x m, r x r).

  ``u``: ``filter_transform(w, m)`` when already computed (``w`` is then not read: None will do).
  """
  if u is None and w.shape[0] != w.shape[1]:
    raise ValueError(f"Winograd needs a square kernel, got {w.shape[:2]}")
  r = w.shape[0] if u is None else math.isqrt(u.shape[0]) - m + 1  # u: ((m + r - 1)^2, ...).
  bt, _, at = _matrices(m, r)
  a = m + r - 1
  n, h, wd, _ = x.shape
  (top, bottom), (left, right) = pads
  ho, wo = h + top + bottom - r + 1, wd + left + right - r + 1
  th, tw = -(-ho // m), -(-wo // m)
  # The given padding, then zeros at the bottom/right for whole tiles.
  xp = jnp.pad(
    x, ((0, 0), (top, th * m + r - 1 - h - top), (left, tw * m + r - 1 - wd - left), (0, 0))
  )

  # Input transform B^T d B, separably: rows, then columns of every tile. Stacking each stage
  # lets XLA write one contiguous buffer per stage instead of recomputing per output.
  rows = [xp[:, i : i + m * th : m] for i in range(a)]  # (N, th, W', C) each.
  t = jnp.stack(_combine(bt, rows))  # (a, N, th, W', C)
  cols = [t[:, :, :, v : v + m * tw : m] for v in range(a)]
  v = jnp.stack(_combine(bt, cols), axis=1)  # (a, a, N, th, tw, C)
  v = v.reshape(a * a, n * th * tw, -1)

  # Filter transform G g G^T.
  u = (filter_transform(w, m) if u is None else u).astype(x.dtype)

  # (m+r-1)^2 independent channel matmuls.
  prod = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))  # (a*a, P, Cout)
  prod = prod.reshape(a, a, n, th, tw, -1)

  # Output transform A^T M A, then the m x m tiles back into the image.
  rr = _combine(at, [prod[i] for i in range(a)])  # m x (a, N, th, tw, Cout)
  y = jnp.stack([jnp.stack(_combine(at, [ri[j] for j in range(a)]), axis=3) for ri in rr], 2)
  y = y.reshape(n, th * m, tw * m, -1)  # (N, th, m, tw, m, Cout) -> image.
  return y[:, :ho, :wo]


def conv3x3(x, w, m: int = 4, u=None):
  """'SAME' 3x3 stride-1 convolution of NHWC ``x`` with HWIO ``w`` by Winograd F(m x m, 3x3)."""
  return winograd_conv(x, w, m, _SAME_3X3_PADS, u=u)


def im2col_conv(x, w, strides, padding):
  """NHWC x HWIO convolution as one matmul over gathered kernel patches (any size and stride)."""
  kh, kw, cin, cout = w.shape
  n, h, wd, _ = x.shape
  sh, sw = strides
  pads = (
    lax.padtype_to_pads((h, wd), (kh, kw), strides, padding)
    if isinstance(padding, str)
    else padding
  )
  xp = jnp.pad(x, ((0, 0), *[tuple(p) for p in pads], (0, 0)))
  ho, wo = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
  cols = [
    xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = jnp.stack(cols, axis=3).reshape(n * ho * wo, kh * kw * cin)
  return (patches @ w.reshape(kh * kw * cin, cout)).reshape(n, ho, wo, cout)


# Algorithms by name: "xla" (lax.conv_general_dilated), "winograd2" / "winograd4" (F(2x2) /
# F(4x4, 3x3), 3x3 stride-1 'SAME' convs only), "im2col" (any kernel, stride and padding).
ALGORITHMS = ("xla", "winograd2", "winograd4", "im2col")

# im2col gathers kh*kw copies of the input: beyond this many patch elements (1 GiB of float32)
# it is not a candidate.
_MAX_PATCH_ELEMENTS = 1 << 28


def explicit_pads(lhs_shape, rhs_shape, strides, padding) -> tuple:
  """``padding`` ('SAME', 'VALID' or pairs) of an NHWC x HWIO conv as ((top, bottom), (l, r))."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def is_plain(
  lhs,
  rhs,
  dimension_numbers,
  lhs_dilation=None,
  rhs_dilation=None,
  feature_group_count=1,
  batch_group_count=1,
  preferred_element_type=None,
) -> bool:
  """True for the convs this module computes: float32 NHWC x HWIO, no dilation nor groups."""
  if lhs.ndim != 4 or dimension_numbers is None:
    return False
  want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  return (
    lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == want
    and all(d == 1 for d in (lhs_dilation or (1, 1)))
    and all(d == 1 for d in (rhs_dilation or (1, 1)))
    and feature_group_count == 1
    and batch_group_count == 1
    and preferred_element_type is None
    and lhs.dtype == jnp.float32
    and rhs.dtype == jnp.float32
  )


def candidates(lhs_shape, rhs_shape, strides, pads) -> tuple[str, ...]:
  """The :data:`ALGORITHMS` that can compute this plain conv (``pads`` explicit); xla first."""
  names = ["xla"]
  (sh, sw), (kh, kw, cin, _) = strides, rhs_shape
  out_h = (lhs_shape[1] + sum(pads[0]) - kh) // sh + 1
  out_w = (lhs_shape[2] + sum(pads[1]) - kw) // sw + 1
  square = kh == kw and kh in KERNEL_SIZES
  if square and (sh, sw) == (1, 1) and min(out_h, out_w) >= 1 and min(min(pads)) >= 0:
    names += ["winograd2", "winograd4"]
  if lhs_shape[0] * out_h * out_w * kh * kw * cin <= _MAX_PATCH_ELEMENTS:
    names.append("im2col")
  return tuple(names)


def run(name: str, x, w, strides, pads, u=None):
  """Plain NHWC x HWIO conv ``x * w`` by algorithm ``name``; ``u``: pre-transformed filters."""
  if name == "xla":
    return lax.conv_general_dilated(x, w, tuple(strides), pads, dimension_numbers=_NHWC)
  if name in ("winograd2", "winograd4"):
    return winograd_conv(x, w, int(name[-1]), pads, u=u)
  if name == "im2col":
    return im2col_conv(x, w, tuple(strides), pads)
  raise ValueError(f"unknown convolution algorithm {name!r}; expected one of {ALGORITHMS}")


def isa_of(flags) -> str:
  """The vector ISA :func:`choose_tile` distinguishes, from a CPU's ISA flags (/proc/cpuinfo's
  ``flags``): "avx512" (AVX-512 F), "avx2" or "other"."""
  return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


# The fewest 4x4 tiles per call for which F(4x4) beats F(2x2) when the filters are transformed in
# every call (training): m=4's (m+2)^2 Cin Cout transformed filters cost the same whatever the
# batch, so few tiles do not amortise them. Per ISA, measured (bench/RESULTS.md).
MIN_TILES = {"avx512": 256, "avx2": 512, "other": 512}
# With the filters transformed once (inference) only the tiles count: F(4x4) does fewer multiplies
# and moves less data per output than F(2x2), and loses only where the tiles are mostly padding.
PRE_MIN_TILES = 16


def tiles_4x4(batch: int, height: int, width: int) -> int:
  """4x4 output tiles of a call: what the tile-size and 4x4-kernel thresholds count."""
  return batch * (-(-height // 4)) * (-(-width // 4))


def choose_tile(
  batch: int,
  height: int,
  width: int,
  min_tiles: int | None = None,
  isa: str = "other",
  inference: bool = False,
) -> int:
  """F(4x4) when there are enough 4x4 tiles to amortise its larger filter transform, else F(2x2).

  ``min_tiles``: None picks :data:`PRE_MIN_TILES` when the filters come transformed
  (``inference``), else :data:`MIN_TILES` of the ``isa``.
  """
  if min_tiles is None:
    min_tiles = PRE_MIN_TILES if inference else MIN_TILES[isa]
  return 4 if tiles_4x4(batch, height, width) >= min_tiles else 2


# Stride-1 4x4 convs (the critic's conv4) by Winograd: with AVX-512, from this many 4x4 output
# tiles per call (below, XLA's direct conv is faster; bench/RESULTS.md). On AVX2 the rule keeps
# im2col there (not measured with Winograd).
MIN_4X4_TILES = 64


def _winograd_4x4(lhs_shape, isa: str) -> bool:
  return isa == "avx512" and tiles_4x4(*lhs_shape[:3]) >= MIN_4X4_TILES


def rule(
  lhs_shape,
  rhs_shape,
  strides,
  pads,
  tile="auto",
  min_channels=64,
  min_im2col_features=8,
  isa: str = "other",
  inference: bool = False,
) -> str:
  """The fixed per-layer rule (measured per ISA: bench/RESULTS.md); ``isa``: the CPU's
  (:func:`isa_of`); ``inference``: whether the layer runs forward only with its Winograd filters
  transformed once (:func:`inference_filters`).

  Stride-1 3x3 convs (the generator's 'SAME' layers) and, with AVX-512 and at least
  :data:`MIN_4X4_TILES` tiles, stride-1 4x4 convs (the critic's conv4) with at least
  ``min_channels`` input and output channels: Winograd with tile size ``tile`` (2, 4 or
  "auto": :func:`choose_tile`); in training, other kernel sizes and strides (the critic's
  strided 4x4 convs, strided and 1x1 convs) with at least ``min_im2col_features`` output
  channels: im2col, whose gradients are plain matmuls; everything else: XLA. That is thin 3x3
  layers (the tile transforms cost more than they save), the 1-channel critic output, at
  inference the strided and 1x1 convs (XLA's forward is as fast), and with AVX-512 the
  stride-1 4x4 convs Winograd does not take. Not right for every layer on every CPU, which is
  why ``conv_impl="measure"`` exists (conv_policy.py).
  """
  names = candidates(lhs_shape, rhs_shape, strides, pads)
  if "winograd2" in names:
    thick = min(rhs_shape[2:]) >= min_channels
    if thick and (rhs_shape[0] == 3 or _winograd_4x4(lhs_shape, isa)):
      m = choose_tile(*lhs_shape[:3], isa=isa, inference=inference) if tile == "auto" else tile
      return f"winograd{m}"
    if rhs_shape[0] == 3:
      return "xla"
  im2col = "im2col" in names and rhs_shape[3] >= min_im2col_features and not inference
  # A thin stride-1 kernel larger than 1x1 gathers kh*kw overlapping copies of its input; with
  # AVX-512 XLA's direct convolution is faster there (bench/RESULTS.md).
  overlapping = tuple(strides) == (1, 1) and tuple(rhs_shape[:2]) != (1, 1)
  if overlapping and isa == "avx512":
    im2col = False
  return "im2col" if im2col else "xla"


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
        prepare = functools.partial(filter_transform, m=int(m))
      layer = functools.reduce(lambda tree, name: tree[name], path.split("/"), params)
      out[key] = prepare(layer["kernel"])
    return out

  return jax.jit(transform)(variables["params"])


def dispatch(name: str, x, w, strides, pads, prepared=None, layer: str | None = None):
  """:func:`run`, with layer ``layer``'s transformed filters from ``prepared`` when it has them."""
  if not name.startswith("winograd"):
    return run(name, x, w, strides, pads)
  m = int(name[-1])
  return run(name, x, w, strides, pads, u=prepared_weight(prepared, layer, f":m{m}"))


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
    plain = is_plain(
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
      pads = explicit_pads(lhs.shape, rhs.shape, strides, padding)
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


def make_conv(
  tile="auto",
  min_channels: int = 64,
  min_im2col_features: int = 8,
  isa: str = "other",
  inference: bool = False,
):
  """:func:`conv_with` the fixed :func:`rule` (``conv_impl`` "winograd", "winograd2/4")."""
  if tile != "auto" and tile not in TILE_SIZES:
    raise ValueError(f"Winograd tile size must be 'auto' or one of {TILE_SIZES}, got {tile!r}")
  return conv_with(
    functools.partial(
      rule,
      tile=tile,
      min_channels=min_channels,
      min_im2col_features=min_im2col_features,
      isa=isa,
      inference=inference,
    )
  )
