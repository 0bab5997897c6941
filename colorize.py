"""Colorizes photos and videos: ``python colorize.py --ckpt DIR --output OUT INPUT...``.

The command is :mod:`chromagan_jax.colorize` (also installed as ``chromagan-colorize``);
``python colorize.py --help`` lists its flags.
"""

from chromagan_jax.runtime import runner

if __name__ == "__main__":
  runner.colorize()
