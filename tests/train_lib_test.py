"""Train step and loop: learning, data-parallel equivalence, exact resume, SIGTERM, bad input."""

import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import photo_batch
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from chromagan_jax.configs import tiny
from chromagan_jax.data import pipeline
from chromagan_jax.errors import CheckpointError, ShapeError
from chromagan_jax.model import losses, networks
from chromagan_jax.ops import color
from chromagan_jax.training import optim, train_state, train_step, trainer, validate
from chromagan_jax.weights import checkpoint


def _setup(config, devices=None):
  mesh = train_state.make_mesh(devices)
  nets = train_state.make_networks(config)
  state = train_state.create_train_state(nets, config, mesh)
  step = train_step.make_train_step(nets, config, mesh, with_teacher=False)
  return mesh, nets, state, step


def test_a_few_steps_lower_the_colour_mse():
  config = tiny.get_config()
  mesh, _, state, step = _setup(config)
  batch = train_step.global_batch(photo_batch(), mesh)
  mses = []
  for _ in range(6):
    state, metrics = step(state, batch, None)
    mses.append(float(metrics["g/mse"]))
  assert all(np.isfinite(mses))
  assert mses[-1] < 0.7 * mses[0], mses
  assert int(state.step) == 6


def test_step_matches_on_one_and_eight_devices():
  assert jax.device_count() == 8
  config = tiny.get_config()
  batch = photo_batch()
  results, initial = [], []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh, _, state, step = _setup(config, devices)
    initial.append(jax.device_get(state))
    metrics = []
    for _ in range(2):
      state, m = step(state, train_step.global_batch(batch, mesh), None)
      metrics.append(m)
    assert len(jax.tree.leaves(state.g_params)[0].sharding.device_set) == len(devices)
    results.append(jax.device_get((state, metrics)))
  (s1, m1), (s8, m8) = results
  for key in m1[0]:
    # First step: sums over the batch are split across devices, float32 reassociation only.
    np.testing.assert_allclose(m1[0][key], m8[0][key], rtol=2e-4, atol=1e-4, err_msg=key)
    # Second step: after an Adam update, which normalises each gradient entry, so a
    # near-zero entry whose float32 sum differs in the last bits may move by up to 2 * lr.
    # Measured: 9e-4 relative on d/gp (1.10) with glorot_uniform kernels.
    np.testing.assert_allclose(m1[1][key], m8[1][key], rtol=3e-3, atol=1e-4, err_msg=key)
  # Parameters, as updates p - p0 in units of lr (two Adam steps move an entry by up to
  # ~2.05 lr, so the parameters themselves would agree within 4.5 lr whatever the step did).
  # Adam divides each gradient entry by its own scale, so an entry whose gradient is float
  # noise (a bias before batch norm) may move differently on each layout; most agree closely.
  # Measured 95th percentile of |update difference|: 0.076 lr (generator), 0.0025 lr
  # (critic); max 2.0 lr. One layout's updates 1.1x larger: 0.21 and 0.20.
  lr = config.optimizer.g_learning_rate
  for name in ("g_params", "d_params"):
    p0 = jax.tree.leaves(getattr(initial[0], name))
    for a, b in zip(p0, jax.tree.leaves(getattr(initial[1], name)), strict=True):
      np.testing.assert_array_equal(a, b)  # The same start.

    def update(state, p0=p0, name=name):
      leaves = jax.tree.leaves(getattr(state, name))
      pairs = zip(leaves, p0, strict=True)
      return np.concatenate([(np.asarray(p, np.float64) - q).ravel() for p, q in pairs]) / lr

    u1, u8 = update(s1), update(s8)
    diff = np.abs(u1 - u8)
    live = (u1 != 0) | (u8 != 0)  # Without a teacher the class head stands still.
    assert live.mean() > 0.2, (name, live.mean())
    assert (np.abs(u1[live]) > 0.5).mean() > 0.1, name  # Parameters really moved.
    assert np.percentile(diff[live], 95) < 0.15, (name, np.percentile(diff[live], 95))
    np.testing.assert_array_less(diff, 4.5, err_msg=name)
  assert int(s1.step) == int(s8.step) == 2


