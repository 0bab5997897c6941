"""Tests of chromagan_jax.ops.color against scikit-image and hand-computed CIE formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core
from skimage import color as skcolor

from chromagan_jax.ops import color

# These are tiny arrays: XLA's optimisation passes would cost more than they save.
jax.config.update("jax_disable_most_optimizations", True)

# The 8 corners of the RGB cube: black, primaries, secondaries, white.
CORNERS = np.array(
  [[r, g, b] for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0)], dtype=np.float64
)
LAB_TOL = 0.05  # Lab units.


def _random_rgb(n, seed=0):
  return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 3))


def _cie_lab_to_xyz(lab):
  """Textbook CIE Lab -> XYZ (D65), no clamping of f(Z) (what OpenCV's Lab2RGB does).

  scikit-image's lab2rgb additionally clamps fz = fy - b/200 at 0, which only matters for
  dark, strongly yellow colours that are out of the sRGB gamut anyway.
  """
  delta = 6.0 / 29.0
  fy = (lab[..., 0] + 16.0) / 116.0
  f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
  t = np.where(f > delta, f**3, 3 * delta**2 * (f - 4.0 / 29.0))
  return t * np.array([0.95047, 1.0, 1.08883])


def test_rgb_to_lab_matches_skimage():
  rgb = np.concatenate([CORNERS, _random_rgb(4096)])
  got = np.asarray(color.rgb_to_lab(rgb.astype(np.float32)))
  want = skcolor.rgb2lab(rgb)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=LAB_TOL, rtol=0)


def test_rgb_to_lab_uint8_path():
  rgb8 = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  got = np.asarray(color.rgb_to_lab(rgb8))
  # skimage converts uint8 images to [0, 1] floats itself.
  np.testing.assert_allclose(got, skcolor.rgb2lab(rgb8), atol=LAB_TOL, rtol=0)
  np.testing.assert_allclose(got, color.rgb_to_lab(rgb8.astype(np.float32) / 255.0), atol=1e-4)


def test_lab_to_rgb_matches_skimage_in_gamut():
  rgb = np.concatenate([CORNERS, _random_rgb(4096, seed=2)])
  lab = skcolor.rgb2lab(rgb)
  got = np.asarray(color.lab_to_rgb(lab.astype(np.float32)))
  np.testing.assert_allclose(got, skcolor.lab2rgb(lab), atol=1e-4, rtol=0)


def test_lab_to_rgb_out_of_gamut_is_clipped_like_skimage():
  rng = np.random.default_rng(3)
  n = 8192
  lab = np.stack(
    [rng.uniform(0, 100, n), rng.uniform(-160, 160, n), rng.uniform(-160, 160, n)], axis=-1
  )
  got = np.asarray(color.lab_to_rgb(lab.astype(np.float32)))
  assert np.all(np.isfinite(got)) and got.min() >= 0.0 and got.max() <= 1.0
  # Independent reference: textbook Lab -> XYZ, then scikit-image's XYZ -> sRGB (matrix,
  # gamma and clipping to [0, 1]).
  want = skcolor.xyz2rgb(_cie_lab_to_xyz(lab))
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
  # Where skimage does not clamp fz (see _cie_lab_to_xyz), its lab2rgb agrees directly.
  unclamped = (lab[:, 0] + 16.0) / 116.0 - lab[:, 2] / 200.0 >= 0
  assert unclamped.sum() > n // 2
  with pytest.warns(UserWarning):  # skimage warns about the negative Z values it clamps.
    sk = skcolor.lab2rgb(lab)
  np.testing.assert_allclose(got[unclamped], sk[unclamped], atol=2e-4, rtol=0)


def test_round_trip_rgb_lab_rgb():
  rgb = np.concatenate([CORNERS, _random_rgb(4096, seed=4)]).astype(np.float32)
  back = np.asarray(color.lab_to_rgb(color.rgb_to_lab(rgb)))
  assert np.abs(back - rgb).max() < 1.0 / 255.0
  rgb8 = np.random.default_rng(5).integers(0, 256, (64, 3), dtype=np.uint8)
  back8 = np.asarray(color.to_uint8(color.net_to_rgb(*color.rgb_to_net(rgb8))))
  np.testing.assert_array_equal(back8, rgb8)


def test_eight_bit_encoding_against_skimage():
  """L8 = L*255/100 and a8, b8 = a, b + 128 (OpenCV's uint8 Lab); network = 8-bit / 255."""
  rgb8 = np.concatenate(
    [
      (CORNERS * 255).astype(np.uint8),
      np.random.default_rng(6).integers(0, 256, (256, 3), dtype=np.uint8),
    ]
  )
  sk = skcolor.rgb2lab(rgb8)
  want_l8 = sk[:, :1] * 255.0 / 100.0
  want_ab8 = sk[:, 1:] + 128.0
  lab8 = np.asarray(color.lab_to_lab8(color.rgb_to_lab(rgb8)))
  np.testing.assert_allclose(lab8[:, :1], want_l8, atol=LAB_TOL * 2.55)
  np.testing.assert_allclose(lab8[:, 1:], want_ab8, atol=LAB_TOL)
  lightness, ab = color.rgb_to_net(rgb8)
  assert lightness.shape == (len(rgb8), 1) and ab.shape == (len(rgb8), 2)
  np.testing.assert_allclose(lightness, want_l8 / 255.0, atol=LAB_TOL / 100)
  np.testing.assert_allclose(ab, want_ab8 / 255.0, atol=LAB_TOL / 255)
  # Rounded 8-bit codes of the primaries as cv2.cvtColor(..., COLOR_RGB2Lab) reports them.
  primaries = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
  codes = np.round(np.asarray(color.lab_to_lab8(color.rgb_to_lab(primaries))))
  np.testing.assert_array_equal(
    codes, [[136, 208, 195], [224, 42, 211], [82, 207, 20], [255, 128, 128]]
  )
  # lab8_to_lab inverts lab_to_lab8.
  np.testing.assert_allclose(
    color.lab8_to_lab(np.concatenate([want_l8, want_ab8], -1)), sk, atol=1e-4
  )


def test_net_values_and_clipping():
  lab = np.array([[50.0, -200.0, 200.0], [0.0, 0.0, 0.0], [100.0, 127.0, -128.0]], np.float32)
  lightness, ab = color.lab_to_net(lab)
  np.testing.assert_allclose(lightness[:, 0], [0.5, 0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(ab, [[0.0, 1.0], [128 / 255, 128 / 255], [1.0, 0.0]], atol=1e-6)
  # net_to_lab clips ab to the network range [0, 1], i.e. a, b to [-128, 127].
  lab_back = np.asarray(color.net_to_lab(np.array([[0.3], [0.3]]), np.array([[-0.5, 1.5]] * 2)))
  np.testing.assert_allclose(lab_back, [[30.0, -128.0, 127.0]] * 2, atol=1e-4)
  rgb = np.asarray(color.net_to_rgb(jnp.full((5, 1), 0.7), jnp.array([[-3.0, 4.0]] * 5)))
  assert rgb.min() >= 0.0 and rgb.max() <= 1.0


def test_gray_to_l3_and_to_uint8():
  lightness = np.random.default_rng(7).uniform(size=(2, 4, 4, 1)).astype(np.float32)
  l3 = np.asarray(color.gray_to_l3(lightness))
  assert l3.shape == (2, 4, 4, 3)
  for c in range(3):
    np.testing.assert_array_equal(l3[..., c], lightness[..., 0])
  got = np.asarray(color.to_uint8(jnp.array([-0.1, 0.0, 100 / 255, 0.5, 1.0, 1.2])))
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, [0, 0, 100, 128, 255, 255])


def test_jit_matches_eager():
  rgb = _random_rgb(64, seed=8).astype(np.float32)
  np.testing.assert_allclose(jax.jit(color.rgb_to_lab)(rgb), color.rgb_to_lab(rgb), atol=1e-4)
  lightness, ab = color.rgb_to_net(rgb)
  np.testing.assert_allclose(
    jax.jit(color.net_to_rgb)(lightness, ab), color.net_to_rgb(lightness, ab), atol=1e-5
  )
  rgb8 = (rgb * 255).astype(np.uint8)
  np.testing.assert_allclose(
    jax.jit(color.rgb_to_net)(rgb8)[1], color.rgb_to_net(rgb8)[1], atol=1e-6
  )


# Black, white, the branch thresholds of the sRGB gamma (0.04045) and the cube root, tiny
# values and generic colours.
_GRAD_POINTS = np.array(
  [
    [0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0],
    [0.04045, 0.04045, 0.04045],
    [1e-6, 0.0, 2e-3],
    [0.0, 0.0, 1.0],
    [0.2, 0.5, 0.9],
  ],
  np.float32,
)


def test_gradients_are_finite_including_black():
  g = jax.jit(jax.grad(lambda x: jnp.sum(color.rgb_to_lab(x) * jnp.array([1.0, 0.3, -0.7]))))
  grad_rgb = np.asarray(g(jnp.asarray(_GRAD_POINTS)))
  assert np.all(np.isfinite(grad_rgb)), grad_rgb
  # Lab -> RGB at black (L = 0), at the L threshold (8) and out of gamut.
  lab = jnp.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [50.0, 100.0, -120.0], [100.0, 0, 0]])
  grad_lab = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(color.lab_to_rgb(x))))(lab))
  assert np.all(np.isfinite(grad_lab)), grad_lab
  # Network-value path used in training/evaluation.
  gl, gab = jax.jit(jax.grad(lambda lum, ab: jnp.sum(color.net_to_rgb(lum, ab)), argnums=(0, 1)))(
    jnp.zeros((3, 1)), jnp.full((3, 2), 0.5)
  )
  assert np.all(np.isfinite(gl)) and np.all(np.isfinite(gab))


