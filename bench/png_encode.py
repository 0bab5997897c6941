"""PNG encoding of colorized photos: the deflate settings colorize.py and the app use, against
what a user would otherwise get.

colorize.py writes PNG for every input that is not a JPEG (PNG, WebP, TIFF, BMP, ...), and
on real folders that encode was the largest stage after the network (bench/README.md). Each
photo of ``--folder`` (default: ``--synthetic`` grainy photos) is composed once with a smooth
random ab field (as a colorization is: ab is upsampled from the network's 224 x 224), then
encoded by each contender in turn, interleaved over ``--rounds``; the table gives the total
seconds (median over rounds), the total bytes, and both as ratios to Pillow's default
(zlib level 6, filtered strategy: what ``Image.save(path)`` writes).

Usage:
  python bench/png_encode.py --folder DIR [--rounds 3] [--json PATH]
"""

import argparse
import io
import os
import sys
import tempfile
import time
import zlib

import colorize_e2e
import common
import cv2
import numpy as np
from PIL import Image

from chromagan_jax.data import images
from chromagan_jax.inference import engine, folders


def _pillow(**options):
  def encode(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", **options)
    return buf.getvalue()

  return encode


def _opencv(image: np.ndarray) -> bytes:
  code = cv2.COLOR_RGB2BGR if image.shape[-1] == 3 else cv2.COLOR_RGBA2BGRA
  ok, buf = cv2.imencode(".png", cv2.cvtColor(image, code))
  assert ok
  return buf.tobytes()


CONTENDERS = {
  "pillow default (zlib 6)": _pillow(),
  "pillow zlib 1": _pillow(compress_level=1),
  "opencv default": _opencv,
  "colorize.py (pillow, Z_RLE)": lambda image: folders.encode_image(image, "PNG"),
}
BASELINE = "pillow default (zlib 6)"


def colorized_photos(paths: list[str], seed: int = 0) -> list[np.ndarray]:
  """Each photo composed with a smooth random ab (a 7 x 7 field upsampled to 224 x 224)."""
  rng = np.random.default_rng(seed)
  out = []
  for path in paths:
    photo = images.read(path)
    coarse = rng.uniform(0.35, 0.65, (7, 7, 2)).astype(np.float32)
    ab = cv2.resize(coarse, (224, 224), interpolation=cv2.INTER_CUBIC)
    out.append(engine.Colorizer.compose_photo(photo, ab)[0])
  return out


def synthetic_photos(folder: str, count: int, megapixels: float) -> list[str]:
  """``count`` grainy photos of about ``megapixels`` each (colorize_e2e's), written to
  ``folder``."""
  side = int((megapixels * 1e6) ** 0.5)
  paths = []
  for i in range(count):
    paths.append(os.path.join(folder, f"{i:03d}.jpg"))
    os.replace(colorize_e2e.make_photo(folder, (side, side), seed=i), paths[-1])
  return paths


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--folder", help="photos to compose and encode (every image file)")
  parser.add_argument("--synthetic", type=int, default=4, help="photos made up without --folder")
  parser.add_argument("--synthetic_mp", type=float, default=2.0)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--smoke", action="store_true", help="tiny inputs, one round")
  parser.add_argument("--json", default=None, help="default bench/results/png_encode.json")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory(prefix="bench_png_") as tmp:
    if args.folder:
      paths = images.find(args.folder)
    else:
      mp = 0.1 if args.smoke else args.synthetic_mp
      paths = synthetic_photos(tmp, 2 if args.smoke else args.synthetic, mp)
    photos = colorized_photos(paths)
  rounds = 1 if args.smoke else args.rounds
  seconds = {name: [] for name in CONTENDERS}
  sizes = {}
  for _ in range(rounds):
    for name, encode in CONTENDERS.items():
      start = time.perf_counter()
      sizes[name] = sum(len(encode(photo)) for photo in photos)
      seconds[name].append(time.perf_counter() - start)
  # Lossless: every contender decodes back to the photo (checked on the first one).
  for encode in CONTENDERS.values():
    decoded = np.asarray(Image.open(io.BytesIO(encode(photos[0]))))
    assert np.array_equal(decoded, photos[0]), "a contender is not lossless"
  base_s, base_bytes = common.median(seconds[BASELINE]), sizes[BASELINE]
  rows = [
    {
      "encoder": name,
      "s": common.median(seconds[name]),
      "MB": sizes[name] / 1e6,
      "time vs default": common.median(seconds[name]) / base_s,
      "size vs default": sizes[name] / base_bytes,
    }
    for name in CONTENDERS
  ]
  megapixels = sum(p.shape[0] * p.shape[1] for p in photos) / 1e6
  print(f"{len(photos)} photos, {megapixels:.1f} MP; medians over {rounds} round(s)")
  common.print_table(rows, ["encoder", "s", "MB", "time vs default", "size vs default"])
  result = {
    "machine": common.machine_info(),
    "folder": args.folder or f"{len(paths)} synthetic photos",
    "photos": len(photos),
    "megapixels": megapixels,
    "zlib": zlib.ZLIB_VERSION,
    "pillow": Image.__version__,
    "opencv": cv2.__version__,
    "seconds": seconds,
    "rows": rows,
  }
  if not args.smoke or args.json:
    default = os.path.join(common.ROOT, "bench/results/png_encode.json")
    common.write_json(args.json or default, result)
  return result


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
