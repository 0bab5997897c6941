"""train_lib's train step against a reference written by hand from the paper's training loop.

The reference (``reference_steps``) uses only the networks' ``apply``; Lab comes from
scikit-image, the losses are written out with the reference's weights and signs, the gradient
penalty takes per-sample gradients with ``vmap``, and Adam is NumPy float64 with the
reference's hyper-parameters (b1 0.5, Keras' b2 0.999; eps in optax's form, after the bias
correction, as ``train_lib.adam`` documents; the comparison raises eps, see ``EPS``). One
iteration of the reference:

1. generator update against the current critic: ``mse - 0.1 * mean D(fake)``;
2. critic update on the UPDATED generator's output (training-mode batch norm):
   ``-mean D(real) + mean D(fake) + 10 * GP``;
3. the generator's batch-norm statistics are those of step 1, or of step 2's forward pass
   when ``bn_update_in_critic_step``.

Two iterations are compared (Adam's first update is ~lr * sign(grad); the second depends on
the gradients' magnitudes and on b1), at the tiny config, parameters within ~1e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import photo_batch
from skimage import color as skcolor

from chromagan_jax import train_lib
from chromagan_jax.configs import default, tiny

# The paper's Adam(lr, beta_1=0.5) with Keras' defaults for beta_2 and epsilon.
B1, B2, KERAS_EPS = 0.5, 0.999, 1e-7
# Adam's epsilon in the comparison: 1e-4, comparable to the gradients (1e-4 .. 1e-2), so
# where epsilon enters shows, and float noise in near-zero gradients (biases before a
# training-mode batch norm have none) is not blown up to +-lr steps as at 1e-7.
EPS = 1e-4
# Loss weights and signs of the reference's train_on_batch calls.
W_MSE, W_ADV = 1.0, -0.1
W_REAL, W_FAKE, W_GP = -1.0, 1.0, 10.0
STEPS = 2
# Parameters move by ~lr = 1e-3 per step; float32 reassociation between the step and this
# reference leaves them ~1e-7 apart (measured).
ATOL = 2e-6


def lab_inputs(rgb):
  """uint8 RGB (N, S, S, 3) -> (L / 100 (N, S, S, 1), (ab + 128) / 255 (N, S, S, 2)), float32."""
  lab = skcolor.rgb2lab(rgb)
  return (lab[..., :1] / 100.0).astype(np.float32), ((lab[..., 1:] + 128.0) / 255.0).astype(
    np.float32
  )


class NumpyAdam:
  """Adam on a pytree in float64: m, v, bias correction, then ``lr * m / (sqrt(v) + eps)``."""

  def __init__(self, params, lr):
    self.lr, self.t = lr, 0
    self.m = jax.tree.map(lambda p: np.zeros(p.shape), params)
    self.v = jax.tree.map(lambda p: np.zeros(p.shape), params)

  def update(self, params, grads):
    self.t += 1
    grads = jax.tree.map(lambda g: np.asarray(g, np.float64), grads)
    self.m = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * g, self.m, grads)
    self.v = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * g * g, self.v, grads)

    def new(p, m, v):
      m_hat, v_hat = m / (1 - B1**self.t), v / (1 - B2**self.t)
      return (np.asarray(p, np.float64) - self.lr * m_hat / (np.sqrt(v_hat) + EPS)).astype(
        np.float32
      )

    return jax.tree.map(new, params, self.m, self.v)


def reference_functions(nets):
  gen, crit = nets.generator, nets.critic

  def forward(g_params, batch_stats, l3):
    (ab, _), new = gen.apply(
      {"params": g_params, "batch_stats": batch_stats}, l3, train=True, mutable=["batch_stats"]
    )
    return ab, new["batch_stats"]

  @jax.jit
  def generator_grads(g_params, batch_stats, d_params, lightness, ab_real):
    def loss(p):
      ab, new_stats = forward(p, batch_stats, jnp.tile(lightness, (1, 1, 1, 3)))
      d_fake = crit.apply({"params": d_params}, ab, lightness)
      return W_MSE * jnp.mean((ab - ab_real) ** 2) + W_ADV * jnp.mean(d_fake), new_stats

    return jax.grad(loss, has_aux=True)(g_params)

  @jax.jit
  def fake_ab(g_params, batch_stats, lightness):
    return forward(g_params, batch_stats, jnp.tile(lightness, (1, 1, 1, 3)))

  @jax.jit
  def critic_grads(d_params, ab_real, ab_fake, lightness, eps):
    def score(p, ab, lum):
      return crit.apply({"params": p}, ab, lum)

    def one_norm(p, ab_hat, lum):  # ||d D(ab_hat, L) / d ab_hat|| of one sample
      g = jax.grad(lambda x: jnp.sum(score(p, x[None], lum[None])))(ab_hat)
      return jnp.sqrt(jnp.sum(g * g))

    def loss(p):
      e = eps[:, None, None, None]
      ab_hat = e * ab_real + (1 - e) * ab_fake
      norms = jax.vmap(one_norm, in_axes=(None, 0, 0))(p, ab_hat, lightness)
      gp = jnp.mean((1.0 - norms) ** 2)
      return (
        W_REAL * jnp.mean(score(p, ab_real, lightness))
        + W_FAKE * jnp.mean(score(p, ab_fake, lightness))
        + W_GP * gp
      )

    return jax.grad(loss)(d_params)

  return generator_grads, fake_ab, critic_grads


def reference_steps(fns, state, rgb, config, bn_update_in_critic_step):
  """``STEPS`` reference iterations from ``state`` (host copies) -> (g_params, stats, d_params)."""
  generator_grads, fake_ab, critic_grads = fns
  lightness, ab_real = lab_inputs(rgb)
  g_params, stats, d_params = state.g_params, state.g_batch_stats, state.d_params
  g_adam = NumpyAdam(g_params, config.g_learning_rate)
  d_adam = NumpyAdam(d_params, config.d_learning_rate)
  for t in range(STEPS):
    grads, stats_g = generator_grads(g_params, stats, d_params, lightness, ab_real)
    g_params = g_adam.update(g_params, grads)  # 1. generator first, against the old critic.
    ab_fake, stats_d = fake_ab(g_params, stats_g, lightness)  # 2. the updated generator.
    # The step's per-sample interpolation weights: uniform, from the state's key and step.
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), t)
    eps = jax.random.uniform(key, (rgb.shape[0],), jnp.float32)
    d_params = d_adam.update(d_params, critic_grads(d_params, ab_real, ab_fake, lightness, eps))
    stats = stats_d if bn_update_in_critic_step else stats_g  # 3.
  return jax.device_get((g_params, stats, d_params))


def assert_trees_close(got, want, name):
  flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
  flat_got = dict(jax.tree_util.tree_leaves_with_path(got))
  assert flat_got.keys() == flat_want.keys()
  bad = {}
  for path, value in flat_want.items():
    err = np.abs(np.asarray(flat_got[path], np.float64) - value).max()
    if err > ATOL:
      bad[jax.tree_util.keystr(path)] = err
  assert not bad, (name, bad)


def test_reference_hyper_parameters():
  config = default.get_config()
  assert (config.adam_b1, config.adam_b2, config.adam_eps) == (B1, B2, KERAS_EPS)
  assert dict(config.loss) == {
    "mse": W_MSE, "kl": 0.003, "adv": W_ADV, "real": W_REAL, "fake": W_FAKE, "gp": W_GP
  }  # fmt: skip
  assert config.g_learning_rate == config.d_learning_rate == 2e-5


@pytest.fixture(scope="module")
def setup():
  config = tiny.get_config()
  assert (config.adam_b1, config.adam_b2) == (B1, B2)
  config.adam_eps = EPS
  nets = train_lib.make_networks(config)
  return config, nets, reference_functions(nets)


@pytest.mark.slow  # two train-step and reference compiles: ~30 s of CPU each
@pytest.mark.parametrize("bn_update_in_critic_step", [False, True])
def test_train_step_matches_the_hand_written_reference(setup, bn_update_in_critic_step):
  config, nets, fns = setup
  config.bn_update_in_critic_step = bn_update_in_critic_step
  mesh = train_lib.make_mesh(jax.devices()[:1])
  state = train_lib.create_train_state(nets, config, mesh)
  start = jax.device_get(state)
  step = train_lib.make_train_step(nets, config, mesh, with_teacher=False)
  rgb = photo_batch(config.batch_size, config.model.image_size)["rgb"]
  for _ in range(STEPS):
    state, _ = step(state, train_lib.global_batch({"rgb": rgb}, mesh), None)
  state = jax.device_get(state)
  g_params, stats, d_params = reference_steps(fns, start, rgb, config, bn_update_in_critic_step)
  # Both networks really moved (by ~STEPS * lr), so matching the reference is not vacuous
  # (only the class head stands still: no teacher, no KL gradient).
  for new, old in ((g_params, start.g_params), (d_params, start.d_params)):
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), new, old)
    moved = {k: v for k, v in moved.items() if not k.startswith("class_")}
    assert np.median(jax.tree.leaves(moved)) > config.d_learning_rate, moved
  assert_trees_close(state.d_params, d_params, "d_params")
  assert_trees_close(state.g_params, g_params, "g_params")
  assert_trees_close(state.g_batch_stats, stats, "batch_stats")
