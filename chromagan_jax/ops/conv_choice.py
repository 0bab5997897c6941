"""``conv_impl="measure"`` on CPU: each layer's convolution algorithm timed on the machine at hand.

Which algorithm computes a convolution fastest on CPU depends on the CPU (bench/RESULTS.md), so
"measure" follows no fixed rule: for each distinct layer (input and kernel shapes, dtype,
strides, padding) and use, the candidate algorithms (``cpu_conv.candidates``, XLA's own
convolution always among them) are timed once, on first use, and the fastest is kept. XLA wins
ties: another algorithm is chosen only when it is faster by more than :data:`MARGIN`.

"First use" is trace time: ``nn.Conv`` calls the conv function with concrete shapes while
``jax.jit`` traces the model, and the choice fixes the traced program. The measurement runs
its own small jitted programs on fresh random inputs (outside the caller's trace), all
candidates in turn, best of a few rounds (:func:`measure`).

Choices are stored on disk (the :class:`Chooser`'s directory: next to the XLA compilation
cache), one JSON file per machine key (CPU model, ISA flags, cores, library versions, XLA_FLAGS,
:data:`VERSION`), given by the entry that builds the chooser: another key reads another file,
i.e. is measured afresh. Given the file, choices are deterministic, so a later process traces
the same programs (which the compilation cache then serves). A directory that cannot be written
keeps choices in memory for the process, with one warning.

Uses, because the fastest algorithm for a forward pass is not the fastest for training
(bench/RESULTS.md, per-layer table):
  * "fwd": forward only (the frozen teacher);
  * "infer": forward only with the Winograd filters transformed once per weight set, outside
    the timed call (inference: colorize, evaluate, the app);
  * "train": forward plus the gradients with respect to input and kernel (the generator);
  * "gp": forward plus the gradients of a loss that holds the input gradient (WGAN-GP's
    gradient penalty: the critic).

Measuring is opt-in ("auto" is the fixed rule): its first use on a machine times every
candidate of every distinct layer at its full shape, far above a first colorize's compile time
(bench/RESULTS.md, bench/conv_choice_cost.py).
"""

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from chromagan_jax.ops import conv_rule, cpu_conv

OBJECTIVES = ("fwd", "train", "gp")
# What a layer use is timed for: an objective, or "infer": "fwd" while the Winograd filters come
# transformed once (inference), where the filter transform is not part of a call and F(4x4)
# pays off from far fewer tiles.
USES = (*OBJECTIVES, "infer")
# Bump when cpu_conv's algorithms or this module's measurement change: old choices are ignored.
VERSION = 4
# Another algorithm replaces XLA's own convolution only when measured this much faster.
MARGIN = 0.03
# After the first round of timing, candidates this many times slower than the best drop out.
ABANDON = 1.5
# Rounds of timing after an untimed warm-up (the minimum counts), and the shortest sample:
# sub-millisecond programs are looped so that scheduler noise does not decide.
REPEATS = 3
MIN_SAMPLE_S = 0.02

# ISA features that change which algorithm is fastest (vector width, FMA, matrix units): the
# entry keys the choices by these (runtime.machine.machine_key).
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_bf16", "asimd", "sve")  # fmt: skip


def layer_key(lhs_shape, rhs_shape, dtype, strides, pads, objective: str) -> str:
  """One layer use as a string: 'fwd 2x224x224x64 3x3x64x64 float32 s1x1 p1,1,1,1'."""
  dims = lambda s: "x".join(str(int(d)) for d in s)
  flat_pads = ",".join(str(int(p)) for pair in pads for p in pair)
  return (
    f"{objective} {dims(lhs_shape)} {dims(rhs_shape)} {jnp.dtype(dtype).name} "
    f"s{dims(strides)} p{flat_pads}"
  )


def _inputs(lhs_shape, rhs_shape, dtype):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(lhs_shape).astype(dtype)
  w = (rng.standard_normal(rhs_shape) / np.sqrt(np.prod(rhs_shape[:3]))).astype(dtype)
  return x, w


