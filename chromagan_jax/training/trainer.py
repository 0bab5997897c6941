"""The training loop: initial weights, resume, the jitted step over the input pipeline,
checkpoints, sample grids, logging, and the joint multi-host stop and NaN decisions.

Nothing here imports TensorFlow at import time: the input pipeline and clu's writers are
imported by the loop, so the models, losses and the step run on accelerator images without TF.
"""

import functools
import math
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from chromagan_jax import extras
from chromagan_jax.errors import CheckpointError, ConfigError, NonFiniteLossError
from chromagan_jax.model import predict
from chromagan_jax.training import multihost, optim, train_state, train_step, validate
from chromagan_jax.weights import checkpoint, initial


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


def apply_initial_weights(
  state: train_state.TrainState, init: initial.StartingWeights, config, mesh
) -> train_state.TrainState:
  """A fresh state with the starting weights put in; called only when not resuming.

  ``init`` (:func:`initial.starting_weights`, read and checked there) puts the VGG16 trunk,
  then ``config.init.generator``'s whole generator, then ``config.init.critic``'s critic in;
  here the weights are placed on ``mesh``.
  """
  put = functools.partial(train_state.fresh_replicated, mesh=mesh)
  g_params, g_batch_stats, d_params = state.g_params, state.g_batch_stats, state.d_params
  if init.trunk is not None:
    g_params = {**g_params, optim.TRUNK: put(init.trunk)}
  if init.generator is not None:
    g_params, g_batch_stats = put(init.generator["params"]), put(init.generator["batch_stats"])
    logging.info("generator initialised from %s", config.init.generator)
  if init.critic is not None:
    d_params = put(init.critic)
    logging.info("critic initialised from %s", config.init.critic)
  # Adam's initial moments are zeros whatever the parameter values: the state stays valid.
  # The EMA starts from the initial weights (a copy: the state's buffers are donated).
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = jax.tree.map(jnp.copy, g_params)
  return state.replace(
    g_params=g_params, g_batch_stats=g_batch_stats, d_params=d_params, ema_params=ema_params
  )


# Fields outside config.model that shape the optimizer's state. A resume must keep them: Orbax
# would otherwise fail deep inside the restore.
OPTIMIZER_FIELDS = ("schedule", "trunk_lr_scale")


def check_resume_config(ckpt_dir, step: int, config) -> None:
  """One-line CheckpointError if the run in ``ckpt_dir`` was saved with other OPTIMIZER_FIELDS.

  The saved config comes back upgraded (:func:`checkpoint.load_config`): a run saved before a
  field existed compares with that field's default.
  """
  saved = checkpoint.load_config(ckpt_dir, step)[1].optimizer
  ours = config.optimizer
  changed = [k for k in OPTIMIZER_FIELDS if saved[k] != ours[k]]
  if changed:
    was = ", ".join(f"config.optimizer.{k}={saved[k]!r}" for k in changed)
    now = ", ".join(f"config.optimizer.{k}={ours[k]!r}" for k in changed)
    raise CheckpointError(
      f"checkpoint {ckpt_dir}/{step} was trained with {was}, this config has {now}: their "
      "optimizer states differ; resume with the run's own values, or use a fresh --workdir"
    )


def _scalar_fields(tree: dict, prefix: str = "") -> dict[str, int | float | str]:
  """The config's scalar fields by dotted name ('optimizer.g_learning_rate'): the hparams."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_scalar_fields(v, f"{prefix}{k}."))
    elif isinstance(v, int | float | str):
      out[prefix + k] = v
  return out


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  """Means of replicated scalar metrics (every process holds their full values)."""
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def make_sample_fn(nets: train_state.Networks, mesh: Mesh) -> Callable:
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
  """Trains ChromaGAN per ``config``, checkpointing and logging into ``workdir``.

  Resumes from the latest checkpoint in ``workdir`` if there is one. Returns the final state.
  With several processes, every process runs this with the same arguments: stopping (a
  signal to any process, a non-finite loss) is decided jointly, so that all save the same
  step and leave together. The config is checked first (:func:`validate.validate`): every
  problem is reported before anything is built.
  """
  validate.validate(config, jax.device_count(), jax.process_count())
  with _StopRequest() as stop:  # From the start: a signal during setup stops at step 1.
    return _train(config, workdir, stop)


def _train(config, workdir, stop: "_StopRequest") -> train_state.TrainState:
  # TensorFlow only here, in the loop (clu's writers and the input pipeline): the models,
  # losses and the step import without it.
  from chromagan_jax.data import pipeline

  metric_writers = extras.require("clu.metric_writers", "train", "training")

  mesh = train_state.make_mesh()
  total_steps = num_train_steps(config, pipeline.num_train_examples(config))
  nets = train_state.make_networks(config, total_steps)
  is_chief = jax.process_index() == 0
  ckpt_dir = checkpoint.epath.Path(workdir) / "checkpoints"
  mngr = checkpoint.manager(ckpt_dir, max_to_keep=config.max_checkpoints_to_keep)
  latest = mngr.latest_step()
  multihost.check_or_record_topology(workdir, resuming=latest is not None)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if is_chief:
    writer.write_hparams(_scalar_fields(config.to_dict()))

  init = initial.starting_weights(config, resuming=latest is not None)
  teacher_params = None  # The KL teacher: VGG16 with its classifier top only.
  if init.teacher is not None:
    teacher_params = jax.device_put(init.teacher, NamedSharding(mesh, P()))
  if latest is not None:
    check_resume_config(ckpt_dir, latest, config)
    abstract = train_state.split_state(train_state.abstract_train_state(nets, config, mesh))
    state = train_state.merge_state(checkpoint.restore(mngr, latest, abstract))
    logging.info("resumed from %s at step %d", ckpt_dir, latest)
    # The workdir's own training state wins: initial weights only seed a fresh run.
    for field in ("generator", "critic"):
      if config.init[field]:
        logging.warning("resuming from %s: config.init.%s is ignored", ckpt_dir, field)
  else:
    state = train_state.create_train_state(nets, config, mesh)
    state = apply_initial_weights(state, init, config, mesh)

  start_step = int(jax.device_get(state.step))  # Replicated: every process holds it.
  g_lr = optim.learning_rate(
    config, config.optimizer.g_learning_rate, total_steps
  )  # Logged (a schedule's value).
  step_fn = train_step.make_train_step(nets, config, mesh, with_teacher=teacher_params is not None)
  sample_fn = make_sample_fn(nets, mesh)
  joint = multihost.JointFlags(mesh)
  flags = joint.none
  train_iter = pipeline.create_train_iterator(config, start_step=start_step)
  sample_batch = None
  history, last_log, last_log_step = [], time.time(), start_step
  for step in range(start_step + 1, total_steps + 1):
    batch = train_step.global_batch(next(train_iter), mesh)
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
      checkpoint.save(mngr, step, train_state.split_state(state), config, force=True)
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
  return train_step.global_batch({"rgb": batch["rgb"], "mask": batch["mask"]}, mesh)
