"""cpu_conv (Winograd, im2col) against XLA's direct convolution: values, gradients, 2nd derivs."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chromagan_jax.configs import tiny
from chromagan_jax.inference import engine
from chromagan_jax.model import networks, predict
from chromagan_jax.ops import conv_rule, cpu_conv, inference_weights
from chromagan_jax.ops.conv_policy import ConvPolicy
from chromagan_jax.runtime import machine
from chromagan_jax.training import train_state, train_step, trainer

ISA = machine.cpu_isa()


def _direct(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _data(shape, cin, cout, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((*shape, cin), np.float32)
  w = rng.standard_normal((3, 3, cin, cout), np.float32) / np.sqrt(9 * cin)
  return jnp.asarray(x), jnp.asarray(w)


@pytest.mark.parametrize("m", cpu_conv.TILE_SIZES)
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (13, 5), (1, 1)])
def test_conv3x3_matches_direct_convolution(m, hw):
  x, w = _data((2, *hw), 5, 6)
  got, want = cpu_conv.conv3x3(x, w, m), _direct(x, w)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def test_bad_tile_size_is_rejected():
  x, w = _data((1, 4, 4), 2, 2)
  with pytest.raises(ValueError, match="tile size"):
    cpu_conv.conv3x3(x, w, 3)
  with pytest.raises(ValueError, match="tile size"):
    conv_rule.make_conv(tile=6)


def test_choose_tile_prefers_big_tiles_only_when_there_are_many():
  assert conv_rule.choose_tile(2, 112, 112) == 4  # 2 * 28 * 28 tiles of 4x4.
  assert conv_rule.choose_tile(1, 28, 28) == 2  # 49 tiles: the filter transform dominates.
  assert conv_rule.choose_tile(16, 28, 28) == 4
  # 392 tiles: enough where matmuls are cheap (AVX-512), not on AVX2 (measured per ISA).
  assert conv_rule.choose_tile(8, 28, 28, isa="avx512") == 4
  assert conv_rule.choose_tile(8, 28, 28, isa="avx2") == 2
  # Filters transformed once (inference): only padding tiles count.
  assert conv_rule.choose_tile(1, 28, 28, isa="avx2", inference=True) == 4
  assert conv_rule.choose_tile(1, 14, 14, isa="avx2", inference=True) == 4  # 16 tiles.
  assert conv_rule.choose_tile(1, 7, 7, isa="avx512", inference=True) == 2  # 4 tiles of 8x8.
  assert conv_rule.choose_tile(1, 14, 14) == 2  # Per-call transforms again.


def _rule3x3(batch, size, cin, cout, isa, inference=False):
  pads = ((1, 1), (1, 1))
  layer = ((batch, size, size, cin), (3, 3, cin, cout), (1, 1), pads)
  return conv_rule.rule(*layer, isa=isa, inference=inference)


def test_rule_per_isa_and_use():
  """The tile follows the per-ISA measurements (bench/RESULTS.md): F(4x4) from fewer tiles on
  AVX-512 than on AVX2 when filters are transformed per call (training), and from 16 tiles on
  any ISA when they come transformed (inference); thin layers stay on XLA either way."""
  for isa in ("avx512", "avx2"):
    assert _rule3x3(1, 56, 256, 256, isa, True) == "winograd4"  # 196 tiles.
    assert _rule3x3(1, 14, 512, 512, isa, True) == "winograd4"  # 16 tiles.
    assert _rule3x3(1, 7, 512, 512, isa, True) == "winograd2"
    assert _rule3x3(1, 112, 64, 32, isa, True) == "xla"
  assert _rule3x3(1, 56, 256, 256, "avx512") == "winograd2"  # 196 tiles < 256.
  assert _rule3x3(8, 28, 512, 512, "avx512") == "winograd4"  # 392 tiles.
  assert _rule3x3(8, 28, 512, 512, "avx2") == "winograd2"
  assert _rule3x3(1, 224, 64, 64, "avx512") == "winograd4"
  assert _rule3x3(8, 112, 64, 32, "avx512") == "xla"
  assert machine.cpu_isa() in conv_rule.MIN_TILES
  assert conv_rule.isa_of({"avx2", "avx512f"}) == "avx512" and conv_rule.isa_of({"sse"}) == "other"


def test_rule_keeps_im2col_for_training_only():
  """Strided, 1x1 and thin 4x4 convs: im2col where gradients are taken (its backward passes
  are plain matmuls), XLA's forward at inference (as fast or faster there, bench/RESULTS.md)."""
  strided = ((1, 28, 28, 512), (3, 3, 512, 512), (2, 2), ((0, 1), (0, 1)))
  pointwise = ((1, 28, 28, 512), (1, 1, 512, 256), (1, 1), ((0, 0), (0, 0)))
  thin_4x4 = ((8, 28, 28, 32), (4, 4, 32, 48), (1, 1), ((1, 2), (1, 2)))
  for layer in (strided, pointwise, thin_4x4):
    assert conv_rule.rule(*layer, isa="avx2") == "im2col"
    assert conv_rule.rule(*layer, isa="avx2", inference=False) == "im2col"
    assert conv_rule.rule(*layer, inference=True) == "xla"
  # With AVX-512 XLA's direct convolution beats im2col's overlapping patches (stride 1, 4x4).
  assert conv_rule.rule(*thin_4x4, isa="avx512") == "xla"
  for layer in (strided, pointwise):
    assert conv_rule.rule(*layer, isa="avx512") == "im2col"