def test_gradient_matches_finite_differences():
  x0 = np.array([0.2, 0.5, 0.9], np.float64)
  weights = np.array([1.0, 0.3, -0.7])
  got = np.asarray(
    jax.grad(lambda x: jnp.sum(color.rgb_to_lab(x) * jnp.asarray(weights, jnp.float32)))(
      jnp.asarray(x0, jnp.float32)
    )
  )
  h = 1e-5
  fd = [
    (np.sum(skcolor.rgb2lab(x0 + h * e) * weights) - np.sum(skcolor.rgb2lab(x0 - h * e) * weights))
    / (2 * h)
    for e in np.eye(3)
  ]
  np.testing.assert_allclose(got, fd, rtol=2e-3)


# --- Precision: Lab conversion must not follow the default matmul precision ----------------
# CPU computes every float32 dot exactly, whatever the precision setting, so a plain run
# cannot show what an accelerator would do. _eval_like_tpu evaluates a function's jaxpr with
# the operands of every dot_general that is not pinned to Precision.HIGHEST rounded to
# bfloat16: a TPU's one-pass bf16 product (its DEFAULT precision; a GPU's TF32 keeps 10 bits
# instead of 8, a smaller but same-kind error).
_LOW_PRECISION_SETTINGS = ["bfloat16", "tensorfloat32", "BF16_BF16_F32"]