def test_teacher_kl_is_used_and_no_host_transfers_inside_the_step():
  config = tiny.get_config()
  mesh, nets, state, _ = _setup(config)
  teacher_params = jax.jit(
    lambda k: nets.teacher.init(k, jnp.zeros((1, 64, 64, 3)))["params"],
  )(jax.random.key(1))
  teacher_params = jax.device_put(teacher_params, NamedSharding(mesh, P()))
  step = train_step.make_train_step(nets, config, mesh, with_teacher=True)
  batch = train_step.global_batch(photo_batch(), mesh)

  # Independent check of the KL term: teacher and generator distributions on the same input.
  @jax.jit
  def distributions(g_vars, rgb):
    l3 = color.gray_to_l3(color.rgb_to_net(rgb)[0])
    p_t = jax.nn.softmax(nets.teacher.apply({"params": teacher_params}, l3))
    (_, p_g), _ = nets.generator.apply(g_vars, l3, train=True, mutable=["batch_stats"])
    return p_t, p_g

  # Computed before the step, which donates (invalidates) the state it is given.
  p_t, p_g = (
    np.clip(np.asarray(p, np.float64), 1e-7, 1)
    for p in distributions(state.generator_variables, batch["rgb"])
  )
  with jax.transfer_guard("disallow"):
    _, metrics = step(state, batch, teacher_params)
  expected = np.mean(np.sum(p_t * np.log(p_t / p_g), axis=-1))
  np.testing.assert_allclose(float(metrics["g/kl"]), expected, rtol=1e-3)


def _one_step(config, batch):
  mesh, _, state, step = _setup(config, jax.devices()[:2])
  lowered = step.lower(state, train_step.global_batch(batch, mesh), None).as_text()
  with jax.transfer_guard("disallow"):
    state, metrics = step(state, train_step.global_batch(batch, mesh), None)
  return jax.device_get((state, metrics)), lowered


def test_bfloat16_compute_and_trunk_remat_steps():
  """Accelerator options: bf16 compute keeps f32 parameters, optimizer state and losses;
  remat of the trunk recomputes activations (optimization barriers) without changing the step.
  """
  batch = photo_batch()
  (s32, m32), hlo32 = _one_step(tiny.get_config(), batch)
  config = tiny.get_config()
  config.model.remat_trunk = True
  (s_remat, m_remat), hlo_remat = _one_step(config, batch)
  assert "optimization_barrier" in hlo_remat and "optimization_barrier" not in hlo32
  for key in m32:
    np.testing.assert_allclose(m_remat[key], m32[key], rtol=1e-5, atol=1e-6, err_msg=key)
  for a, b in zip(jax.tree.leaves(s_remat), jax.tree.leaves(s32), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  config = tiny.get_config()
  config.dtype = "bfloat16"
  (s16, m16), hlo16 = _one_step(config, batch)
  assert "bf16" in hlo16 and "bf16" not in hlo32
  floats = [x for x in jax.tree.leaves(s16) if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)
  for key in m32:
    assert m16[key].dtype == jnp.float32, key
    assert np.isfinite(m16[key]), key
  # bf16 has 8 mantissa bits: every loss agrees with float32 to 2% (measured: d/real 1.9%,
  # the others 0.06-1.1%), so rtol 4e-2; the atol is far below every loss (all > 0.01), so
  # a zero or halved loss fails (the former atol=0.02 let a zero d/real pass).
  for key in m32:
    np.testing.assert_allclose(m16[key], m32[key], rtol=4e-2, atol=1e-4, err_msg=key)


def test_bfloat16_on_an_affected_cpu_jaxlib_is_refused_before_training(tmp_path, monkeypatch):
  monkeypatch.setattr(networks.importlib.metadata, "version", lambda name: "0.12.0.1")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
  assert networks.cpu_bfloat16_problem(jnp.float32) is None
  assert networks.cpu_bfloat16_problem(jnp.bfloat16, backend="gpu") is None
  problem = networks.cpu_bfloat16_problem(jnp.bfloat16)
  assert "jaxlib 0.12.0.1" in problem and networks.CPU_BFLOAT16_FLAG in problem
  config = tiny.get_config()
  config.dtype = "bfloat16"
  with pytest.raises(trainer.ConfigError, match="config.dtype='bfloat16': bfloat16 on CPU"):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "checkpoints").exists()
  monkeypatch.setenv("XLA_FLAGS", networks.CPU_BFLOAT16_FLAG + "dot,eltwise")  # Still on.
  assert networks.cpu_bfloat16_problem(jnp.bfloat16) is not None
  monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_use_onednn=true {networks.CPU_BFLOAT16_FLAG}")
  assert networks.cpu_bfloat16_problem(jnp.bfloat16) is None
  monkeypatch.setattr(networks.importlib.metadata, "version", lambda name: "0.10.2")
  monkeypatch.setenv("XLA_FLAGS", "")
  assert networks.cpu_bfloat16_problem(jnp.bfloat16) is None


