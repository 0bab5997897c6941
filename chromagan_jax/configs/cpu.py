"""Small CPU configuration: the README demo, training a few minutes on bundled real photos.

  python train.py --config=configs/cpu.py --workdir=/tmp/chromagan_cpu

Same architecture at a reduced input size and width so that a 2-core machine trains it in
minutes. Photos ship inside the scikit-image wheel; random crops and flips (a deviation from
the reference, which has no augmentation) stretch that tiny set.
"""

from chromagan_jax.configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model.image_size = 64
  config.model.width = 0.25
  config.data.source = "bundled"
  config.data.augment = True
  config.batch_size = 8
  config.num_train_steps = 300
  # A tiny set and a tiny model tolerate (and need) a larger step than ImageNet's 2e-5.
  config.optimizer.g_learning_rate = 2e-4
  config.optimizer.d_learning_rate = 2e-4
  config.log_every_steps = 25
  config.checkpoint_every_steps = 100
  config.sample_every_steps = 100
  config.num_samples = 4
  if arg:
    config.num_train_steps = int(arg)
  return config