def test_rule_takes_winograd_for_the_critics_stride_one_4x4_conv():
  """The critic's conv4 (28x28x256 -> 512 at 224x224, 'SAME': pads 1 and 2) with AVX-512:
  Winograd F(m x m, 4x4) from 64 tiles, the tile as for 3x3 layers, as measured there; on
  AVX2 (unmeasured with Winograd) im2col as before; its 1-channel conv5 stays on XLA."""
  conv4 = ((8, 28, 28, 256), (4, 4, 256, 512), (1, 1), ((1, 2), (1, 2)))
  assert conv_rule.rule(*conv4, isa="avx512") == "winograd4"  # 392 tiles.
  assert conv_rule.rule((2, 28, 28, 256), *conv4[1:], isa="avx512") == "winograd2"  # 98 tiles.
  assert conv_rule.rule((1, 28, 28, 256), *conv4[1:], isa="avx512") == "xla"  # 49 tiles.
  assert conv_rule.rule(*conv4, isa="avx2") == "im2col"
  conv5 = ((8, 28, 28, 512), (4, 4, 512, 1), (1, 1), ((1, 2), (1, 2)))
  assert conv_rule.rule(*conv5, isa="avx512") == conv_rule.rule(*conv5, isa="avx2") == "xla"


@pytest.mark.parametrize("m", cpu_conv.TILE_SIZES)
@pytest.mark.parametrize("r", cpu_conv.KERNEL_SIZES)
def test_winograd_matrices_compute_the_correlation_exactly(m, r):
  """A^T [(G g) * (B^T d)] equals the 1-D correlation sum_k g[k] d[i + k] (float64, to
  rounding), for random filters and tiles: the identity F(m, r) rests on, for every table."""
  bt, g, at = (np.asarray(t, np.float64) for t in cpu_conv._MATRICES[m, r])
  assert bt.shape == (m + r - 1, m + r - 1) and g.shape == (m + r - 1, r)
  rng = np.random.default_rng(m * 10 + r)
  for _ in range(10):
    d, w = rng.standard_normal(m + r - 1), rng.standard_normal(r)
    want = [d[i : i + r] @ w for i in range(m)]
    np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), want, rtol=0, atol=1e-12)
  # The data transforms are exact in float32: small integers only.
  assert np.array_equal(bt, np.round(bt)) and np.abs(bt).max() <= 12


