"""train.py itself as 2 jax.distributed processes on 127.0.0.1 (one CPU device each).

configs/tiny.py with sample grids and the KL teacher on (a random VGG16 .h5 written here), as a
pod runs it: SIGTERM to either process saves the same step in both and both exit 0; resuming
that checkpoint ends in the state of an uninterrupted run; a non-finite loss on one
process's rows stops both with one error line; bad multi-process input is one line each; a
process killed with SIGKILL ends the other in seconds with one line and exit status 75, and
the same command resumes the last complete checkpoint exactly; a data folder missing on one
host ends both with its one line.
Every process a test starts is killed when the test ends, whatever happened.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from convert_formats import write_keras2_h5

from chromagan_jax.configs import tiny
from chromagan_jax.data import sources
from chromagan_jax.model import networks
from chromagan_jax.training import multihost, train_state
from chromagan_jax.weights import checkpoint

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10
# The run every test starts from; XLA's convolutions compile ~4x faster than the Winograd
# ones on CPU and do not change what is tested here.
OVERRIDES = (
  f"--config.num_train_steps={STEPS}",
  "--config.sample_every_steps=2",
  "--config.checkpoint_every_steps=4",
  "--config.log_every_steps=2",
  "--config.max_checkpoints_to_keep=10",
  "--config.model.conv_impl=xla",
)
JOIN_S = 120  # --initialization_timeout (the two processes start within a second).
_NAN_ROWS = os.path.join(_ROOT, "tests", "nan_rows_train.py")
STOP_S = 60  # SIGTERM to exit, as a cluster scheduler's grace period would allow.


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env():
  return {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "JAX_NUM_CPU_DEVICES": "1",
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
  }


class Launcher:
  """Starts train.py processes and kills whichever still run when the test ends."""

  def __init__(self, tmp_path):
    self.tmp_path = tmp_path
    self.procs = []

  def start(self, workdir, args_of_process, name, join_s=JOIN_S, only=None, script=None):
    """Starts the processes of one run (all, or the ids in ``only``): (procs, log paths).

    ``script``: {process id: script run instead of train.py}."""
    port, n = _free_port(), len(args_of_process)
    procs, logs = [], []
    for pid, extra in enumerate(args_of_process):
      if only is not None and pid not in only:
        continue
      log = self.tmp_path / f"{name}.p{pid}.log"
      cmd = [
        sys.executable,
        (script or {}).get(pid, os.path.join(_ROOT, "train.py")),
        f"--config={os.path.join(_ROOT, 'configs', 'tiny.py')}",
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={n}",
        f"--process_id={pid}",
        f"--initialization_timeout={join_s}",
        *extra,
      ]
      with open(log, "w") as f:
        procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env()))
      logs.append(log)
    self.procs += procs
    return procs, logs

  def kill_all(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
      p.wait()


@pytest.fixture
def launcher(tmp_path):
  launcher = Launcher(tmp_path)
  try:
    yield launcher
  finally:
    launcher.kill_all()


def _wait(procs, logs, timeout):
  """Exit codes of ``procs``; fails (the fixture kills the rest) if one runs past timeout."""
  deadline = time.monotonic() + timeout
  for p in procs:
    try:
      p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      pytest.fail(f"still running after {timeout} s:\n" + _tails(logs))
  return [p.returncode for p in procs]


def _tails(logs, n=3000):
  return "\n".join(f"--- {log.name}:\n{log.read_text()[-n:]}" for log in logs)


def _run(launcher, workdir, args_of_process, name, timeout=900):
  procs, logs = launcher.start(workdir, args_of_process, name)
  codes = _wait(procs, logs, timeout)
  return codes, [log.read_text() for log in logs], logs


def _vgg16_h5(path, config):
  """A random VGG16 with top at ``config.model``'s size, as Keras' save_weights writes it."""
  teacher = networks.models_from_config(config.model)[2]
  shapes = jax.eval_shape(teacher.init, jax.random.key(0), *train_state.dummy_inputs(config)[:1])
  rng = np.random.default_rng(3)
  params = shapes["params"]
  layers = []
  for name, p in {**params["vgg16"], **{k: params[k] for k in params if k != "vgg16"}}.items():
    kernel = rng.normal(0, 1 / np.sqrt(np.prod(p["kernel"].shape[:-1])), p["kernel"].shape)
    bias = rng.normal(0, 0.05, p["bias"].shape)
    layers.append((name, [(f"{name}/kernel:0", kernel), (f"{name}/bias:0", bias)]))
  write_keras2_h5(path, layers, weights_only=True)
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("vgg")
  return {"vgg": _vgg16_h5(d / "vgg16.h5", tiny.get_config())}


def _args(files):
  """Each process's overrides: the same command on every host."""
  return [(*OVERRIDES, f"--config.init.vgg16={files['vgg']}")] * 2


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory):
  """An uninterrupted 2-process run (checkpoints at steps 4, 8 and 10)."""
  workdir = tmp_path_factory.mktemp("reference") / "work"
  launcher = Launcher(workdir.parent)
  try:
    codes, texts, logs = _run(launcher, workdir, _args(files), "reference")
  finally:
    launcher.kill_all()
  assert codes == [0, 0], _tails(logs)
  return workdir, texts


