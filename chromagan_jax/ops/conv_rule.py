"""The fixed per-layer convolution rule: which algorithm (:mod:`cpu_conv`) each layer takes, per
CPU vector ISA, measured once (bench/RESULTS.md) and written down as thresholds.

``conv_impl="measure"`` replaces it by per-machine measurements (:mod:`conv_choice`).
"""

import functools

from chromagan_jax.ops import cpu_conv, inference_weights


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
  names = cpu_conv.candidates(lhs_shape, rhs_shape, strides, pads)
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


def make_conv(
  tile="auto",
  min_channels: int = 64,
  min_im2col_features: int = 8,
  isa: str = "other",
  inference: bool = False,
):
  """:func:`conv_with` the fixed :func:`rule` (``conv_impl`` "winograd", "winograd2/4")."""
  if tile != "auto" and tile not in cpu_conv.TILE_SIZES:
    raise ValueError(
      f"Winograd tile size must be 'auto' or one of {cpu_conv.TILE_SIZES}, got {tile!r}"
    )
  return inference_weights.conv_with(
    functools.partial(
      rule,
      tile=tile,
      min_channels=min_channels,
      min_im2col_features=min_im2col_features,
      isa=isa,
      inference=inference,
    )
  )