LAYERS = {  # (input HW, Cin, kernel, Cout, stride, padding): every candidates() case.
  "3x3_same": ((7, 9), 5, 3, 6, 1, "SAME"),
  "3x3_same_1x1_map": ((1, 1), 4, 3, 3, 1, "SAME"),
  "4x4_stride2": ((9, 8), 3, 4, 4, 2, "SAME"),
  "3x3_stride2": ((8, 8), 4, 3, 5, 2, "SAME"),
  "1x1": ((5, 6), 6, 1, 4, 1, "SAME"),
  "4x4_stride1": ((6, 7), 3, 4, 2, 1, "SAME"),
  "4x4_explicit_pads": ((9, 8), 3, 4, 4, 2, ((2, 1), (0, 3))),
  "4x4_stride1_explicit_pads": ((9, 10), 3, 4, 5, 1, ((0, 3), (2, 1))),
  "4x4_stride1_valid": ((11, 6), 4, 4, 3, 1, "VALID"),
  "3x3_valid": ((9, 8), 3, 3, 4, 1, "VALID"),
}


@pytest.mark.parametrize("name", cpu_conv.ALGORITHMS)
@pytest.mark.parametrize("layer", LAYERS)
def test_every_choosable_algorithm_matches_direct_convolution(name, layer):
  """Values, gradients and the gradient-penalty second derivatives of cpu_conv.run(name)
  against lax.conv, for every algorithm conv_choice can pick for the layer."""
  hw, cin, k, cout, stride, padding = LAYERS[layer]
  strides = (stride, stride)
  x, w = _data((2, *hw), cin, cout, seed=5)
  w = jnp.tile(w, (2, 2, 1, 1))[:k, :k]
  pads = cpu_conv.explicit_pads(x.shape, w.shape, strides, padding)
  if name not in cpu_conv.candidates(x.shape, w.shape, strides, pads):
    pytest.skip(f"{name} is not a candidate for {layer}")
  direct = lambda x, w: jax.lax.conv_general_dilated(
    x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  fast = lambda x, w: cpu_conv.run(name, x, w, strides, pads)
  want = direct(x, w)
  np.testing.assert_allclose(fast(x, w), want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))

  def penalty(conv):  # Gradient of an input-gradient norm, as in WGAN-GP.
    inner = lambda x, w: jnp.sum(jnp.tanh(conv(x, w)))
    return lambda x, w: inner(x, w) + jnp.sum(jax.grad(inner)(x, w) ** 2)

  for fn in (penalty, lambda conv: lambda x, w: jnp.sum(jnp.tanh(conv(x, w)))):
    got = jax.jit(jax.grad(fn(fast), argnums=(0, 1)))(x, w)
    ref = jax.jit(jax.grad(fn(direct), argnums=(0, 1)))(x, w)
    for g, r in zip(got, ref, strict=True):
      np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * float(jnp.abs(r).max()))


@pytest.mark.parametrize(
  "case",
  [
    dict(cout=2),  # Thin output (dec_conv6, the critic's conv5): XLA.
    dict(cout=32),  # Thin 3x3 stride-1 (dec_conv5): XLA, not im2col.
    dict(dtype=jnp.bfloat16),  # Only float32 uses cpu_conv.
    dict(rhs_dilation=(2, 2)),
    dict(feature_group_count=2),
  ],
)
def test_make_conv_falls_back_to_xla_exactly(case):
  cout, dtype = case.pop("cout", 64), case.pop("dtype", jnp.float32)
  x, w = _data((1, 6, 6), 64, cout)
  if "feature_group_count" in case:
    w = w[:, :, :32]
  x, w = x.astype(dtype), w.astype(dtype)
  dn = ("NHWC", "HWIO", "NHWC")
  got = conv_rule.make_conv()(x, w, (1, 1), "SAME", dimension_numbers=dn, **case)
  want = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, **case)
  np.testing.assert_array_equal(got, want)


