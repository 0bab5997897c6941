"""ChromaGAN on your own photos: defined in ``chromagan_jax/configs/folder.py``.

  python train.py --config=configs/folder.py --workdir=/tmp/chromagan_mine

The configs live in the package, so that ``chromagan_jax.configs.folder`` imports wherever
chromagan-jax is installed; this file keeps ``--config=configs/folder.py`` working.
"""

from chromagan_jax.configs.folder import get_config

__all__ = ["get_config"]
