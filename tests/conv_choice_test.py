"""conv_choice: per-layer algorithm choice, its on-disk cache (keying, invalidation, fallbacks).

Timings are injected (a fake timer), so no test depends on this machine's speed or load; one
test runs the real measurement on a tiny layer, inside a jit trace as the models do.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chromagan_jax.model import networks
from chromagan_jax.ops import conv_choice, cpu_conv, inference_weights
from chromagan_jax.ops.conv_policy import ConvPolicy
from chromagan_jax.runtime import compile_cache, machine

MACHINE = {"cpu": "Test CPU", "isa": ["avx2"], "jax": "0"}
SAME_3X3 = ((2, 8, 8, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)))
STRIDED_4X4 = ((2, 8, 8, 16), (4, 4, 16, 8), (2, 2), ((1, 2), (1, 2)))


class FakeTimer:
  """Pretends ``fastest`` takes 1 s and every other candidate 2 s; counts the calls."""

  def __init__(self, fastest=("winograd2",), seconds=None):
    self.fastest, self.seconds, self.calls = fastest, seconds or {}, []

  def __call__(self, names, objective, lhs_shape, rhs_shape, dtype, strides, pads):
    self.calls.append((objective, lhs_shape))
    return {n: self.seconds.get(n, 1.0 if n in self.fastest else 2.0) for n in names}


def choose(chooser, layer=SAME_3X3, objective="fwd"):
  lhs, rhs, strides, pads = layer
  return chooser.choose(lhs, rhs, jnp.float32, strides, pads, objective)


def test_pick_keeps_xla_unless_another_is_clearly_faster():
  assert conv_choice.pick({"xla": 1.0, "winograd2": 0.5, "im2col": 0.7}) == "winograd2"
  almost = 1.0 - conv_choice.MARGIN / 2
  assert conv_choice.pick({"xla": 1.0, "winograd2": almost}) == "xla"  # Within noise: XLA.
  assert conv_choice.pick({"xla": 1.0, "im2col": 2.0}) == "xla"


def test_candidates_always_include_xla():
  assert cpu_conv.candidates(*SAME_3X3) == ("xla", "winograd2", "winograd4", "im2col")
  assert cpu_conv.candidates(*STRIDED_4X4) == ("xla", "im2col")
  huge = ((64, 512, 512, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)))  # 9.7e9 patch elements.
  assert cpu_conv.candidates(*huge) == ("xla", "winograd2", "winograd4")


def test_choice_is_measured_once_then_read_from_disk(tmp_path):
  timer = FakeTimer(fastest=("winograd4",))
  first = conv_choice.Chooser(str(tmp_path), MACHINE, timer=timer)
  assert choose(first) == "winograd4"
  assert choose(first) == "winograd4"
  assert len(timer.calls) == 1  # Measured once per layer use.
  (path,) = tmp_path.iterdir()
  assert str(path) == first.path
  data = json.loads(path.read_text())
  assert data["machine"] == {**MACHINE, "version": conv_choice.VERSION}
  ((key, entry),) = data["choices"].items()
  assert key == "fwd 2x8x8x16 3x3x16x16 float32 s1x1 p1,1,1,1"
  assert entry["choice"] == "winograd4" and set(entry["seconds"]) == set(cpu_conv.ALGORITHMS)

  # A new process (chooser) with the same directory: same choice, nothing timed.
  again = FakeTimer(fastest=("im2col",))
  assert choose(conv_choice.Chooser(str(tmp_path), MACHINE, timer=again)) == "winograd4"
  assert again.calls == []


def test_objectives_and_shapes_are_chosen_separately(tmp_path):
  timer = FakeTimer(fastest=("winograd2", "im2col"), seconds={"im2col": 0.5})
  chooser = conv_choice.Chooser(str(tmp_path), MACHINE, timer=timer)
  assert choose(chooser, objective="fwd") == "im2col"
  assert choose(chooser, objective="gp") == "im2col"
  assert choose(chooser, STRIDED_4X4, objective="train") == "im2col"
  assert [c[0] for c in timer.calls] == ["fwd", "gp", "train"]
  assert len(chooser.choices()) == 3


def test_another_machine_key_measures_again(tmp_path):
  choose(conv_choice.Chooser(str(tmp_path), MACHINE, timer=FakeTimer()))
  for field, value in [("jax", "9.9.9"), ("isa", ["avx512f"]), ("cpu", "Other CPU"),
                       ("xla_flags", "--xla_cpu_use_onednn=true")]:  # fmt: skip
    timer = FakeTimer(fastest=("im2col",))
    other = conv_choice.Chooser(str(tmp_path), {**MACHINE, field: value}, timer=timer)
    assert choose(other) == "im2col", field
    assert len(timer.calls) == 1, field
  assert len(list(tmp_path.iterdir())) == 5  # One file per machine key; none overwritten.
  key = machine.machine_key()  # The entry's: read there, once.
  assert set(key) == {"cpu", "isa", "cores", "jax", "jaxlib", "xla_flags"}


def test_unreadable_or_stale_files_are_measured_again_with_a_warning(tmp_path):
  chooser = conv_choice.Chooser(str(tmp_path), MACHINE, timer=FakeTimer())
  choose(chooser)
  path = chooser.path
  with open(path, "w") as f:
    f.write("{not json")
  warnings, timer = [], FakeTimer(fastest=("winograd4",))
  assert choose(conv_choice.Chooser(str(tmp_path), MACHINE, timer=timer, warn=warnings.append)) == (
    "winograd4"
  )
  assert len(timer.calls) == 1 and "ignoring the convolution choices in" in warnings[0]
  assert json.loads(open(path).read())["choices"]  # Rewritten whole.

  # A recorded choice that is no candidate for the layer (edited, or an old algorithm set).
  data = json.loads(open(path).read())
  for entry in data["choices"].values():
    entry["choice"] = "winograd7"
  with open(path, "w") as f:
    json.dump(data, f)
  timer = FakeTimer(fastest=("im2col",))
  assert choose(conv_choice.Chooser(str(tmp_path), MACHINE, timer=timer)) == "im2col"
  assert len(timer.calls) == 1


def test_unwritable_directory_keeps_choices_in_memory(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  warnings, timer = [], FakeTimer()
  chooser = conv_choice.Chooser(str(blocker / "sub"), MACHINE, timer=timer, warn=warnings.append)
  assert choose(chooser) == "winograd2"
  assert choose(chooser, STRIDED_4X4) == "xla"  # Only winograd2 is "fast" in this timer.
  assert choose(chooser) == "winograd2"
  assert len(timer.calls) == 2
  assert len(warnings) == 1 and "kept in memory only" in warnings[0]


def test_compile_cache_puts_the_choices_next_to_it(tmp_path):
  assert compile_cache.choices_dir(str(tmp_path / "xla")) == str(tmp_path / "conv_choices")
  configured = jax.config.jax_compilation_cache_dir  # conftest's: it wins over the path.
  assert compile_cache.enable(str(tmp_path / "other")) == configured
  assert machine.choices_dir() == compile_cache.choices_dir(configured)
  policy = machine.conv_policy("measure")
  assert policy.chooser.directory == compile_cache.choices_dir(configured)
  assert policy.chooser.machine == {**machine.machine_key(), "version": conv_choice.VERSION}
  assert machine.conv_policy(None).impl == "auto" and machine.conv_policy("xla").chooser is None


def test_models_trace_with_the_chosen_algorithms(monkeypatch):
  """The chooser decides per layer at trace time; a forced choice changes the program."""
  size, width = 16, 0.25
  kw = dict(image_size=size, width=width, fc_width=16, num_classes=4)
  x = jnp.asarray(np.random.default_rng(0).random((1, size, size, 3), np.float32))
  ref = networks.Generator(**kw)
  variables = jax.jit(ref.init)(jax.random.key(0), x)
  want = ref.apply(variables, x)[0]

  def measured(timer):
    conv = ConvPolicy("measure", chooser=conv_choice.Chooser(None, MACHINE, timer=timer))
    return networks.Generator(**kw, conv=conv.resolve(objective="fwd"))

  init_timer = FakeTimer()
  jax.eval_shape(measured(init_timer).init, jax.random.key(0), x)
  assert init_timer.calls == []  # Initialising (shapes only) measures nothing.

  def program_with(fastest):
    timer = FakeTimer(fastest=(fastest,))
    auto = measured(timer)
    fn = jax.jit(lambda v, x: auto.apply(v, x)[0])
    text = fn.lower(variables, x).as_text()
    return text, fn(variables, x), timer

  xla_text, got, timer = program_with("xla")
  assert {c[0] for c in timer.calls} == {"fwd"} and len(timer.calls) >= 10
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert "convolution" in xla_text
  wino_text, got, _ = program_with("winograd2")
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert wino_text.count("convolution(") < xla_text.count("convolution(")


def test_real_measurement_inside_a_jit_trace(tmp_path):
  """measure() times its own programs while the caller's jit traces (concrete shapes)."""
  chooser = conv_choice.Chooser(str(tmp_path), MACHINE)
  conv = ConvPolicy("measure", chooser=chooser, objective="train").conv_general_dilated()
  x = jnp.ones((1, 6, 6, 4))
  w = jnp.ones((3, 3, 4, 4))
  dn = ("NHWC", "HWIO", "NHWC")
  # Under the training loop's transfer guard (measure() puts its own inputs on device).
  with jax.transfer_guard("disallow"):
    y = jax.jit(lambda x, w: conv(x, w, (1, 1), "SAME", dimension_numbers=dn))(x, w)
  np.testing.assert_allclose(
    y, jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn), rtol=1e-5
  )
  ((key, entry),) = chooser.choices().items()
  assert key.startswith("train 1x6x6x4 3x3x4x4")
  assert entry["choice"] in cpu_conv.ALGORITHMS
  assert set(entry["seconds"]) == set(
    cpu_conv.candidates((1, 6, 6, 4), (3, 3, 4, 4), (1, 1), ((1, 1), (1, 1)))
  )
  assert all(0 < s < 10 for s in entry["seconds"].values())
  assert os.path.exists(chooser.path)