def test_flax_conv_with_winograd_equals_default_conv():
  x, _ = _data((2, 12, 12), 64, 1)
  ref = nn.Conv(64, (3, 3), padding="SAME")
  fast = nn.Conv(64, (3, 3), padding="SAME", conv_general_dilated=conv_rule.make_conv(tile=4))
  params = ref.init(jax.random.key(0), x)
  want = ref.apply(params, x)
  np.testing.assert_allclose(fast.apply(params, x), want, atol=1e-4 * float(jnp.abs(want).max()))


def test_networks_with_cpu_conv_match_xla():
  """The paper's networks at width 1/4 (64..128 channels: the Winograd layers are used).

  Each network is one jitted program, as colorize and the train step compile it: with XLA's
  default flags (tests/xla_defaults_test.py) its transforms and matmuls are then fused the
  way users' runs fuse them, which op-by-op calls would not show.
  """
  size, width = 32, 0.25
  kw = dict(image_size=size, width=width, fc_width=64, num_classes=10)
  ref, fast = (
    networks.Generator(**kw),
    networks.Generator(**kw, conv=ConvPolicy("winograd", isa=ISA)),
  )
  x = jnp.asarray(np.random.default_rng(3).random((2, size, size, 3), np.float32))
  variables = ref.init(jax.random.key(0), x)
  got, want = jax.jit(fast.apply)(variables, x), jax.jit(ref.apply)(variables, x)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)

  tkw = dict(width=width, fc_width=64, num_classes=10)
  t_ref, t_fast = (
    networks.VGG16Classifier(**tkw),
    networks.VGG16Classifier(**tkw, conv=ConvPolicy("winograd", isa=ISA)),
  )
  t_vars = t_ref.init(jax.random.key(1), x)
  want = jax.jit(t_ref.apply)(t_vars, x)
  np.testing.assert_allclose(jax.jit(t_fast.apply)(t_vars, x), want, rtol=1e-4, atol=1e-4)

  # The critic (im2col for its 4x4 convs) and its gradient-penalty gradient.
  c_ref = networks.Critic(width=width)
  c_fast = networks.Critic(width=width, conv=ConvPolicy("winograd", isa=ISA, objective="gp"))
  ab, lightness = x[..., :2], x[..., :1]
  c_vars = c_ref.init(jax.random.key(2), ab, lightness)

  def gp_grad(critic):
    def gp(params):
      g = jax.grad(lambda ab: jnp.sum(critic.apply(params, ab, lightness)))(ab)
      return jnp.sum((1.0 - jnp.sqrt(jnp.sum(g**2, axis=(1, 2, 3)))) ** 2)

    return jax.jit(jax.grad(gp))(c_vars)

  want = jax.jit(c_ref.apply)(c_vars, ab, lightness)
  got = jax.jit(c_fast.apply)(c_vars, ab, lightness)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  for g, r in zip(jax.tree.leaves(gp_grad(c_fast)), jax.tree.leaves(gp_grad(c_ref)), strict=True):
    np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * float(jnp.abs(r).max()))


def test_auto_is_the_rule_for_float32_on_cpu_and_xla_elsewhere():
  cpu = ConvPolicy("auto", backend="cpu", isa=ISA)
  assert cpu.resolve(jnp.float32).impl == "winograd"
  assert cpu.resolve(jnp.float32, "gp").objective == "gp"
  assert cpu.resolve(jnp.bfloat16).impl == "xla"
  assert ConvPolicy("auto", backend="gpu").resolve(jnp.float32).impl == "xla"
  assert ConvPolicy("winograd4", backend="tpu").resolve(jnp.float32).impl == "winograd4"
  with pytest.raises(ValueError, match="unknown conv_impl 'fast'"):
    ConvPolicy("fast")
  with pytest.raises(ValueError, match="unknown objective"):
    cpu.resolve(objective="eval")
  with pytest.raises(ValueError, match="resolve"):
    cpu.conv_general_dilated()
  with pytest.raises(ValueError, match="Chooser"):
    ConvPolicy("measure")
  hash(cpu)  # A static field of the flax modules.


