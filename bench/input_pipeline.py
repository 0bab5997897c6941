"""Input-pipeline images/s (per worker process and per core) and resume cost.

  python bench/input_pipeline.py                        # bundled photos, 224x224
  python bench/input_pipeline.py --path '/work/photos/photos/**/*.jpg' --processes 0,1,2
  python bench/input_pipeline.py --smoke                # seconds: 32x32, a few batches

Runs ``pipeline.create_train_iterator`` (decode with ``chromagan_jax.data.images``, optional
crop/flip, resize; in ``--processes`` worker processes, 0 = in the calling process) on the
bundled photos or on a folder/glob of your photos (``--path``; e.g. the shared photo set,
``bash /work/shared/data/fetch_photos.sh /work/photos``). Reports, per process count, the
steady rate after ``--cold_batches`` and images per CPU-second of the main process and its
workers (img/s per core: the rate one free core sustains, meaningful on a busy machine too).
Then the resume cost: the time from ``create_train_iterator(start_step=s)`` to its first
batch at 10% and at 90% of an epoch (equal when resuming reads nothing it skips). If
``bench/results/train_step.json`` exists, rows add the train step's consumption (JAX
images/s) and the ratio pipeline / step.
"""

import argparse
import json
import os
import time

import common  # noqa: I001 (sets sys.path and TF env before the imports below)
import numpy as np

from chromagan_jax.configs import default
from chromagan_jax.data import images, pipeline, sources


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
  p.add_argument("--path", default="", help="folder or glob of photos (default: bundled)")
  p.add_argument("--processes", default="0,2", help="comma-separated decode process counts")
  p.add_argument("--augment", action="store_true", help="random crops and flips on")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--batches", type=int, default=20, help="batches timed after the cold ones")
  p.add_argument("--cold_batches", type=int, default=3, help="batches not timed (start-up)")
  p.add_argument("--train_step_json", default="bench/results/train_step.json")
  p.add_argument("--json", default="bench/results/input_pipeline.json")
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.batch, args.batches, args.cold_batches = 32, 2, 2, 1
  args.processes = [int(n) for n in args.processes.split(",")]
  return args


def make_config(args, processes: int):
  config = default.get_config()
  config.data.source = "folder" if args.path else "bundled"
  config.data.path = args.path
  config.data.augment = args.augment
  config.data.decode_processes = processes
  config.model.image_size = args.image_size
  config.batch_size = args.batch
  return config


def cpu_seconds(pids) -> float:
  """User + system CPU time of these processes (all their threads), from /proc."""
  total = 0
  for pid in pids:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15).
  return total / os.sysconf("SC_CLK_TCK")


def measure(args, processes: int) -> dict:
  """Wall-clock rate, and images per CPU-second of the main process and the workers.

  On a shared machine the wall-clock rate depends on what else runs; images per CPU-second
  does not (much): it is the rate one free core sustains, i.e. img/s per core.
  """
  config = make_config(args, processes)
  it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  for _ in range(args.cold_batches):
    batch = next(it)
  pids = [os.getpid(), *pipeline._workers(processes).pids()]
  cpu0, start = cpu_seconds(pids), time.perf_counter()
  for _ in range(args.batches):
    batch = next(it)
  steady, cpu = time.perf_counter() - start, cpu_seconds(pids) - cpu0
  assert batch["rgb"].shape == (args.batch, args.image_size, args.image_size, 3)
  n = args.batches * args.batch
  return {
    "decode_processes": processes,
    "batch": args.batch,
    "img_s": n / steady,
    "cpu_s": cpu,
    "img_per_cpu_s": n / max(cpu, 1e-6),  # CPU time can read 0 for a short run.
    "load_1min": os.getloadavg()[0],
  }


def resume_cost(args, processes: int) -> dict:
  """Seconds from create_train_iterator(start_step) to its first batch, at 10% and 90%."""
  config = make_config(args, processes)
  steps_per_epoch = max(1, pipeline.num_train_examples(config) // args.batch)
  out = {"decode_processes": processes, "steps_per_epoch": steps_per_epoch}
  for fraction in (0.1, 0.9):
    step = int(fraction * steps_per_epoch)
    start = time.perf_counter()
    next(pipeline.create_train_iterator(config, start_step=step, process_index=0,
                                              process_count=1))  # fmt: skip
    out[f"resume_s_at_{round(fraction * 100)}pct"] = time.perf_counter() - start
  return out


def dataset_facts(args) -> dict:
  config = make_config(args, 0)
  files = sources._train_files(config)
  pixels = []
  for f in files:
    try:
      pixels.append(np.prod(images.read(f).rgb.shape[:2]))
    except images.ImageError:
      continue
  return {
    "source": args.path or "bundled",
    "files": len(files),
    "megapixels_mean": float(np.mean(pixels) / 1e6),
    "megapixels_median": float(np.median(pixels) / 1e6),
    "mib_on_disk": sum(os.path.getsize(f) for f in files) / 2**20,
  }


def train_step_rate(path: str) -> float | None:
  """The fastest JAX train-step images/s in a train_step.json (the hungriest consumer)."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    rows = json.load(f)["rows"]
  return max(r["jax_img_s"] for r in rows)


def run(args) -> dict:
  rows = [measure(args, n) for n in args.processes]
  consumption = train_step_rate(args.train_step_json)
  for r in rows:
    r["train_step_img_s"] = consumption if consumption is not None else "n/a"
    r["pipeline_over_step"] = r["img_s"] / consumption if consumption else "n/a"
  return {
    "benchmark": "input_pipeline",
    "image_size": args.image_size,
    "augment": args.augment,
    "data": dataset_facts(args),
    "rows": rows,
    "resume": [resume_cost(args, n) for n in args.processes[-1:]],
    "peak_rss_mib": common.peak_rss_mib(),
    "machine": common.machine_info(),
  }


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  print(result["data"])
  common.print_table(
    result["rows"],
    ["decode_processes", "batch", "img_s", "img_per_cpu_s", "load_1min", "train_step_img_s",
     "pipeline_over_step"],
  )  # fmt: skip
  common.print_table(result["resume"], list(result["resume"][0]))
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
