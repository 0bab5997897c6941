"""Generator inference images/s: this project (JAX/XLA) vs a Keras build with the same weights.

  python bench/generator_inference.py                 # 224x224, width 1, batch 1 and 16
  python bench/generator_inference.py --outputs ab    # ab only, as colorize runs it
  python bench/generator_inference.py --smoke         # seconds: 32x32, width 1/16, batch 1, 2

Both run in this process, each warmed up (``common.WARMUP_S``), then timed interleaved (JAX,
Keras, JAX, Keras, ...); medians are reported with the ratio (and the ratio of lower
quartiles, ``common.lower_quartile_ratio``), the fraction of the machine's fp32 matmul peak
(model FLOPs from XLA's cost analysis), the JAX compile time and the process' peak resident
memory. Keras runs in a ``tf.function`` without XLA (TensorFlow's oneDNN kernels), its fastest
CPU path here.
"""

import argparse
import time

import common  # noqa: I001 (sets sys.path and TF env before the imports below)
import jax
import jax.numpy as jnp
import keras_reference
import numpy as np
import tensorflow as tf

from chromagan_jax.model import networks
from chromagan_jax.model import predict as predict_lib
from chromagan_jax.runtime import machine


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--fc_width", type=int, default=4096, help="class head width before --width")
  p.add_argument("--num_classes", type=int, default=1000)
  p.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
  p.add_argument("--repeats", type=int, default=5, help="timed calls per framework and batch")
  p.add_argument(
    "--conv_impl",
    default="xla,winograd,auto,auto+pre",
    help="comma-separated conv_policy.IMPLS ('auto': the fixed rule on CPU; 'measure': each "
    "layer's algorithm timed, conv_choice.py) to time side by side (each against the same "
    "Keras); '+pre' after one: Winograd filters "
    "transformed (and at batch 1 Dense kernels transposed) once beforehand "
    "(predict_lib.inference_filters), as colorize does",
  )
  p.add_argument(
    "--outputs",
    default="both",
    choices=("both", "ab"),
    help="'both': the paper's generator, ab and the class distribution; 'ab': ab only, as "
    "colorize runs it (XLA drops the unused class head; Keras gets a model with the ab output, "
    "so TF skips it too)",
  )
  p.add_argument("--json", default="bench/results/generator_inference.json")
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.width, args.batches, args.repeats = 32, 0.0625, "1,2", 1
    args.fc_width, args.num_classes = 256, 16
  return args


def predict(gen, variables, x, filters, outputs="both"):
  """(ab, class distribution), or (ab,) for ``outputs="ab"``, with Winograd ``filters``
  transformed beforehand if any. ``filters`` is always given (``{}``: none transformed, each
  call transforms its own), so every contender's layers are chosen as inference chooses them."""
  out = gen.apply(variables, x, train=False, prepared=filters)
  return out if outputs == "both" else out[:1]


def run(args) -> dict:
  filters_s = {}  # (batch, impl) -> seconds to transform the filters once.
  size, width = args.image_size, args.width
  impls = args.conv_impl.split(",")
  # One policy per algorithm, built as the entries build theirs (this machine's backend, ISA,
  # XLA_FLAGS; "measure" with its chooser on disk), shared by the "+pre" variant.
  policies = {}
  for impl in ["xla", *impls]:
    base = impl.removesuffix("+pre")
    if base not in policies:
      policies[base] = machine.conv_policy(base)
  gens = {
    impl: networks.Generator(
      image_size=size,
      width=width,
      fc_width=args.fc_width,
      num_classes=args.num_classes,
      conv=policies[impl.removesuffix("+pre")].resolve(objective="fwd"),
    )
    for impl in ["xla", *impls]
  }
  variables = jax.jit(lambda k: gens["xla"].init(k, jnp.zeros((1, size, size, 3)), train=False))(
    jax.random.key(0)
  )
  keras_model = keras_reference.build_keras_generator(size, width, args.num_classes, args.fc_width)
  keras_reference.flax_to_keras(jax.device_get(variables), keras_model)
  if args.outputs == "ab":  # The same layers, without the class head.
    keras_model = tf.keras.Model(keras_model.inputs, keras_model.outputs[:1])
  keras_fn = tf.function(
    lambda x: tuple(tf.nest.flatten(keras_model(x, training=False))), jit_compile=False
  )

  peak = common.matmul_peak_gflops(256 if args.smoke else 2048)
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    x = np.random.default_rng(batch).random((batch, size, size, 3), dtype=np.float32)
    xj, xt = jnp.asarray(x), tf.constant(x)
    ab_k = keras_fn(xt)[0]
    compiled, flops, compile_s, max_diff, fns = {}, {}, {}, {}, {}
    for impl, gen in gens.items():
      filters = {}
      if impl.endswith("+pre"):
        start = time.perf_counter()
        filters = jax.block_until_ready(predict_lib.inference_filters(gen, variables, xj))
        filters_s[batch, impl] = time.perf_counter() - start
      # The compiler options colorize's programs use (engine.inference_program).
      fn = jax.jit(
        lambda v, x, f, g=gen: predict(g, v, x, f, args.outputs),
        compiler_options=dict(gen.conv.compiler_options),
      )
      compiled[impl], flops[impl], compile_s[impl] = common.compile_with_cost(
        fn, variables, xj, filters
      )
      ab_j = compiled[impl](variables, xj, filters)[0]
      max_diff[impl] = float(np.max(np.abs(np.asarray(ab_j) - ab_k.numpy())))
      fns[impl] = lambda xj=xj, f=compiled[impl], ff=filters: jax.block_until_ready(
        f(variables, xj, ff)
      )
    fns["keras"] = lambda xt=xt: [t.numpy() for t in keras_fn(xt)]
    times = common.interleaved(
      {k: fns[k] for k in [*impls, "keras"]}, args.repeats, warmup_s=common.warmup_s(args.smoke)
    )
    tk = common.median(times["keras"])
    model_flops = flops["xla"]  # The network's nominal FLOPs (direct convolutions).
    for impl in impls:
      tj = common.median(times[impl])
      rows.append(
        {
          "batch": batch,
          "conv_impl": impl,
          "outputs": args.outputs,
          **common.speed_fields(batch, tj, tk, "keras", model_flops, flops[impl], peak, "call"),
          "jax_compile_s": compile_s[impl],
          "filter_transform_once_s": filters_s.get((batch, impl)),
          "max_abs_diff_ab": max_diff[impl],
          "ratio_q1_jax_over_keras": common.lower_quartile_ratio(times[impl], times["keras"]),
          "times_s": {impl: times[impl], "keras": times["keras"]},
        }
      )
  return {
    "benchmark": "generator_inference",
    "image_size": size,
    "width": width,
    "repeats": args.repeats,
    "matmul_peak_gflop_s": peak,
    "rows": rows,
    "conv_choices": {
      k: v for p in policies.values() if p.chooser for k, v in p.chooser.choices().items()
    },
    "peak_rss_mib_both_frameworks": common.peak_rss_mib(),
    "machine": common.machine_info(),
  }


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  common.print_table(
    result["rows"],
    ["batch", "conv_impl", "jax_img_s", "keras_img_s", "ratio_jax_over_keras",
     "ratio_q1_jax_over_keras", "executed_gflop_per_call", "jax_model_gflop_s",
     "keras_model_gflop_s", "jax_mfu", "keras_mfu", "jax_compile_s", "max_abs_diff_ab"],
  )  # fmt: skip
  print(f"matmul peak: {result['matmul_peak_gflop_s']}")
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
