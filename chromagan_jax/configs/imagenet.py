"""The paper's recipe: ChromaGAN on ImageNet (imagenet2012 train, manual download), 224x224.

  python train.py --config=configs/imagenet.py --workdir=/data/chromagan \
      --config.init.vgg16=/weights/vgg16_imagenet   # converted, see README

  # A few steps end to end, to check a machine before the long run:
  python train.py --config=configs/imagenet.py:smoke --workdir=/tmp/chromagan_smoke

  # The variant that fills accelerators: bfloat16 compute, global batch 256, scaled LR.
  python train.py --config=configs/imagenet.py:gpu --workdir=/data/chromagan_gpu \
      --config.init.vgg16=/weights/vgg16_imagenet
  python train.py --config=configs/imagenet.py:gpu,smoke --workdir=/tmp/gpu_smoke

Reference (no argument): batch 10, Adam 2e-5 / beta1 0.5 for both networks, loss weights
1 / 0.003 / -0.1, gradient-penalty weight 10, 5 epochs, float32. The batch is global; on N
devices each sees 10 / N, so the reference batch runs on 1, 2, 5 or 10 devices only.

``:gpu`` (arguments combine with commas, e.g. ``gpu,smoke``) keeps the networks, losses,
Adam betas and the 5 epochs, and changes what a big accelerator needs:
  * ``dtype='bfloat16'``: convolutions and matmuls in bf16, parameters, optimizer states,
    Lab conversion and losses in float32 (they are pinned: see chromagan_jax/ops/color.py).
  * ``batch_size=256``: global, a multiple of every power-of-two device count up to 256
    (32 per GPU on an 8-GPU host). Another size that does not split over the devices stops
    the run with one line naming the nearest valid sizes (training/validate.py).
  * learning rate: the square-root scaling rule below, from the reference's batch 10 and
    2e-5: 2e-5 * sqrt(256 / 10) = 1.01e-4 for both networks. It follows
    ``--config.batch_size`` (a FieldReference) unless the learning rates are set explicitly.
    Why square root: for Adam, an SDE analysis (Malladi, Lyu, Panigrahi & Arora, "On the SDEs
    and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS 2022, arXiv:2205.10287)
    gives lr * sqrt(k) for a k-times larger batch; the linear rule (Goyal et al. 2017,
    arXiv:1706.02677) is derived for SGD and here would give 5.1e-4, 25x the reference, a
    large step for a WGAN-GP critic with beta1 0.5. Their rule also moves the betas and
    epsilon (1 - k(1 - beta)); at beta1 = 0.5 and k = 25.6 that has no meaning, so the betas
    stay. This is a starting point derived from a rule, not a tuned value: nobody has trained
    this recipe yet (docs/accelerators.md).
  * ImageNet at batch 256 is ~5,000 steps per epoch (25,000 in all), so checkpoints, sample
    grids and logs come more often in steps than in the reference recipe.
"""

from chromagan_jax.configs import default

REFERENCE_BATCH_SIZE = 10  # The paper's batch...
REFERENCE_LEARNING_RATE = 2e-5  # ...and the Adam learning rate tuned for it.
GPU_BATCH_SIZE = 256
KNOWN_ARGS = ("smoke", "gpu")


def sqrt_scaled_learning_rate(batch_size):
  """Square-root scaling of the reference learning rate: ``2e-5 * sqrt(batch_size / 10)``.

  ``batch_size`` may be an int or an ml_collections FieldReference (then the result is a
  reference that follows later changes of the batch size).
  """
  ratio = batch_size.to_float() if hasattr(batch_size, "to_float") else float(batch_size)
  return REFERENCE_LEARNING_RATE * (ratio / REFERENCE_BATCH_SIZE) ** 0.5


def get_config(arg: str | None = None):
  args = [a for a in (arg or "").split(",") if a]
  if unknown := [a for a in args if a not in KNOWN_ARGS]:
    raise ValueError(f"unknown config argument {unknown[0]!r}; known: {', '.join(KNOWN_ARGS)}")
  config = default.get_config()
  config.data.source = "tfds"
  config.data.tfds_name = "imagenet2012"
  config.batch_size = REFERENCE_BATCH_SIZE
  config.num_epochs = 5.0
  if "gpu" in args:
    config.dtype = "bfloat16"
    config.batch_size = GPU_BATCH_SIZE
    batch_ref = config.get_ref("batch_size")
    config.optimizer.g_learning_rate = sqrt_scaled_learning_rate(batch_ref)
    config.optimizer.d_learning_rate = sqrt_scaled_learning_rate(batch_ref)
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1_000
    config.sample_every_steps = 1_000
  if "smoke" in args:
    config.num_train_steps = 20
    config.log_every_steps = 5
    config.checkpoint_every_steps = 10
    config.sample_every_steps = 10
  return config
