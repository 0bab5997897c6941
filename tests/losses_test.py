"""Tests of chromagan_jax.model.losses against closed forms, finite differences and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from chromagan_jax.configs import default
from chromagan_jax.model import losses, networks

jax.config.update("jax_disable_most_optimizations", True)

N, H, W = 3, 8, 8


def _uniform(shape, seed):
  return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def _distributions(shape, seed, zeros=0):
  """Random rows on the simplex; the first ``zeros`` entries of every row are exactly 0."""
  p = np.random.default_rng(seed).gamma(0.3, size=shape)
  p[..., :zeros] = 0.0
  return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def test_reference_weights_in_default_config():
  loss = default.get_config().loss
  assert (loss.mse, loss.kl, loss.adv) == (1.0, 0.003, -0.1)
  assert (loss.real, loss.fake, loss.gp) == (-1.0, 1.0, 10.0)


# --- gradient penalty ---------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0, 2.5])
def test_gradient_penalty_of_linear_critic_is_closed_form(scale):
  """D(ab, L) = sum(Wt * ab) + g(L): grad_ab = Wt for every sample, GP = (1 - ||Wt||)^2."""
  rng = np.random.default_rng(0)
  weight = rng.normal(size=(H, W, 2)).astype(np.float32)
  weight = weight / np.linalg.norm(weight) * scale

  def critic(ab, lightness):
    return jnp.sum(ab * weight, axis=(1, 2, 3)) + jnp.sum(jnp.sin(lightness), axis=(1, 2, 3))

  eps = _uniform((N,), 1)
  args = (_uniform((N, H, W, 2), 2), _uniform((N, H, W, 2), 3), _uniform((N, H, W, 1), 4))
  gp = losses.gradient_penalty(critic, *args, eps)
  np.testing.assert_allclose(gp, (1.0 - scale) ** 2, rtol=1e-5, atol=1e-6)
  # Its gradient w.r.t. the critic's weights is finite, even where grad_ab vanishes
  # (scale 0, where sqrt is not differentiable): d/dWt (1 - ||Wt||)^2 = -2 (1 - ||Wt||) Wt/||Wt||.
  grad = jax.grad(
    lambda wt: losses.gradient_penalty(lambda ab, lum: jnp.sum(ab * wt, axis=(1, 2, 3)), *args, eps)
  )(jnp.asarray(weight))
  assert np.all(np.isfinite(grad))
  if scale > 0:
    np.testing.assert_allclose(
      grad, -2 * (1 - scale) * weight / scale, rtol=1e-4, atol=1e-6 * scale
    )


def test_gradient_penalty_interpolates_only_ab_with_per_sample_eps():
  """Quadratic critic D_i = sum(c * L_i * ab_i + ab_i^2 / 2): grad_i = c * L_i + ab_hat_i."""
  c = 0.7
  ab_real, ab_fake = _uniform((N, H, W, 2), 5), _uniform((N, H, W, 2), 6)
  lightness = _uniform((N, H, W, 1), 7)
  eps = np.array([0.0, 0.25, 1.0], np.float32)

  def critic(ab, lum):
    return jnp.sum(c * lum * ab + 0.5 * ab**2, axis=(1, 2, 3))

  gp = losses.gradient_penalty(critic, ab_real, ab_fake, lightness, eps)
  e = eps[:, None, None, None]
  ab_hat = e * ab_real + (1 - e) * ab_fake  # eps = 0 gives fake, eps = 1 real
  grad = c * lightness + ab_hat
  norms = np.sqrt(np.sum(grad.reshape(N, -1).astype(np.float64) ** 2, axis=-1))
  np.testing.assert_allclose(gp, np.mean((1 - norms) ** 2), rtol=1e-5)
  # A single shared eps (or a swapped real/fake) gives a different value: eps is per sample.
  gp_swapped = losses.gradient_penalty(critic, ab_fake, ab_real, lightness, eps)
  assert abs(float(gp_swapped) - float(gp)) > 1e-3


@pytest.fixture(scope="module")
def tiny_critic():
  """A Critic with 1, 2, 4, 8 channels on 16x16 inputs and random float32 parameters."""
  critic = networks.Critic(width=1 / 64)
  size = 16
  abstract = jax.eval_shape(
    critic.init, jax.random.key(0), jnp.zeros((1, size, size, 2)), jnp.zeros((1, size, size, 1))
  )
  rng = np.random.default_rng(8)
  params = jax.tree.map(
    lambda x: (rng.normal(size=x.shape) * (0.5 if x.ndim > 1 else 0.1)).astype(np.float32),
    abstract,
  )
  batch = (
    _uniform((2, size, size, 2), 9),
    _uniform((2, size, size, 2), 10),
    _uniform((2, size, size, 1), 11),
    np.array([0.3, 0.8], np.float32),
  )
  return critic, params, batch


def test_gradient_penalty_of_real_critic_matches_finite_differences(tiny_critic):
  critic, params, batch = tiny_critic

  def gp(p):
    return losses.gradient_penalty(lambda ab, lum: critic.apply(p, ab, lum), *batch)

  value, grad = jax.jit(jax.value_and_grad(gp))(params)
  assert np.isfinite(value) and value > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
  # Central differences of the GP along random directions of the parameter space: checks the
  # second-order (grad of grad) derivative through the critic, convolutions and LeakyReLUs.
  rng = np.random.default_rng(12)
  gp_jit = jax.jit(gp)
  h = 1e-3
  for _ in range(3):
    direction = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
    norm = np.sqrt(sum(np.sum(d**2) for d in jax.tree.leaves(direction)))
    direction = jax.tree.map(lambda d, n=norm: d / n, direction)
    plus = gp_jit(jax.tree.map(lambda p, d: p + h * d, params, direction))
    minus = gp_jit(jax.tree.map(lambda p, d: p - h * d, params, direction))
    fd = (float(plus) - float(minus)) / (2 * h)
    analytic = sum(
      float(np.sum(g * d))
      for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
    )
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-3 * abs(float(value)))


def test_gradient_penalty_per_sample_with_real_critic(tiny_critic):
  """No cross-sample coupling: the batch GP is the mean of the one-sample GPs."""
  critic, params, (ab_real, ab_fake, lightness, eps) = tiny_critic
  gp = jax.jit(
    lambda *args: losses.gradient_penalty(lambda ab, lum: critic.apply(params, ab, lum), *args)
  )
  batch_gp = gp(ab_real, ab_fake, lightness, eps)
  singles = [
    gp(ab_real[i : i + 1], ab_fake[i : i + 1], lightness[i : i + 1], eps[i : i + 1])
    for i in range(len(eps))
  ]
  np.testing.assert_allclose(batch_gp, np.mean(singles), rtol=1e-5)


# --- KL, MSE and the weighted totals ------------------------------------------------------


def _reference_kl(p_true, p_pred):
  """Keras' kld: both clipped to [1e-7, 1], sum_c p log(p / q), mean over the batch."""
  p = np.clip(p_true.astype(np.float64), 1e-7, 1.0)
  q = np.clip(p_pred.astype(np.float64), 1e-7, 1.0)
  return np.mean(np.sum(special.rel_entr(p, q), axis=-1))


