"""``chromagan-app``: the local web app for colorizing photos (``inference/webapp.py``).

python -m chromagan_jax.app --ckpt DIR [--host 127.0.0.1] [--port 7860]
"""

import argparse
import os
import sys
from collections.abc import Sequence

from chromagan_jax.data import images
from chromagan_jax.errors import UserError
from chromagan_jax.inference import folders, webapp
from chromagan_jax.ops import conv_policy
from chromagan_jax.runtime import allocator, compile_cache, runner


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
    "--max_in_flight",
    type=int,
    default=webapp.DEFAULT_MAX_IN_FLIGHT,
    help="uploads accepted at once (colorized one at a time, the others wait on disk); "
    "more get 503 with Retry-After (%(default)s)",
  )
  parser.add_argument(
    "--threads",
    type=int,
    default=None,
    help=f"server threads (default: --max_in_flight + {webapp.SPARE_THREADS}, so pages, "
    "results and 503s are answered while every slot is busy)",
  )
  parser.add_argument(
    "--max_result_mb",
    type=float,
    default=webapp.DEFAULT_MAX_RESULT_MB,
    help="encoded results kept in memory for download, oldest dropped first (%(default)s)",
  )
  parser.add_argument(
    "--conv_impl",
    default=None,
    choices=conv_policy.IMPLS,
    help="convolution algorithm (see colorize.py --help)",
  )
  parser.add_argument(
    "--network",
    default=None,
    metavar="IR",
    help="run the network stage with OpenVINO on this IR instead of JAX (see colorize.py "
    "--help); --ckpt still gives the config; needs the 'openvino' extra",
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
  log = lambda msg: print(msg, file=sys.stderr, flush=True)
  try:
    if min(args.max_upload_mb, args.max_pixels, args.max_in_flight, args.max_result_mb) <= 0:
      raise UserError(
        "--max_upload_mb, --max_pixels, --max_in_flight and --max_result_mb must be positive"
      )
    threads = args.threads or args.max_in_flight + webapp.SPARE_THREADS
    if threads < 1:
      raise UserError("--threads must be positive")
    webapp.require_flask()  # Before the checkpoint loads: a missing extra fails at once.
    compile_cache.enable(args.compilation_cache, warn=log)
    allocator.keep_freed_memory()  # Full-resolution photos: no page faults per photo.
    colorizer = folders.load_colorizer(
      args.ckpt, args.step, 1, args.conv_impl, args.network, "chromagan-app --network"
    )
  except (UserError, ValueError) as e:
    log(f"error: {e}")
    return 1
  app = webapp.create_app(
    colorizer,
    int(args.max_upload_mb * webapp._MIB),
    args.max_pixels,
    max_in_flight=args.max_in_flight,
    max_result_bytes=int(args.max_result_mb * webapp._MIB),
  )
  try:
    server = webapp.make_server(app, args.host, args.port, threads)
  except OSError as e:  # port taken, no permission
    log(f"error: cannot serve on {args.host}:{args.port}: {e.strerror or e}")
    return 1
  log(
    f"serving on http://{args.host}:{args.port}  ({args.max_in_flight} uploads at once, "
    f"{threads} threads; Ctrl-C stops)"
  )
  try:
    server.run()
  except KeyboardInterrupt:
    pass
  finally:
    server.close()
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  runner.run(main)
