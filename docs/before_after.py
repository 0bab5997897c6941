"""Before/after picture of a checkpoint on held-out photos: grey input | colorized | original.

  python docs/before_after.py --ckpt /work/runs/small --output docs/small_data_val.jpg \
      /photos/val/*.jpg

Each photo is read with the one image reader (``images.read_rgb``), its grey version (Pillow's
"L") is colorized at full resolution by ``engine.colorize`` (the moving-average generator
when the checkpoint has one, unless ``--no_ema``), and the rows are stacked by
``demo.before_after_grid``. docs/small-data-study.md shows its output.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

from chromagan_jax import demo
from chromagan_jax.data import images
from chromagan_jax.inference import engine
from chromagan_jax.weights import checkpoint


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--ckpt", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument(
    "--output", required=True, help="image to write (.jpg or .png; refused if it exists)"
  )
  parser.add_argument("--height", type=int, default=192, help="row height in pixels")
  parser.add_argument("--no_ema", action="store_true", help="the trained generator, not its EMA")
  parser.add_argument("photos", nargs="+")
  args = parser.parse_args(argv)
  if os.path.exists(args.output):
    print(f"error: {args.output} exists; not overwriting it", file=sys.stderr)
    return 1
  variables, config = checkpoint.load_generator(
    args.ckpt, args.step, with_class_head=False, ema=False if args.no_ema else None
  )
  originals = [images.read_rgb(p) for p in args.photos]
  greys = [np.asarray(Image.fromarray(x).convert("L")) for x in originals]
  colorized = engine.colorize(greys, variables, config)
  grid = demo.before_after_grid(greys, colorized, originals, height=args.height)
  Image.fromarray(grid).save(args.output, optimize=True, quality=88)  # quality: JPEG only
  print(f"wrote {args.output} ({grid.shape[1]}x{grid.shape[0]})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
