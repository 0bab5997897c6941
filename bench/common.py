"""Shared helpers of the benchmark scripts: timing, machine facts, matmul peak, JSON output.

The scripts run as ``python bench/<script>.py`` from the repository root (so ``bench/`` is on
``sys.path``: ``common`` and ``keras_reference``, the TF/Keras contender); importing this
module puts the root on ``sys.path`` for ``chromagan_jax`` (configs included) when it is not
installed. Nothing here
imports ``tests/``.
"""

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from chromagan_jax.runtime import allocator  # noqa: E402

# A benchmark script measures what train.py and colorize.py run: malloc with transparent huge
# pages (chromagan_jax/runtime/allocator.py). Only a script of bench/ itself re-executes, never a
# test.
_MAIN = getattr(sys.modules.get("__main__"), "__file__", None) or ""
if os.path.dirname(os.path.abspath(_MAIN)) == os.path.dirname(os.path.abspath(__file__)):
  allocator.reexec_with_huge_pages()
# Before the benchmark loads the cores: a busy machine halves absolute rates.
_LOAD_AT_START = list(os.getloadavg())


def cpu_model() -> str:
  """lscpu-style model name (``runtime.machine.cpu_facts``: /proc/cpuinfo, or the platform's)."""
  from chromagan_jax.runtime import machine

  return machine.cpu_facts()[0] or "unknown"


def machine_info() -> dict:
  """CPU, core count, load average and library versions, recorded with every result.

  TensorFlow's version is recorded when the benchmark imported it; this never imports it
  (bench/accelerator.py runs where there is none).
  """
  import jax  # Imported when called, as the benchmarks set their environment first.

  tf = sys.modules.get("tensorflow")
  from chromagan_jax.runtime import machine

  return {
    "cpu": cpu_model(),
    # The vector ISA the convolution rule distinguishes: "avx512", "avx2" or "other".
    "isa": machine.cpu_isa(),
    "int8_bf16_flags": int8_bf16_flags(),
    "cores": os.cpu_count(),
    "load_average_1_5_15_at_start": _LOAD_AT_START,
    "load_average_1_5_15": list(os.getloadavg()),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "jax_backend": jax.default_backend(),
    "tensorflow": getattr(tf, "__version__", None),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    "transparent_hugepages": allocator.thp_mode(),
  }


# The /proc/cpuinfo flags that decide how fast int8 and bf16 inference can be: VNNI dot products
# (AVX-512 or AVX), AVX-512 BF16, AMX tiles.
INT8_BF16_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def int8_bf16_flags() -> list[str]:
  """Which of :data:`INT8_BF16_FLAGS` this CPU has (none off Linux)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
  except OSError:
    flags = []
  return [f for f in INT8_BF16_FLAGS if f in flags]


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_hwm_mib() -> float:
  """This process's peak RSS since its exec (VmHWM; ru_maxrss would carry the parent's)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  return peak_rss_mib()


