"""Tiny configuration for tests: the real code paths at 64x64 and 1/8 width, a few steps.

python train.py --config=configs/tiny.py --workdir=/tmp/chromagan_tiny
"""

from chromagan_jax.configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model.image_size = 64
  config.model.width = 0.125
  config.data.source = "bundled"
  config.batch_size = 8
  config.num_train_steps = 4
  config.optimizer.g_learning_rate = 1e-3
  config.optimizer.d_learning_rate = 1e-3
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 0
  config.num_samples = 4
  del arg
  return config
