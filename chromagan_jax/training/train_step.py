"""The jitted WGAN-GP train step: pure ``(state, batch) -> (state, metrics)``.

One ``jax.jit`` over the mesh: the batch is sharded over ``data`` and XLA inserts the
cross-device reductions, so batch-norm statistics and the losses are over the *global* batch,
as in the single-GPU reference. The same code runs on 1 device, N devices and N processes
(``jax.distributed``), where each process feeds its own slice of the global batch.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from chromagan_jax.model import losses
from chromagan_jax.ops import color
from chromagan_jax.training import optim, train_state


def teacher_distribution(nets: train_state.Networks, teacher_params, l3):
  """The frozen teacher's class distribution on ``l3``; None when there is no teacher."""
  if teacher_params is None:
    return None
  logits = nets.teacher.apply({"params": teacher_params}, l3)
  return jax.lax.stop_gradient(jax.nn.softmax(logits, axis=-1))


def train_step(
  state: train_state.TrainState,
  batch: Mapping[str, jax.Array],
  teacher_params,
  *,
  nets: train_state.Networks,
  loss_weights: Mapping[str, float],
  bn_update_in_critic_step: bool,
  ema_decay: float = 0.0,
  freeze_trunk: bool = False,
  critic_steps: int = 1,
  colour_loss: str = "l2",
):
  """One reference iteration: a generator update, then a critic update.

  ``critic_steps`` (``config.gan.critic_steps``; above 1 a deviation, the reference updates the
  critic once per batch): the critic takes that many Adam steps on this batch's real and
  colorized ab, each with its own gradient-penalty interpolation (the first one's ``eps`` is
  the single-step's), so the critic can catch up with the generator without a new batch.
  The metrics are the last critic step's.

  ``colour_loss`` (``config.loss.colour``): 'l2', the reference's MSE, or 'l1' (a
  deviation, see :func:`losses.generator_loss`).

  ``freeze_trunk`` (``config.optimizer.freeze_trunk``; a deviation, the reference trains the trunk):
  the generator's VGG16 trunk gets no gradient (its Adam update is exactly zero), so XLA
  drops the backward pass through it.

  Args:
    state: the train state.
    batch: ``{'rgb': uint8 (N, S, S, 3)}``; Lab conversion happens here, on device.
    teacher_params: VGG16Classifier params or None ("w/o class": no KL term).
  Returns:
    (new state, metrics dict of float32 scalars).
  """
  lightness, ab_real = color.rgb_to_net(batch["rgb"])
  l3 = color.gray_to_l3(lightness)
  p_teacher = teacher_distribution(nets, teacher_params, l3)
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  if callable(nets.adv_weight):  # A ramp: the weight of this step (logged).
    loss_weights = {**loss_weights, "adv": nets.adv_weight(state.step)}

  def critic_scores(d_params, ab, lightness=lightness):
    return nets.critic.apply({"params": d_params}, ab, lightness)

  # Generator update (critic frozen).
  def g_loss_fn(g_params):
    if freeze_trunk:
      g_params = {**g_params, optim.TRUNK: jax.lax.stop_gradient(g_params[optim.TRUNK])}
    (ab_fake, p_fake), new_vars = nets.generator.apply(
      {"params": g_params, "batch_stats": state.g_batch_stats},
      l3,
      train=True,
      mutable=["batch_stats"],
    )
    d_fake = critic_scores(state.d_params, ab_fake)
    total, terms = losses.generator_loss(
      ab_fake, ab_real, p_fake, p_teacher, d_fake, loss_weights, colour_loss
    )
    return total, (terms, new_vars["batch_stats"])

  g_grads, (g_terms, g_batch_stats) = jax.grad(g_loss_fn, has_aux=True)(state.g_params)
  g_updates, g_opt_state = nets.g_tx.update(g_grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)

  # Critic update (generator frozen): fake ab recomputed by the updated generator, in
  # training mode (batch statistics), as the reference's combined critic model does.
  (ab_fake, _), new_vars = nets.generator.apply(
    {"params": g_params, "batch_stats": g_batch_stats}, l3, train=True, mutable=["batch_stats"]
  )
  ab_fake = jax.lax.stop_gradient(ab_fake)
  if bn_update_in_critic_step:
    g_batch_stats = new_vars["batch_stats"]

  def d_loss_fn(d_params, eps):
    score = functools.partial(critic_scores, d_params)
    gp = losses.gradient_penalty(score, ab_real, ab_fake, lightness, eps)
    return losses.critic_loss(score(ab_real), score(ab_fake), gp, loss_weights)

  d_params, d_opt_state = state.d_params, state.d_opt_state
  for i in range(critic_steps):
    eps_rng = step_rng if i == 0 else jax.random.fold_in(step_rng, i)
    eps = jax.random.uniform(eps_rng, (ab_real.shape[0],), jnp.float32)
    d_grads, d_terms = jax.grad(d_loss_fn, has_aux=True)(d_params, eps)
    d_updates, d_opt_state = nets.d_tx.update(d_grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, d_updates)

  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = train_state.ema_update(ema_params, g_params, state.step, ema_decay)
  new_state = state.replace(
    step=state.step + 1,
    ema_params=ema_params,
    g_params=g_params,
    g_batch_stats=g_batch_stats,
    d_params=d_params,
    g_opt_state=g_opt_state,
    d_opt_state=d_opt_state,
  )
  metrics = {f"g/{k}": v for k, v in g_terms.items()}
  metrics.update({f"d/{k}": v for k, v in d_terms.items()})
  if callable(nets.adv_weight):
    metrics["g/adv_weight"] = jnp.asarray(loss_weights["adv"], jnp.float32)
  return new_state, metrics


