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
* A process that goes away ends the others in seconds with one line: a user error in one
  process (a data folder missing on one host) is posted to every process through the
  coordination service (:class:`ErrorBoard`); a process that dies without a word (kill -9,
  out of memory, a lost machine) makes the others' next collective fail, which
  :func:`exit_if_peer_lost` turns into one line and :data:`PEER_LOST_STATUS`. Both leave by
  ``os._exit``: ``jax.distributed.shutdown`` at exit would wait minutes for the lost peer.

Nothing here imports TensorFlow.
"""

import json
import os
import re
import sys
import threading
import time
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

# Exit status of a process whose peer was lost: sysexits' EX_TEMPFAIL, "try again later"; the
# same command on every host resumes from the last complete checkpoint.
PEER_LOST_STATUS = 75
# Exit status of every process when one of them met a user error (as a single process has).
USER_ERROR_STATUS = 1
# Substrings of the runtime errors that a lost peer causes: a collective whose connection
# the dead process held (Gloo on CPU, NCCL on GPU), or the coordination service (barriers,
# heartbeats, the key-value store) reporting it. Matched so that other runtime errors (out of
# memory, a bad program) keep their traceback.
_PEER_LOSS_MARKERS = (
  "Connection reset by peer",
  "Connection refused",
  "Connection closed",
  "Broken pipe",
  "Socket closed",
  "Gloo",
  "NCCL",
  "heartbeat",
  "coordination service",
  "CoordinationService",
  "Barrier failed",
)
# Bound on the seconds a process with a user error waits for the others to have read it
# before leaving (process 0 holds the key-value store: leaving first takes it with it).
_ACK_WAIT_S = 20
_POLL_S = 0.25
_KEY = "chromagan_jax"


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


def _client():
  """The coordination service client, or None in a single-process run.

  ``jax._src.distributed`` is private, as Orbax's own multi-host utilities use it: JAX has no
  public accessor for the key-value store.
  """
  from jax._src import distributed

  return distributed.global_state.client if jax.process_count() > 1 else None


def _flush() -> None:
  logging.flush()
  for stream in (sys.stdout, sys.stderr):
    stream.flush()


def _leave(line: str, status: int) -> None:
  """Prints ``error: line``, flushes and ends the process without ``jax.distributed.shutdown``.

  The shutdown (registered at exit) waits at a barrier for every process, up to JAX's
  shutdown timeout, then aborts with a C++ stack trace: with a peer gone, nobody comes.
  """
  print(f"error: {line}", file=sys.stderr)
  _flush()
  os._exit(status)


def is_peer_loss(error: BaseException) -> bool:
  """Whether ``error`` (raised by a collective or the coordination service in a
  multi-process run) means that another process is gone.

  Any exception type: a collective that fails while a program is dispatched (Orbax's
  ``sync_global_devices``) arrives as a ``ValueError``, one that fails while running as a
  ``JaxRuntimeError``.
  """
  if jax.process_count() < 2:
    return False
  return any(marker in str(error) for marker in _PEER_LOSS_MARKERS)


def lost_process(error: BaseException) -> str:
  """Which process ``error`` says was lost: 'process N', or 'a process' when unknown."""
  found = set(re.findall(r"\b[Tt]ask[ :]+(\d+)", str(error))) - {str(jax.process_index())}
  if len(found) == 1:
    return f"process {found.pop()}"
  if jax.process_count() == 2:  # The one peer.
    return f"process {1 - jax.process_index()}"
  return "a process"


def _cause(error: BaseException) -> str:
  """The first line of ``error``'s message, shortened: why this process noticed."""
  text = re.sub(r"\[[^\]\s]+\.(?:cc|h):\d+\]\s*", "", str(error))  # C++ source locations.
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  first = lines[0] if lines else type(error).__name__
  return first if len(first) <= 160 else first[:157] + "..."


def peer_lost_line(lost: str, cause: str, ckpt_dir) -> str:
  """The one line every surviving process prints: who, the resume point, what to do."""
  steps = checkpoint.complete_steps(ckpt_dir)
  where = (
    f"the last complete checkpoint is step {max(steps)} in {ckpt_dir}"
    if steps
    else f"there is no complete checkpoint in {ckpt_dir} yet"
  )
  return (
    f"process {jax.process_index()}: {lost} was lost ({cause}); {where}: run the same command "
    "on every host to resume"
  )


