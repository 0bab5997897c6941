"""Trains ChromaGAN.

  python train.py --config=configs/imagenet.py --workdir=/data/chromagan
  python train.py --config=configs/cpu.py --workdir=/tmp/cpu --config.num_train_steps=50

Multi-process (GPU hosts, TPU pods): run the same command on every host, with a --workdir on
a filesystem that all hosts share. On TPU pods and SLURM clusters `--multiprocess` lets
jax.distributed discover the cluster; elsewhere pass
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (HOST:PORT: process 0's).

Exit status: 0 done or stopped by a signal (checkpoint saved); 1 a user error (in any
process: every process prints it); 75 another process was lost (killed, out of memory, a dead
host): run the same command on every host to resume from the last complete checkpoint.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from chromagan_jax.runtime import compile_cache, runner

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard logs.")
flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() (auto-detect).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
flags.DEFINE_integer(
  "initialization_timeout",
  300,
  "Seconds to wait for all processes to join the coordinator before giving up (one line, "
  "exit status 1).",
)
flags.DEFINE_string(
  "compilation_cache",
  compile_cache.DEFAULT_DIR,
  "Keep compiled programs here so that later runs (resumes) skip the compile; '' turns it "
  "off. JAX_COMPILATION_CACHE_DIR, if set, wins.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if problem := _multiprocess_flags_problem():
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(1)
  # Orbax logs every checkpoint operation at INFO; keep the console to training progress.
  std_logging.getLogger("absl").addFilter(lambda record: "orbax" not in record.pathname)
  # Imported here so that --help is fast and TF sees no accelerator before JAX claims it.
  import jax

  from chromagan_jax import extras
  from chromagan_jax.errors import UserError

  try:
    tf = extras.require("tensorflow", "train", "training")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU") if tf.config.list_physical_devices("TPU") else None
  from chromagan_jax.training import multihost

  if FLAGS.coordinator_address or FLAGS.multiprocess:
    multihost.initialize(
      FLAGS.coordinator_address,
      FLAGS.num_processes,
      FLAGS.process_id,
      timeout_s=FLAGS.initialization_timeout,
    )
  compile_cache.enable(FLAGS.compilation_cache)
  from chromagan_jax.training import trainer
  from chromagan_jax.weights import checkpoint

  logging.info(
    "JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices()
  )
  ckpt_dir = checkpoint.absolute(FLAGS.workdir) / "checkpoints"
  board = multihost.ErrorBoard(ckpt_dir)  # Several processes: one's user error ends all.
  try:
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    if jax.process_count() == 1:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    board.post_and_exit(str(e))
  except Exception as e:
    multihost.exit_if_peer_lost(e, ckpt_dir)
    raise
  finally:
    board.stop()


def _multiprocess_flags_problem() -> str | None:
  """One line on inconsistent multi-process flags, or None."""
  explicit = {
    "coordinator_address": FLAGS.coordinator_address,
    "num_processes": FLAGS.num_processes,
    "process_id": FLAGS.process_id,
  }
  given = [k for k, v in explicit.items() if v is not None]
  if FLAGS.multiprocess or not given:
    return None
  if len(given) < len(explicit):
    missing = " ".join(f"--{k}" for k in explicit if k not in given)
    return (
      f"--{given[0]} needs {missing} too (or --multiprocess to auto-detect a TPU pod or "
      "SLURM cluster); without them this would run as a single process"
    )
  if not 0 <= FLAGS.process_id < FLAGS.num_processes:
    return f"--process_id={FLAGS.process_id} is not in [0, --num_processes={FLAGS.num_processes})"
  return None


def main(argv=None) -> None:
  """Parses the flags in ``argv`` (without the program name) with absl and trains."""
  app.run(_main, argv=None if argv is None else [sys.argv[0], *argv])


if __name__ == "__main__":
  runner.run(main)
