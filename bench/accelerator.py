"""The real train step on an accelerator: img/s, TFLOP/s, MFU, compile time, memory, parity.

  python bench/accelerator.py                 # 224x224, width 1, the full grid (~1 hour)
  python bench/accelerator.py --smoke         # CPU, minutes: tiny model, batch 2, in-process
  python bench/accelerator.py --dtypes bfloat16 --batches 256 --remat off \
      --deterministic off,on                  # what --xla_gpu_deterministic_ops costs
  python bench/accelerator.py --batches '' --parity_steps 0 --determinism_runs 2
                                              # is a replay bitwise equal (exact resume)?

Imports no TensorFlow, tfds or clu: an accelerator machine with jax (CUDA/TPU), flax, optax
and orbax runs it. The step is ``train_step.make_train_step`` (generator update with MSE + KL to
a random VGG16 teacher + adversarial term, critic update with WGAN-GP, Adam for both, Lab
conversion on device) over a 1-D data mesh of all devices, fed synthetic uint8 RGB batches.

Grid: dtype {float32, bfloat16} x global batch {10, 64, 256, largest that fits} x trunk remat
{off, on} (x ``--deterministic``, default on as train.py runs). Per case:
  * ``img_s``: images per second over ``--steps`` steps after ``--warmup`` (dispatched back to
    back, one block at the end, as the training loop runs).
  * ``model_tflop_s``: model FLOPs per step / step time. **Model FLOPs** are XLA's cost
    analysis of the *unoptimised* float32 step without remat at that batch
    (``jit(...).lower(...).cost_analysis()``; lowered for a host-CPU device where the
    accelerator's compiler has no such analysis, as XLA:GPU): what the networks compute, the
    same count for both dtypes and without remat's recomputation. ``executed_gflop_per_step``
    is the compiled program's own count (remat included; on GPU it omits cuDNN's convolution
    calls: 77 of 59,700 GFLOP at batch 256 on an H200).
  * ``mfu``: model TFLOP/s / the matmul peak measured in this process in the same dtype at
    default precision (an (n, n) @ (n, n) ``jnp.dot``; float32 at default precision is TF32
    on recent NVIDIA GPUs, as the step's float32 convolutions are).
  * ``compile_s`` (lower + compile), ``xla_bytes`` (the compiled program's planned footprint:
    arguments + outputs + temporaries - donated aliases), ``peak_bytes_in_use`` (the device's
    high-water mark, ``device.memory_stats()``; ``n/a`` on CPU, which has none).
  * ``largest that fits``: ``max`` in ``--batches``. A line through the planned footprint of
    two batches guesses it; compiles with doubling steps, then bisection, settle it (each
    probe's planned bytes and compile time printed as it goes): the largest multiple of
    ``--granularity`` x devices whose ``xla_bytes`` is within ``--memory_fraction`` of the
    device's ``bytes_limit`` (``--memory_limit_bytes`` overrides it, e.g. on CPU) and whose
    next multiple is not. With JAX's default preallocation ``bytes_limit`` is 75% of the GPU.

``--isolate`` (default on except with ``--smoke``) runs every case in its own process, so the
peak memory is that case's and an out-of-memory case cannot disturb the next.

Parity: ``--parity_steps`` steps (3) from one state and the same batches with float32 at
``Precision.HIGHEST``, float32 at default precision and bfloat16; losses per step and the
parameters (and their updates) after the last step compared with the HIGHEST run (max
relative differences).

Determinism (``--determinism_runs N``, default 0: skipped): what exact resume needs on a GPU.
N separate processes each compile the step (``--determinism_dtype``, batch
``--determinism_batch``, deterministic ops per ``--determinism_modes``) and replay
``--determinism_steps`` steps from the same state on the same batches; the SHA-256 digests of
their final train states are compared (equal: bitwise reproducible across processes).

Output: a table and ``--json`` (bench/results/accelerator.json).
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import time

import common  # noqa: I001 (sets sys.path before the imports below)
import numpy as np

DTYPES = ("float32", "bfloat16")
MAX = "max"  # The "largest batch that fits" entry of --batches.
CASE_PREFIX = "ACCELERATOR_CASE_JSON "  # A child process's result line (--isolate).


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny model, small batches, in-process")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--batches", default=f"10,64,256,{MAX}", help=f"global batches; '{MAX}' = fits")
  p.add_argument("--remat", default="off,on", help="trunk remat: 'off', 'on' or 'off,on'")
  p.add_argument("--deterministic", default="on", help="--xla_gpu_deterministic_ops: on/off")
  p.add_argument("--teacher", default="on", choices=["on", "off"], help="KL teacher in the step")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--fc_width", type=int, default=4096)
  p.add_argument("--num_classes", type=int, default=1000)
  p.add_argument("--num_devices", type=int, default=0, help="devices in the mesh (0: all)")
  p.add_argument("--steps", type=int, default=20, help="timed steps per case")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps per case")
  p.add_argument("--matmul_n", type=int, default=8192, help="size of the peak-matmul operands")
  p.add_argument("--granularity", type=int, default=8, help="max batch: multiple of this x devs")
  p.add_argument("--max_batch_cap", type=int, default=16384, help="max batch: never above this")
  p.add_argument("--memory_fraction", type=float, default=0.95, help="of bytes_limit, max batch")
  p.add_argument("--memory_limit_bytes", type=int, default=0, help="replaces bytes_limit if > 0")
  p.add_argument("--parity_steps", type=int, default=3, help="0 skips the parity part")
  p.add_argument("--parity_batch", type=int, default=10)
  p.add_argument(
    "--determinism_runs", type=int, default=0, help="processes replaying the same steps (0: skip)"
  )
  p.add_argument("--determinism_modes", default="on,off", help="deterministic ops in the replays")
  p.add_argument("--determinism_steps", type=int, default=3)
  p.add_argument("--determinism_batch", type=int, default=256)
  p.add_argument("--determinism_dtype", default="bfloat16")
  p.add_argument("--isolate", default="auto", choices=["auto", "on", "off"])
  p.add_argument("--json", default="bench/results/accelerator.json")
  p.add_argument("--case", default="", help=argparse.SUPPRESS)  # A child's one case (JSON).
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.width, args.fc_width, args.num_classes = 32, 0.0625, 256, 16
    if args.batches == p.get_default("batches"):
      args.batches = f"2,{MAX}"  # 'max' is n/a on CPU unless --memory_limit_bytes is given.
    args.steps, args.warmup, args.matmul_n, args.granularity = 2, 1, 256, 1
    args.parity_batch = args.determinism_batch = 2
  if args.isolate == "auto":
    args.isolate = "off" if args.smoke else "on"
  args.argv = list(sys.argv[1:] if argv is None else argv)  # What children are started with.
  return args


def _first(cost):
  """A cost analysis as one dict (older jax returned a one-element list; some backends None)."""
  return cost[0] if isinstance(cost, list | tuple) else cost


def _split(text):
  return [x for x in text.split(",") if x]


@dataclasses.dataclass(frozen=True)
class Case:
  dtype: str
  batch: int | str  # An int, or MAX.
  remat: bool
  deterministic: bool


def grid(args) -> list[Case]:
  flags = {"off": False, "on": True}
  return [
    Case(dtype, b if b == MAX else int(b), flags[remat], flags[det])
    for dtype in _split(args.dtypes)
    for det in _split(args.deterministic)
    for remat in _split(args.remat)
    for b in _split(args.batches)
  ]


def search_largest_batch(need, limit: int, g: int, listed: list[int], cap: int) -> dict:
  """Largest multiple ``b`` of ``g`` (<= ``cap``) with ``need(b) <= limit < need(b + g)``.

  ``need(batch)`` is the planned bytes of the step at that batch (a compile each, so few
  calls): a line through the two largest ``listed`` batches (or g and 2g) guesses ``b``; steps
  that double from there bracket it (the line can be far off: XLA's plan is not linear in
  the batch), and bisection settles it, so the compiles grow with log(error / g), not with
  the error. Returns ``{'batch', 'limit_bytes', 'probes'}`` or ``{'error', 'probes'}`` when not
  even ``g`` fits.
  """
  listed = sorted(listed)
  b1, b2 = listed[-2:] if len(listed) >= 2 else (g, 2 * g)
  b1, b2 = max(g, b1 // g * g), max(2 * g, b2 // g * g)
  if b2 <= b1:
    b2 = b1 + g
  top = cap // g * g
  probes = {}

  def fits(batch):
    if batch not in probes:
      probes[batch] = need(batch)
    return probes[batch] <= limit

  fits(b1), fits(b2)
  per_image = max((probes[b2] - probes[b1]) / (b2 - b1), 1.0)
  guess = int((limit - (probes[b1] - per_image * b1)) / per_image) // g * g
  guess = min(max(g, guess), top)
  # Bracket: lo fits, hi does not (top + g: above the cap).
  step = g
  if fits(guess):
    lo, hi = guess, guess + g
    while hi <= top and fits(hi):  # Upwards, doubling.
      lo, step = hi, 2 * step
      hi = min(lo + step, top + g)
  else:
    lo, hi = 0, guess
    while lo == 0:  # Downwards, doubling.
      below = max(g, hi - step)
      if fits(below):
        lo = below
      elif below == g:
        return {"error": f"even batch {g} needs {probes[g]} > {limit} bytes", "probes": probes}
      else:
        hi, step = below, 2 * step
  while hi - lo > g:  # Bisection over multiples of g.
    mid = (lo + hi) // 2 // g * g
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return {"batch": lo, "limit_bytes": limit, "probes": {str(k): probes[k] for k in sorted(probes)}}


# --- in-process measurement -----------------------------------------------------------------


class Bench:
  """One process's measurements: networks, mesh, synthetic batches, compiled steps."""

  def __init__(self, args):
    import jax  # noqa: PLC0415 (after the child/parent split: the parent never starts JAX)

    from chromagan_jax.configs import default  # noqa: PLC0415
    from chromagan_jax.training import optim, train_state, train_step

    self.jax, self.default, self.args = jax, default, args
    self.optim, self.train_state, self.train_step = optim, train_state, train_step
    devices = jax.devices()[: args.num_devices or None]
    self.mesh = train_state.make_mesh(devices)
    self.n_devices = len(devices)
    self._peaks, self._model_flops, self._teachers, self._needs = {}, {}, {}, {}
    self._state = None
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self._copy = jax.jit(lambda t: jax.tree.map(jax.numpy.copy, t), out_shardings=replicated)

  def fresh_state(self, nets, config):
    """A new on-device train state (the step donates, i.e. consumes, the one it is given).

    Initialised once and copied: parameters are float32 and laid out alike for every dtype
    and remat setting, and one init compile per case would double the smoke run's time.
    """
    if self._state is None:
      base = self.config("float32", False, True, config.batch_size)
      self._state = self.train_state.create_train_state(
        self.train_state.make_networks(base), base, self.mesh
      )
    want = self.train_state.abstract_train_state(nets, config, self.mesh)
    if self.jax.tree.structure(want) != self.jax.tree.structure(self._state):
      return self.train_state.create_train_state(nets, config, self.mesh)
    return self._copy(self._state)

  def config(self, dtype, remat, deterministic, batch):
    c = self.default.get_config()
    a = self.args
    c.model.image_size, c.model.width = a.image_size, a.width
    c.model.fc_width, c.model.num_classes = a.fc_width, a.num_classes
    # XLA's convolutions, as "auto" picks on GPU/TPU; on CPU it would pick Winograd for
    # float32 and the smoke run's executed FLOPs would not be the model's.
    c.model.conv_impl = "xla"
    c.model.remat_trunk = remat
    c.dtype, c.deterministic_ops, c.batch_size = dtype, deterministic, batch
    return c

  def batch(self, n, seed=0):
    s = self.args.image_size
    rgb = np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    return self.train_step.global_batch({"rgb": rgb}, self.mesh)

  def teacher(self, nets):
    """Random VGG16 teacher weights (None with --teacher off), replicated on the mesh."""
    if self.args.teacher == "off":
      return None
    key = (self.args.image_size, self.args.width)
    if key not in self._teachers:
      jax, s = self.jax, self.args.image_size
      replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
      init = jax.jit(nets.teacher.init, out_shardings=replicated)
      self._teachers[key] = init(jax.random.key(1), np.zeros((1, s, s, 3), np.float32))["params"]
    return self._teachers[key]

  def lowered(self, config, mesh=None):
    """(networks, the step lowered for abstract inputs of ``config.batch_size``, teacher).

    ``mesh`` (default: the bench's) places the abstract inputs: a host-CPU mesh lowers the same
    program for :meth:`model_flops` where the accelerator's compiler has no cost analysis.
    """
    jax, s, mesh = self.jax, self.args.image_size, mesh or self.mesh
    nets = self.train_state.make_networks(config)
    teacher = self.teacher(nets)
    step = self.train_step.make_train_step(nets, config, mesh, teacher is not None)
    state = self.train_state.abstract_train_state(nets, config, mesh)
    spec = jax.sharding.PartitionSpec
    data, replicated = (jax.sharding.NamedSharding(mesh, p) for p in (spec("data"), spec()))
    rgb = jax.ShapeDtypeStruct((config.batch_size, s, s, 3), np.uint8, sharding=data)
    abstract_teacher = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), teacher
    )
    return nets, step.lower(state, {"rgb": rgb}, abstract_teacher), teacher

  def model_flops(self, batch):
    """FLOPs of the unoptimised float32 step without remat at ``batch`` (see the docstring).

    XLA:GPU (jax 0.11.2, H200) has no cost analysis of an unoptimised program (None): the same
    step is then lowered for one host-CPU device, whose analysis counts the same global program.
    """
    if batch not in self._model_flops:
      config = self.config("float32", False, True, batch)
      cost = _first(self.lowered(config)[1].cost_analysis())
      if not cost or "flops" not in cost:
        cpu_mesh = self.train_state.make_mesh(self.jax.devices("cpu")[:1])
        cost = _first(self.lowered(config, cpu_mesh)[1].cost_analysis())
      self._model_flops[batch] = float(cost["flops"])
    return self._model_flops[batch]

  def matmul_peak_tflops(self, dtype):
    """Best-of-5 TFLOP/s of an (n, n) @ (n, n) product in ``dtype`` at default precision."""
    if dtype not in self._peaks:
      jax, n = self.jax, self.args.matmul_n
      rng = np.random.default_rng(0)
      a, b = (jax.numpy.asarray(rng.standard_normal((n, n)), dtype) for _ in range(2))
      dot = jax.jit(jax.numpy.dot)
      dot(a, b).block_until_ready()
      one = common.time_once(lambda: dot(a, b).block_until_ready())
      calls, best = max(1, int(0.02 / one)), float("inf")  # >= ~20 ms per timing.
      for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
          out = dot(a, b)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / calls)
      self._peaks[dtype] = 2.0 * n**3 / best / 1e12
    return self._peaks[dtype]

  def compile(self, case: Case, batch: int):
    """(compiled step, networks, config, teacher, lower + compile seconds, planned bytes)."""
    config = self.config(case.dtype, case.remat, case.deterministic, batch)
    start = time.perf_counter()
    nets, lowered, teacher = self.lowered(config)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    planned = (
      m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
      - m.alias_size_in_bytes
    )  # fmt: skip
    self._needs[(case.dtype, case.remat, case.deterministic, batch)] = planned
    return compiled, nets, config, teacher, seconds, planned

  def need(self, case: Case, batch: int) -> int:
    key = (case.dtype, case.remat, case.deterministic, batch)
    if key not in self._needs:
      seconds = self.compile(case, batch)[4]
      print(f"  batch {batch}: {self._needs[key] / 2**30:.2f} GiB planned, compiled in"
            f" {seconds:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    return self._needs[key]

  def memory_limit(self):
    stats = self.jax.devices()[0].memory_stats() or {}
    limit = self.args.memory_limit_bytes or stats.get("bytes_limit")
    return None if not limit else int(limit * self.args.memory_fraction)

  def largest_batch(self, case: Case) -> dict:
    """The largest batch whose planned bytes fit (:func:`search_largest_batch`)."""
    limit = self.memory_limit()
    if limit is None:
      return {"error": "n/a: the device reports no memory limit (pass --memory_limit_bytes)"}
    listed = [int(b) for b in _split(self.args.batches) if b != MAX]
    return search_largest_batch(
      lambda b: self.need(case, b),
      limit,
      self.args.granularity * self.n_devices,
      listed,
      self.args.max_batch_cap,
    )

  def run_case(self, case: Case) -> dict:
    jax, args = self.jax, self.args
    from chromagan_jax.model import networks

    row = {**dataclasses.asdict(case), "devices": self.n_devices}
    print(f"case {row}", file=sys.stderr, flush=True)  # Progress: a full grid takes a while.
    if problem := networks.cpu_bfloat16_problem(self.optim.compute_dtype(self.config(
      case.dtype, case.remat, case.deterministic, 1
    ))):  # fmt: skip
      return {**row, "error": f"skipped: {problem}"}
    batch = case.batch
    if batch == MAX:
      search = self.largest_batch(case)
      row["search"] = search
      if "batch" not in search:
        return {**row, "error": search["error"]}
      batch = search["batch"]
    if batch % self.n_devices:
      return {**row, "error": f"batch {batch} is not a multiple of {self.n_devices} devices"}
    row["batch"] = batch
    for attempt in range(3):
      try:
        compiled, nets, config, teacher, compile_s, planned = self.compile(case, batch)
        state = self.fresh_state(nets, config)
        data = self.batch(batch)
        for _ in range(args.warmup):
          state, metrics = compiled(state, data, teacher)
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(args.steps):
          state, metrics = compiled(state, data, teacher)
        jax.block_until_ready((state, metrics))
        seconds = (time.perf_counter() - start) / args.steps
        break
      except Exception as e:  # noqa: BLE001 (XlaRuntimeError's class moved between versions)
        if "RESOURCE_EXHAUSTED" not in str(e) or case.batch != MAX or attempt == 2:
          return {**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        row.setdefault("out_of_memory_at", []).append(batch)
        batch -= args.granularity * self.n_devices
        row["batch"] = batch
        state = None  # Frees the failed attempt's buffers before the next one.
    try:  # A missing FLOP count costs the MFU columns, not the measured speed.
      flops = self.model_flops(batch)
    except Exception as e:  # noqa: BLE001
      flops, row["flops_error"] = float("nan"), f"{type(e).__name__}: {str(e)[:300]}"
    cost = _first(compiled.cost_analysis()) or {}  # None where the backend has none.
    peak = self.matmul_peak_tflops(case.dtype)
    stats = jax.devices()[0].memory_stats()
    losses = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return {
      **row,
      "img_s": batch / seconds,
      "step_s": seconds,
      "model_gflop_per_step": flops / 1e9,
      "executed_gflop_per_step": float(cost.get("flops", float("nan"))) / 1e9,
      "model_tflop_s": flops / seconds / 1e12,
      "matmul_peak_tflop_s": peak,
      "mfu": flops / seconds / 1e12 / peak,
      "compile_s": compile_s,
      "xla_bytes": planned,
      "peak_bytes_in_use": stats["peak_bytes_in_use"] if stats else "n/a",
      "bytes_limit": stats.get("bytes_limit", "n/a") if stats else "n/a",
      "finite_losses": all(map(math.isfinite, losses.values())),
    }

  def parity(self) -> dict:
    """``--parity_steps`` steps from one state in f32-highest, f32-default and bf16."""
    jax, args = self.jax, self.args
    from chromagan_jax.model import networks

    n = args.parity_batch
    print(f"parity: {args.parity_steps} steps at batch {n}", file=sys.stderr, flush=True)
    modes = {"float32_highest": ("float32", "highest"), "float32_default": ("float32", None)}
    if not networks.cpu_bfloat16_problem(jax.numpy.bfloat16):
      modes["bfloat16"] = ("bfloat16", None)
    batches = [self.batch(n, seed=100 + i) for i in range(args.parity_steps)]
    base = self.config("float32", False, True, n)
    nets = self.train_state.make_networks(base)
    start = jax.device_get(self.fresh_state(nets, base))
    teacher = self.teacher(nets)
    runs = {}
    for mode, (dtype, precision) in modes.items():
      config = self.config(dtype, False, True, n)
      nets = self.train_state.make_networks(config)
      state = self._copy(start)  # The same start for every mode.
      step = self.train_step.make_train_step(nets, config, self.mesh, teacher is not None)
      with jax.default_matmul_precision(precision):  # Read when the step is traced.
        step = step.lower(state, batches[0], teacher).compile()
      history = []
      for data in batches:
        state, metrics = step(state, data, teacher)
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
      runs[mode] = (history, jax.device_get(state))
    ref_hist, ref_state = runs["float32_highest"]
    out = {"batch": n, "steps": args.parity_steps, "modes": list(modes), "losses": {}}
    for mode, (hist, state) in runs.items():
      out["losses"][mode] = hist
      if mode == "float32_highest":
        continue
      loss_rel = max(
        abs(h[k] - r[k]) / max(abs(r[k]), 1e-12)
        for h, r in zip(hist, ref_hist, strict=True)
        for k in r
      )
      params, ref_params, init = (
        jax.tree.leaves((s.g_params, s.d_params)) for s in (state, ref_state, start)
      )
      param_rel = max(
        float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
        for a, b in zip(params, ref_params, strict=True)
      )
      # Updates (final - initial): parameters move ~lr per step, so their own relative
      # difference is tiny whatever the precision; the updates show it.
      d = sum(float(np.sum((a - b) ** 2)) for a, b in zip(params, ref_params, strict=True))
      u = sum(float(np.sum((b - i) ** 2)) for b, i in zip(ref_params, init, strict=True))
      out[mode] = {
        "losses_max_rel_diff": loss_rel,
        "params_max_rel_diff": param_rel,
        "updates_rel_l2_diff": math.sqrt(d / max(u, 1e-30)),
      }
    return out

  def replay(self, deterministic: bool) -> dict:
    """``--determinism_steps`` steps from the fresh state on fixed batches: a digest of the end.

    What exact resume needs on a GPU: a process that compiles the step anew and replays the
    same steps from the same state ends with bitwise the same state. The digest (SHA-256 of
    every leaf of the final train state, parameters, Adam moments, step and key) is compared
    across separate processes (``--determinism_runs``) by :func:`compare_replays`.
    """
    jax, a = self.jax, self.args
    n = a.determinism_batch
    label = "on" if deterministic else "off"
    print(f"replay: deterministic ops {label}, {a.determinism_steps} steps at batch {n}",
          file=sys.stderr, flush=True)  # fmt: skip
    case = Case(a.determinism_dtype, n, remat=False, deterministic=deterministic)
    compiled, nets, config, teacher, compile_s, _ = self.compile(case, n)
    state = self.fresh_state(nets, config)
    history = []
    for i in range(a.determinism_steps):
      state, metrics = compiled(state, self.batch(n, seed=200 + i), teacher)
      history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    digest = hashlib.sha256()
    abs_sum = 0.0  # How far two runs that differ are apart, beside the digest.
    for leaf in jax.tree.leaves(jax.device_get(state)):
      leaf = np.ascontiguousarray(leaf)
      digest.update(leaf.tobytes())
      abs_sum += float(np.sum(np.abs(leaf.astype(np.float64))))
    return {
      "deterministic": deterministic,
      "dtype": a.determinism_dtype,
      "batch": n,
      "steps": a.determinism_steps,
      "compile_s": compile_s,
      "sha256": digest.hexdigest(),
      "state_abs_sum": abs_sum,
      "losses": history,
    }


def compare_replays(runs: list[dict]) -> dict:
  """Replays of one setting (separate processes): bitwise equal or how far apart."""
  ok = [r for r in runs if "sha256" in r]
  out = {"runs": runs, "completed": len(ok)}
  if len(ok) >= 2:
    out["bitwise_equal"] = len({r["sha256"] for r in ok}) == 1
    out["losses_equal"] = all(r["losses"] == ok[0]["losses"] for r in ok)
    sums = [r["state_abs_sum"] for r in ok]
    out["state_abs_sum_rel_spread"] = (max(sums) - min(sums)) / max(abs(max(sums)), 1e-30)
  return out


def machine(bench: "Bench | None" = None) -> dict:
  info = common.machine_info()
  if bench is not None:
    d = bench.jax.devices()[0]
    info.update(device_kind=d.device_kind, device_count=bench.jax.device_count())
  return info


# --- orchestration --------------------------------------------------------------------------


def _child(args, spec: dict) -> dict:
  """Runs one case (or the parity part) in a fresh process (--isolate)."""
  cmd = [sys.executable, os.path.abspath(__file__), *args.argv, "--isolate=off"]
  # The child's stderr (progress, errors) goes straight to ours: a case killed by a time limit
  # has still said how far it got.
  proc = subprocess.run([*cmd, "--case", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith(CASE_PREFIX):
      return json.loads(line[len(CASE_PREFIX) :])
  return {**spec, "error": f"child exited {proc.returncode} (its stderr is above)"}


def run(args) -> dict:
  if args.case:  # A child: one case (or the parity part), printed as one JSON line.
    spec = json.loads(args.case)
    bench = Bench(args)
    if spec.get("parity"):
      result = bench.parity()
    elif "replay" in spec:
      result = bench.replay(spec["replay"])
    else:
      result = bench.run_case(Case(**spec))
    result["machine"] = machine(bench)
    print(CASE_PREFIX + json.dumps(result), flush=True)
    return result
  cases = grid(args)
  flags = {"off": False, "on": True}
  modes = [flags[m] for m in _split(args.determinism_modes)] if args.determinism_runs else []
  if args.isolate == "on":
    rows = [_child(args, dataclasses.asdict(case)) for case in cases]
    parity = _child(args, {"parity": True}) if args.parity_steps else None
    replays = {
      m: [_child(args, {"replay": m}) for _ in range(args.determinism_runs)] for m in modes
    }
    # The children's machine facts: the parent never starts a JAX backend (on a GPU it would
    # hold memory that the cases need).
    children = [*rows, parity or {}, *(r for runs in replays.values() for r in runs)]
    infos = [r.pop("machine") for r in children if "machine" in r]
    info = infos[0] if infos else {"error": "no case ran"}
  else:  # One process: the replays recompile but share the process (a weaker check).
    bench = Bench(args)
    rows = [bench.run_case(case) for case in cases]
    parity = bench.parity() if args.parity_steps else None
    replays = {m: [bench.replay(m) for _ in range(args.determinism_runs)] for m in modes}
    info = machine(bench)
  determinism = {("on" if m else "off"): compare_replays(runs) for m, runs in replays.items()}
  return {
    "benchmark": "accelerator",
    "image_size": args.image_size,
    "width": args.width,
    "teacher": args.teacher,
    "steps": args.steps,
    "isolated": args.isolate == "on",
    "flops": "model FLOPs: XLA cost analysis of the unoptimised float32 step without remat",
    "rows": rows,
    "parity": parity,
    "determinism": determinism or None,
    "machine": info,
  }


COLUMNS = [
  "dtype", "remat", "deterministic", "batch", "img_s", "model_tflop_s", "mfu",
  "matmul_peak_tflop_s", "compile_s", "xla_bytes", "peak_bytes_in_use", "error",
]  # fmt: skip


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  if args.case:
    return result
  common.print_table(result["rows"], COLUMNS)
  if result["parity"]:
    p = result["parity"]
    print(f"parity ({p['steps']} steps, batch {p['batch']}, vs float32_highest):")
    for mode in p["modes"][1:]:
      print(f"  {mode}: {p[mode]}")
  for label, d in (result["determinism"] or {}).items():
    print(
      f"determinism (deterministic ops {label}): {d['completed']} runs,"
      f" bitwise equal: {d.get('bitwise_equal', 'n/a')}, losses equal: {d.get('losses_equal')}"
    )
  print(f"machine: {result['machine']}")
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
