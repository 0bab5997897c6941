"""runtime/allocator.py: entry points re-execute with malloc's transparent huge pages."""

import os
import subprocess
import sys
import textwrap

import pytest

from chromagan_jax.runtime import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", allocator.ENV_OPT_OUT)}
  return {**env, "PYTHONPATH": ROOT, **extra}


def _applies() -> str | None:
  """Why huge pages cannot be shown here, or None."""
  if not allocator._glibc_at_least(2, 35) or sys.platform != "linux":
    return f"needs Linux with glibc >= 2.35, not {sys.platform} {allocator.platform.libc_ver()}"
  if allocator.thp_mode() != "madvise":
    return f"the kernel's transparent huge pages are {allocator.thp_mode()!r}, not 'madvise'"
  return None


def test_wanted_only_where_it_applies(monkeypatch):
  monkeypatch.setattr(allocator, "thp_mode", lambda: "madvise")
  monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
  monkeypatch.setattr(allocator.sys, "platform", "linux")
  assert allocator.huge_pages_wanted({})
  assert not allocator.huge_pages_wanted(
    {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
  )  # The user's.
  assert not allocator.huge_pages_wanted({"GLIBC_TUNABLES": allocator.TUNABLE})  # After the exec.
  assert allocator.huge_pages_wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert not allocator.huge_pages_wanted({allocator.ENV_OPT_OUT: "0"})
  assert allocator.huge_pages_wanted({allocator.ENV_OPT_OUT: "1"})
  monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.31"))
  assert not allocator.huge_pages_wanted({})
  monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))  # musl, macOS.
  assert not allocator.huge_pages_wanted({})
  monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
  for mode in ("always", "never", None):
    monkeypatch.setattr(allocator, "thp_mode", lambda mode=mode: mode)
    assert not allocator.huge_pages_wanted({})


def test_users_tunables_are_kept():
  assert allocator.tunables_with_huge_pages(None) == allocator.TUNABLE
  assert allocator.tunables_with_huge_pages("glibc.malloc.arena_max=2") == (
    "glibc.malloc.arena_max=2:" + allocator.TUNABLE
  )


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert allocator.thp_mode(str(path)) == "madvise"
  assert allocator.thp_mode(str(tmp_path / "missing")) is None


# Touches 256 MiB from glibc's malloc, as XLA:CPU's buffers come, and reports the minor page
# faults it took (not NumPy's allocator: it asks for huge pages itself).
_PROBE = textwrap.dedent("""
  import ctypes, os, resource, sys
  print("pid", os.getpid(), flush=True)
  from chromagan_jax.runtime import allocator
  allocator.reexec_with_huge_pages()
  libc, size = ctypes.CDLL(None), 256 * 2**20
  libc.malloc.restype = ctypes.c_void_p
  block = libc.malloc(size)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  ctypes.memset(block, 1, size)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  print("faults", faults, "tunables", os.environ.get("GLIBC_TUNABLES"), "argv", sys.argv[1:])
""")


def _probe(**env):
  out = subprocess.run(
    [sys.executable, "-c", _PROBE, "arg1", "--flag=2"],
    env=_env(**env),
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  ).stdout.split()
  return out


def test_reexec_gives_the_same_process_huge_pages():
  """The real effect: the re-executed process (same PID, same arguments) faults 256 MiB in
  2 MiB pages (~128 faults) instead of 4 KiB ones (65,536)."""
  if reason := _applies():
    pytest.skip(reason)
  out = _probe()
  pids = [out[i + 1] for i, word in enumerate(out) if word == "pid"]
  assert len(pids) == 2 and pids[0] == pids[1], out  # Printed before and after the exec.
  faults = int(out[out.index("faults") + 1])
  assert out[out.index("tunables") + 1] == allocator.TUNABLE
  assert "['arg1', '--flag=2']" in " ".join(out)
  opted_out = _probe(**{allocator.ENV_OPT_OUT: "0"})
  assert opted_out.count("pid") == 1 and opted_out[opted_out.index("tunables") + 1] == "None"
  plain_faults = int(opted_out[opted_out.index("faults") + 1])
  assert plain_faults > 60_000 and faults < plain_faults / 20, (faults, plain_faults)


def test_colorize_entry_point_runs_once_after_the_exec():
  """colorize.py re-executes before its imports; its output appears once."""
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "colorize.py"), "--help"],
    env=_env(),
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  )
  assert result.stdout.count("usage:") == 1, result.stdout


KEEP_FREED_PROBE = """
import io, resource, sys
import numpy as np
from PIL import Image
from chromagan_jax.data import images
from chromagan_jax.inference import engine
from chromagan_jax.runtime import allocator
if sys.argv[1] == "keep":
  assert allocator.keep_freed_memory()
rgb = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), np.uint8)  # 12 MP
encoded = io.BytesIO()
Image.fromarray(rgb).save(encoded, format="JPEG")
ab = np.random.default_rng(1).random((64, 64, 2), dtype=np.float32)
for _ in range(3):  # colorize's decode and full-resolution compose, photo after photo
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  engine.compose_host(images.decode(encoded.getvalue()).rgb, ab)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_the_per_photo_page_faults():
  """By default glibc maps a photo's large decode and compose buffers afresh for every photo
  (~28,000 page faults at 12 MP, measured) unless told to keep freed memory, as colorize.py
  and the app do (bench/RESULTS.md: 12 MP end to end ~1.0-1.6 s -> ~0.6-0.7 s on this
  project's 2-core VM)."""

  def faults(mode):
    out = subprocess.run(
      [sys.executable, "-c", KEEP_FREED_PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])

  assert faults("default") > 10_000  # Every photo faults its buffers in again ...
  assert faults("keep") < 1_000  # ... and not once freed memory is kept.