def test_batch_size_not_divisible_by_devices_is_one_line_naming_the_nearest_sizes():
  config = tiny.get_config()
  mesh = train_state.make_mesh()
  cases = [
    (100, 1, "batch_size=100 does not split evenly over the 8 devices: "
     "set --config.batch_size=96 or 104 (a multiple of 8)"),
    (6, 1, "set --config.batch_size=8 (a multiple of 8)"),
    (0, 1, "set --config.batch_size=8 (a multiple of 8)"),
    # Processes count too: 8 devices over 16 processes (never seen, but lcm is the rule).
    (40, 16, "over the 8 devices of 16 processes: set --config.batch_size=32 or 48"),
  ]  # fmt: skip
  for batch_size, processes, message in cases:
    config.batch_size = batch_size
    with pytest.raises(trainer.ConfigError) as e:
      validate.validate(config, mesh.devices.size, processes)
    assert message in str(e.value) and "\n" not in str(e.value)
  for batch_size in (8, 16, 256):
    config.batch_size = batch_size
    validate.validate(config, mesh.devices.size)
  assert validate.nearest_valid_batch_sizes(250, 32) == [224, 256]
  config.batch_size = 3
  validate.validate(config, 3)


def test_validate_reports_every_problem_one_line_each(tmp_path, capsys):
  """Several bad fields: one ConfigError with one line per field, before anything is built
  (no workdir written); the runner prints each as an ``error:`` line."""
  from chromagan_jax.runtime import runner

  config = tiny.get_config()
  config.loss.colour, config.gan.critic_steps, config.optimizer.schedule = "huber", 0, "linear"
  config.model.conv_impl = "fastest"
  with pytest.raises(trainer.ConfigError) as e:
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  lines = str(e.value).splitlines()
  assert len(lines) == 4, lines
  for field in (
    "loss.colour='huber'",
    "gan.critic_steps=0",
    "optimizer.schedule='linear'",
    "'fastest'",
  ):
    assert sum(field in line for line in lines) == 1, field
  assert not (tmp_path / "w").exists()

  def main(argv):
    validate.validate(config)

  assert runner.call(main, []) == 1
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 4 and all(line.startswith("error: config.") for line in err), err


