"""Convolution algorithms for XLA:CPU in plain JAX: Winograd for 3x3 convs, im2col for the rest.

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

The other convolutions (the critic's 4x4 ones, strided and 1x1 convs) are computed by im2col:
the kernel-sized patches are gathered with strided slices and multiplied by the kernel in one
matmul. Its weight gradient is a matmul too, and its second derivatives, which the critic's
gradient penalty needs, were 4-5x faster than XLA's own on the critic's middle layers
(bench/RESULTS.md).
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

# Transform matrices of F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray, 2016): Y = A^T [(G g G^T) *
# (B^T d B)] A for a 3x3 filter g and an (m+2)x(m+2) input tile d.
_MATRICES = {
  2: (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
    [[1, 1, 1, 0], [0, 1, -1, -1]],
  ),
  4: (
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
}
TILE_SIZES = tuple(_MATRICES)
_NHWC = ("NHWC", "HWIO", "NHWC")


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


def conv3x3(x, w, m: int = 4):
  """'SAME' 3x3 stride-1 convolution of NHWC ``x`` with HWIO ``w`` by Winograd F(m x m, 3x3)."""
  if m not in _MATRICES:
    raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
  bt, g, at = _MATRICES[m]
  a = m + 2
  n, h, wd, _ = x.shape
  th, tw = -(-h // m), -(-wd // m)
  # Zero padding: 1 on top/left ('SAME' for 3x3), enough at the bottom/right for whole tiles.
  xp = jnp.pad(x, ((0, 0), (1, th * m - h + 1), (1, tw * m - wd + 1), (0, 0)))

  # Input transform B^T d B, separably: rows, then columns of every tile. Stacking each stage
  # lets XLA write one contiguous buffer per stage instead of recomputing per output.
  rows = [xp[:, u : u + m * th : m] for u in range(a)]  # (N, th, W', C) each.
  t = jnp.stack(_combine(bt, rows))  # (a, N, th, W', C)
  cols = [t[:, :, :, v : v + m * tw : m] for v in range(a)]
  v = jnp.stack(_combine(bt, cols), axis=1)  # (a, a, N, th, tw, C)
  v = v.reshape(a * a, n * th * tw, -1)

  # Filter transform G g G^T.
  gw = _combine(g, [w[i] for i in range(3)])  # a x (3, Cin, Cout)
  u = jnp.stack([jnp.stack(_combine(g, [r[j] for j in range(3)])) for r in gw])
  u = u.reshape(a * a, *w.shape[2:]).astype(x.dtype)

  # (m+2)^2 independent channel matmuls.
  prod = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))  # (a*a, P, Cout)
  prod = prod.reshape(a, a, n, th, tw, -1)

  # Output transform A^T M A, then the m x m tiles back into the image.
  r = _combine(at, [prod[i] for i in range(a)])  # m x (a, N, th, tw, Cout)
  y = jnp.stack([jnp.stack(_combine(at, [ri[j] for j in range(a)]), axis=3) for ri in r], 2)
  y = y.reshape(n, th * m, tw * m, -1)  # (N, th, m, tw, m, Cout) -> image.
  return y[:, :h, :wd]


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


def _is_same_3x3(rhs, window_strides, padding) -> bool:
  if rhs.shape[:2] != (3, 3) or tuple(window_strides) != (1, 1):
    return False
  return padding == "SAME" or (
    not isinstance(padding, str) and [tuple(p) for p in padding] == [(1, 1), (1, 1)]
  )


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
  if lhs.ndim != 4 or dimension_numbers is None:
    return False
  want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == want


# im2col gathers kh*kw copies of the input: beyond this many patch elements (1 GiB of float32)
# XLA's own convolution is used instead.
_MAX_PATCH_ELEMENTS = 1 << 28


def choose_tile(batch: int, height: int, width: int, min_tiles: int = 512) -> int:
  """F(4x4) when there are enough 4x4 tiles to amortise its larger filter transform, else F(2x2).

  The filter transform costs (m+2)^2 * Cin * Cout per call whatever the batch, the matmuls
  (m+2)^2 * Cin * Cout per tile: with few tiles (small feature maps at small batch) m=4's
  36 transformed filters cost more than its fewer multiplies save (measured on 2 CPU cores,
  bench/RESULTS.md).
  """
  return 4 if batch * (-(-height // 4)) * (-(-width // 4)) >= min_tiles else 2


def make_conv(tile="auto", min_channels: int = 64, min_im2col_features: int = 8):
  """A drop-in ``conv_general_dilated`` for ``flax.linen.Conv(conv_general_dilated=...)``.

  For NHWC float32 convolutions without dilation or groups:
    * 3x3 stride-1 'SAME' ones with at least ``min_channels`` input and output channels use
      :func:`conv3x3` with tile size ``tile`` (2, 4 or "auto": :func:`choose_tile`);
    * other kernel sizes and strides (the critic's 4x4 convs, strided and 1x1 convs) with at
      least ``min_im2col_features`` output channels use :func:`im2col_conv`.
  Everything else goes to ``lax.conv_general_dilated`` unchanged: thin 3x3 layers (the
  3-channel first one, the 64->32 and 32->2 decoder ones), where the tile transforms cost more
  than they save and a full-resolution im2col is memory-bound (bench/conv_layers.py: im2col
  ran dec_conv5's forward at half XLA's speed), and the 1-channel critic output.
  """
  if tile != "auto" and tile not in _MATRICES:
    raise ValueError(f"Winograd tile size must be 'auto' or one of {TILE_SIZES}, got {tile!r}")

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
    plain = (
      _is_nhwc(lhs, rhs, dimension_numbers)
      and all(d == 1 for d in (lhs_dilation or (1, 1)))
      and all(d == 1 for d in (rhs_dilation or (1, 1)))
      and feature_group_count == 1
      and batch_group_count == 1
      and preferred_element_type is None
      and lhs.dtype == jnp.float32
      and rhs.dtype == jnp.float32
    )
    same_3x3 = plain and _is_same_3x3(rhs, window_strides, padding)
    if same_3x3 and min(rhs.shape[2], rhs.shape[3]) >= min_channels:
      m = choose_tile(*lhs.shape[:3]) if tile == "auto" else tile
      return conv3x3(lhs, rhs, m)
    (sh, sw), (kh, kw, cin, _) = window_strides, rhs.shape
    patch_elements = lhs.shape[0] * -(-lhs.shape[1] // sh) * -(-lhs.shape[2] // sw) * kh * kw * cin
    if (
      plain
      and not same_3x3
      and rhs.shape[3] >= min_im2col_features
      and patch_elements <= _MAX_PATCH_ELEMENTS
      and (
        isinstance(padding, str) and padding in ("SAME", "VALID") or not isinstance(padding, str)
      )
    ):
      return im2col_conv(lhs, rhs, tuple(window_strides), padding)
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
