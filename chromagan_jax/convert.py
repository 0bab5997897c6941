"""Convert VGG16 / ChromaGAN weight files into checkpoints (the command line).

  python -m chromagan_jax.convert vgg16 vgg16_weights_tf_dim_ordering_tf_kernels.h5 OUT
  python -m chromagan_jax.convert vgg16 vgg16-397923af.pth OUT
  python -m chromagan_jax.convert generator my_model_colorization.h5 OUT
  python -m chromagan_jax.convert critic my_model_discriminator.h5 OUT

``OUT`` is a checkpoint directory in the one layout of :mod:`chromagan_jax.weights.checkpoint`
(step 0,
one weights item and a config recording the model fields, the source file and the input
preprocessing the weights were trained with); it is never overwritten. The file is read by
:func:`chromagan_jax.weights.port.read` and checked once, against the model its first layers
imply (:func:`chromagan_jax.model.shapes.check`); training also takes the files directly.
"""

import argparse
import os
import sys

import jax
import numpy as np

from chromagan_jax.errors import ConversionError, UserError
from chromagan_jax.model import networks, shapes
from chromagan_jax.runtime import runner
from chromagan_jax.weights import checkpoint, layouts, port

KINDS = ("vgg16", "generator", "critic")


def _count(tree) -> int:
  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def convert(kind: str, source, out, expect_sha256: str | None = None) -> str:
  """Converts ``source`` into the directory ``out`` (must not exist or be empty).

  Returns a one-line summary. ``kind``: 'vgg16', 'generator' or 'critic'. A source file's
  SHA-256 and size are stored in the checkpoint's config (``converted.sha256``,
  ``converted.size_bytes``); ``expect_sha256`` refuses a file with another digest.
  """
  source, out = os.fspath(source), os.path.abspath(os.fspath(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ConversionError(f"{out}: already exists and is not empty; choose a new directory")
  converted = {"kind": kind, "source": os.path.abspath(source)}
  provenance = ""
  if os.path.isfile(source):
    sha256, size = checkpoint.file_sha256(source)
    converted.update(sha256=sha256, size_bytes=size)
    provenance = f"; sha256 {sha256}, {size:,} bytes"
    if expect_sha256 and expect_sha256.strip().lower() != sha256:
      raise ConversionError(
        f"{source}: SHA-256 is {sha256}, not the expected {expect_sha256.strip().lower()} "
        "(another or a damaged file: download it again)"
      )
  elif expect_sha256:
    raise ConversionError(f"{source}: --expect_sha256 needs a file, not a directory")
  if kind not in KINDS:
    raise ConversionError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
  weights = port.read(source, kind)
  variables = weights.variables
  model = shapes.made_for(variables, source)
  shapes.check(
    variables,
    shapes.implied_model(model),
    kind,
    source,
    target="the model its other layers imply",
    layer_names=weights.layer_names,
  )
  if kind == "vgg16":
    params, pre = variables["params"], weights.preprocessing
    top = networks.vgg16_has_top(params)
    converted.update(preprocessing=pre, include_top=top)
    model = {**model, "vgg_preprocessing": pre}
    checkpoint.save_weights(out, checkpoint.VGG16, params, {"model": model, "converted": converted})
    what = "VGG16 classifier" if top else "VGG16 convolutions (notop)"
    summary = f"{what}, {_count(params):,} parameters, trained with {pre!r} preprocessing"
  elif kind == "generator":
    pre = layouts.PREPROCESSING_CHROMAGAN
    model = {**model, "vgg_preprocessing": pre, "remat_trunk": False}
    converted.update(preprocessing=pre)
    checkpoint.save_generator(out, variables, {"model": model, "converted": converted})
    summary = (
      f"ChromaGAN generator, {_count(variables):,} values (image_size "
      f"{model['image_size']}, width {model['width']}), colorize.py --ckpt {out}"
    )
  else:
    config = {"model": model, "converted": converted}
    checkpoint.save_weights(out, checkpoint.CRITIC, variables, config)
    summary = f"ChromaGAN critic, {_count(variables):,} parameters"
  return f"wrote {out}: {summary} (from {source}{provenance})"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m chromagan_jax.convert",
    description="Convert VGG16 / ChromaGAN weights into an Orbax checkpoint directory.",
  )
  parser.add_argument(
    "kind",
    choices=KINDS,
    help="vgg16: Keras .h5 (with top or _notop) or torchvision .pth; generator / critic: "
    "the authors' Keras .h5",
  )
  parser.add_argument("source", help="weight file to read")
  parser.add_argument("out", help="output directory (must not exist or be empty)")
  parser.add_argument(
    "--expect_sha256",
    default=None,
    help="refuse a source file whose SHA-256 differs (the digest its publisher lists)",
  )
  args = parser.parse_args(argv)
  try:
    print(convert(args.kind, args.source, args.out, args.expect_sha256))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  runner.run(main)