def test_deterministic_ops_reach_the_compiler_on_gpu(monkeypatch):
  """config.deterministic_ops compiles the GPU step with DETERMINISTIC_XLA_OPTIONS: with a
  misspelt option name in it, XLA refuses the compile, i.e. the options really get there."""
  config = tiny.get_config()
  assert config.deterministic_ops
  options = train_step.xla_compiler_options
  assert options(config, "gpu") == {"xla_gpu_deterministic_ops": True}
  assert options(config, "cpu") == options(config, "tpu") == {}
  config.deterministic_ops = False
  assert options(config, "gpu") == {}
  config.deterministic_ops = True
  monkeypatch.setattr(train_step, "DETERMINISTIC_XLA_OPTIONS", {"xla_gpu_no_such_option": True})
  mesh, _, state, _ = _setup(config, jax.devices()[:1])
  batch = train_step.global_batch(photo_batch(), mesh)
  nets = train_state.make_networks(config)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # As make_train_step sees it.
  step = train_step.make_train_step(nets, config, mesh, with_teacher=False)
  with pytest.raises(Exception, match="xla_gpu_no_such_option"):
    step.lower(state, batch, None).compile()  # Refused before compiling: fast.


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # three training runs
def test_resume_is_exact(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.num_train_steps = 4
  straight = trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  # A relative --workdir (as in `make demo`): Orbax's async saves need absolute paths.
  monkeypatch.chdir(tmp_path)
  config.num_train_steps = 2
  trainer.train_and_evaluate(config, "split")
  config.num_train_steps = 4
  resumed = trainer.train_and_evaluate(config, "split")
  assert int(resumed.step) == int(straight.step) == 4
  _leaves_equal(straight, resumed)
  # The generator item alone is what colorize loads.
  variables, saved_config = checkpoint.load_generator(tmp_path / "split")
  _leaves_equal(variables, straight.generator_variables)
  assert saved_config.model.image_size == config.model.image_size


def test_sigterm_checkpoints_the_current_step_and_stops(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.num_train_steps = 50
  config.checkpoint_every_steps = 1000
  real = pipeline.create_train_iterator

  def killing_iterator(cfg, **kwargs):
    for i, batch in enumerate(real(cfg, **kwargs)):
      if i == 3:  # While step 3 runs, as a cluster scheduler would.
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(pipeline, "create_train_iterator", killing_iterator)
  state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 4
  mngr = checkpoint.manager(tmp_path / "checkpoints", read_only=True)
  assert mngr.all_steps() == [4]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny.get_config()
  config.num_train_steps = 2
  trainer.train_and_evaluate(config, str(tmp_path))
  config.num_train_steps = 6
  config.optimizer.g_learning_rate = 1e30  # Diverges at once.
  config.optimizer.d_learning_rate = 1e30
  with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss"):
    trainer.train_and_evaluate(config, str(tmp_path))
  mngr = checkpoint.manager(tmp_path / "checkpoints", read_only=True)
  assert mngr.latest_step() == 2


def test_workdir_with_a_different_model_is_a_clear_error(tmp_path):
  config = tiny.get_config()
  config.num_train_steps = 1
  trainer.train_and_evaluate(config, str(tmp_path))
  config.model.width = 0.25
  config.num_train_steps = 2
  made_for = "they were made for image_size=64, width=0.125"
  with pytest.raises(ShapeError, match=f"does not fit config.model: .*; {made_for}") as error:
    trainer.train_and_evaluate(config, str(tmp_path))
  # One line naming the checkpoint, the first parameter that differs and both shapes.
  message = str(error.value)
  assert "\n" not in message and str(tmp_path / "checkpoints") in message, message
  shape = r"\(\d+(, \d+)*,?\)"
  assert re.search(rf"(\['\w+'\])+ expected shape {shape}, found {shape}", message), message


def test_resuming_with_another_optimizer_layout_is_one_line_naming_the_fields(tmp_path):
  """optimizer.schedule and .trunk_lr_scale change the optimizer state's layout: resuming a run with
  other values names both values on one line, before Orbax is asked."""
  config = tiny.get_config()
  config.num_train_steps = 1
  trainer.train_and_evaluate(config, str(tmp_path))
  config.num_train_steps, config.optimizer.schedule, config.optimizer.trunk_lr_scale = (
    2,
    "cosine",
    0.5,
  )
  with pytest.raises(CheckpointError) as error:
    trainer.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert "\n" not in message and str(tmp_path / "checkpoints") in message, message
  was = "config.optimizer.schedule='constant', config.optimizer.trunk_lr_scale=1.0"
  assert f"{was}, this config has" in message, message
  now = "config.optimizer.schedule='cosine', config.optimizer.trunk_lr_scale=0.5"
  assert now in message, message
  config.optimizer.schedule, config.optimizer.trunk_lr_scale = (
    "constant",
    1.0,
  )  # The run's own: resumes.
  assert int(trainer.train_and_evaluate(config, str(tmp_path)).step) == 2


def test_critic_update_also_updates_the_generators_batch_norm_by_default():
  """As Keras 2 did: the critic model's train function runs the nested generator's BN
  updates too, so the moving averages move twice per batch (bn_update_in_critic_step).

  The statistics are computed independently from the initial state: the generator step's
  update by the initial parameters, then (with the flag) the critic step's by the updated
  ones; a step that drops either update, or keeps the initial statistics, fails."""
  config = tiny.get_config()
  assert config.gan.bn_update_in_critic_step
  batch = photo_batch()
  mesh, nets, state, _ = _setup(config, jax.devices()[:1])
  host_state = jax.device_get(state)
  results = {}
  for flag in (True, False):
    config.gan.bn_update_in_critic_step = flag
    step = train_step.make_train_step(nets, config, mesh, with_teacher=False)
    state = jax.device_put(host_state, NamedSharding(mesh, P()))
    results[flag] = jax.device_get(step(state, train_step.global_batch(batch, mesh), None)[0])
  twice, once = results[True], results[False]
  # The flag changes nothing but the statistics: same parameters after the step ...
  for a, b in zip(jax.tree.leaves(twice.g_params), jax.tree.leaves(once.g_params), strict=True):
    np.testing.assert_array_equal(a, b)
  l3 = color.gray_to_l3(color.rgb_to_net(batch["rgb"])[0])

  @jax.jit
  def bn_update(params, batch_stats):
    _, new = nets.generator.apply(
      {"params": params, "batch_stats": batch_stats}, l3, train=True, mutable=["batch_stats"]
    )
    return new["batch_stats"]

  def assert_stats_close(got, want, what):
    for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{what} {path}")

  # ... the generator step's update, by the initial parameters (the only one without the
  # flag), and 'twice' is that plus one more by the updated generator (the critic's fake-ab
  # pass).
  after_g_step = jax.device_get(bn_update(host_state.g_params, host_state.g_batch_stats))
  assert_stats_close(once.g_batch_stats, after_g_step, "bn_update_in_critic_step=False")
  assert_stats_close(
    twice.g_batch_stats, bn_update(once.g_params, after_g_step), "bn_update_in_critic_step=True"
  )
  initial = jax.tree.leaves(host_state.g_batch_stats)
  for got in (once, twice):  # Both updates are visible.
    leaves = jax.tree.leaves(got.g_batch_stats)
    moved = [np.abs(a - b).max() for a, b in zip(leaves, initial, strict=True)]
    assert max(moved) > 1e-3, max(moved)
  stats = [jax.tree.leaves(s.g_batch_stats) for s in (twice, once)]
  moved = [np.abs(a - b).max() for a, b in zip(*stats, strict=True)]
  assert max(moved) > 1e-4  # The second update is visible.


def test_ema_follows_the_generator_with_the_warmed_up_decay():
  """EMA_{k+1} = d_k EMA_k + (1 - d_k) params_{k+1}, d_k = min(decay, (1 + k) / (10 + k)),
  recomputed in NumPy float64 from the parameters each step produced."""
  config = tiny.get_config()
  config.optimizer.ema_decay = (
    0.5  # Below the warm-up's (1 + k) / (10 + k) from k = 8 on: both branches.
  )
  mesh, _, state, step = _setup(config)
  batch = train_step.global_batch(photo_batch(), mesh)
  to64 = lambda t: jax.tree.map(lambda x: np.asarray(x, np.float64), t)
  ema = to64(state.ema_params)
  _leaves_equal(state.ema_params, state.g_params)  # Starts at the initial weights.
  for k in range(10):
    state, _ = step(state, batch, None)
    d = min(config.optimizer.ema_decay, (1 + k) / (10 + k))
    ema = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, ema, to64(state.g_params))
  got = jax.tree.leaves(to64(state.ema_params))
  live = jax.tree.leaves(state.g_params)
  for g, w in zip(got, jax.tree.leaves(ema), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
  # ... and it is not just the live parameters (the test would not see a missing update).
  assert max(np.abs(g - np.asarray(p)).max() for g, p in zip(got, live, strict=True)) > 1e-4
  assert state.inference_variables["params"] is state.ema_params


@pytest.mark.slow  # three short training runs
def test_ema_is_checkpointed_resumed_exactly_and_preferred_by_inference(tmp_path):
  config = tiny.get_config()
  config.optimizer.ema_decay = 0.9
  config.num_train_steps = 4
  straight = trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  config.num_train_steps = 2
  trainer.train_and_evaluate(config, str(tmp_path / "split"))
  config.num_train_steps = 4
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "split"))
  _leaves_equal(straight, resumed)  # EMA included: it is part of the state.
  ema, _ = checkpoint.load_generator(tmp_path / "split")
  _leaves_equal(ema["params"], straight.ema_params)
  _leaves_equal(ema["batch_stats"], straight.g_batch_stats)
  live, _ = checkpoint.load_generator(tmp_path / "split", ema=False)
  _leaves_equal(live, straight.generator_variables)
  # evaluate scores the EMA unless told not to, and says which it scored.
  from chromagan_jax.evaluation import evaluator

  scores = {
    ema: evaluator.evaluate_checkpoint(
      tmp_path / "split", "bundled", str(tmp_path / f"eval{ema}"), ema=ema, progress=False
    )
    for ema in (None, False)
  }
  assert scores[None]["ema"] is True and scores[False]["ema"] is False
  assert scores[None]["mean"]["colorized"]["psnr"] != scores[False]["mean"]["colorized"]["psnr"]
  # A workdir trained without an EMA: inference reads its generator; resuming it with an EMA
  # (a changed config) is one line saying so.
  config.optimizer.ema_decay = 0.0
  config.num_train_steps = 1
  trainer.train_and_evaluate(config, str(tmp_path / "plain"))
  with pytest.raises(checkpoint.CheckpointError, match="no moving-average generator"):
    checkpoint.load_generator(tmp_path / "plain", ema=True)
  config.optimizer.ema_decay = 0.9
  config.num_train_steps = 2
  with pytest.raises(ShapeError, match="has no generator_ema item.*config.optimizer.ema_decay"):
    trainer.train_and_evaluate(config, str(tmp_path / "plain"))


