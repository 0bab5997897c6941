"""Video colorization throughput (frames/s) at 480p and 1080p, and the evaluation clip.

  python bench/video.py                         # throughput, paper generator, random weights
  python bench/video.py --sizes 854x480 --frames 48
  python bench/video.py --make_clip clip.mp4    # the README's flicker/PSNR clip

Throughput is the whole of ``video.colorize_video`` (decode, network resize, generator, ab
smoothing, full-resolution compose, H.264 CRF 18 preset medium encode, audio copy) on a clip
made from the bundled photos, after a warm-up clip of the same size (compiles excluded). The
generator is the paper's (224x224, width 1, head-free) with random weights: speed does not
depend on the weights. Results go to bench/results/video.json.
"""

import argparse
import fractions
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from chromagan_jax.configs import default  # noqa: E402
from chromagan_jax.data import sources, synthetic  # noqa: E402
from chromagan_jax.inference import engine, video  # noqa: E402
from chromagan_jax.model import networks  # noqa: E402

WARMUP_FRAMES = 8
RATE = fractions.Fraction(24000, 1001)


def random_variables(model, size: int, seed: int = 0):
  """Random generator variables of the right shapes, made with NumPy (no init compile)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, size, size, 3)))
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(init, shapes)


def photos(names=None):
  """The bundled photos as uint8 RGB arrays (all of them, or the named ones)."""
  paths = sources.bundled_photos("train") + sources.bundled_photos("holdout")
  out = []
  for p in paths:
    if names is None or os.path.basename(p) in names:
      out.append(np.asarray(Image.open(p).convert("RGB")))
  return out


def make_clip(path, size, frames_per_shot, names, grain):
  frames = synthetic.pan_zoom_frames(photos(names), size, frames_per_shot, grain=grain)
  return synthetic.write_clip(path, frames, size, RATE, crf=18)


def throughput(sizes, frames, batch_size):
  config = default.get_config()
  model = networks.models_from_config(config.model)[0]
  variables = networks.without_class_head(random_variables(model, config.model.image_size))
  colorizer = engine.Colorizer(variables, config, batch_size=batch_size)
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    for w, h in sizes:
      warm = os.path.join(tmp, f"warm{w}.mp4")
      clip = os.path.join(tmp, f"clip{w}.mp4")
      make_clip(warm, (w, h), WARMUP_FRAMES, ["astronaut.png"], 0.0)
      make_clip(clip, (w, h), frames // 2, ["astronaut.png", "coffee.png"], 2.0)
      video.colorize_video(warm, os.path.join(tmp, "w.mp4"), colorizer, progress=False)
      cpu_start, start = os.times(), time.perf_counter()
      r = video.colorize_video(clip, os.path.join(tmp, "o.mp4"), colorizer, progress=False)
      seconds = time.perf_counter() - start
      cpu = sum(os.times()[:2]) - sum(cpu_start[:2])  # user + system, all threads
      # The generator alone on full batches of network inputs, for the share it takes.
      rgbs = [np.zeros((h, w, 3), np.uint8)] * batch_size
      jax.block_until_ready(colorizer.predict_network(rgbs))
      start = time.perf_counter()
      reps = max(1, frames // batch_size)
      for _ in range(reps):
        jax.block_until_ready(colorizer.predict_network(rgbs))
      gen_fps = reps * batch_size / (time.perf_counter() - start)
      results.append(
        {
          "size": f"{w}x{h}",
          "frames": r.frames,
          "frames_per_sec": r.frames / seconds,
          "cpu_seconds_per_frame": cpu / r.frames,
          "network_only_frames_per_sec": gen_fps,
          "audio": r.audio,
        }
      )
      print(json.dumps(results[-1]), flush=True)
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--sizes", default="854x480,1920x1080")
  parser.add_argument("--frames", type=int, default=48)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--make_clip", default=None, metavar="PATH")
  parser.add_argument("--clip_size", default="320x240")
  parser.add_argument("--frames_per_shot", type=int, default=32)
  parser.add_argument("--grain", type=float, default=3.0)
  parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "video.json"))
  args = parser.parse_args()
  if args.make_clip:
    w, h = map(int, args.clip_size.split("x"))
    names = ["chelsea.png", "coffee.png", "astronaut.png"]
    n = make_clip(args.make_clip, (w, h), args.frames_per_shot, names, args.grain)
    print(f"wrote {args.make_clip}: {n} frames, {w}x{h}, shots: {', '.join(names)}")
    return
  load_start = list(os.getloadavg())
  sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
  results = throughput(sizes, args.frames, args.batch_size)
  record = {
    "results": results,
    "generator": "paper config (224x224, width 1, head-free), random weights",
    "batch_size": args.batch_size,
    "encoder": "libx264 CRF 18 preset medium, yuv420p",
    "cpu": platform.processor(),
    "cpu_model": next(
      (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
      "unknown",
    ),
    "cores": os.cpu_count(),
    "load_average_at_start": load_start,
    "load_average_at_end": list(os.getloadavg()),
    "jax": jax.__version__,
    "python": platform.python_version(),
  }
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
