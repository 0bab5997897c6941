"""Machine facts, read once at the entry, and the convolution policy built from them.

The convolution algorithm depends on the backend, the CPU's vector ISA, the process count and
where the measured choices are kept; this module is where those are read (``/proc/cpuinfo``,
``XLA_FLAGS``, JAX's backend and cache directory), so that ``ops/`` and ``model/`` receive them
as one :class:`~chromagan_jax.ops.conv_policy.ConvPolicy` value and read none of them.
"""

import functools
import importlib.metadata
import logging
import os
import platform

from chromagan_jax.runtime import compile_cache


@functools.cache
def cpu_facts() -> tuple[str, frozenset[str]]:
  """(model name, ISA flags) of this machine's CPU from /proc/cpuinfo (elsewhere: platform's
  name and no flags)."""
  model, flags = platform.processor() or platform.machine(), frozenset()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() in ("flags", "Features"):
          flags = frozenset(value.split())
  except OSError:
    pass
  return model, flags


def cpu_isa() -> str:
  """This CPU's vector ISA as the convolution rule distinguishes it (``conv_rule.isa_of``)."""
  from chromagan_jax.ops import conv_rule

  return conv_rule.isa_of(cpu_facts()[1])


def machine_key() -> dict:
  """What measured convolution choices depend on besides the layer: CPU, cores, versions."""
  import jax

  from chromagan_jax.ops import conv_choice

  model, flags = cpu_facts()
  return {
    "cpu": model,
    "isa": sorted(flags.intersection(conv_choice.ISA_FLAGS)),
    "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    "jax": jax.__version__,
    "jaxlib": importlib.metadata.version("jaxlib"),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def choices_dir() -> str:
  """Where "measure" keeps its choices: beside JAX's compilation cache when one is on
  (``compile_cache.enable``), else beside :data:`compile_cache.DEFAULT_DIR`."""
  import jax

  cache = jax.config.jax_compilation_cache_dir or compile_cache.DEFAULT_DIR
  return compile_cache.choices_dir(cache)


def conv_policy(impl: str | None, backend: str | None = None):
  """The :class:`ConvPolicy` of ``conv_impl`` ``impl`` (None: "auto") on this machine: its
  backend, CPU ISA and XLA_FLAGS; "measure" gets a chooser on :func:`choices_dir`, and is
  "auto" in a multi-process run (each process would time on its own machine and could trace
  another program for one jitted step)."""
  import jax

  from chromagan_jax.ops import conv_choice, conv_policy, cpu_conv

  impl = impl or "auto"
  if impl not in conv_policy.IMPLS:
    raise ValueError(f"unknown conv_impl {impl!r}; expected one of {conv_policy.IMPLS}")
  isa = cpu_isa()
  options = cpu_conv.cpu_compiler_options(os.environ.get("XLA_FLAGS", ""))
  chooser = None
  if impl == "measure" and jax.process_count() > 1:
    logging.warning(
      "warning: conv_impl 'measure' is 'auto' in a multi-process run (%d processes): every "
      "process uses the fixed rule, so that all trace the same program",
      jax.process_count(),
    )
    impl = "auto"
  if impl == "measure":
    chooser = conv_choice.Chooser(choices_dir(), machine_key(), isa=isa, compiler_options=options)
  return conv_policy.ConvPolicy(
    impl=impl,
    backend=backend or jax.default_backend(),
    isa=isa,
    chooser=chooser,
    compiler_options=tuple(sorted(options.items())),
  )