def pretransformed(name: str, objective: str) -> bool:
  """Whether ``program(name, objective)`` takes Winograd-transformed filters instead of w."""
  return objective == "infer" and name.startswith("winograd")


def program(name: str, objective: str, strides, pads):
  """The function of (x, w) whose run time decides ``objective`` (one of :data:`USES`) for
  algorithm ``name``; of (x, u), u = ``cpu_conv.filter_transform(w, m)``, where
  :func:`pretransformed` (as inference runs it)."""
  conv = lambda x, w: cpu_conv.run(name, x, w, strides, pads)
  if pretransformed(name, objective):
    return lambda x, u: cpu_conv.run(name, x, None, strides, pads, u=u)
  if objective in ("fwd", "infer"):
    return conv
  if objective == "train":
    return jax.grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1))

  def penalised(x, w):  # A critic layer's loss with WGAN-GP's input-gradient norm in it.
    inner = lambda x, w: jnp.sum(jax.nn.leaky_relu(conv(x, w)))
    return inner(x, w) + jnp.sum(jax.grad(inner)(x, w) ** 2)

  if objective == "gp":
    return jax.grad(penalised, argnums=(0, 1))
  raise ValueError(f"unknown objective {objective!r}; expected one of {USES}")


def measure(
  names, objective: str, lhs_shape, rhs_shape, dtype, strides, pads, compiler_options=None
) -> dict:
  """Seconds per run of ``program(name, objective)`` on this machine for each of ``names``.

  Each is compiled and warmed up, then all are timed in turn (A B C A B C ...: load changes
  on a shared machine hit every candidate alike), :data:`REPEATS` rounds, each sample looping
  over enough calls to last :data:`MIN_SAMPLE_S`; the minimum counts. A candidate
  :data:`ABANDON` times slower than the best after the first round drops out. Inference
  uses ("fwd", "infer") are compiled with ``compiler_options`` (the inference programs'),
  training ones with XLA's defaults.
  """
  # Runs now, even while a caller's jit is tracing, and inside the training loop's
  # jax.transfer_guard("disallow"): its own inputs are put on the device on purpose.
  with jax.ensure_compile_time_eval(), jax.transfer_guard("allow"):
    x, w = (jax.device_put(a) for a in _inputs(lhs_shape, rhs_shape, dtype))
    # Pre-transformed filters are computed outside the timed program, as inference does.
    kernel = {
      name: jax.jit(cpu_conv.filter_transform, static_argnums=1)(w, int(name[-1]))
      if pretransformed(name, objective) else w
      for name in names
    }  # fmt: skip
    runs, loops = {}, {}
    options = (compiler_options if objective in ("fwd", "infer") else None) or None
    for name in names:
      lowered = jax.jit(program(name, objective, strides, pads)).lower(x, kernel[name])
      runs[name] = lowered.compile(compiler_options=options)
      start = time.perf_counter()
      jax.block_until_ready(runs[name](x, kernel[name]))
      loops[name] = max(1, int(MIN_SAMPLE_S / max(time.perf_counter() - start, 1e-6)))
    times = {name: [] for name in names}
    for round_ in range(REPEATS):
      for name, run in runs.items():
        start = time.perf_counter()
        for _ in range(loops[name]):
          out = run(x, kernel[name])
        jax.block_until_ready(out)
        times[name].append((time.perf_counter() - start) / loops[name])
      if round_ == 0:
        best = min(t[0] for t in times.values())
        runs = {n: r for n, r in runs.items() if times[n][0] <= ABANDON * best}
  return {name: min(t) for name, t in times.items()}


def pick(times: dict[str, float]) -> str:
  """The fastest of ``{name: seconds}``; "xla" unless another is more than MARGIN faster."""
  name = min(times, key=times.get)
  if "xla" in times and times[name] > (1.0 - MARGIN) * times["xla"]:
    return "xla"
  return name


