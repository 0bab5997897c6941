"""Trains ChromaGAN: ``python train.py --config=configs/imagenet.py --workdir=DIR``.

The command is :mod:`chromagan_jax.train` (also installed as ``chromagan-train``); see its
docstring for multi-process runs.
"""

from chromagan_jax.runtime import runner

if __name__ == "__main__":
  runner.train()
