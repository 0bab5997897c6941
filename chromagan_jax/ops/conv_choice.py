"""``conv_impl="auto"`` on CPU: each layer's convolution algorithm measured on the machine at hand.

Which algorithm computes a convolution fastest on CPU depends on the CPU: on an AMD EPYC with
AVX2, Winograd (``cpu_conv``) ran the generator 1.3-2x faster than XLA's direct convolution,
on an Intel Xeon with AVX-512 (issue 14) it was barely faster, and on some layers slower. So
no fixed rule: for each distinct layer (input and kernel shapes, dtype, strides, padding) and
use, the candidate algorithms (``cpu_conv.candidates``, XLA's own convolution always among
them) are timed once, on first use, and the fastest is kept. XLA wins ties: another algorithm
is chosen only when it is faster by more than :data:`MARGIN`, so no layer is knowingly slower
than XLA's own convolution.

"First use" is trace time: ``nn.Conv`` calls the conv function with concrete shapes while
``jax.jit`` traces the model, and the choice fixes the traced program. The measurement runs
its own small jitted programs on fresh random inputs (outside the caller's trace), all
candidates in turn, best of a few rounds (:func:`measure`).

Choices are stored on disk (:func:`set_directory`: next to the XLA compilation cache), one
JSON file per machine key: CPU model, ISA flags, core count, jax/jaxlib versions, XLA_FLAGS and
:data:`VERSION` (bumped when the algorithms change). Another CPU, library version or flag set
reads another file, i.e. is measured afresh. Given the file, choices are deterministic, so a
later process traces the same programs (which the compilation cache then serves). A directory
that cannot be written keeps choices in memory for the process, with one warning.

Uses ("objectives"), because the fastest algorithm for a forward pass is not the fastest for
training: on the AMD EPYC, XLA's forward of the critic's first layer was 2x faster than
im2col but its gradient-penalty pass 4.4x slower, and block1_conv2's forward was fastest with
F(4x4) but its VJP with F(2x2) (bench/RESULTS.md, per-layer table):
  * "fwd": forward only (the frozen teacher; inference without transformed filters);
  * "infer": forward only with the Winograd filters transformed once per weight set, outside
    the timed call (``cpu_conv.using_filters``: colorize, evaluate, the app, export); chosen
    automatically for "fwd" layers traced that way (:func:`use_of`);
  * "train": forward plus the gradients with respect to input and kernel (the generator);
  * "gp": forward plus the gradients of a loss that holds the input gradient (WGAN-GP's
    gradient penalty: the critic).

Measuring is opt-in: ``CHROMAGAN_CONV_CHOICE=measure`` turns it on; the default, "rule", is
the fixed rule (``cpu_conv.rule``, the "winograd" conv_impl), which the test suite also uses so
that its programs do not depend on timing noise. Why not the default: the first use on a
machine pays for timing every candidate of every distinct layer at its full shape, measured
at 727 s for colorize.py on 3 photos at 224x224 (AMD EPYC, AVX2, load average 7-15; see
bench/RESULTS.md), far above the compile-time budget of a first colorize (30 s); at batch 1
it still takes 19-40 s for the generator's 19 inference layers (AMD EPYCs), while on the
AVX-512 EPYC the rule was within 0-5% of the measured choices' sum for every use and never
more than 3% slower than XLA for any layer (bench/conv_choice_cost.py, bench/RESULTS.md).
"""

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable

import flax.linen.module as flax_module
import jax
import jax.numpy as jnp
import numpy as np

from chromagan_jax.ops import cpu_conv

