"""Two processes with jax.distributed on 127.0.0.1 (2 fake CPU devices each) vs one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from chromagan_jax.weights import checkpoint

LR = 1e-3  # configs/tiny.py's learning rates.
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


def _assert_equivalent(multi, single):
  assert sorted(multi.files) == sorted(single.files)
  moments = [k for k in single.files if ".mu[" in k or ".nu[" in k]
  assert len(moments) > 20, single.files
  for key in single.files:
    got, want = multi[key], single[key]
    if key in moments or "batch_stats" in key or key.startswith("['metrics']"):
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
    else:
      # Parameters: Adam's first step moves each by ~lr * sign(gradient), so an entry whose
      # gradient is float noise (a bias before batch norm) may move either way: 2 * lr.
      np.testing.assert_allclose(got, want, rtol=0, atol=2 * LR + 1e-6, err_msg=key)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_devices(tmp_path):
  _launch(2, 2, str(tmp_path / "multi.npz"), str(tmp_path / "multi_run"))
  _launch(1, 4, str(tmp_path / "single.npz"), str(tmp_path / "single_run"))
  _assert_equivalent(np.load(tmp_path / "multi.npz"), np.load(tmp_path / "single.npz"))
  # The real loop checkpointed from both processes into one directory.
  mngr = checkpoint.manager(tmp_path / "multi_run" / "checkpoints", read_only=True)
  assert mngr.latest_step() == 2
