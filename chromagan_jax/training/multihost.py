"""Training as several processes (GPU hosts, TPU pods): joining, joint decisions, topology.

One run may span N processes (``jax.distributed``), each feeding its own slice of the global
batch to the same jitted step, whose collectives need every process. Three things follow:

* Joining is bounded: if not all processes reach the coordinator within a timeout, each
  says so in one line and exits (JAX itself would abort with a C++ stack trace).
* Every decision that changes what the processes do next — stop on a signal, stop on a
  non-finite loss — is taken jointly, at the same step: a process that leaves alone lets the
  others step into collectives that never complete. :class:`JointFlags` ORs per-process bits
  (and the losses' finiteness) on device into one replicated value that every process reads.
* A workdir is resumed by the process count that wrote it: each process reads its own slice
  of the data, so another count would change the data stream of the resumed run.

Nothing here imports TensorFlow.
"""

import json
import os
import sys
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from chromagan_jax.errors import CheckpointError
from chromagan_jax.weights import checkpoint

# Bits of the joint flags.
STOP = 1  # Some process received SIGTERM/SIGINT: all save the current step and stop.
NON_FINITE = 2  # A loss went NaN/inf: all stop without saving.

# Margin between our own join timeout and the one handed to JAX, so that ours fires first and
# prints one line (JAX's own expiry is a fatal C++ error with a stack trace).
_JAX_TIMEOUT_MARGIN_S = 30

TOPOLOGY_FILE = "processes.json"


def initialize(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  timeout_s: int,
  on_timeout: Callable[[str], None] | None = None,
) -> None:
  """``jax.distributed.initialize`` that gives up after ``timeout_s`` seconds in one line.

  All three arguments None: cluster auto-detection (TPU pods, SLURM, ...). While JAX waits
  for every process to register with the coordinator (process 0's ``host:port``), a watchdog
  thread counts ``timeout_s``; on expiry it calls ``on_timeout(message)``, by default
  printing ``error: <message>`` and ending the process with status 1 (the main thread is
  blocked inside JAX, so an exception could not reach it).
  """
  done = threading.Event()
  where = f"process {process_id}" if process_id is not None else "this process"
  message = (
    f"{where}: not all {num_processes or ''} processes joined the coordinator "
    f"{coordinator_address or '(auto-detected)'} within {timeout_s} s; start the same command "
    "on every host with the same --coordinator_address (process 0's host:port, reachable "
    "from every host) and --num_processes, a distinct --process_id each, or raise "
    "--initialization_timeout"
  )

  def watchdog():
    if not done.wait(timeout_s):
      (on_timeout or _exit_with_error)(message)

  threading.Thread(target=watchdog, name="join-watchdog", daemon=True).start()
  try:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=timeout_s + _JAX_TIMEOUT_MARGIN_S,
    )
  finally:
    done.set()


def _exit_with_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  os._exit(1)  # The main thread is blocked in C++: only a hard exit ends the process.


class JointFlags:
  """Bits that every process contributes to and every process reads the same.

  ``flags = joint(local_bits, metrics, previous)`` launches (asynchronously) a tiny program
  returning ``previous | OR over processes of local_bits | NON_FINITE if any metric is not
  finite``, replicated on every device: ``int(flags)`` is the same number in every process.
  The flags accumulate, so reading the latest covers all earlier steps. Reading it waits for
  the step that produced ``metrics``; reading the previous step's flags instead keeps the
  host one step ahead of the device.
  """

  def __init__(self, mesh: Mesh):
    self._local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    self._sharding = NamedSharding(mesh, P(mesh.axis_names))
    replicated = NamedSharding(mesh, P())

    def combine(local_bits, metrics, previous):
      finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(m)) for m in jax.tree.leaves(metrics)]))
      # OR over processes, bit by bit as a max (cross-process all-reduces on CPU offer no OR).
      masks = jnp.asarray([STOP, NON_FINITE], jnp.int32)
      any_bit = jnp.max(jnp.bitwise_and(local_bits[:, None], masks), axis=0)
      bits = jnp.bitwise_or(previous, jnp.sum(any_bit))  # Distinct bits: sum == OR.
      return jnp.bitwise_or(bits, jnp.where(finite, 0, NON_FINITE).astype(jnp.int32))

    self._combine = jax.jit(combine, out_shardings=replicated)
    self.none = jax.device_put(np.zeros((), np.int32), replicated)

  def __call__(self, local_bits: int, metrics, previous: jax.Array) -> jax.Array:
    local = np.full((self._local_devices,), local_bits, np.int32)
    bits = jax.make_array_from_process_local_data(self._sharding, local)
    return self._combine(bits, metrics, previous)


def topology() -> dict[str, int | str]:
  """This run's process and device counts (what a resume must match)."""
  return {
    "num_processes": jax.process_count(),
    "num_devices": jax.device_count(),
    "platform": jax.devices()[0].platform,
  }


def check_or_record_topology(workdir, resuming: bool) -> None:
  """On resume, checks that ``workdir`` was written by as many processes as this run has.

  A fresh run (or a workdir from before this record existed) records this run's topology in
  ``workdir/processes.json`` (process 0 writes it). Raises CheckpointError on another
  process count; another device count with the same processes only changes float rounding
  (batch-norm statistics and losses are reduced in another order) and is logged.
  """
  path = epath.Path(checkpoint.absolute(workdir)) / TOPOLOGY_FILE
  now = topology()
  if resuming and path.exists():
    try:
      saved = json.loads(path.read_text())
      saved_processes = int(saved["num_processes"])
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
        f"{path}: unreadable ({e}); it records the process count that wrote this workdir: "
        f"restore it, or delete it if this run has as many processes as that run had"
      ) from e
    if saved_processes != now["num_processes"]:
      raise CheckpointError(
        f"{workdir} was written by a run of {saved_processes} process(es) and this run has "
        f"{now['num_processes']}: resume with --num_processes={saved_processes} (each process "
        "reads its own slice of the data, so another count changes the data stream), or "
        "start a fresh --workdir"
      )
    if saved.get("num_devices") != now["num_devices"]:
      logging.warning(
        "%s was written on %s devices and resumes on %d: the same data and steps, but "
        "float rounding differs from an uninterrupted run",
        workdir,
        saved.get("num_devices"),
        now["num_devices"],
      )
    return
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{TOPOLOGY_FILE}.tmp"
    tmp.write_text(json.dumps(now, indent=1) + "\n")
    tmp.replace(path)  # Overwrites: rename() refuses an existing file on some backends.
