"""JAX's persistent compilation cache: pay each program's compile time once per machine.

On CPU the Winograd / im2col convolutions (``cpu_conv``) make XLA compiles long (seconds to
tens of seconds, bench/RESULTS.md), paid again by every process. With the cache on, JAX stores
each compiled executable on disk (keyed by the program, the JAX/XLA version, the flags and the
devices) and later processes load it instead of compiling. The cache is only an optimisation: a
directory that cannot be created turns it off with a warning, never fails the run.

The per-layer convolution choices of ``conv_impl="measure"`` (conv_choice.py) are kept in
``conv_choices`` beside the cache directory (``runtime.machine.choices_dir``): both are
per-machine measurements of how to run the same programs.

The cache holds executable code: like JAX's own documentation says, do not point it at a
directory that others can write to.
"""

import logging
import os
from collections.abc import Callable

DEFAULT_DIR = os.path.join(
  os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
  "chromagan_jax",
  "xla",
)


def enable(path: str | None, warn: Callable[[str], None] = logging.warning) -> str | None:
  """Turns the cache on in ``path``; returns the directory in use, or None when off.

  A directory the user already gave JAX (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) wins over ``path``; an empty ``path`` leaves the cache as JAX has it.
  Call before the first compilation.
  """
  # JAX only when called: `train.py --help` stays fast.
  import jax

  configured = jax.config.jax_compilation_cache_dir
  if configured or not path:
    return configured or None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    warn(f"warning: compilation cache off: cannot create {path} ({e.strerror or e})")
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  return path


def choices_dir(cache_dir: str) -> str:
  """Where conv_choice keeps its files for the XLA cache ``cache_dir``: a sibling directory."""
  return os.path.join(os.path.dirname(os.path.abspath(cache_dir)), "conv_choices")