def _pinned(eqn) -> bool:
  precision = eqn.params.get("precision")
  return isinstance(precision, tuple) and all(p == jax.lax.Precision.HIGHEST for p in precision)


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    if isinstance(value, jax_core.ClosedJaxpr):
      yield value
    elif isinstance(value, jax_core.Jaxpr):
      yield jax_core.ClosedJaxpr(value, ())


def _eqns(jaxpr):
  """Every equation of ``jaxpr``, nested jaxprs (jit, custom_jvp, ...) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in _sub_jaxprs(eqn):
      yield from _eqns(sub.jaxpr)


def _eval_like_tpu(jaxpr, consts, *args):
  env = {}

  def read(v):
    return v.val if isinstance(v, jax_core.Literal) else env[v]

  for var, x in [*zip(jaxpr.constvars, consts, strict=True), *zip(jaxpr.invars, args, strict=True)]:
    env[var] = x
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    subs = list(_sub_jaxprs(eqn))
    if eqn.primitive.name == "dot_general" and not _pinned(eqn):
      ins = [jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.asarray(x).dtype) for x in ins]
      outs = eqn.primitive.bind(*ins, **eqn.params)
    elif eqn.primitive.name in ("jit", "pjit"):
      outs = _eval_like_tpu(subs[0].jaxpr, subs[0].consts, *ins)
    else:
      # Any other higher-order primitive would hide its dots from the emulation.
      assert not any(e.primitive.name == "dot_general" for s in subs for e in _eqns(s.jaxpr))
      outs = eqn.primitive.bind(*ins, **eqn.params)
    outs = outs if eqn.primitive.multiple_results else [outs]
    for var, x in zip(eqn.outvars, outs, strict=True):
      env[var] = x
  return [read(v) for v in jaxpr.outvars]


def _net_like_tpu(rgb8):
  closed = jax.make_jaxpr(color.rgb_to_net)(rgb8)
  assert any(e.primitive.name == "dot_general" for e in _eqns(closed.jaxpr))
  return _eval_like_tpu(closed.jaxpr, closed.consts, rgb8)


@pytest.mark.parametrize("setting", _LOW_PRECISION_SETTINGS)
def test_rgb_to_net_under_low_matmul_precision_matches_skimage(setting):
  """The ab targets stay put when a bf16 / TF32 matmul precision is the default.

  Both ways of setting it: the context manager and the jax_default_matmul_precision option.
  """
  rgb8 = np.concatenate(
    [
      (CORNERS * 255).astype(np.uint8),
      np.random.default_rng(9).integers(0, 256, (4096, 3), dtype=np.uint8),
    ]
  )
  sk = skcolor.rgb2lab(rgb8)
  want_l, want_ab = sk[:, :1] / 100.0, (sk[:, 1:] + 128.0) / 255.0
  before = jax.config.jax_default_matmul_precision
  try:
    with jax.default_matmul_precision(setting):
      results = [_net_like_tpu(rgb8), jax.jit(color.rgb_to_net)(rgb8)]
    jax.config.update("jax_default_matmul_precision", setting)
    results.append(_net_like_tpu(rgb8))
  finally:
    jax.config.update("jax_default_matmul_precision", before)
  for lightness, ab in results:
    assert lightness.dtype == ab.dtype == jnp.float32
    np.testing.assert_allclose(lightness, want_l, atol=LAB_TOL / 100, rtol=0)
    np.testing.assert_allclose(ab, want_ab, atol=LAB_TOL / 255, rtol=0)


def test_the_tpu_emulation_shows_what_an_unpinned_product_does():
  """Control for the test above: the same emulation on a plain ``@`` moves Lab by > 0.05."""
  rgb = np.random.default_rng(10).uniform(0.0, 1.0, (4096, 3)).astype(np.float32)

  def unpinned_rgb_to_lab(x):
    xyz = color.srgb_to_linear(x) @ jnp.asarray(color._RGB_TO_XYZ.T)
    f = color._f(xyz / jnp.asarray(color._WHITE_D65))
    return jnp.stack(
      [116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], -1
    )

  with jax.default_matmul_precision("bfloat16"):
    closed = jax.make_jaxpr(unpinned_rgb_to_lab)(rgb)
  (got,) = _eval_like_tpu(closed.jaxpr, closed.consts, rgb)
  err = np.abs(np.asarray(got) - skcolor.rgb2lab(rgb)).max()
  assert err > 4 * LAB_TOL, err
  # Without the emulation, CPU computes the same unpinned product exactly.
  np.testing.assert_allclose(unpinned_rgb_to_lab(rgb), skcolor.rgb2lab(rgb), atol=LAB_TOL)
