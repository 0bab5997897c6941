"""The one runner behind every command line: process set-up once, then ``main(argv)``.

Each command module (``chromagan_jax/<command>.py``) is a thin ``main(argv) -> int`` that
parses its flags and calls the library; :func:`run` does what every entry point needs around
it, so that no command repeats it: huge pages for malloc (a re-exec, before heavy imports),
and a :class:`~chromagan_jax.errors.UserError` turned into one ``error: ...`` line and exit
status 1 instead of a traceback.
"""

import importlib
import sys
from collections.abc import Callable, Sequence

from chromagan_jax import extras
from chromagan_jax.errors import UserError
from chromagan_jax.runtime import allocator


def run(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None):
  """Sets the process up, calls ``main(argv)`` and exits with its status; never returns.

  Args:
    main: the command; returns an exit status (None means 0) or raises ``UserError``.
    argv: arguments without the program name (default ``sys.argv[1:]``).
  """
  allocator.reexec_with_huge_pages()
  sys.exit(call(main, sys.argv[1:] if argv is None else argv))


def call(main: Callable[[Sequence[str]], int | None], argv: Sequence[str]) -> int:
  """``main(argv)``'s exit status, with a ``UserError`` printed as one line (status 1)."""
  try:
    return main(list(argv)) or 0
  except UserError as e:
    for line in str(e).splitlines():  # A ConfigError lists every problem, one per line.
      print(f"error: {line}", file=sys.stderr)
    return 1


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow (tf.data, clu) off GPUs/TPUs so that JAX owns them; TF imported here."""
  tf = extras.require("tensorflow", "train", "training")

  tf.config.set_visible_devices([], "GPU")
  if tf.config.list_physical_devices("TPU"):
    tf.config.set_visible_devices([], "TPU")


def run_command(name: str, argv: Sequence[str] | None = None):
  """Runs the command ``chromagan_jax.<name>``: huge pages first, then its (heavy) imports."""
  allocator.reexec_with_huge_pages()
  module = importlib.import_module(f"chromagan_jax.{name}")
  sys.exit(call(module.main, sys.argv[1:] if argv is None else argv))


# Console scripts (pyproject.toml's [project.scripts]); root train.py / colorize.py call these.
def train():
  run_command("train")


def colorize():
  run_command("colorize")


def evaluate():
  run_command("evaluate")


def convert():
  run_command("convert")


def export():
  run_command("export")


def app():
  run_command("app")


def demo():
  run_command("demo")
