"""ChromaGAN training: train state, the jitted WGAN-GP step, and the training loop.

The step is one ``jax.jit`` over a 1-D device mesh with a ``data`` axis: parameters and
optimizer states are replicated, the batch is sharded over ``data``. XLA inserts the
cross-device reductions, so batch-norm statistics and the losses are over the *global* batch,
as in the single-GPU reference. The same code runs on 1 device, N devices and N processes
(``jax.distributed``), where each process feeds its own slice of the global batch.

Nothing here imports TensorFlow: the input pipeline is imported lazily by the loop, so the
models, losses and the step run on accelerator images without TF.
"""

import dataclasses
import functools
import math
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from chromagan_jax.errors import CheckpointError, ConfigError, NonFiniteLossError
from chromagan_jax.model import losses, networks, predict
from chromagan_jax.ops import color
from chromagan_jax.runtime import machine
from chromagan_jax.training import multihost
from chromagan_jax.weights import checkpoint, port

DATA_AXIS = "data"
# The generator's params subtree of its VGG16 trunk (what ``config.freeze_trunk`` freezes).
TRUNK = "vgg16"


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
  # Moving average of g_params (config.ema_decay > 0), else None.
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
  # The generator's adversarial weight: config.loss.adv, or a schedule (adversarial_weight).
  adv_weight: Any = None


def compute_dtype(config) -> Any:
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(config, peak: float, total_steps: int | None = None):
  """``peak`` (config.lr_schedule 'constant', the reference's), or a function of the step.

  'cosine' (a deviation, for short runs from scratch: configs/folder.py:small) decays from
  ``peak`` to ``config.lr_final_fraction * peak`` over ``total_steps`` along a half cosine, so
  the last steps refine instead of jumping around at full size.
  """
  if config.lr_schedule == "constant":
    return peak
  if config.lr_schedule != "cosine":
    raise ConfigError(f"config.lr_schedule={config.lr_schedule!r}: expected one of {LR_SCHEDULES}")
  if not total_steps or total_steps <= 0:
    raise ConfigError("config.lr_schedule='cosine' needs the number of training steps")
  return optax.cosine_decay_schedule(peak, total_steps, alpha=config.lr_final_fraction)


def adversarial_weight(config):
  """The generator's adversarial weight: ``config.loss.adv`` (the reference's), or a function
  of the step ramping linearly from it to ``config.adv_final`` between the two steps of
  ``config.adv_ramp_steps`` (a deviation, see configs/default.py)."""
  if config.get("adv_final") is None:
    return float(config.loss.adv)
  start, end = (int(s) for s in config.adv_ramp_steps)
  if not 0 <= start <= end:
    raise ConfigError(
      f"config.adv_ramp_steps={tuple(config.adv_ramp_steps)}: expected (start, end), "
      "0 <= start <= end"
    )
  return optax.linear_schedule(
    float(config.loss.adv), float(config.adv_final), end - start, transition_begin=start
  )


def adam(config, learning_rate):
  """Adam with the reference's hyper-parameters; ``learning_rate`` a number or a schedule.

  Keras adds epsilon to sqrt(v) before the bias correction; optax after. At eps=1e-7 the
  difference is far below the gradient noise.
  """
  return optax.adam(learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


def make_networks(config, total_steps: int | None = None) -> Networks:
  """The modules and optimizers; ``total_steps`` is needed by decaying learning rates only."""
  conv = machine.conv_policy(config.model.get("conv_impl"))  # The config's, on this machine.
  gen, critic, teacher = networks.models_from_config(
    config.model, conv, dtype=compute_dtype(config)
  )
  g_lr = learning_rate(config, config.g_learning_rate, total_steps)
  d_lr = learning_rate(config, config.d_learning_rate, total_steps)
  tx = generator_optimizer(config, g_lr), adam(config, d_lr)
  return Networks(gen, critic, teacher, *tx, adversarial_weight(config))


def generator_optimizer(config, learning_rate):
  """Adam for the generator; with ``config.trunk_lr_scale`` != 1 (a deviation, see
  configs/default.py) the VGG16 trunk's updates are scaled by it after Adam, i.e. the trunk
  trains at ``trunk_lr_scale`` times the rest's rate (Adam's update is linear in the rate).
  """
  scale = float(config.get("trunk_lr_scale", 1.0))
  if scale == 1.0:
    return adam(config, learning_rate)
  if not 0.0 < scale < 1.0 or config.get("freeze_trunk"):
    raise ConfigError(
      f"config.trunk_lr_scale={scale}: expected 0 < scale < 1 and freeze_trunk off "
      "(freeze_trunk=True keeps the trunk fixed)"
    )
  trunk_only = lambda params: {name: name == TRUNK for name in params}  # noqa: E731
  return optax.chain(adam(config, learning_rate), optax.masked(optax.scale(scale), trunk_only))


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
    ema_params=jax.tree.map(jnp.copy, g_vars["params"]) if _ema_decay(config) else None,
  )