def _cosine(peak, final_fraction, total, k):
  """The half-cosine decay written out: peak at k=0, final_fraction * peak from k=total on."""
  k = min(k, total)
  return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + np.cos(np.pi * k / total)))


def test_cosine_learning_rate_drives_adam_as_the_closed_form():
  config = tiny.get_config()
  config.optimizer.schedule, config.optimizer.final_fraction, total = "cosine", 0.1, 6
  nets = train_state.make_networks(config, total)
  b1, b2, eps = config.optimizer.b1, config.optimizer.b2, config.optimizer.eps
  rng = np.random.default_rng(0)
  params = {"w": jnp.zeros(5)}
  g_state, d_state = nets.g_tx.init(params), nets.d_tx.init(params)
  m = v = np.zeros(5)
  for k in range(total + 2):  # Past the end the rate stays at its floor.
    grad = rng.normal(size=5)
    g_upd, g_state = nets.g_tx.update({"w": jnp.asarray(grad, jnp.float32)}, g_state, params)
    d_upd, d_state = nets.d_tx.update({"w": jnp.asarray(grad, jnp.float32)}, d_state, params)
    m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
    m_hat, v_hat = m / (1 - b1 ** (k + 1)), v / (1 - b2 ** (k + 1))
    for upd, peak in (
      (g_upd, config.optimizer.g_learning_rate),
      (d_upd, config.optimizer.d_learning_rate),
    ):
      want = -_cosine(peak, 0.1, total, k) * m_hat / (np.sqrt(v_hat) + eps)
      np.testing.assert_allclose(np.asarray(upd["w"]), want, rtol=2e-5)


