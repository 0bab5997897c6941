"""Colorize photos with a ChromaGAN checkpoint; see ``python colorize.py --help``.

python colorize.py --ckpt /tmp/chromagan --output colorized/ photos/ more/*.jpg
"""

import sys

from chromagan_jax import colorize_lib

if __name__ == "__main__":
  sys.exit(colorize_lib.main())