def time_once(fn: Callable[[], object]) -> float:
  """Seconds for one call of ``fn``, which must block until its result is ready."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


# Untimed calls of a contender right before each of its timed calls. Interleaving frameworks
# call by call costs the one that runs next: on an AMD EPYC with AVX-512 a JAX train step took
# 13.2-13.6 s right after a TF step against 11.2-11.5 s after its own, and TF 10.8-11.4 s
# after a JAX step against 10.3-10.7 s after its own (batch 8, bench/RESULTS.md). Users run
# one framework's steps back to back, so each timed call follows one of its own.
SETTLE_CALLS = 1


# Untimed warm-up per contender: at least one call and this many seconds of calls. JAX's first
# ~5-10 batch-1 generator calls after compiling took up to 1.7x its steady time (AMD EPYC
# AVX-512: 183-188 ms, then 105-131 ms; TF/Keras was steady from its second call): the process
# growing its malloc heap, which later calls reuse. Users colorizing a folder run at the
# steady rate, so both frameworks are timed there.
WARMUP_S = 1.5


def warmup_s(smoke: bool) -> float:
  """:data:`WARMUP_S`, or none in ``--smoke`` runs (they only check that a script runs)."""
  return 0.0 if smoke else WARMUP_S


def interleaved(
  fns: dict[str, Callable[[], object]],
  repeats: int,
  settle: int = SETTLE_CALLS,
  warmup_s: float = WARMUP_S,
) -> dict[str, list[float]]:
  """Times each of ``fns`` ``repeats`` times in turn (A B A B ...), after a warm-up of each
  (one call, more until ``warmup_s`` seconds have passed); each timed call comes right after
  ``settle`` untimed calls of the same function.

  Interleaving spreads load changes on a shared machine evenly over the contenders; settling
  keeps one contender's caches and allocator state from being charged to the next.
  """
  for fn in fns.values():
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warmup_s:
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      for _ in range(settle):
        fn()
      times[name].append(time_once(fn))
  return times


def median(xs: list[float]) -> float:
  return float(statistics.median(xs))


def lower_quartile_ratio(t_jax: list[float], t_ref: list[float]) -> float:
  """``ref``'s lower-quartile time over JAX's: the ratio of each contender's faster calls.

  Reported beside the ratio of medians. On the 2-core VMs this project is measured on, calls
  of both frameworks run ~1.5x slower at random (AMD EPYC, AVX-512, batch 1: JAX 117-135 ms or
  ~180-200 ms, TF ~205 or ~300-360 ms, with CPU time rising with wall time: the cores run
  slower, nothing is descheduled); when more than half of one contender's calls land slow,
  its median jumps while the lower quartile stays (bench/RESULTS.md).
  """
  return float(np.percentile(t_ref, 25) / np.percentile(t_jax, 25))


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
  """Best-of-``repeats`` fp32 GFLOP/s of an (n, n) @ (n, n) product with jnp.dot and np.dot."""
  import jax  # As in machine_info.
  import jax.numpy as jnp

  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  dot = jax.jit(jnp.dot)
  flops = 2.0 * n**3
  t_jax = min(interleaved({"jax": lambda: dot(ja, jb).block_until_ready()}, repeats, 0)["jax"])
  t_np = min(interleaved({"np": lambda: np.dot(a, b)}, repeats, 0)["np"])
  return {"jnp_dot": flops / t_jax / 1e9, "np_dot": flops / t_np / 1e9, "n": n}


def compile_with_cost(jitted, *args):
  """(compiled executable, FLOPs of one call from XLA's cost analysis, compile seconds).

  Callers run the returned executable, so the function is compiled once only.
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  if isinstance(cost, list | tuple):  # Older JAX returned one dict per device.
    cost = cost[0]
  return compiled, float(cost.get("flops", float("nan"))), seconds


def speed_fields(
  images: int, t_jax: float, t_ref: float, ref: str, model_flops: float, executed_flops: float,
  peak: dict[str, float], per: str,
) -> dict[str, float]:  # fmt: skip
  """Images/s, JAX/``ref`` ratio, model GFLOP/s and MFU from median seconds per ``per``.

  ``model_flops`` is the computation's nominal count (direct convolutions), the same for both
  contenders; ``executed_flops`` is what the JAX program ran (fewer with Winograd).
  """
  gflop = model_flops / 1e9
  return {
    "jax_img_s": images / t_jax,
    f"{ref}_img_s": images / t_ref,
    f"ratio_jax_over_{ref}": t_ref / t_jax,
    f"model_gflop_per_{per}": gflop,
    f"executed_gflop_per_{per}": executed_flops / 1e9,
    "jax_model_gflop_s": gflop / t_jax,
    f"{ref}_model_gflop_s": gflop / t_ref,
    "jax_mfu": gflop / t_jax / peak["jnp_dot"],
    f"{ref}_mfu": gflop / t_ref / peak["jnp_dot"],
  }


def write_json(path: str, result: dict) -> str:
  """Writes ``result`` as indented JSON, creating the directory; returns the path written.

  An existing file is never replaced: bench/results holds figures that RESULTS.md cites, some
  from other machines, under the scripts' default names. The result then goes beside it, named
  for this machine's CPU and the time (``<stem>_<cpu>_<YYYYmmdd-HHMMSS>.json``).
  """
  if os.path.exists(path):
    stem, ext = os.path.splitext(path)
    cpu = "".join(c if c.isalnum() else "-" for c in cpu_model().lower()).strip("-")
    kept, path = path, f"{stem}_{cpu}_{time.strftime('%Y%m%d-%H%M%S')}{ext or '.json'}"
    print(f"{kept} exists; keeping it")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "x") as f:
    json.dump(result, f, indent=2, sort_keys=True)
  print(f"wrote {path}")
  return path