def test_learning_rate_schedule_errors_name_the_field():
  config = tiny.get_config()
  assert optim.learning_rate(config, 3e-4) == 3e-4  # 'constant', the reference's.
  config.optimizer.schedule = "cosine"
  with pytest.raises(trainer.ConfigError, match="optimizer.schedule='cosine' needs"):
    train_state.make_networks(config)
  config.optimizer.schedule = "linear"
  with pytest.raises(trainer.ConfigError, match=r"optimizer.schedule='linear'.*constant.*cosine"):
    validate.validate(config)


def test_train_loop_follows_and_logs_the_cosine_schedule(tmp_path):
  config = tiny.get_config()
  config.optimizer.schedule, config.num_train_steps = "cosine", 4
  state = trainer.train_and_evaluate(config, str(tmp_path))
  # The schedule's own step counter is part of the checkpointed optimizer state.
  counts = [int(x) for x in jax.tree.leaves(state.g_opt_state) if x.ndim == 0]
  assert counts and set(counts) == {4}, counts
  import tensorflow as tf  # To read the TensorBoard events; the other tests do without it.

  (events,) = tmp_path.glob("events.out.tfevents.*")
  logged = {
    e.step: float(tf.make_ndarray(v.tensor))
    for e in tf.compat.v1.train.summary_iterator(str(events))
    for v in e.summary.value
    if v.tag == "g/learning_rate"
  }
  # Logged every 2 steps: the rate the step just taken used (its index step - 1).
  want = {
    s: _cosine(config.optimizer.g_learning_rate, config.optimizer.final_fraction, 4, s - 1)
    for s in (2, 4)
  }
  assert logged.keys() == want.keys()
  for s in want:
    assert logged[s] == pytest.approx(want[s], rel=1e-5)


