"""Int8 convolutions in XLA against the float32 inference rule, per generator layer, on CPU.

  python bench/int8_conv.py --batch 1     # every conv of the paper's generator, 224x224
  python bench/int8_conv.py --batch 8
  python bench/int8_conv.py --smoke       # seconds

Is a reduced-precision CPU path in XLA faster than what colorize runs in float32 (issue #36)?
For each conv layer of the generator, times interleaved:
  * ``fp32``: the layer's inference algorithm by the fixed rule for this machine's ISA
    (``conv_rule.rule(..., inference=True)``: Winograd with its filters transformed beforehand,
    or XLA), compiled with the inference programs' options (``cpu_conv.CPU_COMPILER_OPTIONS``);
  * ``int8``: XLA's int8 x int8 -> int32 convolution (``preferred_element_type=int32``), the
    kernel quantized beforehand (symmetric, per output channel), the input in the call
    (symmetric, one scale per image, so that a photo's result does not depend on its batch),
    the result rescaled to float32; compiled with only XLA:CPU's YNNPACK convolution fusion on
    (:data:`INT8_OPTIONS`: without it XLA:CPU's int8 convolution is a scalar loop);
  * ``int8_wino2``: Winograd F(2x2, 3x3) (3x3 stride-1 layers) with its 16 channel products in
    int8: the transformed input quantized per image and tile position, the transformed filters
    per position and output channel; XLA's default options (its int8 dot needs YNNPACK's).
and reports milliseconds per call and each contender's error against a float32 direct
convolution (RMS error over RMS output, and max |error| over max |output|) on ReLU'd normal
inputs. F(4x4) in int8 is not a contender: its transform constants (up to 5, sums of 6) lose
24-36% of the output's range (max error, random weights) at 8 bits.
"""

import argparse
import functools

import common  # noqa: I001 (sets sys.path before the imports below)
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from chromagan_jax.ops import conv_rule, cpu_conv
from chromagan_jax.runtime import machine

# The generator's convs (paper size): (name, input size, in channels, out channels, kernel,
# stride).
LAYERS = (
  ("block1_conv1", 224, 3, 64, 3, 1),
  ("block1_conv2", 224, 64, 64, 3, 1),
  ("block2_conv1", 112, 64, 128, 3, 1),
  ("block2_conv2", 112, 128, 128, 3, 1),
  ("block3_conv1", 56, 128, 256, 3, 1),
  ("block3_conv2", 56, 256, 256, 3, 1),
  ("block3_conv3", 56, 256, 256, 3, 1),
  ("block4_conv1", 28, 256, 512, 3, 1),
  ("block4_conv2", 28, 512, 512, 3, 1),
  ("block4_conv3", 28, 512, 512, 3, 1),
  ("global_conv1", 28, 512, 512, 3, 2),
  ("global_conv2", 14, 512, 512, 3, 1),
  ("global_conv3", 14, 512, 512, 3, 2),
  ("global_conv4", 7, 512, 512, 3, 1),
  ("mid_conv1", 28, 512, 512, 3, 1),
  ("mid_conv2", 28, 512, 256, 3, 1),
  ("dec_conv1", 28, 512, 256, 1, 1),
  ("dec_conv2", 28, 256, 128, 3, 1),
  ("dec_conv3", 56, 128, 64, 3, 1),
  ("dec_conv4", 56, 64, 64, 3, 1),
  ("dec_conv5", 112, 64, 32, 3, 1),
  ("dec_conv6", 112, 32, 2, 3, 1),
)

CONTENDERS = ("fp32", "int8", "int8_wino2")

# XLA:CPU's YNNPACK convolution fusion alone: int8 convolutions fast, the float32 dots as the
# inference programs compile them.
INT8_OPTIONS = {
  "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
}

_NHWC = ("NHWC", "HWIO", "NHWC")
QMAX = 127.0


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=5, help="timed calls per contender and layer")
  p.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
  p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  p.add_argument("--json", default="bench/results/int8_conv.json")
  args = p.parse_args(argv)
  if args.smoke:
    args.repeats = 1
  return args


def _scale(amax):
  return jnp.where(amax > 0, amax / QMAX, 1.0).astype(jnp.float32)


def quantize(x, axes):
  """Symmetric int8 of ``x`` with one scale per index of the axes not in ``axes``."""
  s = _scale(jnp.max(jnp.abs(x), axis=axes, keepdims=True))
  return jnp.round(x / s).astype(jnp.int8), s


def int8_conv(x, q, w_scale, strides, pads):
  """``x`` (float32 NHWC) quantized per image, convolved with int8 HWIO ``q``, rescaled."""
  xq, x_scale = quantize(x, (1, 2, 3))
  y = lax.conv_general_dilated(
    xq, q, strides, pads, dimension_numbers=_NHWC, preferred_element_type=jnp.int32
  )
  return y.astype(jnp.float32) * (x_scale * w_scale)