def exit_if_peer_lost(error: BaseException, ckpt_dir) -> None:
  """If ``error`` means a lost peer: one line, exit status :data:`PEER_LOST_STATUS`.

  Otherwise returns (the caller re-raises). A checkpoint being written is left in Orbax's
  temporary directory, which a resume never reads.
  """
  if is_peer_loss(error):
    _leave(peer_lost_line(lost_process(error), _cause(error), ckpt_dir), PEER_LOST_STATUS)


class ErrorBoard:
  """Makes one process's user error every process's, through the coordination service.

  A process that meets a user error posts ``process N: <message>`` (:meth:`post_and_exit`);
  a watcher thread in every process reads the posts every quarter second, and a process
  that reads another's post prints it as its own one line and exits with
  :data:`USER_ERROR_STATUS`, wherever its main thread is (compiling, or waiting at a barrier
  for the process that failed). Process 0 leaves last: it holds the key-value store, and
  JAX's agent in every other process aborts with a C++ stack trace once process 0 is gone.
  If the coordinator is unreachable, the watcher ends this process as a lost peer. Does
  nothing in a single-process run.
  """

  def __init__(self, ckpt_dir):
    self.ckpt_dir = ckpt_dir  # For the lost-coordinator line.
    self._client = _client()
    self._me = jax.process_index()
    self._stop = threading.Event()
    self._leaving = False
    self._lock = threading.Lock()
    self._thread = None
    if self._client is not None:
      self._thread = threading.Thread(target=self._watch, name="error-board", daemon=True)
      self._thread.start()

  def _keys(self, kind: str) -> dict[int, str]:
    entries = self._client.key_value_dir_get(f"{_KEY}/{kind}/")
    return {int(key.rsplit("/", 1)[-1]): value for key, value in entries}

  def _watch(self) -> None:
    while not self._stop.wait(_POLL_S):
      try:
        others = {p: m for p, m in self._keys("error").items() if p != self._me}
      except jax.errors.JaxRuntimeError as e:
        if self._stop.is_set() or self._leaving:
          return
        if self._me != 0:  # The store lives in process 0: unreachable means it is gone.
          _leave(
            peer_lost_line("process 0 (the coordinator)", _cause(e), self.ckpt_dir),
            PEER_LOST_STATUS,
          )
        return
      if others and not self._stop.is_set() and self._claim():
        self._leave_after_others(others[min(others)], posted=False)

  def _claim(self) -> bool:
    """True for the first caller (watcher or main thread) to end this process."""
    with self._lock:
      first, self._leaving = not self._leaving, True
      return first

  def _leave_after_others(self, line: str, posted: bool) -> None:
    """Prints ``line``, marks this process done and exits; process 0 once all others are
    done (or after a bound), the others once process 0 has read the post."""
    print(f"error: {line}", file=sys.stderr)
    _flush()
    try:
      if not posted:
        self._client.key_value_set(f"{_KEY}/done/{self._me}", "1", allow_overwrite=True)
      waited_for = set(range(1, jax.process_count())) if self._me == 0 else {0}
      deadline = time.monotonic() + _ACK_WAIT_S
      while time.monotonic() < deadline:
        if waited_for <= set(self._keys("done")) | set(self._keys("error")):
          break
        time.sleep(_POLL_S)
      if self._me == 0:
        time.sleep(1)  # The others exit right after marking themselves done.
    except jax.errors.JaxRuntimeError:
      pass  # The store is gone: nobody left to wait for.
    os._exit(USER_ERROR_STATUS)

  def post_and_exit(self, message: str) -> None:
    """Posts ``message`` (this process's user error), prints it and exits once read."""
    if self._client is None:
      _leave(message, USER_ERROR_STATUS)
    line = f"process {self._me}: {message}"
    if not self._claim():  # The watcher is already ending this process.
      threading.Event().wait()
    try:
      self._client.key_value_set(f"{_KEY}/error/{self._me}", line, allow_overwrite=True)
    except jax.errors.JaxRuntimeError:
      _leave(line, USER_ERROR_STATUS)
    self._leave_after_others(line, posted=True)

  def stop(self) -> None:
    """Stops the watcher (before ``jax.distributed.shutdown`` ends the client it uses)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