def test_kl_divergence_matches_scipy_with_keras_clipping():
  p_true = _distributions((4, 1000), 13, zeros=10)
  p_pred = _distributions((4, 1000), 14, zeros=3)  # zeros would give inf without the clip
  got = losses.kl_divergence(jnp.asarray(p_true), jnp.asarray(p_pred))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, _reference_kl(p_true, p_pred), rtol=1e-4)
  np.testing.assert_allclose(losses.kl_divergence(p_true, p_true), 0.0, atol=1e-5)
  # bfloat16 inputs are computed in float32.
  np.testing.assert_allclose(
    losses.kl_divergence(jnp.asarray(p_true, jnp.bfloat16), jnp.asarray(p_pred, jnp.bfloat16)),
    _reference_kl(
      np.asarray(jnp.asarray(p_true, jnp.bfloat16), np.float32),
      np.asarray(jnp.asarray(p_pred, jnp.bfloat16), np.float32),
    ),
    rtol=1e-3,
  )


def test_mse_and_wasserstein():
  a, b = _uniform((2, 4, 4, 2), 15), _uniform((2, 4, 4, 2), 16)
  np.testing.assert_allclose(losses.mse(a, b), np.mean((a.astype(np.float64) - b) ** 2), 1e-6)
  d = np.random.default_rng(17).normal(size=(2, 3, 3, 1)).astype(np.float32)
  np.testing.assert_allclose(losses.wasserstein(d, -1.0), -np.mean(d), rtol=1e-6)


def _generator_inputs(seed=18):
  rng = np.random.default_rng(seed)
  ab_fake, ab_real = _uniform((2, 8, 8, 2), seed), _uniform((2, 8, 8, 2), seed + 1)
  p_fake, p_teacher = _distributions((2, 10), seed + 2), _distributions((2, 10), seed + 3)
  d_fake = rng.normal(size=(2, 1, 1, 1)).astype(np.float32)
  return ab_fake, ab_real, p_fake, p_teacher, d_fake


def test_generator_loss_total_with_reference_weights():
  weights = default.get_config().loss
  ab_fake, ab_real, p_fake, p_teacher, d_fake = _generator_inputs()
  total, terms = losses.generator_loss(ab_fake, ab_real, p_fake, p_teacher, d_fake, weights)
  mse = np.mean((ab_fake.astype(np.float64) - ab_real) ** 2)
  kl = _reference_kl(p_teacher, p_fake)  # KL(teacher || generator)
  adv = np.mean(d_fake.astype(np.float64))
  np.testing.assert_allclose(total, 1.0 * mse + 0.003 * kl - 0.1 * adv, rtol=1e-5)
  np.testing.assert_allclose(terms["mse"], mse, rtol=1e-5)
  np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
  np.testing.assert_allclose(terms["adv"], adv, rtol=1e-5)
  assert terms["total"] is total
  # Not symmetric: swapping teacher and generator distributions changes the KL.
  assert abs(_reference_kl(p_fake, p_teacher) - kl) > 1e-3