def _restore(workdir, step):
  config = tiny.get_config()
  config.model.conv_impl = "xla"
  mesh = train_state.make_mesh(jax.devices()[:1])
  nets = train_state.make_networks(config)
  abstract = train_state.split_state(train_state.abstract_train_state(nets, config, mesh))
  mngr = checkpoint.manager(workdir / "checkpoints", read_only=True)
  items = jax.device_get(checkpoint.restore(mngr, step, abstract))
  return items[checkpoint.GENERATOR], items[checkpoint.TRAIN]


@pytest.mark.slow  # The reference run: ~1 min.
def test_reference_run_writes_sample_grids_and_records_its_processes(reference):
  workdir, texts = reference
  assert checkpoint.manager(workdir / "checkpoints", read_only=True).all_steps() == [4, 8, 10]
  assert (workdir / multihost.TOPOLOGY_FILE).exists()
  events = list(workdir.glob("events.out.tfevents.*"))
  assert len(events) == 1  # Process 0 alone writes TensorBoard events.
  import tensorflow as tf  # To read the TensorBoard events; the other tests do without it.

  images = [
    (e.step, v.tag)
    for e in tf.compat.v1.train.summary_iterator(str(events[0]))
    for v in e.summary.value
    if v.tag == "samples"
  ]
  assert [s for s, _ in images] == [2, 4, 6, 8, 10], images
  for text in texts:
    assert "Traceback" not in text and "init.vgg16 is empty" not in text


def _interrupt(launcher, files, workdir, name, target, after_step):
  """Runs until process 0 logs a step > after_step, SIGTERMs process ``target``; returns
  the step both processes stopped at (checked to be the same, and the latest checkpoint)."""
  procs, logs = launcher.start(workdir, _args(files), name)
  deadline = time.monotonic() + 600
  while not [
    s for s in re.findall(r"step (\d+)/", logs[0].read_text()) if int(s) > after_step
  ]:  # Compiled and stepping.
    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
      pytest.fail(f"did not reach step {after_step + 1}:\n" + _tails(logs))
    time.sleep(0.1)
  procs[target].send_signal(signal.SIGTERM)
  assert _wait(procs, logs, STOP_S) == [0, 0], _tails(logs)
  texts = [log.read_text() for log in logs]
  stopped = [re.findall(r"stopped at step (\d+)", t) for t in texts]
  assert stopped[0] == stopped[1] and len(stopped[0]) == 1, _tails(logs)
  step = int(stopped[0][0])
  assert after_step < step < STEPS
  assert checkpoint.manager(workdir / "checkpoints", read_only=True).latest_step() == step
  for text in texts:
    assert "Traceback" not in text
  return step, texts