def _ema_decay(config) -> float:
  return float(config.get("ema_decay", 0.0))


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


def teacher_distribution(nets: Networks, teacher_params, l3):
  """The frozen teacher's class distribution on ``l3``; None when there is no teacher."""
  if teacher_params is None:
    return None
  logits = nets.teacher.apply({"params": teacher_params}, l3)
  return jax.lax.stop_gradient(jax.nn.softmax(logits, axis=-1))


def train_step(
  state: TrainState,
  batch: Mapping[str, jax.Array],
  teacher_params,
  *,
  nets: Networks,
  loss_weights: Mapping[str, float],
  bn_update_in_critic_step: bool,
  ema_decay: float = 0.0,
  freeze_trunk: bool = False,
  critic_steps: int = 1,
  colour_loss: str = "l2",
):
  """One reference iteration: a generator update, then a critic update.

  ``critic_steps`` (``config.critic_steps``; above 1 a deviation, the reference updates the
  critic once per batch): the critic takes that many Adam steps on this batch's real and
  colorized ab, each with its own gradient-penalty interpolation (the first one's ``eps`` is
  the single-step's), so the critic can catch up with the generator without a new batch.
  The metrics are the last critic step's.

  ``colour_loss`` (``config.colour_loss``): 'l2', the reference's MSE, or 'l1' (a
  deviation, see :func:`losses.generator_loss`).

  ``freeze_trunk`` (``config.freeze_trunk``; a deviation, the reference trains the trunk):
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
      g_params = {**g_params, TRUNK: jax.lax.stop_gradient(g_params[TRUNK])}
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
    ema_params = ema_update(ema_params, g_params, state.step, ema_decay)
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
  return {k: float(v) for k, v in config.loss.items()}


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
  if config.get("deterministic_ops", True) and backend == "gpu":
    return dict(DETERMINISTIC_XLA_OPTIONS)
  return {}


def checked_critic_steps(config) -> int:
  """``config.critic_steps``, checked: a whole number >= 1 (1: the reference)."""
  k = config.get("critic_steps", 1)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ConfigError(f"config.critic_steps={k!r}: the critic's Adam steps per batch, 1 or more")
  return k


def checked_colour_loss(config) -> str:
  """``config.colour_loss``, checked: one of losses.COLOUR_LOSSES ('l2': the reference)."""
  name = config.get("colour_loss", "l2")
  if name not in losses.COLOUR_LOSSES:
    raise ConfigError(f"config.colour_loss={name!r}: expected one of {losses.COLOUR_LOSSES}")
  return name


def make_train_step(nets: Networks, config, mesh: Mesh, with_teacher: bool) -> Callable:
  """The jitted, sharded step ``(state, batch, teacher_params) -> (state, metrics)``.

  The state is donated: its buffers are reused for the new state. Compiled with
  :func:`xla_compiler_options` (exact resume on GPU needs deterministic ops).
  """
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
  step = functools.partial(
    train_step,
    nets=nets,
    loss_weights=loss_weights_from_config(config),
    bn_update_in_critic_step=bool(config.bn_update_in_critic_step),
    ema_decay=_ema_decay(config),
    freeze_trunk=bool(config.get("freeze_trunk", False)),
    critic_steps=checked_critic_steps(config),
    colour_loss=checked_colour_loss(config),
  )
  return jax.jit(
    step,
    in_shardings=(replicated, batch_sharding, replicated if with_teacher else None),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
    compiler_options=xla_compiler_options(config) or None,
  )


def nearest_valid_batch_sizes(batch_size: int, multiple: int) -> list[int]:
  """The multiples of ``multiple`` just below and above ``batch_size`` (positive ones only)."""
  below = batch_size // multiple * multiple
  return [b for b in (below, below + multiple) if b > 0]


def check_batch_size(config, mesh: Mesh, num_processes: int | None = None) -> None:
  """One-line ConfigError unless the global batch splits evenly over devices and processes."""
  devices = mesh.devices.size
  processes = jax.process_count() if num_processes is None else num_processes
  multiple = math.lcm(devices, processes)
  if config.batch_size > 0 and config.batch_size % multiple == 0:
    return
  over = f"the {devices} devices" + (f" of {processes} processes" if processes > 1 else "")
  sizes = " or ".join(map(str, nearest_valid_batch_sizes(config.batch_size, multiple)))
  raise ConfigError(
    f"batch_size={config.batch_size} does not split evenly over {over}: set "
    f"--config.batch_size={sizes} (a multiple of {multiple})"
  )


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays sharded over the mesh's data axis."""
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in local_batch.items()
  }


