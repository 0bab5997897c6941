"""glibc malloc settings of the entry points: freed memory kept for reuse, and huge pages.

glibc's malloc maps large blocks fresh from the kernel and unmaps them when they are freed, so
a program that allocates and frees big buffers over and over faults its memory in again every
time, 4 KiB per fault. Two settings cut that:

* :func:`keep_freed_memory` (``mallopt``, at run time): freed buffers up to 1 GiB stay in the
  heap for reuse. It serves the photo-sized NumPy/OpenCV buffers of colorize's
  full-resolution compose, on the main thread (12 MP: ~28,000 faults per photo without it).
* :func:`reexec_with_huge_pages` (the tunable ``glibc.malloc.hugetlb=1``, glibc >= 2.35):
  transparent huge pages (``madvise``), 2 MiB per fault, for every thread. XLA:CPU's buffers
  need this one: its worker threads' malloc arenas map large blocks whatever mallopt's
  thresholds say). It cuts the page faults per train step and per generator call by one to
  two orders of magnitude, and their time with them (figures: bench/RESULTS.md).

glibc reads tunables once, at process start, so :func:`reexec_with_huge_pages` replaces the
process by the same command line (``os.execve``: same PID, arguments, open files) with the
tunable added to ``GLIBC_TUNABLES``. Entry points call it first (train.py, colorize.py
before its imports, the ``python -m`` tools, bench/ scripts). It does nothing when the
tunable is already set, off Linux/glibc, on glibc < 2.35, when the kernel's THP mode is not
"madvise" ("always" gives huge pages anyway, "never" none), or with
``CHROMAGAN_HUGE_PAGES=0``. Imported as a library, chromagan_jax never re-executes anything.
"""

import ctypes
import os
import platform
import re
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
ENV_OPT_OUT = "CHROMAGAN_HUGE_PAGES"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
# glibc mallopt parameters (malloc.h) and the size up to which keep_freed_memory() keeps
# allocations in the heap: a 12 MP photo's largest buffers (float32 Lab, 144 MB) fit.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
  """Makes glibc keep freed buffers of up to ``limit`` bytes for reuse (process-wide).

  By default glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on
  free, so each full-resolution photo's compose (a dozen 50-150 MB buffers at 12 MP) faults
  its memory in page by page again: at 12 MP that was a third of colorize's time on this
  project's 2-core VM (bench/RESULTS.md: 0.98-1.6 s -> 0.58-0.71 s end to end). Called by
  the colorize entry points (``colorize.py``, the app), not on import. The memory stays with
  the process (about the largest photo's working set). Returns False where it does not
  apply (not glibc: macOS, musl), changing nothing.
  """
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


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


def huge_pages_wanted(environ=None) -> bool:
  """Whether :func:`reexec_with_huge_pages` would re-execute this process (module docstring)."""
  environ = os.environ if environ is None else environ
  if environ.get(ENV_OPT_OUT, "").lower() in ("0", "false", "no", "off"):
    return False
  if "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", ""):
    return False  # Set already: by us before the exec, or by the user (their value wins).
  return sys.platform == "linux" and _glibc_at_least(2, 35) and thp_mode() == "madvise"


def tunables_with_huge_pages(current: str | None) -> str:
  """``GLIBC_TUNABLES`` with :data:`TUNABLE` appended to the user's own settings, if any."""
  return ":".join(part for part in (current, TUNABLE) if part)


def reexec_with_huge_pages() -> None:
  """Replaces this process by the same command with huge pages for malloc, when
  :func:`huge_pages_wanted`.

  Call it first in an entry point's ``__main__`` path, before anything worth keeping has
  happened: nothing after the call runs in the old process.
  """
  if not huge_pages_wanted():
    return
  env = dict(os.environ, GLIBC_TUNABLES=tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES")))
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, env)
  except OSError:  # E.g. the interpreter is gone or not executable: run on without.
    return
