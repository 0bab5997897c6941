"""Full GAN train-step images/s: ``train_lib``'s jitted step vs the same step in TF/Keras.

  python bench/train_step.py                 # 224x224, width 1, batch 2, teacher on and off
  python bench/train_step.py --smoke         # seconds: 32x32, width 1/16, batch 2

One step = a generator update (MSE + KL to the frozen VGG16 teacher + adversarial term) then
a critic update (WGAN-GP with ab-only interpolation), both with Adam. The TensorFlow step is
the same computation written with ``tf.GradientTape`` on the Keras reference builds, in a
``tf.function`` without XLA (oneDNN kernels); it starts from the same weights and is fed the
same Lab tensors (the JAX step converts uint8 RGB to Lab inside the step: a few MFLOP).
Timings are interleaved (JAX, TF, JAX, TF, ...) and the medians reported, with the ratio of
lower quartiles beside theirs (``common.lower_quartile_ratio``).
"""

import argparse

import common  # noqa: I001 (sets sys.path and TF env before the imports below)
import jax
import jax.numpy as jnp
import keras
import keras_reference
import numpy as np
import tensorflow as tf

from chromagan_jax.configs import default
from chromagan_jax.ops import color
from chromagan_jax.training import train_state, train_step


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--fc_width", type=int, default=4096, help="class head width before --width")
  p.add_argument("--num_classes", type=int, default=1000)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3, help="timed steps per framework and mode")
  p.add_argument("--teacher", default="on,off", help="'on', 'off' or 'on,off'")
  p.add_argument(
    "--conv_impl",
    default="xla,winograd",
    help="comma-separated conv_policy.IMPLS ('auto': the fixed rule on CPU; 'measure': each "
    "layer's algorithm timed per use, conv_choice.py) for the three networks, timed side by "
    "side (each against the same TF step)",
  )
  p.add_argument("--json", default="bench/results/train_step.json")
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.width, args.batch, args.repeats = 32, 0.0625, 2, 1
    args.fc_width, args.num_classes = 256, 16
  return args


def make_config(args, conv_impl="xla"):
  config = default.get_config()
  config.model.conv_impl = conv_impl
  config.model.image_size = args.image_size
  config.model.width = args.width
  config.model.fc_width = args.fc_width
  config.model.num_classes = args.num_classes
  config.batch_size = args.batch
  return config


class KerasStep:
  """The reference iteration with tf.GradientTape on Keras builds of the three networks."""

  def __init__(self, config, g_vars, d_params, t_params):
    s, w, m = config.model.image_size, config.model.width, config.model
    self.gen = keras_reference.build_keras_generator(s, w, m.num_classes, m.fc_width)
    self.critic = keras_reference.build_keras_critic(s, w)
    keras_reference.flax_to_keras(g_vars, self.gen)
    keras_reference.flax_to_keras({"params": d_params}, self.critic)
    self.teacher = None
    if t_params is not None:
      self.teacher = keras_reference.build_keras_vgg16_classifier(s, w, m.num_classes, m.fc_width)
      keras_reference.flax_to_keras({"params": _flat_teacher(t_params)}, self.teacher)
    adam = lambda lr: keras.optimizers.Adam(
      lr, beta_1=config.optimizer.b1, beta_2=config.optimizer.b2, epsilon=config.optimizer.eps
    )
    self.g_opt, self.d_opt = (
      adam(config.optimizer.g_learning_rate),
      adam(config.optimizer.d_learning_rate),
    )
    self.w = train_step.loss_weights_from_config(config)
    self.step = tf.function(self._step, jit_compile=False, autograph=False)

  def _step(self, lightness, ab_real, l3):
    w = self.w
    p_teacher = None if self.teacher is None else self.teacher(l3, training=False)
    with tf.GradientTape() as tape:
      ab_fake, p_fake = self.gen(l3, training=True)
      d_fake = self.critic([ab_fake, lightness], training=False)
      g_loss = w["mse"] * tf.reduce_mean(tf.square(ab_fake - ab_real)) + w["adv"] * tf.reduce_mean(
        d_fake
      )
      if p_teacher is not None:
        g_loss += w["kl"] * tf.reduce_mean(keras.losses.kl_divergence(p_teacher, p_fake))
    g_vars = self.gen.trainable_variables
    self.g_opt.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars, strict=True))

    ab_fake = tf.stop_gradient(self.gen(l3, training=True)[0])
    eps = tf.random.uniform((tf.shape(ab_real)[0], 1, 1, 1))
    with tf.GradientTape() as tape:
      ab_hat = eps * ab_real + (1.0 - eps) * ab_fake
      with tf.GradientTape() as gp_tape:
        gp_tape.watch(ab_hat)
        hat_scores = self.critic([ab_hat, lightness], training=True)
      grads = gp_tape.gradient(hat_scores, ab_hat)
      norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
      gp = tf.reduce_mean(tf.square(1.0 - norms))
      d_loss = (
        w["real"] * tf.reduce_mean(self.critic([ab_real, lightness], training=True))
        + w["fake"] * tf.reduce_mean(self.critic([ab_fake, lightness], training=True))
        + w["gp"] * gp
      )
    d_vars = self.critic.trainable_variables
    self.d_opt.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars, strict=True))
    return g_loss, d_loss


