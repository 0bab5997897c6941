"""ChromaGAN on your own photos: a directory (searched recursively) or a glob of image files.

  python train.py --config=configs/folder.py --workdir=/tmp/chromagan_mine \
      --config.data.path=/photos/train --config.data.eval_path=/photos/val

Same recipe as the paper (224x224, batch 10, Adam 2e-5 / 0.5); epochs count passes over your
folder. Corrupt or unreadable files are skipped with a warning naming each one, and so are
black-and-white / near-grey photos (``data.min_colorfulness``; 0 keeps them).

``configs/folder.py:small`` is the small-data recipe: hundreds to a few thousand photos,
trained from scratch on a CPU in about an hour (docs/small-data-study.md has the
command, the evidence behind each field and what it reaches on real photos).
"""

from chromagan_jax.configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.source = "folder"
  config.data.path = ""
  # Black-and-white and near-grey photos (colourfulness < 8: grey 0, sepia ~15, real colour
  # photos' median ~41) teach the model to answer grey; the shared 335 training photos have
  # 4 below 8 (steel tools, white swans).
  config.data.min_colorfulness = 8.0
  config.num_epochs = 20.0
  config.checkpoint_every_steps = 2_000
  config.sample_every_steps = 1_000
  if arg == "small":
    _small(config)
  elif arg:
    config.data.path = arg  # configs/folder.py:/photos/train.
  return config


def _small(config):
  """Small photo sets on a 2-core CPU: ~1 hour. Deviations from the reference, each measured
  on 335 real photos in docs/small-data-study.md."""
  # 128x128 (>= 128 keeps textures and faces recognisable) at a quarter width: 4,500 steps of
  # batch 8 in 30-50 minutes on 2 CPU cores (docs/small-data-study.md).
  config.model.image_size = 128
  config.model.width = 0.25
  config.batch_size = 8
  # Multi-scale crops (0.35-1 of the short side) and flips of the full-resolution photos, kept
  # decoded in memory: each photo gives many different views.
  config.data.augment = True
  config.data.cache = True
  # A small model trained from scratch tolerates (and needs) a larger step than ImageNet's 2e-5.
  config.optimizer.g_learning_rate = 2e-4
  config.optimizer.d_learning_rate = 2e-4
  # Decayed along a half cosine to 5% by the last step: at a constant rate the critic, from
  # ~step 3,000, traded PSNR for colour and the last checkpoint fell below grey (20.70 dB vs
  # 20.82); decayed, the last checkpoint is the one to use (21.56 dB; README).
  config.optimizer.schedule = "cosine"
  # Average the generator over the last ~200 steps: steadier colour, less speckle.
  config.optimizer.ema_decay = 0.995
  config.num_train_steps = 4_500
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.max_checkpoints_to_keep = 10
  config.sample_every_steps = 500
  config.num_samples = 8