OBJECTIVES = ("fwd", "train", "gp")
# What a layer use is timed for: an objective, or "infer": "fwd" while the Winograd filters come
# transformed (cpu_conv.using_filters: colorize, evaluate, the app, export), where the filter
# transform is not part of a call and F(4x4) pays off from far fewer tiles (:func:`use_of`).
USES = (*OBJECTIVES, "infer")
# Bump when cpu_conv's algorithms or this module's measurement change: old choices are ignored.
VERSION = 4  # 2: forward candidates timed with the inference compiler options; 3: "infer";
# 4: Winograd candidates for stride-1 4x4 convs.
# Another algorithm replaces XLA's own convolution only when measured this much faster.
MARGIN = 0.03
# After the first round of timing, candidates this many times slower than the best drop out.
ABANDON = 1.5
# Rounds of timing after an untimed warm-up (the minimum counts), and the shortest sample:
# sub-millisecond programs are looped so that scheduler noise does not decide.
REPEATS = 3
MIN_SAMPLE_S = 0.02
ENV_POLICY = "CHROMAGAN_CONV_CHOICE"
POLICIES = ("measure", "rule")
DEFAULT_POLICY = "rule"  # Measuring is opt-in until its first-use cost is cut (docstring).

# ISA features that change which algorithm is fastest (vector width, FMA, matrix units).
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
              "avx_vnni", "amx_tile", "amx_bf16", "asimd", "sve")  # fmt: skip


def _cpu_facts() -> tuple[str, list[str]]:
  model, flags = cpu_conv.cpu_facts()
  return model, sorted(flags.intersection(_ISA_FLAGS))


def machine_key() -> dict:
  """What the measured choices depend on besides the layer: CPU, cores, library versions."""
  model, isa = _cpu_facts()
  return {
    "cpu": model,
    "isa": isa,
    "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    "jax": jax.__version__,
    "jaxlib": importlib.metadata.version("jaxlib"),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "version": VERSION,
  }


def layer_key(lhs_shape, rhs_shape, dtype, strides, pads, objective: str) -> str:
  """One layer use as a string: 'fwd 2x224x224x64 3x3x64x64 float32 s1x1 p1,1,1,1'."""
  dims = lambda s: "x".join(str(int(d)) for d in s)  # noqa: E731
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


def use_of(objective: str) -> str:
  """The use a layer traced now for ``objective`` is timed for: "infer" for "fwd" while the
  Winograd filters come transformed (``cpu_conv.filters_given``), else ``objective``."""
  return "infer" if objective == "fwd" and cpu_conv.filters_given() else objective


def pretransformed(name: str, objective: str) -> bool:
  """Whether ``program(name, objective)`` takes Winograd-transformed filters instead of w."""
  return objective == "infer" and name.startswith("winograd")


def program(name: str, objective: str, strides, pads):
  """The function of (x, w) whose run time decides ``objective`` (one of :data:`USES`) for
  algorithm ``name``; of (x, u), u = ``cpu_conv.filter_transform(w, m)``, where
  :func:`pretransformed` (as inference runs it)."""
  conv = lambda x, w: cpu_conv.run(name, x, w, strides, pads)  # noqa: E731
  if pretransformed(name, objective):
    return lambda x, u: cpu_conv.run(name, x, None, strides, pads, u=u)
  if objective in ("fwd", "infer"):
    return conv
  if objective == "train":
    return jax.grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1))

  def penalised(x, w):  # A critic layer's loss with WGAN-GP's input-gradient norm in it.
    inner = lambda x, w: jnp.sum(jax.nn.leaky_relu(conv(x, w)))  # noqa: E731
    return inner(x, w) + jnp.sum(jax.grad(inner)(x, w) ** 2)

  if objective == "gp":
    return jax.grad(penalised, argnums=(0, 1))
  raise ValueError(f"unknown objective {objective!r}; expected one of {USES}")


