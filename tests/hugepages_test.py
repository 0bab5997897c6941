"""chromagan_jax/hugepages.py: entry points re-execute with malloc's transparent huge pages."""

import os
import subprocess
import sys
import textwrap

import pytest

from chromagan_jax import hugepages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hugepages.ENV_OPT_OUT)}
  return {**env, "PYTHONPATH": ROOT, **extra}


def _applies() -> str | None:
  """Why huge pages cannot be shown here, or None."""
  if not hugepages._glibc_at_least(2, 35) or sys.platform != "linux":
    return f"needs Linux with glibc >= 2.35, not {sys.platform} {hugepages.platform.libc_ver()}"
  if hugepages.thp_mode() != "madvise":
    return f"the kernel's transparent huge pages are {hugepages.thp_mode()!r}, not 'madvise'"
  return None


def test_wanted_only_where_it_applies(monkeypatch):
  monkeypatch.setattr(hugepages, "thp_mode", lambda: "madvise")
  monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("glibc", "2.36"))
  monkeypatch.setattr(hugepages.sys, "platform", "linux")
  assert hugepages.wanted({})
  assert not hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})  # The user's.
  assert not hugepages.wanted({"GLIBC_TUNABLES": hugepages.TUNABLE})  # After the exec.
  assert hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert not hugepages.wanted({hugepages.ENV_OPT_OUT: "0"})
  assert hugepages.wanted({hugepages.ENV_OPT_OUT: "1"})
  monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("glibc", "2.31"))
  assert not hugepages.wanted({})
  monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("", ""))  # musl, macOS.
  assert not hugepages.wanted({})
  monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("glibc", "2.36"))
  for mode in ("always", "never", None):
    monkeypatch.setattr(hugepages, "thp_mode", lambda mode=mode: mode)
    assert not hugepages.wanted({})


def test_users_tunables_are_kept():
  assert hugepages.tunables_with_huge_pages(None) == hugepages.TUNABLE
  assert hugepages.tunables_with_huge_pages("glibc.malloc.arena_max=2") == (
    "glibc.malloc.arena_max=2:" + hugepages.TUNABLE
  )


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert hugepages.thp_mode(str(path)) == "madvise"
  assert hugepages.thp_mode(str(tmp_path / "missing")) is None


# Touches 256 MiB from glibc's malloc, as XLA:CPU's buffers come, and reports the minor page
# faults it took (not NumPy's allocator: it asks for huge pages itself).
_PROBE = textwrap.dedent("""
  import ctypes, os, resource, sys
  print("pid", os.getpid(), flush=True)
  from chromagan_jax import hugepages
  hugepages.reexec()
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
  assert out[out.index("tunables") + 1] == hugepages.TUNABLE
  assert "['arg1', '--flag=2']" in " ".join(out)
  opted_out = _probe(**{hugepages.ENV_OPT_OUT: "0"})
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
