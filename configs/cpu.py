"""Small CPU configuration (the README demo): defined in ``chromagan_jax/configs/cpu.py``.

  python train.py --config=configs/cpu.py --workdir=/tmp/chromagan_cpu

The configs live in the package, so that ``chromagan_jax.configs.cpu`` imports wherever
chromagan-jax is installed; this file keeps ``--config=configs/cpu.py`` working.
"""

from chromagan_jax.configs.cpu import get_config

__all__ = ["get_config"]
