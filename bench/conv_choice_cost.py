"""What ``conv_impl="measure"``'s first-use measuring costs, and what it would choose, on this CPU.

  python bench/conv_choice_cost.py                      # generator inference layers, batch 1
  python bench/conv_choice_cost.py --objective train    # the generator's training layers
  python bench/conv_choice_cost.py --objective gp       # the critic's (gradient penalty)
  python bench/conv_choice_cost.py --objective fwd      # the frozen teacher's (VGG16)
  python bench/conv_choice_cost.py --smoke              # seconds

Traces the model a use runs ("infer": the generator with transformed Winograd filters, as
colorize runs it; "train": the generator; "gp": the critic; "fwd": the VGG16 teacher) at
``--image_size``, ``--width`` with a chooser that records each distinct plain conv layer
instead of timing it, then times every layer's candidates with ``conv_choice.measure`` at
``--batch`` (what a measuring chooser does on first use), and prints per layer: the
candidates' times, the measured choice, the fixed rule's choice (``conv_rule.rule``, the
default), its time over XLA's, and the seconds measuring took. Totals: the seconds of
measuring (the first-use cost a colorize would pay on top of compiling), the sum of the
layers' times under XLA everywhere, the rule and the measured choices (the fastest candidate,
so optimistic: a minimum over noisy samples), and the layers where the rule was more than
``conv_choice.MARGIN`` slower than XLA. ``--rounds 2`` measures everything twice to show how
far one layer's time moves between two measurements.
No TensorFlow. Why the default ("auto") is still the rule: bench/RESULTS.md.
"""

import argparse
import time

import common  # noqa: I001 (sets sys.path before the imports below)
import jax
import jax.numpy as jnp

from chromagan_jax.model import networks
from chromagan_jax.ops import conv_choice, conv_rule, inference_weights
from chromagan_jax.ops.conv_policy import ConvPolicy
from chromagan_jax.runtime import machine


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--objective", default="infer", choices=conv_choice.USES)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--rounds", type=int, default=1, help="measure every layer this many times")
  p.add_argument("--max_layers", type=int, default=0, help="only the first N layers (0: all)")
  p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  p.add_argument("--json", default="bench/results/conv_choice_cost.json")
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.width, args.max_layers = 32, 0.125, 2
  return args


def model_layers(image_size: int, width: float, batch: int, use: str) -> list[tuple]:
  """The distinct plain conv layers "measure" would time for ``use`` (one of
  ``conv_choice.USES``): [(names, lhs, rhs, strides, pads)]."""
  calls = []

  def record(names, objective, lhs, rhs, dtype, strides, pads):
    assert objective == use, (objective, use)
    calls.append((tuple(names), tuple(lhs), tuple(rhs), tuple(strides), tuple(map(tuple, pads))))
    return {n: 1.0 for n in names}

  objective = "fwd" if use == "infer" else use
  # "measure" on CPU with a chooser that records instead of timing (nothing kept on disk).
  chooser = conv_choice.Chooser(None, isa=machine.cpu_isa(), timer=record)
  policy = ConvPolicy("measure", backend="cpu", isa=machine.cpu_isa(), chooser=chooser)
  conv = policy.resolve(jnp.float32, objective)
  if use == "gp":
    model = networks.Critic(width=width, conv=conv)
    inputs = (jnp.zeros((batch, image_size, image_size, 2)),)
    inputs += (jnp.zeros((batch, image_size, image_size, 1)),)
  elif use == "fwd":
    model = networks.VGG16Classifier(width=width, conv=conv)
    inputs = (jnp.zeros((batch, image_size, image_size, 3)),)
  else:
    model = networks.Generator(image_size=image_size, width=width, conv=conv)
    inputs = (jnp.zeros((batch, image_size, image_size, 3)),)
  train = {"train": True} if use == "train" else {}
  mutable = ["batch_stats"] if use == "train" else False

  def apply(params, *inputs):
    if use != "infer":
      return model.apply(params, *inputs, **train, mutable=mutable)
    # Traced as inference traces it: prepared filters given (the "infer" use).
    return model.apply(params, *inputs, train=False, prepared=inference_weights.Recording())

  params = jax.eval_shape(model.init, jax.random.key(0), *inputs)
  jax.jit(apply).lower(params, *inputs)
  return calls


def main(argv=None):
  args = parse_args(argv)
  layers = model_layers(args.image_size, args.width, args.batch, args.objective)
  inference = args.objective == "infer"  # The rule as that use applies it.
  isa = machine.cpu_isa()
  # Forward uses timed with the inference programs' compiler options, as "measure" times them.
  options = dict(machine.conv_policy("auto").compiler_options)
  layers = layers[: args.max_layers or None]
  rows, rounds = [], []
  for round_ in range(args.rounds):
    start = time.perf_counter()
    for names, lhs, rhs, strides, pads in layers:
      t = time.perf_counter()
      times = conv_choice.measure(
        names, args.objective, lhs, rhs, jnp.float32, strides, pads, compiler_options=options
      )
      rule = conv_rule.rule(lhs, rhs, strides, pads, isa=isa, inference=inference)
      key = conv_choice.layer_key(lhs, rhs, jnp.float32, strides, pads, args.objective)
      rows.append({
        "round": round_, "layer": key, "measure_s": time.perf_counter() - t,
        "chosen": conv_choice.pick(times), "rule": rule,
        "rule_over_xla": times[rule] / times["xla"],
        **{f"{n}_ms": v * 1e3 for n, v in times.items()},
      })  # fmt: skip
    this = rows[-len(layers) :]
    rounds.append({
      "round": round_, "layers": len(layers), "measure_s": time.perf_counter() - start,
      "xla_ms": sum(r["xla_ms"] for r in this),
      "rule_ms": sum(r[f"{r['rule']}_ms"] for r in this),
      "chosen_ms": sum(r[f"{r['chosen']}_ms"] for r in this),
      "rule_slower_than_xla": sum(r["rule_over_xla"] > 1 + conv_choice.MARGIN for r in this),
    })  # fmt: skip
  names = sorted({k for r in rows for k in r if k.endswith("_ms")})
  columns = ["round", "layer", *names, "chosen", "rule", "rule_over_xla", "measure_s"]
  common.print_table(rows, columns, args.markdown)
  print()
  common.print_table(rounds, list(rounds[0]), args.markdown)
  result = {
    "machine": common.machine_info(), "args": vars(args), "rows": rows, "rounds": rounds,
  }  # fmt: skip
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
