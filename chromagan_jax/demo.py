"""The built-in demo: train the small CPU config on bundled real photos, then colorize and
evaluate held-out ones.

  python -m chromagan_jax.demo --workdir demo_out [--steps 300]

The photos ship inside the scikit-image wheel (see ``sources.bundled_photos``), so the
demo needs no download. Writes ``<workdir>/train`` (checkpoints, TensorBoard),
``<workdir>/colorized`` (the held-out photos colorized at their full resolution),
``<workdir>/before_after.png`` (grey | colorized | original per row) and
``<workdir>/eval`` (PSNR/SSIM/colourfulness vs the grey baseline).
"""

import argparse
import logging as std_logging
import os
import time

import jax
import numpy as np
from absl import logging
from PIL import Image

from chromagan_jax import extras
from chromagan_jax.configs import cpu
from chromagan_jax.data import images
from chromagan_jax.evaluation import evaluator
from chromagan_jax.inference import engine
from chromagan_jax.runtime import runner
from chromagan_jax.training import trainer
from chromagan_jax.weights import checkpoint


def before_after_grid(greys, colorized, originals, height=256) -> np.ndarray:
  """One row per photo: grey input | colorized | original, each scaled to ``height``.

  Args:
    greys: uint8 (H, W) grey inputs; colorized, originals: uint8 (H, W, 3), same sizes.
  Returns:
    uint8 (rows * height, W_max, 3), rows padded with black on the right.
  """
  out = []
  for g, c, o in zip(greys, colorized, originals, strict=True):
    row = [np.stack([g] * 3, -1), c, o]
    scaled = [
      np.asarray(Image.fromarray(x).resize((round(x.shape[1] * height / x.shape[0]), height)))
      for x in row
    ]
    out.append(np.concatenate(scaled, axis=1))
  width = max(r.shape[1] for r in out)
  return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in out])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="demo_out")
  parser.add_argument("--steps", type=int, default=None, help="Training steps (config: 300).")
  args = parser.parse_args(argv)

  # TensorFlow (the input pipeline's) takes seconds to import: after argparse, so that
  # --help is instant; its GPUs are hidden before JAX claims them. The demo trains (TensorFlow,
  # clu) on scikit-image's photos: the 'demo' extra, which holds 'train'.
  extras.require("skimage", "demo", "the demo")
  extras.require("clu.metric_writers", "demo", "the demo")
  tf = extras.require("tensorflow", "demo", "the demo")

  from chromagan_jax.data import sources

  tf.config.set_visible_devices([], "GPU")
  logging.set_verbosity(logging.INFO)
  # Orbax logs every checkpoint operation at INFO; keep the console to training progress.
  std_logging.getLogger("absl").addFilter(lambda record: "orbax" not in record.pathname)
  config = cpu.get_config()
  if args.steps:
    config.num_train_steps = args.steps
  train_dir = os.path.join(args.workdir, "train")
  t0 = time.time()
  print(
    f"[demo] training configs/cpu.py for {config.num_train_steps} steps on "
    f"{len(sources.bundled_photos('train'))} bundled photos ({jax.device_count()} "
    f"{jax.default_backend()} device(s)) -> {train_dir}",
    flush=True,
  )
  trainer.train_and_evaluate(config, train_dir)
  print(f"[demo] trained in {time.time() - t0:.0f} s", flush=True)

  variables, saved = checkpoint.load_generator(train_dir, with_class_head=False)
  holdout = sources.bundled_photos("holdout")
  originals = [images.read_rgb(p) for p in holdout]
  greys = [np.asarray(Image.fromarray(x).convert("L")) for x in originals]
  colorized = engine.colorize(greys, variables, saved)
  out_dir = os.path.join(args.workdir, "colorized")
  os.makedirs(out_dir, exist_ok=True)
  for path, img in zip(holdout, colorized, strict=True):
    name = os.path.splitext(os.path.basename(path))[0]
    Image.fromarray(img).save(os.path.join(out_dir, f"{name}_colorized.png"))
  grid = before_after_grid(greys, colorized, originals)
  grid_path = os.path.join(args.workdir, "before_after.png")
  Image.fromarray(grid).save(grid_path)

  summary = evaluator.evaluate_checkpoint(
    train_dir, "bundled", os.path.join(args.workdir, "eval"), progress=False
  )
  print(evaluator.format_table(summary))
  print(
    f"[demo] done in {time.time() - t0:.0f} s. Results:\n"
    f"  before/after grid : {grid_path}\n"
    f"  colorized photos  : {out_dir}\n"
    f"  evaluation        : {os.path.join(args.workdir, 'eval', 'summary.json')}\n"
    f"  TensorBoard       : tensorboard --logdir {train_dir}"
  )
  return 0


if __name__ == "__main__":
  runner.run(main)