def sample_grid(grey, colorized, truth) -> np.ndarray:
  """Rows of [grey | colorized | ground truth] stacked vertically, uint8 (S*N, 3S, 3)."""
  rows = np.concatenate([np.asarray(x) for x in (grey, colorized, truth)], axis=2)
  return rows.reshape(-1, *rows.shape[2:])


def _log_progress(writer, step: int, total_steps: int, summary, batch_size: int) -> None:
  """TensorBoard scalars and one console line with losses, images/s and the ETA."""
  writer.write_scalars(step, summary)
  rate = summary["images_per_sec"]
  eta = (total_steps - step) * batch_size / max(rate, 1e-9)
  logging.info(
    "step %d/%d  G %.4f (mse %.4f)  D %.4f (gp %.3f)  %.1f img/s  ETA %s",
    step,
    total_steps,
    summary["g/total"],
    summary["g/mse"],
    summary["d/total"],
    summary["d/gp"],
    rate,
    time.strftime("%H:%M:%S", time.gmtime(eta)),
  )


def num_train_steps(config, num_examples: int | None) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if not num_examples:
    raise ConfigError("set config.num_train_steps: the dataset size is unknown")
  return int(math.ceil(config.num_epochs * num_examples / config.batch_size))


class _StopRequest:
  """SIGTERM/SIGINT -> set a flag; the loop checkpoints and exits at the next step."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # Second signal: give up waiting.
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning("received %s: checkpointing and stopping", signal.Signals(signum).name)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _fresh_replicated(tree, mesh):
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


def apply_initial_weights(state: TrainState, config, vgg_params, mesh) -> TrainState:
  """A fresh state with the configured weights put in; called only when not resuming.

  What is put where (the VGG16 trunk from ``vgg_params``, then ``config.init_from``'s whole
  generator, then ``config.init_critic_from``'s critic) and the shape checks are
  :func:`port.initial_weights`; here the weights are placed on ``mesh``.
  """
  init = port.initial_weights(config, vgg_params)
  put = functools.partial(_fresh_replicated, mesh=mesh)
  g_params, g_batch_stats, d_params = state.g_params, state.g_batch_stats, state.d_params
  if init.trunk is not None:
    g_params = {**g_params, TRUNK: put(init.trunk)}
  if init.generator is not None:
    g_params, g_batch_stats = put(init.generator["params"]), put(init.generator["batch_stats"])
    logging.info("generator initialised from %s", config.init_from)
  if init.critic is not None:
    d_params = put(init.critic)
    logging.info("critic initialised from %s", config.init_critic_from)
  # Adam's initial moments are zeros whatever the parameter values: the state stays valid.
  # The EMA starts from the initial weights (a copy: the state's buffers are donated).
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = jax.tree.map(jnp.copy, g_params)
  return state.replace(
    g_params=g_params, g_batch_stats=g_batch_stats, d_params=d_params, ema_params=ema_params
  )


# Fields outside config.model that shape the optimizer's state, with their defaults (the
# value a checkpoint saved before the field existed was trained with). A resume must keep
# them: Orbax would otherwise fail deep inside the restore.
OPTIMIZER_FIELDS = {"lr_schedule": "constant", "trunk_lr_scale": 1.0}


def check_resume_config(ckpt_dir, step: int, config) -> None:
  """One-line CheckpointError if the run in ``ckpt_dir`` was saved with other OPTIMIZER_FIELDS."""
  saved = checkpoint.load_config(ckpt_dir, step)[1]
  changed = {
    k: (saved.get(k, default), config.get(k, default))
    for k, default in OPTIMIZER_FIELDS.items()
    if saved.get(k, default) != config.get(k, default)
  }
  if changed:
    was = ", ".join(f"{k}={a!r}" for k, (a, _) in changed.items())
    now = ", ".join(f"{k}={b!r}" for k, (_, b) in changed.items())
    raise CheckpointError(
      f"checkpoint {ckpt_dir}/{step} was trained with {was}, this config has {now}: their "
      "optimizer states differ; resume with the run's own values, or use a fresh --workdir"
    )


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  """Means of replicated scalar metrics (every process holds their full values)."""
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def make_sample_fn(nets: Networks, mesh: Mesh) -> Callable:
  """Jitted ``(generator variables, {'rgb', 'mask'}) -> (grey, colorized, rgb, mask)``.

  The batch is sharded over the processes; the outputs are replicated, so that every
  process (in particular process 0, which writes the grid) holds all rows.
  """
  replicated = NamedSharding(mesh, P())

  def sample(variables, batch):
    grey, colour = predict.colorize_small_fn(nets.generator, variables, batch["rgb"])
    return grey, colour, batch["rgb"], batch["mask"]

  cpu = jax.default_backend() == "cpu"
  options = dict(nets.generator.conv.compiler_options) if cpu else None
  return jax.jit(sample, out_shardings=replicated, compiler_options=options)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains ChromaGAN per ``config``, checkpointing and logging into ``workdir``.

  Resumes from the latest checkpoint in ``workdir`` if there is one. Returns the final state.
  With several processes, every process runs this with the same arguments: stopping (a
  signal to any process, a non-finite loss) is decided jointly, so that all save the same
  step and leave together.
  """
  with _StopRequest() as stop:  # From the start: a signal during setup stops at step 1.
    return _train(config, workdir, stop)


def _train(config, workdir, stop: "_StopRequest") -> TrainState:
  # TensorFlow only here, in the loop (clu's writers and the input pipeline): the models,
  # losses and the step import without it.
  from clu import metric_writers

  from chromagan_jax.data import pipeline

  mesh = make_mesh()
  check_batch_size(config, mesh)
  if problem := networks.cpu_bfloat16_problem(compute_dtype(config)):
    raise ConfigError(f"config.dtype={config.dtype!r}: {problem}")
  if config.get("freeze_trunk") and not (config.vgg_weights or config.init_from):
    raise ConfigError(
      "config.freeze_trunk=True keeps the VGG16 trunk as initialised, but no weights are given: "
      "set --config.vgg_weights to ImageNet VGG16 weights (a notop file is enough) or "
      "--config.init_from"
    )
  total_steps = num_train_steps(config, pipeline.num_train_examples(config))
  nets = make_networks(config, total_steps)
  is_chief = jax.process_index() == 0
  ckpt_dir = checkpoint.epath.Path(workdir) / "checkpoints"
  mngr = checkpoint.manager(ckpt_dir, max_to_keep=config.max_checkpoints_to_keep)
  latest = mngr.latest_step()
  multihost.check_or_record_topology(workdir, resuming=latest is not None)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if is_chief:
    writer.write_hparams(
      {k: v for k, v in config.to_dict().items() if isinstance(v, int | float | str)}
    )

  vgg_params = port.load_vgg(config)
  teacher_params = None  # The KL teacher: VGG16 with its classifier top only.
  if vgg_params is not None and port.has_top(vgg_params):
    teacher_params = jax.device_put(vgg_params, NamedSharding(mesh, P()))
  if latest is not None:
    check_resume_config(ckpt_dir, latest, config)
    abstract = split_state(abstract_train_state(nets, config, mesh))
    state = merge_state(checkpoint.restore(mngr, latest, abstract))
    logging.info("resumed from %s at step %d", ckpt_dir, latest)
    # The workdir's own training state wins: initial weights only seed a fresh run.
    for field in ("init_from", "init_critic_from"):
      if config.get(field):
        logging.warning("resuming from %s: config.%s is ignored", ckpt_dir, field)
  else:
    state = create_train_state(nets, config, mesh)
    state = apply_initial_weights(state, config, vgg_params, mesh)

  start_step = int(jax.device_get(state.step))  # Replicated: every process holds it.
  g_lr = learning_rate(config, config.g_learning_rate, total_steps)  # Logged (a schedule's value).
  step_fn = make_train_step(nets, config, mesh, with_teacher=teacher_params is not None)
  sample_fn = make_sample_fn(nets, mesh)
  joint = multihost.JointFlags(mesh)
  flags = joint.none
  train_iter = pipeline.create_train_iterator(config, start_step=start_step)
  sample_batch = None
  history, last_log, last_log_step = [], time.time(), start_step
  for step in range(start_step + 1, total_steps + 1):
    batch = global_batch(next(train_iter), mesh)
    with jax.transfer_guard("disallow"):
      state, metrics = step_fn(state, batch, teacher_params)
    history.append(metrics)
    previous = flags
    flags = joint(multihost.STOP if stop.signum is not None else 0, metrics, previous)
    periodic = step == total_steps or step % config.checkpoint_every_steps == 0
    logs = step % config.log_every_steps == 0
    # Every process reads the same (replicated) flags at the same step, so all take the same
    # decision. Steps that fetch the metrics anyway (logging, saving) read this step's flags;
    # the others read the previous step's, complete by now, so that the host keeps
    # dispatching a step ahead of the device. A save thus never writes a state whose losses
    # (at that step or before) went non-finite.
    bits = int(flags if periodic or logs else previous)
    if bits & multihost.NON_FINITE:
      mngr.wait_until_finished()
      raise NonFiniteLossError(
        f"non-finite loss at step {step} or just before: {_mean_metrics(history)}; "
        f"stopping. The last good checkpoint (step {mngr.latest_step()}) in {ckpt_dir} is "
        "kept; lower the learning rates or use float32 and resume."
      )
    stopping = bool(bits & multihost.STOP) or step == total_steps
    if periodic or logs or stopping:
      summary = _mean_metrics(history)
      history = []
      now = time.time()
      summary["images_per_sec"] = (
        (step - last_log_step) * config.batch_size / max(now - last_log, 1e-9)
      )
      # Unreadable files are skipped with a warning; the running count shows how many.
      summary["data/skipped_files"] = float(pipeline.num_skipped_files())
      summary["data/skipped_grey"] = float(pipeline.num_skipped_grey())
      summary["g/learning_rate"] = float(g_lr(step - 1) if callable(g_lr) else g_lr)
      _log_progress(writer, step, total_steps, summary, config.batch_size)
      last_log, last_log_step = now, step
    # Save before sampling: a failure while sampling must not lose the final/SIGTERM save.
    if stopping or periodic:
      checkpoint.save(mngr, step, split_state(state), config, force=True)
    if config.sample_every_steps > 0 and (step % config.sample_every_steps == 0 or stopping):
      if sample_batch is None:
        sample_batch = _first_eval_batch(pipeline, config, mesh)
      if sample_batch is not None:
        grey, colorized, truth, mask = sample_fn(state.inference_variables, sample_batch)
        if is_chief:  # Replicated outputs: process 0 holds every row.
          mask = np.asarray(mask)
          grid = sample_grid(*(np.asarray(x)[mask] for x in (grey, colorized, truth)))
          writer.write_images(step, {"samples": grid[None]})
    if stopping and step < total_steps:
      logging.warning("stopped at step %d; checkpoint saved in %s", step, ckpt_dir)
      break
  mngr.wait_until_finished()
  mngr.close()
  writer.flush()
  return state


def _first_eval_batch(pipeline, config, mesh) -> dict[str, jax.Array] | None:
  """A fixed batch of held-out images for sample grids (global array), or None."""
  n = config.num_samples - config.num_samples % mesh.devices.size or mesh.devices.size
  try:
    it = pipeline.create_eval_iterator(config, batch_size=n // jax.process_count())
    batch = next(iter(it))
  except (StopIteration, ValueError) as e:
    logging.warning("no sample images (%s); skipping sample grids", e)
    return None
  # 'mask' is False on the rows that pad the last process's share.
  return global_batch({"rgb": batch["rgb"], "mask": batch["mask"]}, mesh)