def measure(names, objective: str, lhs_shape, rhs_shape, dtype, strides, pads) -> dict:
  """Seconds per run of ``program(name, objective)`` on this machine for each of ``names``.

  Each is compiled and warmed up, then all are timed in turn (A B C A B C ...: load changes
  on a shared machine hit every candidate alike), :data:`REPEATS` rounds, each sample looping
  over enough calls to last :data:`MIN_SAMPLE_S`; the minimum counts. A candidate
  :data:`ABANDON` times slower than the best after the first round drops out.
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
    # Timed compiled as their use compiles them: inference programs ("fwd", "infer") without
    # XLA:CPU's YNNPACK fusions (cpu_conv.CPU_COMPILER_OPTIONS), the train step with XLA's
    # defaults.
    inference = objective in ("fwd", "infer")
    options = (cpu_conv.cpu_compiler_options() if inference else None) or None
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
    policy: "measure" (time the candidates) or "rule" (``cpu_conv.rule``, no timing).
    timer: ``timer(names, objective, lhs_shape, rhs_shape, dtype, strides, pads)`` ->
      ``{name: seconds}``; :func:`measure` by default (tests inject their own).
    warn: where the one-line warnings go (an unreadable or unwritable choice file).
  """

  def __init__(
    self,
    directory: str | None = None,
    policy: str = "measure",
    timer: Callable[..., float] = measure,
    warn: Callable[[str], None] = logging.warning,
  ):
    if policy not in POLICIES:
      raise ValueError(f"unknown conv choice policy {policy!r}; expected one of {POLICIES}")
    self.directory, self.policy, self.timer, self.warn = directory, policy, timer, warn
    self.machine = machine_key()
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
    if self.policy == "rule" or len(names) == 1:
      return cpu_conv.rule(lhs_shape, rhs_shape, strides, pads)
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


# compile_cache.choices_dir(compile_cache.DEFAULT_DIR), until compile_cache.enable says else.
_DEFAULT_DIR = os.path.join(
  os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
  "chromagan_jax",
  "conv_choices",
)
_chooser: Chooser | None = None
_directory = _DEFAULT_DIR


def set_directory(path: str | None) -> None:
  """Where the choice files go from now on (compile_cache.enable puts them next to the XLA
  cache); None: memory only."""
  global _chooser, _directory
  _directory, _chooser = path, None


def set_chooser(chooser: Chooser | None) -> None:
  """Installs ``chooser`` for every "auto" conv traced from now on (None: the default)."""
  global _chooser
  _chooser = chooser


def chooser() -> Chooser:
  """The chooser in use: the installed one, else one on :func:`set_directory`'s directory with
  the policy of ``$CHROMAGAN_CONV_CHOICE`` (default "rule": see the module docstring; always
  "rule" when several processes run one program, ``jax.process_count() > 1``)."""
  global _chooser
  if _chooser is None:
    policy = os.environ.get(ENV_POLICY) or DEFAULT_POLICY
    if policy == "measure" and jax.process_count() > 1:
      # Each process would time on its own machine and could choose differently: the
      # processes of one jitted step must trace the same program (its collectives included).
      logging.warning(
        "warning: %s=measure ignored in a multi-process run (%d processes): every process "
        "uses the fixed rule, so that all trace the same program",
        ENV_POLICY,
        jax.process_count(),
      )
      policy = "rule"
    _chooser = Chooser(_directory, policy=policy)
  return _chooser


def _initializing() -> bool:
  """True while flax initialises the calling module (``Module.init``, often under
  ``jax.eval_shape``): only shapes matter then, nothing is worth measuring."""
  try:
    module = flax_module._context.module_stack[-1]
    return module is not None and module.is_initializing()
  except (AttributeError, IndexError):
    return False


def make_conv(objective: str):
  """A drop-in ``conv_general_dilated`` choosing each plain conv's algorithm for ``objective``
  with :func:`chooser` at trace time (XLA's own convolution for everything else; the fixed
  rule, unmeasured, while a model is being initialised)."""
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")

  def choose(lhs_shape, rhs_shape, strides, pads):
    if _initializing():
      return cpu_conv.rule(lhs_shape, rhs_shape, strides, pads)
    return chooser().choose(lhs_shape, rhs_shape, jnp.float32, strides, pads, use_of(objective))

  return cpu_conv.conv_with(choose)