@pytest.mark.parametrize("objective", conv_choice.USES)
def test_candidates_are_timed_with_the_options_their_use_compiles_with(objective, monkeypatch):
  """Inference ("fwd", "infer") compiles without XLA:CPU's YNNPACK fusions (cpu_conv), training
  with XLA's defaults: each candidate is timed compiled the same way."""
  seen = []
  real = jax.stages.Lowered.compile

  def compile_(self, compiler_options=None, **kw):
    seen.append(compiler_options)
    return real(self, compiler_options=compiler_options, **kw)

  monkeypatch.setattr(jax.stages.Lowered, "compile", compile_)
  names, options = ("xla", "im2col"), cpu_conv.CPU_COMPILER_OPTIONS
  conv_choice.measure(
    names, objective, (1, 6, 6, 4), (3, 3, 4, 4), "float32", (1, 1), ((1, 1),) * 2, options
  )
  want = cpu_conv.CPU_COMPILER_OPTIONS if objective in ("fwd", "infer") else None
  assert seen == [want] * len(names)


def test_inference_layers_are_timed_with_transformed_filters(monkeypatch):
  """A "fwd" layer traced while the Winograd filters come transformed (colorize's inference
  programs) is chosen for "infer", whose Winograd candidates are timed on the transformed
  filters (the transform outside the timed call, as inference runs it) and compute the conv."""
  dn = ("NHWC", "HWIO", "NHWC")
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 4)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 4, 4)), jnp.float32)
  timer = FakeTimer()
  policy = ConvPolicy("measure", chooser=conv_choice.Chooser(None, MACHINE, timer=timer))
  policy.conv_general_dilated()(x, w, (1, 1), "SAME", dimension_numbers=dn)
  recording = policy.conv_general_dilated(inference_weights.Recording(), "layer")
  recording(x, w, (1, 1), "SAME", dimension_numbers=dn)
  policy.conv_general_dilated({}, "layer")(x, w, (1, 1), "SAME", dimension_numbers=dn)
  assert [c[0] for c in timer.calls] == ["fwd", "infer"]  # The second "infer" is remembered.

  kernels, real = {}, conv_choice.program

  def spy(name, objective, strides, pads):
    fn = real(name, objective, strides, pads)

    def timed(x, k):
      kernels[objective, name] = k.shape
      return fn(x, k)

    return timed

  monkeypatch.setattr(conv_choice, "program", spy)
  names, pads = ("xla", "winograd2", "winograd4"), ((1, 1), (1, 1))
  for use in ("fwd", "infer"):
    conv_choice.measure(names, use, x.shape, w.shape, "float32", (1, 1), pads)
  assert kernels == {
    **{("fwd", n): (3, 3, 4, 4) for n in names},
    ("infer", "xla"): (3, 3, 4, 4),
    ("infer", "winograd2"): (16, 4, 4),
    ("infer", "winograd4"): (36, 4, 4),
  }
  want = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
  for m in (2, 4):
    u = cpu_conv.filter_transform(w, m)
    got = real(f"winograd{m}", "infer", (1, 1), pads)(x, u)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_multi_process_runs_use_the_rule(monkeypatch, caplog):
  """Processes measuring on their own could trace different programs for one jitted step."""
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert machine.conv_policy("measure").impl == "auto"
  assert "'measure' is 'auto' in a multi-process run (2 processes)" in caplog.text
  monkeypatch.setattr(jax, "process_count", lambda: 1)
  assert machine.conv_policy("measure").impl == "measure"