def _flat_teacher(t_params):
  """Flax teacher params (trunk nested under ``vgg16``) -> Keras' flat VGG16 layer names."""
  flat = {k: v for k, v in t_params.items() if k != "vgg16"}
  flat.update(t_params["vgg16"])
  return flat


def conv_choices(all_nets) -> dict:
  """The per-layer choices of every "measure" chooser the networks hold (``{layer_key: {...}}``;
  empty without one)."""
  out = {}
  for nets in all_nets:
    for module in (nets.generator, nets.critic, nets.teacher):
      if module.conv.chooser is not None:
        out.update(module.conv.chooser.choices())
  return out


def run(args) -> dict:
  impls = args.conv_impl.split(",")
  config = make_config(args)
  mesh = train_state.make_mesh(jax.devices()[:1])
  nets = {impl: train_state.make_networks(make_config(args, impl)) for impl in ["xla", *impls]}
  s = config.model.image_size
  rgb = np.random.default_rng(0).integers(0, 256, (args.batch, s, s, 3), dtype=np.uint8)
  batch = train_step.global_batch({"rgb": rgb}, mesh)
  lightness, ab_real = color.rgb_to_net(rgb)
  tf_inputs = [
    tf.constant(np.asarray(t)) for t in (lightness, ab_real, color.gray_to_l3(lightness))
  ]
  peak = common.matmul_peak_gflops(256 if args.smoke else 2048)
  rows = []
  for mode in args.teacher.split(","):
    state = train_state.create_train_state(nets["xla"], config, mesh)
    t_params = None
    if mode == "on":
      l3_zeros = np.zeros((1, s, s, 3), np.float32)
      t_params = jax.jit(nets["xla"].teacher.init)(jax.random.key(1), l3_zeros)["params"]
    g_vars, d_params = jax.device_get((state.generator_variables, state.d_params))
    keras_step = KerasStep(config, g_vars, d_params, jax.device_get(t_params))
    fns, flops, compile_s = {}, {}, {}
    for impl, impl_nets in nets.items():
      step = train_step.make_train_step(impl_nets, config, mesh, with_teacher=t_params is not None)
      step, flops[impl], compile_s[impl] = common.compile_with_cost(step, state, batch, t_params)
      if impl not in impls:  # Compiled for its FLOP count only.
        continue
      # Each contender steps its own copy of the state (the step donates its input).
      box = {"state": jax.tree.map(jnp.copy, state)}

      def run_jax(box=box, step=step, t_params=t_params):
        box["state"], metrics = step(box["state"], batch, t_params)
        jax.block_until_ready(metrics)

      fns[impl] = run_jax
    fns["tf"] = lambda ks=keras_step: [t.numpy() for t in ks.step(*tf_inputs)]
    times = common.interleaved(
      {k: fns[k] for k in [*impls, "tf"]}, args.repeats, warmup_s=common.warmup_s(args.smoke)
    )
    tt = common.median(times["tf"])
    model_flops = flops["xla"]  # The step's nominal FLOPs (direct convolutions).
    for impl in impls:
      tj = common.median(times[impl])
      rows.append(
        {
          "teacher": mode,
          "conv_impl": impl,
          "batch": args.batch,
          **common.speed_fields(args.batch, tj, tt, "tf", model_flops, flops[impl], peak, "step"),
          "jax_compile_s": compile_s[impl],
          "ratio_q1_jax_over_tf": common.lower_quartile_ratio(times[impl], times["tf"]),
          "times_s": {impl: times[impl], "tf": times["tf"]},
        }
      )
  return {
    "benchmark": "train_step",
    "image_size": s,
    "width": args.width,
    "repeats": args.repeats,
    "matmul_peak_gflop_s": peak,
    "rows": rows,
    "conv_choices": conv_choices(nets.values()),
    "peak_rss_mib_both_frameworks": common.peak_rss_mib(),
    "machine": common.machine_info(),
  }


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  common.print_table(
    result["rows"],
    ["teacher", "conv_impl", "batch", "jax_img_s", "tf_img_s", "ratio_jax_over_tf",
     "ratio_q1_jax_over_tf", "model_gflop_per_step", "executed_gflop_per_step",
     "jax_model_gflop_s", "tf_model_gflop_s", "jax_mfu", "jax_compile_s"],
  )  # fmt: skip
  print(f"matmul peak: {result['matmul_peak_gflop_s']}")
  common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
