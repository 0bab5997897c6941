"""The paper's recipe: ChromaGAN on ImageNet (imagenet2012 train, manual download), 224x224.

  python train.py --config=configs/imagenet.py --workdir=/data/chromagan \
      --config.vgg_weights=/weights/vgg16_imagenet   # converted, see README

  # A few steps end to end, to check a machine before the long run:
  python train.py --config=configs/imagenet.py:smoke --workdir=/tmp/chromagan_smoke

Reference: batch 10, Adam 2e-5 / beta1 0.5 for both networks, loss weights 1 / 0.003 / -0.1,
gradient-penalty weight 10, 5 epochs. The batch is global; on N devices each sees 10 / N.
When you scale the global batch up for throughput (e.g. 10 * N devices), the reference's
learning rate is no longer tuned for it: keep 2e-5 as a start and say so in your results.
"""

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.source = "tfds"
  config.data.tfds_name = "imagenet2012"
  config.batch_size = 10
  config.num_epochs = 5.0
  if arg == "smoke":
    config.num_train_steps = 20
    config.log_every_steps = 5
    config.checkpoint_every_steps = 10
    config.sample_every_steps = 10
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; known: 'smoke'")
  return config