@pytest.mark.slow  # Three 2-process launches.
def test_sigterm_to_either_process_saves_the_same_step_and_resumes_exactly(
  files, reference, launcher, tmp_path
):
  """SIGTERM to process 1, resume, SIGTERM to process 0 (the coordinator), resume to the end:
  the final state equals the uninterrupted run's, bit for bit."""
  workdir = tmp_path / "work"
  first, _ = _interrupt(launcher, files, workdir, "sigterm1", target=1, after_step=1)
  second, texts = _interrupt(launcher, files, workdir, "sigterm0", target=0, after_step=first)
  assert f"resumed from {workdir / 'checkpoints'} at step {first}" in texts[0]
  codes, texts, logs = _run(launcher, workdir, _args(files), "resume")
  assert codes == [0, 0], _tails(logs)
  assert f"resumed from {workdir / 'checkpoints'} at step {second}" in texts[0]
  got, want = _restore(workdir, STEPS), _restore(reference[0], STEPS)
  for (path, a), b in zip(
    jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
  ):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_non_finite_loss_on_one_process_stops_both(files, reference, launcher, tmp_path):
  """Process 1 runs train.py with a Lab conversion that gives NaN (tests/nan_rows_train.py):
  only its rows of the global batch are NaN; the losses are global means."""
  workdir = tmp_path / "work"
  shutil.copytree(reference[0] / "checkpoints" / "4", workdir / "checkpoints" / "4")
  shutil.copy(reference[0] / multihost.TOPOLOGY_FILE, workdir / multihost.TOPOLOGY_FILE)
  procs, logs = launcher.start(workdir, _args(files), "nonfinite", script={1: _NAN_ROWS})
  assert _wait(procs, logs, 600) == [1, 1], _tails(logs)
  for log in logs:
    assert "non-finite loss at step" in _one_error_line(log.read_text())
  assert checkpoint.manager(workdir / "checkpoints", read_only=True).all_steps() == [4]


PEER_LOST_S = 30  # Kill of a peer to the survivor's exit, as the issue asks.


@pytest.mark.slow  # A killed launch and its resume (~1 min), plus the reference run.
def test_a_killed_process_ends_the_other_in_one_line_and_the_same_command_resumes_exactly(
  files, reference, launcher, tmp_path
):
  """SIGKILL (no handler runs: an out-of-memory kill, a lost host) to process 1 right after
  process 0 logs step 8, where both start saving step 8: process 0 names the lost process
  and the last complete checkpoint in one line and exits 75 within PEER_LOST_S, without the
  minutes-long jax.distributed.shutdown at exit. A save cut short is not listed; the same
  command resumes from the named step and ends in the uninterrupted run's state."""
  workdir = tmp_path / "work"
  procs, logs = launcher.start(workdir, _args(files), "killed")
  deadline = time.monotonic() + 600
  while "step 8/" not in logs[0].read_text():
    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
      pytest.fail("did not reach step 8:\n" + _tails(logs))
    time.sleep(0.05)
  procs[1].kill()
  killed = time.monotonic()
  assert _wait(procs[:1], logs[:1], PEER_LOST_S) == [multihost.PEER_LOST_STATUS], _tails(logs)
  took = time.monotonic() - killed
  line = _one_error_line(logs[0].read_text())
  steps = checkpoint.complete_steps(workdir / "checkpoints")
  assert steps and set(steps) <= {4, 8}, steps
  assert "process 0: process 1 was lost (" in line, line
  assert f"the last complete checkpoint is step {steps[-1]} in {workdir / 'checkpoints'}" in line
  assert line.endswith("run the same command on every host to resume"), line
  print(f"kill -9 to process 0's exit: {took:.1f} s; last complete step {steps[-1]}")

  codes, texts, logs = _run(launcher, workdir, _args(files), "after_kill")
  assert codes == [0, 0], _tails(logs)
  assert f"resumed from {workdir / 'checkpoints'} at step {steps[-1]}" in texts[0]
  got, want = _restore(workdir, STEPS), _restore(reference[0], STEPS)
  for (path, a), b in zip(
    jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
  ):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow  # One 2-process launch that ends before the first step (~20 s).
