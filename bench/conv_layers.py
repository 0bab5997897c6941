"""Per-layer convolution speed: XLA vs cpu_conv (Winograd / im2col) vs TensorFlow, on CPU.

  python bench/conv_layers.py            # the paper's layer shapes at batch 2 (the train bench)
  python bench/conv_layers.py --batch 1  # inference at batch 1
  python bench/conv_layers.py --smoke    # seconds

For each representative layer of the generator (3x3, stride 1) and the critic (4x4), times
the forward pass, the VJP (input and weight gradient) and, for critic layers, the gradient of
an input-gradient norm (the WGAN-GP pattern, a second derivative), interleaved across the
contenders; medians are reported as GFLOP/s of the *direct* convolution's FLOPs, so a
Winograd figure above the matmul peak means fewer multiplications were done. ``xla_nchw`` is
XLA's own convolution on channels-first data (does the layout matter?). The tile size of
``winograd`` (auto) follows ``conv_rule.choose_tile``; ``winograd2`` / ``winograd4`` are fixed.
This is the evidence behind ``conv_rule``'s per-layer choices (bench/RESULTS.md).
"""

import argparse

import common  # noqa: I001 (sets sys.path and TF env before the imports below)
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from chromagan_jax.ops import conv_policy
from chromagan_jax.runtime import machine

# (name, spatial size, in channels, out channels, kernel, stride)
LAYERS = (
  ("block1_conv2", 224, 64, 64, 3, 1),
  ("block2_conv2", 112, 128, 128, 3, 1),
  ("block3_conv2", 56, 256, 256, 3, 1),
  ("block4_conv2", 28, 512, 512, 3, 1),
  ("global_conv2", 14, 512, 512, 3, 1),
  ("dec_conv5", 112, 64, 32, 3, 1),
  ("critic_conv2", 112, 64, 128, 4, 2),
  ("critic_conv3", 56, 128, 256, 4, 2),
  ("critic_conv4", 28, 256, 512, 4, 1),
)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument(
    "--conv_impl",
    default="xla,xla_nchw,winograd,winograd2,winograd4",
    help="conv_policy.FIXED, or xla_nchw: XLA's convolution in NCHW/OIHW layout",
  )
  p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  p.add_argument("--json", default="bench/results/conv_layers.json")
  args = p.parse_args(argv)
  if args.smoke:
    args.repeats, args.conv_impl = 1, "xla,winograd"
  return args


def _tf_fns(x, w, stride, second_order):
  tx, tw = tf.constant(x), tf.constant(w)
  conv = lambda x, w: tf.nn.conv2d(x, w, stride, "SAME")
  fwd = tf.function(conv)

  @tf.function
  def vjp(x, w):
    with tf.GradientTape() as tape:
      tape.watch([x, w])
      y = tf.reduce_sum(tf.sin(conv(x, w)))
    return tape.gradient(y, [x, w])

  @tf.function
  def gp(x, w):
    with tf.GradientTape() as outer:
      outer.watch(w)
      with tf.GradientTape() as inner:
        inner.watch(x)
        y = tf.reduce_sum(tf.sin(conv(x, w)))
      penalty = tf.reduce_sum(tf.square(inner.gradient(y, x)))
    return outer.gradient(penalty, w)

  fns = {"fwd": lambda: fwd(tx, tw).numpy(), "vjp": lambda: [t.numpy() for t in vjp(tx, tw)]}
  if second_order:
    fns["gp"] = lambda: gp(tx, tw).numpy()
  return fns


def _jax_fns(x, w, stride, second_order, impl):
  dims = ("NHWC", "HWIO", "NHWC")
  if impl == "xla_nchw":  # XLA's convolution on channels-first data (transposed untimed).
    x, w, dims = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), ("NCHW", "OIHW", "NCHW")
    impl = "xla"
  if impl not in conv_policy.FIXED:
    raise ValueError(f"unknown conv_impl {impl!r}; expected xla_nchw or one of {conv_policy.FIXED}")
  # The rule as training applies it (no prepared filters), for this machine's ISA.
  policy = machine.conv_policy(impl).resolve(objective="train")
  fn = policy.conv_general_dilated() or jax.lax.conv_general_dilated
  conv = lambda x, w: fn(x, w, (stride, stride), "SAME", dimension_numbers=dims)
  loss = lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
  fwd = jax.jit(conv)
  vjp = jax.jit(jax.grad(loss, argnums=(0, 1)))
  gp = jax.jit(jax.grad(lambda x, w: jnp.sum(jax.grad(loss)(x, w) ** 2), argnums=1))
  jx, jw = jnp.asarray(x), jnp.asarray(w)
  fns = {
    "fwd": lambda: jax.block_until_ready(fwd(jx, jw)),
    "vjp": lambda: jax.block_until_ready(vjp(jx, jw)),
  }
  if second_order:
    fns["gp"] = lambda: jax.block_until_ready(gp(jx, jw))
  return fns


def run(args) -> dict:
  impls = args.conv_impl.split(",")
  peak = common.matmul_peak_gflops(256 if args.smoke else 2048)
  rows = []
  for name, size, cin, cout, k, stride in LAYERS:
    if args.smoke:
      size, cin, cout = max(8, size // 16), max(8, cin // 8), max(8, cout // 8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, size, size, cin), np.float32)
    w = (rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
    out = -(-size // stride)
    gflop = 2.0 * args.batch * out * out * k * k * cin * cout / 1e9
    critic = name.startswith("critic")
    contenders = {impl: _jax_fns(x, w, stride, critic, impl) for impl in impls}
    contenders["tf"] = _tf_fns(x, w, stride, critic)
    for pass_ in contenders["tf"]:
      times = common.interleaved(
        {c: fns[pass_] for c, fns in contenders.items()},
        args.repeats,
        warmup_s=common.warmup_s(args.smoke),
      )
      # FLOPs per pass in units of the forward's: VJP = 2 (input + weight gradient); the
      # penalty gradient = forward + VJP + its VJP, counted as 5.
      flops = gflop * {"fwd": 1, "vjp": 2, "gp": 5}[pass_]
      row = {"layer": name, "batch": args.batch, "pass": pass_, "direct_gflop": flops}
      for c in contenders:
        row[f"{c}_gflop_s"] = flops / common.median(times[c])
      row["best_jax_over_tf"] = max(row[f"{c}_gflop_s"] for c in impls) / row["tf_gflop_s"]
      row["times_s"] = times
      rows.append(row)
  return {
    "benchmark": "conv_layers",
    "batch": args.batch,
    "repeats": args.repeats,
    "conv_impls": impls,
    "matmul_peak_gflop_s": peak,
    "rows": rows,
    "machine": common.machine_info(),
  }


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  columns = ["layer", "pass", *[f"{c}_gflop_s" for c in [*result["conv_impls"], "tf"]]]
  common.print_table(result["rows"], [*columns, "best_jax_over_tf"], args.markdown)
  print(f"matmul peak: {result['matmul_peak_gflop_s']}")
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