class Chooser:
  """Chooses (and remembers) the algorithm of each layer use.

  Args:
    directory: where the choice files live; None keeps choices in memory only.
    machine: what the choices depend on besides the layer (CPU, ISA flags, cores, library
      versions, XLA_FLAGS: ``runtime.machine.machine_key``); names the choice file.
    isa: the CPU's vector ISA (``conv_rule.isa_of``), for layers with a single candidate.
    timer: ``timer(names, objective, lhs_shape, rhs_shape, dtype, strides, pads)`` ->
      ``{name: seconds}``; None: :func:`measure` with ``compiler_options`` (tests inject their
      own).
    warn: where the one-line warnings go (an unreadable or unwritable choice file).
  """

  def __init__(
    self,
    directory: str | None = None,
    machine: dict | None = None,
    isa: str = "other",
    timer: Callable[..., dict] | None = None,
    compiler_options: dict | None = None,
    warn: Callable[[str], None] = logging.warning,
  ):
    if timer is None:
      timer = functools.partial(measure, compiler_options=compiler_options)
    self.directory, self.isa, self.timer, self.warn = directory, isa, timer, warn
    self.machine = {**(machine or {}), "version": VERSION}
    self._choices: dict[str, dict] = {}
    self._loaded = False
    self._writable = directory is not None

  @property
  def path(self) -> str | None:
    """The choice file of this machine key (None without a directory)."""
    if self.directory is None:
      return None
    digest = hashlib.sha256(json.dumps(self.machine, sort_keys=True).encode()).hexdigest()
    return os.path.join(self.directory, f"{digest[:20]}.json")

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        data = json.load(f)
      if data.get("machine") != self.machine or not isinstance(data.get("choices"), dict):
        raise ValueError("it was written for another machine key")
      return {k: v for k, v in data["choices"].items() if v.get("choice") in cpu_conv.ALGORITHMS}
    except (FileNotFoundError, NotADirectoryError):  # Nothing measured yet.
      return {}
    except (OSError, ValueError, AttributeError) as e:
      self.warn(f"warning: ignoring the convolution choices in {self.path}: {e}")
      return {}

  def _write(self) -> None:
    if not self._writable:
      return
    try:
      os.makedirs(self.directory, exist_ok=True)
      choices = {**self._read(), **self._choices}  # Keeps what other processes added.
      fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
      with os.fdopen(fd, "w") as f:
        json.dump({"machine": self.machine, "choices": choices}, f, indent=1, sort_keys=True)
      os.replace(tmp, self.path)
    except OSError as e:
      self._writable = False
      self.warn(
        f"warning: convolution choices kept in memory only: cannot write {self.directory} "
        f"({e.strerror or e})"
      )

  def choose(self, lhs_shape, rhs_shape, dtype, strides, pads, objective: str) -> str:
    """The algorithm for this plain conv (``cpu_conv.is_plain``) used for ``objective``."""
    names = cpu_conv.candidates(lhs_shape, rhs_shape, strides, pads)
    if len(names) == 1:
      inference = objective == "infer"
      return conv_rule.rule(lhs_shape, rhs_shape, strides, pads, isa=self.isa, inference=inference)
    key = layer_key(lhs_shape, rhs_shape, dtype, strides, pads, objective)
    if not self._loaded and self.directory is not None:
      self._choices = {**self._read(), **self._choices}
      self._loaded = True
    if key not in self._choices or self._choices[key]["choice"] not in names:
      times = self.timer(names, objective, lhs_shape, rhs_shape, dtype, strides, pads)
      # The load average says how much to trust the figures: on a busy machine delete the file
      # (Chooser.path) to measure again when it is quiet.
      load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
      self._choices[key] = {"choice": pick(times), "seconds": times, "load_1min": load}
      logging.info("conv choice %s: %s (%s)", key, self._choices[key]["choice"], times)
      self._write()
    return self._choices[key]["choice"]

  def choices(self) -> dict[str, dict]:
    """Everything chosen or read so far: ``{layer_key: {"choice", "seconds"}}``."""
    return dict(self._choices)
