"""``chromagan-app``: the local web app for colorizing photos (``inference/webapp.py``).

python -m chromagan_jax.app --ckpt DIR [--host 127.0.0.1] [--port 7860]
"""

import argparse
import os
import sys
from collections.abc import Sequence

from chromagan_jax.data import images
from chromagan_jax.errors import UserError
from chromagan_jax.inference import engine, webapp
from chromagan_jax.ops import conv_policy
from chromagan_jax.runtime import allocator, compile_cache, runner
from chromagan_jax.weights import checkpoint


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m chromagan_jax.app", description=webapp.__doc__.split("\n\n")[0]
  )
  parser.add_argument(
    "--ckpt", required=True, help="checkpoint: workdir, checkpoints/ or convert output"
  )
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument(
    "--host", default=webapp.DEFAULT_HOST, help="%(default)s (0.0.0.0: all interfaces)"
  )
  parser.add_argument("--port", type=int, default=webapp.DEFAULT_PORT, help="%(default)s")
  parser.add_argument(
    "--max_upload_mb",
    type=float,
    default=webapp.DEFAULT_MAX_UPLOAD_MB,
    help="per file; %(default)s",
  )
  parser.add_argument(
    "--max_pixels",
    type=int,
    default=images.DEFAULT_MAX_PIXELS,
    help="refuse images with more pixels, before decoding them (%(default)s)",
  )
  parser.add_argument(
    "--conv_impl",
    default=None,
    choices=conv_policy.IMPLS,
    help="convolution algorithm (see colorize.py --help)",
  )
  parser.add_argument(
    "--compilation_cache",
    default=compile_cache.DEFAULT_DIR,
    metavar="DIR",
    help="keep compiled programs here ('' turns it off; default %(default)s)",
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
  try:
    if args.max_upload_mb <= 0 or args.max_pixels < 1:
      raise UserError("--max_upload_mb and --max_pixels must be positive")
    compile_cache.enable(args.compilation_cache, warn=log)
    allocator.keep_freed_memory()  # Full-resolution photos: no page faults per photo.
    variables, config = checkpoint.load_generator(args.ckpt, args.step, with_class_head=False)
    colorizer = engine.Colorizer(variables, config, batch_size=1, conv_impl=args.conv_impl)
  except (UserError, ValueError) as e:
    log(f"error: {e}")
    return 1
  app = webapp.create_app(colorizer, int(args.max_upload_mb * webapp._MIB), args.max_pixels)
  log(f"serving on http://{args.host}:{args.port}  (Ctrl-C stops)")
  try:
    app.run(host=args.host, port=args.port, threaded=True)
  except OSError as e:  # port taken, no permission
    log(f"error: cannot serve on {args.host}:{args.port}: {e.strerror or e}")
    return 1
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  runner.run(main)
