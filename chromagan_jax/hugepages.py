"""Transparent huge pages for XLA:CPU's buffers: entry points re-execute themselves once.

XLA:CPU allocates the buffers of every program call with glibc's malloc, which maps large
blocks fresh from the kernel and unmaps them when they are freed, so each call faults its
memory in again 4 KiB at a time. Measured on an AMD EPYC with AVX-512 (2 cores, jax 0.10.2,
bench/RESULTS.md): ~745,000 minor page faults (~3 GB) per GAN train step at 224x224 batch 8,
14,000 per generator call at batch 1, 241,000 at batch 16. glibc's tunable
``glibc.malloc.hugetlb=1`` (glibc >= 2.35) makes malloc ask the kernel for transparent huge
pages (``madvise``), 2 MiB per fault: 30,000-50,000 faults per train step, 930 per batch-1
call; the train step went from 11.3 s to 9.5 s, the generator from 137 to 112 ms (batch 1)
and from 1,947 to 1,829 ms (batch 16). TensorFlow keeps its own memory pool and barely faults.

glibc reads tunables once, at process start, so :func:`reexec` replaces the process by the
same command line (``os.execve``: same PID, arguments, open files) with the tunable added to
``GLIBC_TUNABLES``; entry points (train.py, colorize.py, the ``python -m`` tools, bench/)
call it before their heavy imports. It does nothing when the tunable is already set, off
Linux/glibc, on glibc < 2.35, when the kernel's THP mode is not "madvise" ("always" gives
huge pages anyway, "never" none), or with ``CHROMAGAN_HUGE_PAGES=0``. Imported as a library,
chromagan_jax never re-executes anything.
"""

import os
import platform
import re
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
ENV_OPT_OUT = "CHROMAGAN_HUGE_PAGES"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent-huge-page mode ("always", "madvise", "never"); None if unknown."""
  try:
    with open(path) as f:
      match = re.search(r"\[(\w+)\]", f.read())
  except OSError:
    return None
  return match.group(1) if match else None


def _glibc_at_least(major: int, minor: int) -> bool:
  lib, version = platform.libc_ver()
  parts = re.findall(r"\d+", version)
  return lib == "glibc" and len(parts) >= 2 and (int(parts[0]), int(parts[1])) >= (major, minor)


def wanted(environ=None) -> bool:
  """Whether :func:`reexec` would re-execute this process (see the module docstring)."""
  environ = os.environ if environ is None else environ
  if environ.get(ENV_OPT_OUT, "").lower() in ("0", "false", "no", "off"):
    return False
  if "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", ""):
    return False  # Set already: by us before the exec, or by the user (their value wins).
  return sys.platform == "linux" and _glibc_at_least(2, 35) and thp_mode() == "madvise"


def tunables_with_huge_pages(current: str | None) -> str:
  """``GLIBC_TUNABLES`` with :data:`TUNABLE` appended to the user's own settings, if any."""
  return ":".join(part for part in (current, TUNABLE) if part)


def reexec() -> None:
  """Replaces this process by the same command with huge pages for malloc, when :func:`wanted`.

  Call it first in an entry point's ``__main__`` path, before anything worth keeping has
  happened: nothing after the call runs in the old process.
  """
  if not wanted():
    return
  env = dict(os.environ, GLIBC_TUNABLES=tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES")))
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, env)
  except OSError:  # E.g. the interpreter is gone or not executable: run on without.
    return