def loss_weights_from_config(config) -> dict[str, float]:
  """config.loss's weights: every field but ``colour``, which names the colour term."""
  return {k: float(v) for k, v in config.loss.items() if k != "colour"}


# XLA options that make the step bitwise reproducible on GPU (deterministic scatters, cuDNN
# algorithms without atomics, no timing-based autotuning). The cost on GPU is in README
# "Training on GPUs and pods".
DETERMINISTIC_XLA_OPTIONS = {"xla_gpu_deterministic_ops": True}


def xla_compiler_options(config, backend: str | None = None) -> dict[str, Any]:
  """Compiler options of the train step: deterministic GPU ops if ``config.deterministic_ops``.

  Only on GPU: XLA's CPU and TPU steps are deterministic already, and a TPU runtime need not
  accept GPU options.
  """
  backend = backend or jax.default_backend()
  if config.deterministic_ops and backend == "gpu":
    return dict(DETERMINISTIC_XLA_OPTIONS)
  return {}


def make_train_step(nets: train_state.Networks, config, mesh: Mesh, with_teacher: bool) -> Callable:
  """The jitted, sharded step ``(state, batch, teacher_params) -> (state, metrics)``.

  The state is donated: its buffers are reused for the new state. Compiled with
  :func:`xla_compiler_options` (exact resume on GPU needs deterministic ops).
  """
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(train_state.DATA_AXIS))
  step = functools.partial(
    train_step,
    nets=nets,
    loss_weights=loss_weights_from_config(config),
    bn_update_in_critic_step=bool(config.gan.bn_update_in_critic_step),
    ema_decay=float(config.optimizer.ema_decay),
    freeze_trunk=bool(config.optimizer.freeze_trunk),
    critic_steps=config.gan.critic_steps,
    colour_loss=config.loss.colour,
  )
  return jax.jit(
    step,
    in_shardings=(replicated, batch_sharding, replicated if with_teacher else None),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
    compiler_options=xla_compiler_options(config) or None,
  )


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays sharded over the mesh's data axis."""
  sharding = NamedSharding(mesh, P(train_state.DATA_AXIS))
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in local_batch.items()
  }