def random_checkpoint(folder, image_size: int = 224, width: float = 1.0) -> str:
  """A generator checkpoint with random weights (NumPy, no compile), written to
  ``folder``/ckpt; returns that directory. The defaults are the paper's size."""
  import jax  # As in machine_info.

  from chromagan_jax.configs import default
  from chromagan_jax.model import networks
  from chromagan_jax.weights import checkpoint

  config = default.get_config()
  config.model.image_size, config.model.width = image_size, width
  gen = networks.models_from_config(config.model)[0]  # Shapes only: any conv policy will do.
  s = config.model.image_size
  shapes = jax.eval_shape(gen.init, jax.random.key(0), jax.ShapeDtypeStruct((1, s, s, 3), "f4"))
  rng = np.random.default_rng(0)

  def init(path, leaf):
    names = [getattr(p, "key", "") for p in path]
    if names[-1] == "kernel":
      scale = 0.05 if "dec_conv6" in names else 1.0
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape, np.float32) * scale / np.sqrt(fan_in)).astype("f4")
    if names[-1] in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    return np.zeros(leaf.shape, np.float32)

  directory = os.path.join(folder, "ckpt")
  checkpoint.save_generator(directory, jax.tree_util.tree_map_with_path(init, shapes), config)
  return directory


def onnx_runner(path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
  """ONNX Runtime (CPU) on the exported network (chromagan_jax.inference.exporter): ``L``
  float32 (N, S, S, 1) -> ``ab`` (N, S, S, 2), ``threads`` intra-op threads, one inter-op.
  Imports no JAX: a process of its own measures ONNX Runtime's memory alone."""
  import onnxruntime as ort

  options = ort.SessionOptions()
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  (source,), (target,) = session.get_inputs(), session.get_outputs()
  return lambda lightness: session.run([target.name], {source.name: lightness})[0]


def tflite_runner(model: bytes, threads: int, batch: int) -> Callable[[np.ndarray], np.ndarray]:
  """The TFLite interpreter (its default XNNPACK delegate) on an exported network flatbuffer,
  resized to ``batch``: ``L`` float32 (batch, S, S, 1) -> ``ab`` (batch, S, S, 2). Imports
  no JAX."""
  import tensorflow as tf

  interpreter = tf.lite.Interpreter(model_content=model, num_threads=threads)
  (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
  interpreter.resize_tensor_input(source["index"], [batch, *source["shape"][1:]])
  interpreter.allocate_tensors()

  def run(lightness):
    interpreter.set_tensor(source["index"], lightness)
    interpreter.invoke()
    return interpreter.get_tensor(target["index"])

  return run


def print_table(rows: list[dict], columns: list[str], markdown: bool = False) -> None:
  """A plain-text (or Markdown) table of ``rows`` (floats with 3 significant digits)."""
  fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
  cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
  if markdown:
    for line in [columns, ["---"] * len(columns), *cells]:
      print("| " + " | ".join(line) + " |")
    return
  widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
  for r in cells:
    print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
