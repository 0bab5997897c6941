"""Two processes with jax.distributed on 127.0.0.1 (2 fake CPU devices each) vs one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from chromagan_jax.weights import checkpoint

LR = 1e-3  # configs/tiny.py's learning rates.
# 99th percentile of |update difference| between the layouts, in units of LR (measured:
# 3.6e-5 generator, 4.7e-7 critic; max 0.18 and 0.0017). One layout's updates 3% larger: 0.03.
UPDATE_TOL = 0.02
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(nproc, ndev, out, workdir, timeout=600):
  """Runs the worker as ``nproc`` processes; kills them all if one fails or runs too long."""
  port = str(_free_port())
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs, logs = [], []
  try:
    for pid in range(nproc):
      logs.append(f"{workdir}.p{pid}.log")
      with open(logs[-1], "w") as log:
        cmd = [sys.executable, _WORKER, port, str(nproc), str(pid), str(ndev), out, workdir]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    for p in procs:
      p.wait(timeout=timeout)  # One deadline per process is enough: they finish together.
  finally:
    for p in procs:  # Left running only after a timeout or an exception: never leak them.
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs, strict=True):
    assert p.returncode == 0, open(log).read()[-4000:]


def _updates(npz, name):
  """The step's parameter updates p - p0 of ``name`` ("g_params" or "d_params") in units of
  LR: one flat float64 array, in key order."""
  prefix = f"['state'].{name}"
  keys = sorted(k for k in npz.files if k.startswith(prefix))
  assert len(keys) > 5, npz.files
  initial = [npz[f"['initial']['{name}']" + k[len(prefix) :]] for k in keys]
  deltas = [(npz[k].astype(np.float64) - p0).ravel() for k, p0 in zip(keys, initial, strict=True)]
  return np.concatenate(deltas) / LR


def _assert_equivalent(multi, single):
  assert sorted(multi.files) == sorted(single.files)
  moments = [k for k in single.files if ".mu[" in k or ".nu[" in k]
  assert len(moments) > 20, single.files
  params = ("['state'].g_params", "['state'].d_params")
  for key in single.files:
    got, want = multi[key], single[key]
    if key.startswith("['initial']"):
      np.testing.assert_array_equal(got, want, err_msg=key)  # The same start.
    elif key in moments or "batch_stats" in key or key.startswith("['metrics']"):
      # Adam's first moment after one step is (1 - b1) * gradient, the second (1 - b2) *
      # gradient^2: the gradients of both networks over the global batch, the batch-norm
      # statistics and the losses agree to float32 reassociation of the cross-device sums
      # (measured: within rtol 1e-4 plus 1.1e-6 of each array's largest entry).
      scale = np.abs(want).max()
      # The critic's moments: its gradient is taken on the updated generator's output, and
      # Adam's first step moves every generator parameter by ~lr whatever its gradient's size,
      # so float noise in near-zero generator gradients reaches the critic's inputs: measured
      # up to 2.3e-4 of the array's largest entry on AMD EPYCs with AVX2 and 1.9e-3 (6 of 2,048
      # conv2 kernel entries) on one with AVX-512, whose XLA:CPU code rounds differently
      # (glorot_uniform kernels; 1.1e-6 with lecun_normal). Rows fed to the wrong process
      # change the gradient penalty's per-row eps and move the critic's moments far more:
      # 0.06-0.10 of the largest entry (measured, AVX-512, each process fed the other's rows).
      tol = 5e-3 if "d_opt_state" in key else 1e-5
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=tol * scale, err_msg=key)
    elif not key.startswith(params):  # The step counter and the rng key.
      np.testing.assert_array_equal(got, want, err_msg=key)
  # Parameters, as updates p - p0 in units of lr: Adam's first step moves an entry by ~lr *
  # sign(gradient) (so the parameters themselves agree within 2 lr whatever the step did).
  # An entry whose gradient is float noise (a bias before batch norm) may move either way;
  # all others agree closely.
  for name in ("g_params", "d_params"):
    u_multi, u_single = _updates(multi, name), _updates(single, name)
    live = (u_multi != 0) | (u_single != 0)  # Without a teacher the class head stands still.
    assert live.mean() > 0.2, (name, live.mean())
    assert (np.abs(u_single[live]) > 0.5).mean() > 0.5, name  # Parameters really moved.
    diff = np.abs(u_multi - u_single)
    assert np.percentile(diff[live], 99) < UPDATE_TOL, (name, np.percentile(diff[live], 99))
    np.testing.assert_array_less(diff, 2.0 + 1e-3, err_msg=name)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_devices(tmp_path):
  _launch(2, 2, str(tmp_path / "multi.npz"), str(tmp_path / "multi_run"))
  _launch(1, 4, str(tmp_path / "single.npz"), str(tmp_path / "single_run"))
  _assert_equivalent(np.load(tmp_path / "multi.npz"), np.load(tmp_path / "single.npz"))
  # The real loop checkpointed from both processes into one directory.
  mngr = checkpoint.manager(tmp_path / "multi_run" / "checkpoints", read_only=True)
  assert mngr.latest_step() == 2
