"""Tiny configuration for tests (64x64, 1/8 width): defined in ``chromagan_jax/configs/tiny.py``.

  python train.py --config=configs/tiny.py --workdir=/tmp/chromagan_tiny

The configs live in the package, so that ``chromagan_jax.configs.tiny`` imports wherever
chromagan-jax is installed; this file keeps ``--config=configs/tiny.py`` working.
"""

from chromagan_jax.configs.tiny import get_config

__all__ = ["get_config"]
