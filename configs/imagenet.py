"""The paper's recipe on ImageNet (224x224): defined in ``chromagan_jax/configs/imagenet.py``.

  python train.py --config=configs/imagenet.py --workdir=/data/chromagan
  python train.py --config=configs/imagenet.py:gpu --workdir=/data/chromagan_gpu

The configs live in the package, so that ``chromagan_jax.configs.imagenet`` imports wherever
chromagan-jax is installed; this file keeps ``--config=configs/imagenet.py`` working.
"""

from chromagan_jax.configs.imagenet import get_config

__all__ = ["get_config"]