def test_models_from_config_chooses_per_use():
  config = tiny.get_config()
  conv = ConvPolicy("auto", backend="cpu", isa=ISA)
  gen, critic, teacher = networks.models_from_config(config.model, conv)
  assert [(m.conv.impl, m.conv.objective) for m in (gen, critic, teacher)] == [
    ("winograd", "train"),
    ("winograd", "gp"),
    ("winograd", "fwd"),
  ]
  assert networks.models_from_config(config.model, conv, inference=True)[0].conv.objective == "fwd"
  conv = ConvPolicy("winograd2")
  assert {m.conv.impl for m in networks.models_from_config(config.model, conv)} == {"winograd2"}


def _quarter_width_generator(size, conv_impl, seed, batch=2):
  """(generator, variables, RGB batch in 0-255, its inference filters) at width 1/4."""
  conv = ConvPolicy(conv_impl, isa=ISA)
  gen = networks.Generator(image_size=size, width=0.25, fc_width=16, num_classes=4, conv=conv)
  x = jnp.asarray(np.random.default_rng(seed).random((batch, size, size, 3), np.float32))
  variables = jax.jit(gen.init)(jax.random.key(0), x)
  return gen, variables, x * 255, predict.inference_filters(gen, variables, x)


def test_inference_filters_replace_the_per_call_transform():
  """colorize's pre-transformed Winograd filters give the same ab, and are really used."""
  # A fixed tile: with tile "auto" the filters given change the tile (test_rule_per_isa_and_use).
  gen, variables, x, filters = _quarter_width_generator(32, "winograd2", seed=6)
  # Width 1/4: the >= 64-channel 3x3 layers (block2_conv1 .. mid_conv2, dec_conv2..4) only.
  assert "vgg16/block3_conv2:m2" in filters and "dec_conv5:m2" not in str(list(filters))
  assert all(f.shape[0] == 16 for f in filters.values())  # F(2x2): 4x4 transformed taps.
  want = engine.predict_ab(gen, variables, x)[1]
  same = np.abs(engine.predict_ab(gen, variables, x, filters)[1] - want).max()
  zeroed = {**filters, "vgg16/block3_conv2:m2": jnp.zeros_like(filters["vgg16/block3_conv2:m2"])}
  changed = np.abs(engine.predict_ab(gen, variables, x, zeroed)[1] - want).max()
  # Random init: ab stays near 0.5, so compare with the float32 rounding of the same model.
  assert same <= 1e-6 and changed > max(100 * same, 1e-5), (same, changed)
  assert predict.inference_filters(gen.clone(conv=ConvPolicy()), variables, x) == {}


def test_batch_one_inference_uses_transposed_dense_kernels():
  """At batch 1 the inference weights hold every Dense kernel transposed (XLA's faster
  matrix-vector product), the program uses them, and ab and class probabilities are unchanged;
  at batch 2 (a matrix product, where the transposed kernel is slower) there are none."""
  gen, variables, x, filters = _quarter_width_generator(32, "winograd2", seed=8, batch=1)
  dense = ["global_fc1", "global_fc2", "global_fc3", "class_fc1", "class_fc2", "class_fc3"]
  assert sorted(k for k in filters if k.endswith(inference_weights.TRANSPOSED)) == sorted(
    name + inference_weights.TRANSPOSED for name in dense
  )
  for name in dense:
    np.testing.assert_array_equal(
      filters[name + inference_weights.TRANSPOSED], variables["params"][name]["kernel"].T
    )

  def apply(filters):
    return jax.jit(lambda v, x, f: gen.apply(v, x / 255, train=False, prepared=f))(
      variables, x, filters
    )

  (ab, probs) = jax.jit(lambda v, x: gen.apply(v, x / 255, train=False))(variables, x)
  (ab_t, probs_t) = apply(filters)
  zeroed = {
    k: jnp.zeros_like(f) if k.endswith(inference_weights.TRANSPOSED) else f
    for k, f in filters.items()
  }
  (ab_z, probs_z) = apply(zeroed)
  same = max(np.abs(ab_t - ab).max(), np.abs(probs_t - probs).max())
  changed = min(np.abs(ab_z - ab).max(), np.abs(probs_z - probs).max())
  assert same <= 1e-6 and changed > max(100 * same, 1e-5), (same, changed)
  batch_two = _quarter_width_generator(32, "winograd2", seed=8)[3]
  assert not [k for k in batch_two if k.endswith(inference_weights.TRANSPOSED)]