def int8_winograd2(x, uq, u_scale, pads):
  """F(2x2, 3x3) of ``x`` with the channel products in int8: ``uq`` (16, Cin, Cout) int8
  transformed filters with scales ``u_scale`` (16, 1, Cout); the transformed input quantized
  per image and tile position."""
  m, r = 2, 3
  bt, _, at = cpu_conv._matrices(m, r)
  a = m + r - 1
  n, h, wd, _ = x.shape
  (top, bottom), (left, right) = pads
  ho, wo = h + top + bottom - r + 1, wd + left + right - r + 1
  th, tw = -(-ho // m), -(-wo // m)
  xp = jnp.pad(
    x, ((0, 0), (top, th * m + r - 1 - h - top), (left, tw * m + r - 1 - wd - left), (0, 0))
  )
  rows = [xp[:, i : i + m * th : m] for i in range(a)]
  t = jnp.stack(cpu_conv._combine(bt, rows))
  cols = [t[:, :, :, v : v + m * tw : m] for v in range(a)]
  v = jnp.stack(cpu_conv._combine(bt, cols), axis=1).reshape(a * a, n, th * tw, -1)
  vq, v_scale = quantize(v, (2, 3))  # (a*a, N, 1, 1): per position and image.
  prod = lax.dot_general(
    vq.reshape(a * a, n * th * tw, -1),
    uq,
    (((2,), (1,)), ((0,), (0,))),
    preferred_element_type=jnp.int32,
  )
  prod = prod.reshape(a * a, n, th * tw, -1).astype(jnp.float32) * (v_scale * u_scale[:, None])
  prod = prod.reshape(a, a, n, th, tw, -1)
  rr = cpu_conv._combine(at, [prod[i] for i in range(a)])
  y = jnp.stack(
    [jnp.stack(cpu_conv._combine(at, [ri[j] for j in range(a)]), axis=3) for ri in rr], 2
  )
  return y.reshape(n, th * m, tw * m, -1)[:, :ho, :wo]


def _contenders(x, w, stride, isa, fp32_options):
  """{contender: (jitted fn, its arguments)}; weights prepared beforehand, as inference does."""
  strides = (stride, stride)
  pads = cpu_conv.explicit_pads(x.shape, w.shape, strides, "SAME")
  name = conv_rule.rule(x.shape, w.shape, strides, pads, isa=isa, inference=True)
  u = cpu_conv.filter_transform(w, int(name[-1])) if name.startswith("winograd") else None
  fp32 = functools.partial(cpu_conv.run, name, strides=strides, pads=pads)
  q, w_scale = quantize(w, (0, 1, 2))
  out = {
    "fp32": (jax.jit(lambda x, w, u: fp32(x, w, u=u), compiler_options=fp32_options), (x, w, u)),
    "int8": (
      jax.jit(
        functools.partial(int8_conv, strides=strides, pads=pads), compiler_options=INT8_OPTIONS
      ),
      (x, q, w_scale),
    ),
  }
  if "winograd2" in cpu_conv.candidates(x.shape, w.shape, strides, pads) and w.shape[0] == 3:
    uq, u_scale = quantize(cpu_conv.filter_transform(w, 2), (1,))
    out["int8_wino2"] = (jax.jit(functools.partial(int8_winograd2, pads=pads)), (x, uq, u_scale))
  return out, name


def run(args) -> dict:
  isa = machine.cpu_isa()
  fp32_options = dict(machine.conv_policy("auto").compiler_options)
  wanted = set(filter(None, args.layers.split(",")))
  rows = []
  for name, size, cin, cout, k, stride in LAYERS:
    if wanted and name not in wanted:
      continue
    if args.smoke:
      size, cin, cout = max(8, size // 16), max(4, cin // 8), max(2, cout // 8)
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.maximum(rng.standard_normal((args.batch, size, size, cin)), 0), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
    ref = lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=_NHWC)
    contenders, rule_name = _contenders(x, w, stride, isa, fp32_options)
    row = {"layer": name, "batch": args.batch, "fp32_algorithm": rule_name}
    for c, (fn, fn_args) in contenders.items():
      err = fn(*fn_args) - ref
      row[f"{c}_rel_rms_err"] = float(jnp.sqrt(jnp.mean(err**2) / jnp.mean(ref**2)))
      row[f"{c}_rel_max_err"] = float(jnp.max(jnp.abs(err)) / jnp.max(jnp.abs(ref)))
    times = common.interleaved(
      {
        c: functools.partial(lambda fn, a: jax.block_until_ready(fn(*a)), *v)
        for c, v in contenders.items()
      },
      args.repeats,
      warmup_s=common.warmup_s(args.smoke),
    )
    for c in contenders:
      row[f"{c}_ms"] = 1e3 * common.median(times[c])
    row["fp32_over_int8"] = row["fp32_ms"] / row["int8_ms"]
    row["times_s"] = times
    rows.append(row)
  totals = {c: sum(r.get(f"{c}_ms", r["fp32_ms"]) for r in rows) for c in CONTENDERS}
  totals["best_per_layer"] = sum(min(r.get(f"{c}_ms", np.inf) for c in CONTENDERS) for r in rows)
  return {
    "benchmark": "int8_conv",
    "batch": args.batch,
    "repeats": args.repeats,
    # Sum of the layers' medians; a contender missing on a layer counts that layer's fp32.
    "total_ms": totals,
    "rows": rows,
    "machine": common.machine_info(),
  }


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  columns = ["layer", "fp32_algorithm", *[f"{c}_ms" for c in CONTENDERS], "fp32_over_int8"]
  columns += [f"{c}_rel_rms_err" for c in CONTENDERS]
  common.print_table(result["rows"], columns, args.markdown)
  print("total ms:", {k: round(v, 1) for k, v in result["total_ms"].items()})
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
