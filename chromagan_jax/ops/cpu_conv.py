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

Which layer takes which algorithm is :mod:`conv_rule` (the fixed per-ISA rule) or
:mod:`conv_choice` (measured); the drop-in convolution for Flax layers and the weights
inference prepares once are :mod:`inference_weights`.
"""

import math

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