def test_inference_with_given_filters_uses_big_tiles():
  """With the filters transformed once, tile "auto" picks F(4x4) from 16 tiles up (recorded and
  used consistently), close to the per-call F(2x2) program."""
  gen, variables, x, filters = _quarter_width_generator(64, "winograd", seed=7)
  # Width 1/4: block3 (64 channels) has 16x16 maps, 2 x 4 x 4 = 32 tiles (m=4); block4 8x8 maps,
  # 8 tiles (m=2).
  assert "vgg16/block3_conv2:m4" in filters and "vgg16/block4_conv2:m2" in filters
  want = engine.predict_ab(gen, variables, x)[1]  # Per-call filters: m=2 everywhere.
  got = engine.predict_ab(gen, variables, x, filters)[1]
  zeroed = {**filters, "vgg16/block3_conv2:m4": jnp.zeros_like(filters["vgg16/block3_conv2:m4"])}
  changed = np.abs(engine.predict_ab(gen, variables, x, zeroed)[1] - got).max()
  diff = np.abs(got - want).max()
  assert diff <= 2e-6 and changed > 1000 * max(diff, 1e-7), (diff, changed)  # 1.8e-7, 0.06.


def _ynn_fusions(compiled) -> int:
  return compiled.as_text().count("ynn_fusion")


def test_cpu_programs_compile_with_the_measured_options():
  """colorize's programs leave matmuls to XLA, not YNNPACK (measured faster for inference,
  bench/RESULTS.md), and an explicit XLA_FLAGS choice wins."""
  options = cpu_conv.cpu_compiler_options(os.environ.get("XLA_FLAGS", ""))
  config = tiny.get_config()
  config.model.conv_impl = "winograd"
  conv = machine.conv_policy("winograd")
  assert dict(conv.compiler_options) == options
  gen = networks.models_from_config(config.model, conv, inference=True)[0]
  gen = gen.clone(with_class_head=False)
  rgb = jnp.zeros((2, 64, 64, 3), jnp.uint8)
  variables = gen.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  plain = jax.jit(lambda v, x: gen.apply(v, x, train=False)).lower(variables, rgb / 1.0).compile()
  if "--xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
    assert options == {}  # conftest on jaxlib 0.12 turned them off for everything already.
  else:
    assert options == cpu_conv.CPU_COMPILER_OPTIONS
    assert _ynn_fusions(plain) > 0  # This jaxlib's default: the check below can fail.
  for fn in (predict.predict_ab_fn, predict.colorize_small_fn):
    assert _ynn_fusions(engine.inference_program(fn, gen).lower(gen, variables, rgb).compile()) == 0
  # The train loop's sample grids are inference too; its step keeps XLA's defaults (YNNPACK
  # measured faster there).
  mesh = train_state.make_mesh(jax.devices()[:1])
  nets = train_state.make_networks(config)
  full = nets.generator.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  batch = {"rgb": rgb, "mask": jnp.ones(2, bool)}
  sample = trainer.make_sample_fn(nets, mesh)
  assert _ynn_fusions(sample.lower(full, batch).compile()) == 0
  assert train_step.xla_compiler_options(config, backend="cpu") == {}
  assert cpu_conv.cpu_compiler_options("--xla_cpu_experimental_ynn_fusion_type=dot") == {}