def test_a_data_folder_missing_on_one_host_ends_both_with_its_line(launcher, tmp_path):
  """Process 0 has the photos, process 1's folder does not exist: process 1's DataError is
  every process's one line (exit 1), within PEER_LOST_S, where process 0 alone would wait
  at a barrier for JAX's timeouts."""
  photos = tmp_path / "photos"
  photos.mkdir()
  for path in sources.bundled_photos("train")[:8]:
    shutil.copy(path, photos)
  missing = tmp_path / "not_mounted"
  common = (*OVERRIDES, "--config.data.source=folder")
  args = [(*common, f"--config.data.path={photos}"), (*common, f"--config.data.path={missing}")]
  procs, logs = launcher.start(tmp_path / "work", args, "missing")
  # Both processes are past their imports and joined (each logs its devices) before timing.
  deadline = time.monotonic() + 300
  while not all("JAX process" in log.read_text() for log in logs):
    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
      break
    time.sleep(0.05)
  joined = time.monotonic()
  assert _wait(procs, logs, PEER_LOST_S) == [1, 1], _tails(logs)
  print(f"joined to both exits: {time.monotonic() - joined:.1f} s")
  for log in logs:
    line = _one_error_line(log.read_text())
    assert line.startswith(f"error: process 1: {missing}"), line


def _one_error_line(text):
  errors = [line for line in text.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in text and "Check failure" not in text, text
  return errors[0]


def test_a_coordinator_that_never_completes_is_one_line_not_a_hang(launcher, tmp_path):
  """Process 1 alone (nobody listens at the address) and process 0 alone (process 1 never
  comes): each gives up after --initialization_timeout with one line."""
  procs, logs = [], []
  for pid in (0, 1):
    p, log = launcher.start(tmp_path / "work", [()] * 2, f"alone{pid}", join_s=3, only=[pid])
    procs += p
    logs += log
  assert _wait(procs, logs, 120) == [1, 1], _tails(logs)
  for pid, log in enumerate(logs):
    line = _one_error_line(log.read_text())
    assert f"process {pid}: not all 2 processes joined the coordinator 127.0.0.1:" in line
    assert "within 3 s" in line and "--initialization_timeout" in line
  assert not (tmp_path / "work").exists()


def test_partial_multiprocess_flags_are_one_line(tmp_path):
  cmd = [sys.executable, os.path.join(_ROOT, "train.py"), "--config=configs/tiny.py"]
  for flags, want in (
    (["--num_processes=2"], "--num_processes needs --coordinator_address --process_id too"),
    (
      ["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"],
      "--process_id=2 is not in [0, --num_processes=2)",
    ),
  ):
    result = subprocess.run(
      [*cmd, f"--workdir={tmp_path / 'w'}", *flags],
      capture_output=True,
      text=True,
      env=_env(),
      cwd=_ROOT,
      timeout=120,
    )
    assert result.returncode == 1
    assert want in _one_error_line(result.stderr)
  assert not (tmp_path / "w").exists()


@pytest.mark.slow  # Uses the reference run.
def test_resuming_with_another_process_count_is_one_line(reference, launcher, tmp_path):
  """A 2-process workdir resumed by 1 process, and a 1-process workdir by 2 processes."""
  workdir = tmp_path / "two"
  shutil.copytree(reference[0] / "checkpoints" / "4", workdir / "checkpoints" / "4")
  shutil.copy(reference[0] / multihost.TOPOLOGY_FILE, workdir / multihost.TOPOLOGY_FILE)
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(_ROOT, "train.py"),
      f"--config={os.path.join(_ROOT, 'configs', 'tiny.py')}",
      f"--workdir={workdir}",
      *OVERRIDES,
    ],
    capture_output=True,
    text=True,
    env=_env(),
    timeout=300,
  )
  assert result.returncode == 1, result.stderr[-3000:]
  line = _one_error_line(result.stderr)
  assert f"{workdir} was written by a run of 2 process(es) and this run has 1" in line
  assert "resume with --num_processes=2" in line

  one = tmp_path / "one"
  shutil.copytree(workdir / "checkpoints", one / "checkpoints")
  (one / multihost.TOPOLOGY_FILE).write_text('{"num_processes": 1, "num_devices": 1}')
  codes, texts, logs = _run(launcher, one, [OVERRIDES] * 2, "one_by_two", timeout=300)
  assert codes == [1, 1], _tails(logs)
  for text in texts:
    assert "was written by a run of 1 process(es) and this run has 2" in _one_error_line(text)
  assert checkpoint.manager(one / "checkpoints", read_only=True).all_steps() == [4]
