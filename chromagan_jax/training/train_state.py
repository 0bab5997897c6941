"""The one train-state pytree and how it is made, placed on the mesh, and split into the
checkpoint's items.

Parameters and optimizer states are replicated over a 1-D device mesh with a ``data`` axis;
``create_train_state`` makes them already placed there (``jax.jit`` with ``out_shardings``).
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from chromagan_jax.model import networks
from chromagan_jax.runtime import machine
from chromagan_jax.training import optim
from chromagan_jax.weights import checkpoint

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree.

  ``rng`` is a fixed key (raw uint32 key data, so it checkpoints as a plain array); each step
  folds in ``step``, so the randomness of step k does not depend on how the run was split
  into resumed pieces.
  """

  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  rng: jax.Array
  # Moving average of g_params (config.optimizer.ema_decay > 0), else None.
  ema_params: Any = None

  @property
  def generator_variables(self):
    return {"params": self.g_params, "batch_stats": self.g_batch_stats}

  @property
  def inference_variables(self):
    """The generator to show (samples) and ship: the EMA's parameters when there is one.

    Batch-norm statistics are the live generator's (they are moving averages already).
    """
    if self.ema_params is None:
      return self.generator_variables
    return {"params": self.ema_params, "batch_stats": self.g_batch_stats}


@dataclasses.dataclass(frozen=True)
class Networks:
  """The three modules and two optimizers a step needs (static, hashable)."""

  generator: networks.Generator
  critic: networks.Critic
  teacher: networks.VGG16Classifier
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  # The generator's adversarial weight: config.loss.adv, or a schedule (optim.adversarial_weight).
  adv_weight: Any = None


def make_networks(config, total_steps: int | None = None) -> Networks:
  """The modules and optimizers; ``total_steps`` is needed by decaying learning rates only."""
  conv = machine.conv_policy(config.model.get("conv_impl"))  # The config's, on this machine.
  gen, critic, teacher = networks.models_from_config(
    config.model, conv, dtype=optim.compute_dtype(config)
  )
  g_lr = optim.learning_rate(config, config.optimizer.g_learning_rate, total_steps)
  d_lr = optim.learning_rate(config, config.optimizer.d_learning_rate, total_steps)
  tx = optim.generator_optimizer(config, g_lr), optim.adam(config, d_lr)
  return Networks(gen, critic, teacher, *tx, optim.adversarial_weight(config))


def make_mesh(devices=None) -> Mesh:
  """A 1-D data-parallel mesh over all (global) devices."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def dummy_inputs(config, batch: int = 1):
  s = config.model.image_size
  return (
    jnp.zeros((batch, s, s, 3), jnp.float32),
    jnp.zeros((batch, s, s, 2), jnp.float32),
    jnp.zeros((batch, s, s, 1), jnp.float32),
  )


def init_state(nets: Networks, config, rng) -> TrainState:
  """Freshly initialised train state (pure; jit it with output shardings)."""
  g_rng, d_rng, state_rng = jax.random.split(rng, 3)
  l3, ab, lightness = dummy_inputs(config)
  g_vars = nets.generator.init(g_rng, l3, train=False)
  d_vars = nets.critic.init(d_rng, ab, lightness)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    g_params=g_vars["params"],
    g_batch_stats=g_vars["batch_stats"],
    d_params=d_vars["params"],
    g_opt_state=nets.g_tx.init(g_vars["params"]),
    d_opt_state=nets.d_tx.init(d_vars["params"]),
    rng=jax.random.key_data(state_rng),
    ema_params=jax.tree.map(jnp.copy, g_vars["params"]) if config.optimizer.ema_decay else None,
  )


def ema_update(ema_params, params, step, decay: float):
  """EMA of the parameters after ``step`` updates, with the usual warm-up.

  The decay used is ``min(decay, (1 + step) / (10 + step))`` (TF's ExponentialMovingAverage
  with num_updates): early on the average follows the fast-moving weights instead of
  remembering the random initialisation for ~1 / (1 - decay) steps.
  """
  t = step.astype(jnp.float32)
  d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)


def create_train_state(nets: Networks, config, mesh: Mesh) -> TrainState:
  """Initialises the state directly replicated on ``mesh`` (no host round trip)."""
  replicated = NamedSharding(mesh, P())
  abstract = jax.eval_shape(functools.partial(init_state, nets, config), jax.random.key(0))
  shardings = jax.tree.map(lambda _: replicated, abstract)
  init = jax.jit(functools.partial(init_state, nets, config), out_shardings=shardings)
  return init(jax.random.key(config.seed))


def abstract_train_state(nets: Networks, config, mesh: Mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, for checkpoint restore."""
  replicated = NamedSharding(mesh, P())
  abstract = jax.eval_shape(functools.partial(init_state, nets, config), jax.random.key(0))
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract
  )


def split_state(state: TrainState) -> dict[str, Any]:
  """The checkpoint items: generator variables, the rest and, with an EMA, the averaged
  generator (``checkpoint.GENERATOR_EMA``, what inference reads)."""
  rest = {
    "step": state.step,
    "d_params": state.d_params,
    "g_opt_state": state.g_opt_state,
    "d_opt_state": state.d_opt_state,
    "rng": state.rng,
  }
  items = {checkpoint.GENERATOR: state.generator_variables, checkpoint.TRAIN: rest}
  if state.ema_params is not None:
    items[checkpoint.GENERATOR_EMA] = state.inference_variables
  return items


def merge_state(items: Mapping[str, Any]) -> TrainState:
  """Inverse of :func:`split_state`."""
  generator, rest = items[checkpoint.GENERATOR], items[checkpoint.TRAIN]
  ema = items.get(checkpoint.GENERATOR_EMA)
  return TrainState(
    step=rest["step"],
    g_params=generator["params"],
    g_batch_stats=generator["batch_stats"],
    d_params=rest["d_params"],
    g_opt_state=rest["g_opt_state"],
    d_opt_state=rest["d_opt_state"],
    rng=rest["rng"],
    ema_params=None if ema is None else ema["params"],
  )


def fresh_replicated(tree, mesh):
  """``tree`` on every device of ``mesh``, in newly allocated buffers.

  The step donates the state, so the state's buffers must be its own. ``jax.device_put``
  may alias its input (even with ``may_alias=False`` for a single-device array, and on CPU
  a 64-byte-aligned NumPy array's memory on all devices at once): a trunk put from the
  teacher's weights would share the teacher's buffers, and the first step would overwrite
  or free them while still reading them as the teacher (seen as a segfault on CPU). A
  jitted copy always writes fresh output buffers.
  """
  replicated = NamedSharding(mesh, P())
  copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=replicated)
  return copy(jax.device_put(tree, replicated))
