"""Input-pipeline images/s on the bundled photos vs what the train step consumes.

  python bench/input_pipeline.py               # 224x224, batch 8, augment off and on
  python bench/input_pipeline.py --smoke       # seconds: 32x32, batch 2, a few batches

Runs ``input_pipeline.create_train_iterator`` with ``data.source='bundled'`` (decode with PIL,
resize with TF, optional random crops/flips). The first batches include decoding (the bundled
set is cached in memory afterwards), so the cold rate and the steady rate are both reported.
If ``bench/results/train_step.json`` exists, the table adds the train step's consumption
(JAX images/s) and the headroom ratio pipeline / step.
"""

import argparse
import json
import os
import time

import common  # noqa: I001 (sets sys.path and TF env before the imports below)

from chromagan_jax import input_pipeline
from configs import default


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--batches", type=int, default=40, help="batches timed after the cold ones")
  p.add_argument("--cold_batches", type=int, default=3, help="batches counted as 'cold'")
  p.add_argument("--train_step_json", default="bench/results/train_step.json")
  p.add_argument("--json", default="bench/results/input_pipeline.json")
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.batch, args.batches, args.cold_batches = 32, 2, 2, 1
  return args


def measure(args, augment: bool) -> dict:
  config = default.get_config()
  config.data.source = "bundled"
  config.data.augment = augment
  config.model.image_size = args.image_size
  config.batch_size = args.batch
  start = time.perf_counter()
  it = input_pipeline.create_train_iterator(config, process_index=0, process_count=1)
  for _ in range(args.cold_batches):
    batch = next(it)
  cold = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(args.batches):
    batch = next(it)
  steady = time.perf_counter() - start
  assert batch["rgb"].shape == (args.batch, args.image_size, args.image_size, 3)
  return {
    "augment": augment,
    "batch": args.batch,
    "cold_img_s": args.cold_batches * args.batch / cold,
    "steady_img_s": args.batches * args.batch / steady,
    "num_photos": input_pipeline.num_train_examples(config),
  }


def train_step_rate(path: str) -> float | None:
  """The fastest JAX train-step images/s in a train_step.json (the hungriest consumer)."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    rows = json.load(f)["rows"]
  return max(r["jax_img_s"] for r in rows)


def run(args) -> dict:
  rows = [measure(args, augment) for augment in (False, True)]
  consumption = train_step_rate(args.train_step_json)
  for r in rows:
    r["train_step_img_s"] = consumption if consumption is not None else "n/a"
    r["pipeline_over_step"] = r["steady_img_s"] / consumption if consumption else "n/a"
  return {
    "benchmark": "input_pipeline",
    "image_size": args.image_size,
    "rows": rows,
    "peak_rss_mib": common.peak_rss_mib(),
    "machine": common.machine_info(),
  }


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  common.print_table(
    result["rows"],
    ["augment", "batch", "cold_img_s", "steady_img_s", "train_step_img_s", "pipeline_over_step"],
  )
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
