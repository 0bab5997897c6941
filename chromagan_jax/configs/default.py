"""Default ChromaGAN configuration: the reference recipe on ImageNet at 224x224.

  python train.py --config=configs/default.py --workdir=/tmp/chromagan

Other configs import this file and override a few fields. Every field is documented here.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameter init, data shuffling, the GP's eps and everything else.

  # --- model ------------------------------------------------------------------------------
  config.model = ml_collections.ConfigDict()
  config.model.image_size = 224  # Network input size (the reference resizes to 224x224).
  config.model.width = 1.0  # Multiplies every channel count; < 1 only for tests/CPU demos.
  config.model.num_classes = 1000  # Classes of the class-distribution head and the teacher.
  config.model.fc_width = 4096  # Width of the class head / VGG16 fc1, fc2 (before `width`).
  # Input normalisation of the VGG trunk and teacher: 'none' (reference: grey [0, 1] tiled
  # to 3 channels), 'caffe' (Keras ImageNet weights) or 'torch' (torchvision weights).
  config.model.vgg_preprocessing = "none"
  config.model.remat_trunk = False  # Recompute trunk activations in backward (saves memory).
  # The VGG16 trunk's own width multiplier (None: `width`): 1 keeps ImageNet VGG16 weights'
  # shapes while the branches, decoder and critic run at a smaller `width` (a deviation; the
  # reference has one width). The KL teacher is a VGG16 of this width too.
  config.model.trunk_width = ml_collections.config_dict.placeholder(float)
  # Convolution algorithm of the three networks (chromagan_jax/ops/conv_policy.py states each):
  # 'auto' = the fixed rule ('winograd') for float32 on CPU, the fastest measured there, and
  # XLA's convolutions on GPU/TPU and in bfloat16 (also what a checkpoint without the field,
  # e.g. a converted one, gets); 'measure' = for float32 on CPU each layer's fastest of XLA /
  # Winograd / im2col, timed once per machine and use (kept beside the compilation cache);
  # 'xla'; 'winograd' (Winograd for >= 64-channel stride-1 3x3 convs, im2col for the strided,
  # 1x1 and 4x4 ones in training), 'winograd2' / 'winograd4' (its tile size fixed).
  config.model.conv_impl = "auto"
  config.dtype = "float32"  # Compute dtype: 'float32' or 'bfloat16' (params and losses f32).
  # Compile the train step with --xla_gpu_deterministic_ops on GPU so that GPU steps are
  # bitwise reproducible: what makes resume exact there (CPU and TPU steps are deterministic
  # anyway). It costs GPU speed (docs/accelerators.md); False trades exact
  # resume for it.
  config.deterministic_ops = True

  # --- data ---------------------------------------------------------------------------------
  config.data = ml_collections.ConfigDict()
  # 'tfds' (a TFDS dataset, `imagenet2012` by default), 'folder' (a directory or glob of
  # image files) or 'bundled' (real photos shipped inside the scikit-image wheel).
  config.data.source = "tfds"
  config.data.tfds_name = "imagenet2012"  # TFDS dataset name when source == 'tfds'.
  config.data.train_split = "train"  # TFDS split to train on.
  config.data.eval_split = "validation"  # TFDS split for sample grids / evaluation.
  # Fields that default to None are typed placeholders, so that `--config.data.data_dir=DIR`
  # works (ml_collections refuses to override a plain None; tests/configs_test.py).
  # TFDS data_dir (None: TFDS default, ~/tensorflow_datasets).
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  # Where the ILSVRC2012 tars are (None: <data_dir>/downloads/manual).
  config.data.manual_dir = ml_collections.config_dict.placeholder(str)
  config.data.path = ""  # Directory or glob of images when source == 'folder'.
  config.data.eval_path = ""  # Optional held-out directory/glob for sample grids ('folder').
  # Keep decoded images in host memory ('folder'; 'bundled' always does; ignored for 'tfds').
  config.data.cache = False
  # Random crops (several scales) and flips of training images. A deviation from the
  # reference (no augmentation), meant for the tiny 'bundled' demo set: off for the recipe.
  config.data.augment = False
  # Skip training photos whose Hasler-Suesstrunk colourfulness (0 for grey, ~41 the median of
  # real colour photos) is below this: black-and-white or near-grey photos in a folder teach
  # the model to answer grey. Each is logged by name and counted (data/skipped_grey). The
  # reference trains on all of ImageNet's photos, grey ones included: 0 (off) here.
  config.data.min_colorfulness = 0.0
  config.data.prefetch = 2  # Batches prefetched to the host.
  # Worker processes that decode, augment and resize (Pillow holds the GIL, so threads would
  # not decode in parallel); None: one per CPU core this process may use; 0: in this process.
  config.data.decode_processes = ml_collections.config_dict.placeholder(int)

  # --- run -----------------------------------------------------------------------------------
  config.batch_size = 10  # Global batch (all devices, all processes). Reference: 10.
  config.num_epochs = 5.0  # Passes over the training set (reference: 5 over ImageNet).
  config.num_train_steps = -1  # If > 0, overrides num_epochs.

  # --- optimizer ------------------------------------------------------------------------------
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.g_learning_rate = 2e-5  # Adam for the generator (reference: 2e-5).
  config.optimizer.d_learning_rate = 2e-5  # Adam for the critic (reference: 2e-5).
  # Learning-rate schedule: 'constant' (reference) or 'cosine' (a deviation: decays both rates
  # to final_fraction of their value by the last step; training/optim.learning_rate).
  config.optimizer.schedule = "constant"
  config.optimizer.final_fraction = 0.05  # The cosine schedule's last rate / its first.
  config.optimizer.b1 = 0.5  # Adam's beta_1. Reference: 0.5.
  config.optimizer.b2 = 0.999  # Adam's beta_2: the Keras default.
  config.optimizer.eps = 1e-7  # Adam's epsilon: the Keras default.
  # Train the generator's VGG16 trunk (reference) or keep it as initialised (True, a
  # deviation: the ImageNet features are kept and the step skips the trunk's backward pass;
  # docs/small-data-study.md). Needs init.vgg16 or init.generator.
  config.optimizer.freeze_trunk = False
  # The trunk's learning rate as a fraction of the generator's (1: the reference, one rate;
  # below 1 a deviation, for ImageNet weights fine-tuned more gently than the branches that
  # start from scratch). Measured in docs/small-data-study.md.
  config.optimizer.trunk_lr_scale = 1.0
  # Exponential moving average of the generator's parameters (a deviation from the reference,
  # which has none; magvit keeps one): 0 = off, else its decay per step (warmed up as
  # min(decay, (1 + step) / (10 + step))). When on, checkpoints also hold the averaged
  # generator (item 'generator_ema'), which sample grids, evaluate, colorize, the app and
  # export use by default.
  config.optimizer.ema_decay = 0.0

  # --- losses -------------------------------------------------------------------------------
  config.loss = ml_collections.ConfigDict()
  config.loss.mse = 1.0  # Generator: colour term's weight.
  # The colour term: 'l2' (the reference's MSE) or 'l1' (mean absolute ab error, a deviation
  # that does not pull uncertain colour to the mean; loss.mse weights it). Measured on 335
  # photos in docs/small-data-study.md.
  config.loss.colour = "l2"
  config.loss.kl = 0.003  # Generator: KL(teacher || predicted class distribution) weight.
  config.loss.adv = -0.1  # Generator: weight of mean D(fake) (negative: fool the critic).
  config.loss.real = -1.0  # Critic: weight of mean D(real).
  config.loss.fake = 1.0  # Critic: weight of mean D(fake).
  config.loss.gp = 10.0  # Critic: gradient-penalty weight.

  # --- GAN schedule -------------------------------------------------------------------------
  config.gan = ml_collections.ConfigDict()
  # Critic Adam steps per batch (1: the reference). More (a deviation, as in WGAN-GP's
  # n_critic, here on the same batch) lets the critic keep up with the generator; measured
  # on 335 photos in docs/small-data-study.md.
  config.gan.critic_steps = 1
  # Ramp the generator's adversarial weight linearly from loss.adv (until step
  # adv_ramp_steps[0]) to adv_final (from step adv_ramp_steps[1]): a deviation for small sets,
  # where a strong weight from the first step paints speckle before the colour term has
  # settled (docs/small-data-study.md). None: loss.adv throughout, as the reference.
  config.gan.adv_final = ml_collections.config_dict.placeholder(float)
  config.gan.adv_ramp_steps = (0, 0)
  # Whether the generator's batch-norm moving averages are also updated when the generator
  # runs (in training mode) inside the critic update, i.e. twice per batch. The reference
  # did: Keras 2's Network.updates (keras/engine/network.py) collects the nested
  # generator's BN updates into the critic model's train function whatever the generator's
  # `trainable` flag. False: once per batch, in the generator update.
  config.gan.bn_update_in_critic_step = True

  # --- starting weights ---------------------------------------------------------------------
  # Only for a fresh run: a checkpoint in --workdir is resumed instead (each is then ignored).
  config.init = ml_collections.ConfigDict()
  # ImageNet VGG16 weights (Keras .h5 with top, torchvision .pth, or a converted Orbax dir)
  # used to initialise the trunk and as the frozen KL teacher. Empty: random trunk and the
  # KL term disabled ("ChromaGAN w/o class"), with a logged warning.
  config.init.vgg16 = ""
  # Generator to start from (trunk, all layers and batch-norm statistics; overrides the trunk
  # from init.vgg16): the authors' my_model_colorization.h5, a converted directory, a msgpack
  # file or a training workdir.
  config.init.generator = ""
  # Critic to start from, to resume the GAN from the authors' training state: their critic
  # Keras .h5 or a `python -m chromagan_jax.convert critic` directory.
  config.init.critic = ""

  # --- checkpoints and logging ------------------------------------------------------------
  config.checkpoint_every_steps = 5_000
  config.max_checkpoints_to_keep = 3
  config.log_every_steps = 100  # Console + TensorBoard scalars.
  config.sample_every_steps = 5_000  # TensorBoard image grids (grey | colorized | truth).
  config.num_samples = 8  # Images in each sample grid.
  return config
