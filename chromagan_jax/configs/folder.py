"""ChromaGAN on your own photos: a directory (searched recursively) or a glob of image files.

  python train.py --config=configs/folder.py --workdir=/tmp/chromagan_mine \
      --config.data.path=/photos/train --config.data.eval_path=/photos/val

Same recipe as the paper (224x224, batch 10, Adam 2e-5 / 0.5); epochs count passes over your
folder. Corrupt or unreadable files are skipped with a warning naming each one.
"""

from chromagan_jax.configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.source = "folder"
  config.data.path = arg or ""  # Also settable as configs/folder.py:/photos/train.
  config.num_epochs = 20.0
  config.checkpoint_every_steps = 2_000
  config.sample_every_steps = 1_000
  return config