def test_generator_loss_l1_colour_term():
  """colour='l1': mean |ab error| weighted by loss.mse in the MSE's place (MSE still reported)."""
  weights = default.get_config().loss
  ab_fake, ab_real, p_fake, _, d_fake = _generator_inputs(seed=40)
  total, terms = losses.generator_loss(ab_fake, ab_real, p_fake, None, d_fake, weights, "l1")
  diff = ab_fake.astype(np.float64) - ab_real
  l1, mse = np.mean(np.abs(diff)), np.mean(diff**2)
  assert abs(l1 - mse) > 0.05  # The two terms differ here, so the total shows which one.
  np.testing.assert_allclose(total, l1 - 0.1 * np.mean(d_fake), rtol=1e-5)
  np.testing.assert_allclose(terms["l1"], l1, rtol=1e-5)
  np.testing.assert_allclose(terms["mse"], mse, rtol=1e-5)
  with pytest.raises(ValueError, match="'huber'"):
    losses.generator_loss(ab_fake, ab_real, p_fake, None, d_fake, weights, "huber")


def test_generator_loss_without_teacher_drops_kl():
  weights = default.get_config().loss
  ab_fake, ab_real, p_fake, _, d_fake = _generator_inputs(seed=30)
  total, terms = losses.generator_loss(ab_fake, ab_real, p_fake, None, d_fake, weights)
  assert "kl" not in terms
  mse = np.mean((ab_fake.astype(np.float64) - ab_real) ** 2)
  np.testing.assert_allclose(total, mse - 0.1 * np.mean(d_fake), rtol=1e-5)


def test_critic_loss_total_with_reference_weights():
  weights = default.get_config().loss
  rng = np.random.default_rng(40)
  d_real, d_fake = rng.normal(size=(3, 4, 4, 1)), rng.normal(size=(3, 4, 4, 1))
  gp = jnp.float32(0.37)
  total, terms = losses.critic_loss(
    jnp.asarray(d_real, jnp.float32), jnp.asarray(d_fake, jnp.float32), gp, weights
  )
  want = -np.mean(d_real) + np.mean(d_fake) + 10 * 0.37
  np.testing.assert_allclose(total, want, rtol=1e-5)
  np.testing.assert_allclose([terms["real"], terms["fake"]], [d_real.mean(), d_fake.mean()], 1e-5)
  np.testing.assert_allclose(terms["gp"], 0.37, rtol=1e-6)


# --- precision: bf16 inputs are reduced in float32, no matmul precision reaches the losses ---
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "cumsum", "argmax"}


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      sub = getattr(v, "jaxpr", v)
      if hasattr(sub, "eqns"):
        yield from _eqns(sub)


def _all_losses(ab_fake, ab_real, p_fake, p_teacher, d_fake, d_real, eps):
  weights = default.get_config().loss
  lightness = ab_real[..., :1]

  def critic(ab, lum):  # Patch scores in the input's dtype, no reduction of its own.
    return ab[..., :1] * ab[..., 1:] * lum.astype(ab.dtype)

  gp = losses.gradient_penalty(critic, ab_real, ab_fake, lightness, eps)
  g_total, g_terms = losses.generator_loss(ab_fake, ab_real, p_fake, p_teacher, d_fake, weights)
  d_total, d_terms = losses.critic_loss(d_real, d_fake, gp, weights)
  return g_total, g_terms, d_total, d_terms


def test_losses_of_bfloat16_inputs_reduce_in_float32_under_bf16_matmul_precision():
  ab_fake, ab_real, p_fake, p_teacher, d_fake = _generator_inputs(seed=50)
  d_real = np.random.default_rng(51).normal(size=d_fake.shape).astype(np.float32)
  inputs = [ab_fake, ab_real, p_fake, p_teacher, d_fake, d_real, _uniform((2,), 52)]
  as_bf16 = [jnp.asarray(x, jnp.bfloat16) for x in inputs]
  with jax.default_matmul_precision("bfloat16"):
    closed = jax.make_jaxpr(_all_losses)(*as_bf16)
    got = jax.jit(_all_losses)(*as_bf16)
  for eqn in _eqns(closed.jaxpr):
    assert eqn.primitive.name != "dot_general", eqn
    if eqn.primitive.name in _REDUCTIONS:
      assert all(v.aval.dtype == jnp.float32 for v in eqn.invars), eqn
  # The same bf16 values given as float32: bitwise the same losses (no bf16 arithmetic).
  want = jax.jit(_all_losses)(*[x.astype(jnp.float32) for x in as_bf16])
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
