"""Default configuration, every field documented: defined in ``chromagan_jax/configs/default.py``.

  python train.py --config=configs/default.py --workdir=/tmp/chromagan

The configs live in the package, so that ``chromagan_jax.configs.default`` imports wherever
chromagan-jax is installed; this file keeps ``--config=configs/default.py`` working.
"""

from chromagan_jax.configs.default import get_config

__all__ = ["get_config"]
