"""``chromagan-export``: the head-free generator as ONNX, TFLite, a TensorFlow SavedModel, an
OpenVINO IR (float32 or int8), or its weights as one pickle-free msgpack file with a SHA-256
(for passing converted weights on).

  python -m chromagan_jax.export --ckpt DIR --format onnx --output chromagan.onnx
  python -m chromagan_jax.export --ckpt DIR --format tflite --output chromagan.tflite
  python -m chromagan_jax.export --ckpt DIR --format msgpack --output chromagan.msgpack
  python -m chromagan_jax.export --ckpt DIR --format openvino-int8 --calib PHOTOS --output OUT

The exported contract (input L / 100, output ab in [0, 1]) is
:mod:`chromagan_jax.inference.exporter`'s.
"""

import argparse
import os
import sys
from collections.abc import Sequence

from chromagan_jax.errors import UserError
from chromagan_jax.inference import exporter, openvino_network
from chromagan_jax.runtime import runner
from chromagan_jax.weights import checkpoint


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m chromagan_jax.export",
    description=exporter.__doc__.split("\n\n")[0]
    + " Input L (N, S, S, 1) in [0, 1] (Lab L / 100), "
    "output ab (N, S, S, 2) in [0, 1] (a = 255 ab - 128); see docs/colorize_onnx.py.",
  )
  parser.add_argument(
    "--ckpt", required=True, help="checkpoint: workdir, checkpoints/ or convert output"
  )
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--format", required=True, choices=exporter.FORMATS)
  parser.add_argument(
    "--output",
    required=True,
    help="output file (a folder for saved_model and openvino*: chromagan.xml, .bin, .json)",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  parser.add_argument(
    "--with_class_head",
    action="store_true",
    help="msgpack: keep the class head (the full generator, for config.init.generator); "
    "default head-free",
  )
  parser.add_argument(
    "--calib",
    default=None,
    metavar="PHOTOS",
    help="openvino-int8: folder (or glob) of photos the int8 ranges are calibrated on; "
    "prepared as colorize prepares its input",
  )
  parser.add_argument(
    "--calib_count",
    "--calib-count",
    type=int,
    default=openvino_network.DEFAULT_CALIB_COUNT,
    help="openvino-int8: calibrate on the first N photos of --calib, sorted by path "
    "(default %(default)s)",
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    path = exporter.export(
      args.ckpt,
      args.format,
      args.output,
      args.step,
      args.overwrite,
      args.with_class_head,
      calib=args.calib,
      calib_count=args.calib_count,
    )
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if args.format == "msgpack":
    digest, size = checkpoint.file_sha256(path)
    print(f"wrote {path} ({size:,} bytes; file sha256 {digest})")
  else:
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  runner.run(main)
