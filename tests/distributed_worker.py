"""One process of a multi-process data-parallel run on 127.0.0.1 (used by distributed_test).

  python tests/distributed_worker.py PORT NUM_PROCESSES PROCESS_ID DEVICES_PER_PROCESS OUT WORKDIR

Runs one train step of configs/tiny.py on a fixed global batch (this process feeds its own
rows), writes the resulting state and metrics, and the parameters before the step (keys
``['initial']['g_params']...``), to OUT (.npz keyed by tree path, process 0 only), then runs
the real training loop for 2 steps into WORKDIR (multi-process checkpointing and input
sharding).
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
  port, nproc, pid, ndev, out, workdir = sys.argv[1:]
  nproc, pid, ndev = int(nproc), int(pid), int(ndev)
  import jax

  jax.config.update("jax_num_cpu_devices", ndev)
  jax.config.update("jax_disable_most_optimizations", True)
  if nproc > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
  import numpy as np
  from helpers import photo_batch

  from chromagan_jax.configs import tiny
  from chromagan_jax.training import train_state, train_step, trainer

  config = tiny.get_config()
  # Batch statistics from the generator update only: the critic step's second BN update runs
  # the generator after its Adam update, where Adam turns float noise in near-zero gradients
  # into +-lr steps, so those statistics differ between device layouts by ~4e-4 relative.
  config.gan.bn_update_in_critic_step = False
  mesh = train_state.make_mesh()
  nets = train_state.make_networks(config)
  state = train_state.create_train_state(nets, config, mesh)
  step = train_step.make_train_step(nets, config, mesh, with_teacher=False)
  batch = photo_batch(config.batch_size)
  rows = config.batch_size // jax.process_count()
  local = {k: v[pid * rows : (pid + 1) * rows] for k, v in batch.items()}
  # One step: Adam's first moments are then (1 - b1) * the gradients, which the test compares
  # tightly (after more steps Adam's normalisation amplifies float noise in near-zero entries).
  global_batch = train_step.global_batch(local, mesh)
  compiled = step.lower(state, global_batch, None).compile()
  if nproc > 1:
    # The first collective (XLA:CPU's gloo context set-up) waits only 30 s for the other
    # process, and on a loaded machine the processes finish compiling further apart than
    # that (seen in CI): meet at a coordinator barrier first, which waits as long as needed.
    from jax._src import distributed

    distributed.global_state.client.wait_at_barrier("step_compiled", 600_000)
  # The parameters before the step (the test compares updates), copied (np.array): the step
  # donates the state's buffers.
  initial = {"g_params": state.g_params, "d_params": state.d_params}
  initial = jax.tree.map(lambda x: np.array(x.addressable_data(0)), initial)
  state, metrics = compiled(state, global_batch, None)
  # Replicated arrays: every process holds the full value on its own devices. Every process
  # waits for the step here, before the loop's own collectives (else process 1 may enter
  # those while process 0 still waits for the step, and the collectives time out).
  flat = jax.tree_util.tree_leaves_with_path({"state": state, "metrics": metrics})
  arrays = {jax.tree_util.keystr(k): np.asarray(x.addressable_data(0)) for k, x in flat}
  flat = jax.tree_util.tree_leaves_with_path({"initial": initial})
  arrays |= {jax.tree_util.keystr(k): x for k, x in flat}
  if pid == 0:
    np.savez(out, **arrays)
  config.num_train_steps = 2
  trainer.train_and_evaluate(config, workdir)
  print(f"process {pid}: done", flush=True)


if __name__ == "__main__":
  main()