def test_frozen_trunk_stays_put_the_rest_trains_as_unfrozen_and_its_backward_is_dropped():
  """config.optimizer.freeze_trunk: the trunk is bitwise unchanged over steps, every other parameter
  follows the unfrozen step's update (the stop_gradient changes no forward value and no other
  gradient), and the compiled step does markedly fewer FLOPs (no backward through the trunk)."""
  config = tiny.get_config()
  mesh, _, state0, free_step = _setup(config)
  config.optimizer.freeze_trunk = True
  frozen_step = _setup(config)[3]
  batch = train_step.global_batch(photo_batch(), mesh)
  host0 = jax.device_get(state0)
  copy = lambda: jax.device_put(host0, NamedSharding(mesh, P()))  # Donated: a copy per use.
  free, frozen = copy(), copy()
  for _ in range(3):
    free, _ = free_step(free, batch, None)
    frozen, _ = frozen_step(frozen, batch, None)
  free, frozen = jax.device_get((free, frozen))
  _leaves_equal(frozen.g_params[optim.TRUNK], host0.g_params[optim.TRUNK])
  moved = max(
    np.abs(a - b).max()
    for a, b in zip(
      jax.tree.leaves(free.g_params[optim.TRUNK]),
      jax.tree.leaves(host0.g_params[optim.TRUNK]),
      strict=True,
    )
  )
  assert moved > 1e-4  # Unfrozen, the same steps move the trunk: the check can fail.
  # The first step is the same for every other parameter; later steps differ as the frozen
  # trunk's features do, so only the first is compared (to float32 rounding).
  one_free, _ = free_step(copy(), batch, None)
  one_frozen, _ = frozen_step(copy(), batch, None)
  one_free, one_frozen = jax.device_get((one_free, one_frozen))
  for name in one_free.g_params:
    if name != optim.TRUNK:
      for a, b in zip(
        jax.tree.leaves(one_frozen.g_params[name]),
        jax.tree.leaves(one_free.g_params[name]),
        strict=True,
      ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
  flops = {
    name: step.lower(copy(), batch, None).compile().cost_analysis()["flops"]
    for name, step in (("free", free_step), ("frozen", frozen_step))
  }
  assert flops["frozen"] < 0.85 * flops["free"], flops


def test_frozen_trunk_without_weights_is_one_line(tmp_path):
  config = tiny.get_config()
  config.optimizer.freeze_trunk = True
  with pytest.raises(trainer.ConfigError, match="optimizer.freeze_trunk.*init.vgg16") as e:
    trainer.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(e.value)


def test_adversarial_weight_ramps_linearly_and_the_step_uses_this_steps_weight():
  """config.gan.adv_final / adv_ramp_steps: loss.adv until the ramp starts, adv_final from its
  end, linear between; a step taken at step s is the constant-weight step of weight w(s)."""
  config = tiny.get_config()
  assert optim.adversarial_weight(config) == config.loss.adv == -0.1  # The reference.
  # Weights exact in float32, so the two steps below compute with the same weight.
  config.loss.adv, config.gan.adv_final, config.gan.adv_ramp_steps = -0.5, -1.5, (2, 6)
  weight = optim.adversarial_weight(config)
  got = [float(weight(s)) for s in (0, 2, 3, 5, 6, 9)]
  assert got == [-0.5, -0.5, -0.75, -1.25, -1.5, -1.5]
  mesh, _, state, ramp_step = _setup(config)
  batch = train_step.global_batch(photo_batch(), mesh)
  host = jax.device_get(state.replace(step=jnp.asarray(3, state.step.dtype)))
  fixed = tiny.get_config()
  fixed.loss.adv = -0.75
  fixed_step = _setup(fixed)[3]
  copy = lambda: jax.device_put(host, NamedSharding(mesh, P()))  # Donated: a copy per use.
  ramped, metrics = jax.device_get(ramp_step(copy(), batch, None))
  want, want_metrics = jax.device_get(fixed_step(copy(), batch, None))
  assert float(metrics["g/adv_weight"]) == -0.75
  assert "g/adv_weight" not in want_metrics
  for k in want_metrics:
    assert float(metrics[k]) == pytest.approx(float(want_metrics[k]), rel=1e-6, abs=1e-9), k
  for a, b in zip(jax.tree.leaves(ramped), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  config.gan.adv_ramp_steps = (5, 2)
  with pytest.raises(trainer.ConfigError, match=r"gan.adv_ramp_steps=\(5, 2\)"):
    validate.validate(config)


def test_trunk_lr_scale_scales_only_the_trunks_adam_updates():
  """config.optimizer.trunk_lr_scale: the trunk's update is the plain Adam update times the scale (a
  power of two, so exactly), every other update is Adam's own, over several steps."""
  config = tiny.get_config()
  plain = train_state.make_networks(config)
  config.optimizer.trunk_lr_scale = 0.25
  scaled = train_state.make_networks(config)
  params = jax.device_get(train_state.init_state(plain, config, jax.random.key(0)).g_params)
  assert optim.TRUNK in params and len(params) > 1
  rng = np.random.default_rng(0)
  p_state, s_state = plain.g_tx.init(params), scaled.g_tx.init(params)
  for _ in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    want, p_state = plain.g_tx.update(grads, p_state, params)
    got, s_state = scaled.g_tx.update(grads, s_state, params)
    for name in params:
      factor = 0.25 if name == optim.TRUNK else 1.0
      for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(want[name]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), factor * np.asarray(b), err_msg=name)
  for bad, freeze in ((0.0, False), (1.5, False), (0.5, True)):
    config.optimizer.trunk_lr_scale, config.optimizer.freeze_trunk = bad, freeze
    with pytest.raises(trainer.ConfigError, match="trunk_lr_scale") as e:
      validate.validate(config)
    # One line for the scale (freeze_trunk without weights is its own line).
    assert sum("trunk_lr_scale" in line for line in str(e.value).splitlines()) == 1


def test_critic_steps_repeat_the_critics_update_on_the_batch_with_fresh_penalty_points():
  """config.gan.critic_steps=2: the generator's half is the single-step's exactly; the critic's
  is the single-step's followed by one more Adam step on the same real and colorized ab,
  with the gradient penalty interpolated at the second step's own eps (checked by hand)."""
  config = tiny.get_config()
  mesh, nets, state, one_step = _setup(config)
  batch = train_step.global_batch(photo_batch(), mesh)
  config.gan.critic_steps = 2
  two_step = train_step.make_train_step(nets, config, mesh, with_teacher=False)
  host = jax.device_get(state)
  copy = lambda: jax.device_put(host, NamedSharding(mesh, P()))  # Donated: a copy per use.
  once, _ = jax.device_get(one_step(copy(), batch, None))
  twice, metrics = jax.device_get(two_step(copy(), batch, None))
  for field in ("step", "g_params", "g_batch_stats", "g_opt_state", "ema_params"):
    _leaves_equal(getattr(twice, field), getattr(once, field))

  # The second critic step by hand, from the single-step's critic.
  lightness, ab_real = color.rgb_to_net(jax.device_get(batch["rgb"]))
  (ab_fake, _), _ = nets.generator.apply(
    {"params": once.g_params, "batch_stats": once.g_batch_stats},
    color.gray_to_l3(lightness),
    train=True,
    mutable=["batch_stats"],
  )
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(host.rng), host.step)
  eps = jax.random.uniform(jax.random.fold_in(step_rng, 1), (ab_real.shape[0],), jnp.float32)
  weights = train_step.loss_weights_from_config(config)

  def d_loss(d_params):
    score = lambda ab, light=lightness: nets.critic.apply({"params": d_params}, ab, light)
    gp = losses.gradient_penalty(score, ab_real, ab_fake, lightness, eps)
    return losses.critic_loss(score(ab_real), score(ab_fake), gp, weights)

  grads, terms = jax.grad(d_loss, has_aux=True)(once.d_params)
  updates, want_opt = nets.d_tx.update(grads, once.d_opt_state, once.d_params)
  want = optax.apply_updates(once.d_params, updates)
  moved = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(once.d_params), strict=True)
  )
  assert moved > 1e-4  # The second step is a real step, far above the tolerance below.
  for a, b in zip(jax.tree.leaves(twice.d_params), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
  for a, b in zip(jax.tree.leaves(twice.d_opt_state), jax.tree.leaves(want_opt), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
  assert float(metrics["d/gp"]) == pytest.approx(float(terms["gp"]), rel=1e-4, abs=1e-7)
  for bad in (0, -2):  # (ml_collections refuses a float for this int field itself.)
    config.gan.critic_steps = bad
    with pytest.raises(trainer.ConfigError, match="critic_steps"):
      validate.validate(config)


def test_l1_colour_loss_reaches_the_step():
  """config.loss.colour='l1': the step's generator loss is mean |ab error| + adv (the logged
  total equals that sum and differs from the L2 total); a bad name is one ConfigError line."""
  config = tiny.get_config()
  config.loss.colour = "l1"
  mesh, nets, state, step = _setup(config)
  _, metrics = jax.device_get(step(state, train_step.global_batch(photo_batch(), mesh), None))
  want = float(metrics["g/l1"]) + config.loss.adv * float(metrics["g/adv"])
  assert float(metrics["g/total"]) == pytest.approx(want, rel=1e-5)
  assert abs(float(metrics["g/l1"]) - float(metrics["g/mse"])) > 1e-2
  config.loss.colour = "huber"
  with pytest.raises(trainer.ConfigError, match="loss.colour='huber'") as e:
    validate.validate(config)
  assert "\n" not in str(e.value)
