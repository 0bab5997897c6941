"""Smoke test of the benchmark scripts in bench/: each runs end to end in its --smoke mode.

Keeps the scripts from rotting as the library changes. Timings are not checked (the machine is
shared); the outputs are: positive rates, and for the inference benchmark the Keras build with
the copied weights must reproduce the JAX generator's output. The derived figures (ratios,
GFLOP/s, MFU) are checked once, in ``common.speed_fields``, from times with known answers.
"""

import json
import os
import sys
import tempfile

import jax
import pytest

jax.config.update("jax_disable_most_optimizations", True)

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
if BENCH not in sys.path:  # conftest puts it after the root: root modules win a name clash
  sys.path.append(BENCH)

import common  # noqa: E402
import conv_choice_cost  # noqa: E402
import conv_layers  # noqa: E402
import generator_inference  # noqa: E402
import input_pipeline as input_pipeline_bench  # noqa: E402
import int8_conv  # noqa: E402
import png_encode  # noqa: E402
import train_step  # noqa: E402

from chromagan_jax.ops import conv_choice  # noqa: E402
from chromagan_jax.runtime import machine  # noqa: E402


def _load(path):
  with open(path) as f:
    return json.load(f)


def test_results_are_never_written_over(tmp_path):
  """A result whose file exists (cited figures, maybe another machine's) goes beside it."""
  path = tmp_path / "results" / "bench.json"
  assert common.write_json(str(path), {"run": 1}) == str(path)
  second = common.write_json(str(path), {"run": 2})
  assert second != str(path) and os.path.dirname(second) == str(path.parent)
  assert os.path.basename(second).startswith("bench_") and second.endswith(".json")
  assert _load(path) == {"run": 1} and _load(second) == {"run": 2}


def test_speed_fields_from_known_times():
  """The derived figures of every benchmark, from times whose answers are known: 8 images in
  2 s (JAX) vs 4 s (TF) is 4 vs 2 img/s, JAX 2x faster; 10 GFLOP per call at a 20 GFLOP/s
  peak is 5 vs 2.5 GFLOP/s, MFU 25% vs 12.5%."""
  fields = common.speed_fields(8, 2.0, 4.0, "tf", 10e9, 6e9, {"jnp_dot": 20.0}, "call")
  assert fields == pytest.approx({
    "jax_img_s": 4.0, "tf_img_s": 2.0, "ratio_jax_over_tf": 2.0,
    "model_gflop_per_call": 10.0, "executed_gflop_per_call": 6.0,
    "jax_model_gflop_s": 5.0, "tf_model_gflop_s": 2.5, "jax_mfu": 0.25, "tf_mfu": 0.125,
  })  # fmt: skip


def test_lower_quartile_ratio_ignores_the_slow_calls():
  """TF at 4 s against JAX at 2 s is 2x, whether or not 2 of JAX's 5 calls ran 1.5x slower
  (the median's answer moves to 1.33x) or TF had one slow call."""
  assert common.lower_quartile_ratio([2.0] * 5, [4.0] * 5) == pytest.approx(2.0)
  jax_slow = [2.0, 3.0, 2.0, 3.0, 3.0]
  assert common.median([4.0] * 5) / common.median(jax_slow) == pytest.approx(4 / 3)
  assert common.lower_quartile_ratio(jax_slow, [4.0, 4.0, 6.0, 4.0, 4.0]) == pytest.approx(2.0)
  # Numpy's linear interpolation: the lower quartile of 1..5 is 2.
  assert common.lower_quartile_ratio([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(2.0)


def test_generator_inference_smoke(tmp_path):
  out = tmp_path / "gi.json"
  argv = ["--smoke", "--conv_impl", "xla,auto+pre", "--json", str(out)]
  generator_inference.main(argv)
  result = _load(out)
  assert [(r["batch"], r["conv_impl"]) for r in result["rows"]] == [
    (1, "xla"), (1, "auto+pre"), (2, "xla"), (2, "auto+pre")
  ]  # fmt: skip
  for r in result["rows"]:
    assert r["jax_img_s"] > 0 and r["keras_img_s"] > 0 and r["ratio_jax_over_keras"] > 0
    assert r["ratio_q1_jax_over_keras"] > 0
    assert r["executed_gflop_per_call"] > 0 and r["model_gflop_per_call"] > 0
    # Same weights in both frameworks -> the same colours (float32 round-off only).
    assert r["max_abs_diff_ab"] < 1e-4
  assert result["matmul_peak_gflop_s"]["jnp_dot"] > 0

  # ab only (as colorize runs it): the class head is not computed, the colours are the same.
  ab = tmp_path / "gi_ab.json"
  generator_inference.main(["--smoke", "--conv_impl", "xla", "--outputs", "ab", "--json", str(ab)])
  rows = [r for r in _load(ab)["rows"] if r["batch"] == 1]
  (full,) = [r for r in result["rows"] if r["batch"] == 1 and r["conv_impl"] == "xla"]
  assert rows[0]["outputs"] == "ab" and full["outputs"] == "both"
  assert rows[0]["model_gflop_per_call"] < full["model_gflop_per_call"]
  assert rows[0]["max_abs_diff_ab"] < 1e-4
  assert result["machine"]["cores"] >= 1
  # Every result names the CPU and the ISA it was measured with.
  assert result["machine"]["cpu"] == machine.cpu_facts()[0]
  assert result["machine"]["isa"] == machine.cpu_isa() in ("avx512", "avx2", "other")


def test_train_step_smoke(tmp_path):
  out = tmp_path / "ts.json"
  # Teacher on only: the 'off' mode is the same code minus the KL term, and each mode costs a
  # JAX compile and a tf.function trace (~30 s on 2 shared cores).
  train_step.main(["--smoke", "--teacher", "on", "--conv_impl", "winograd", "--json", str(out)])
  result = _load(out)
  (row,) = result["rows"]
  assert (row["teacher"], row["conv_impl"], row["batch"]) == ("on", "winograd", 2)
  assert row["jax_img_s"] > 0 and row["tf_img_s"] > 0 and row["model_gflop_per_step"] > 0
  assert row["ratio_jax_over_tf"] > 0 and row["ratio_q1_jax_over_tf"] > 0


def test_input_pipeline_smoke(tmp_path):
  out = tmp_path / "ip.json"
  input_pipeline_bench.main(
    ["--smoke", "--json", str(out), "--train_step_json", str(tmp_path / "missing.json")]
  )
  result = _load(out)
  assert [r["decode_processes"] for r in result["rows"]] == [0, 2]
  assert result["data"]["files"] > 0
  for r in result["rows"]:
    assert r["img_s"] > 0 and r["img_per_cpu_s"] > 0
    assert r["train_step_img_s"] == "n/a"
  assert result["resume"][0]["resume_s_at_90pct"] > 0


def test_conv_layers_smoke(tmp_path):
  out = tmp_path / "cl.json"
  conv_layers.main(["--smoke", "--json", str(out)])
  result = _load(out)
  critic_passes = {r["pass"] for r in result["rows"] if r["layer"].startswith("critic")}
  assert critic_passes == {"fwd", "vjp", "gp"}
  for r in result["rows"]:
    assert r["xla_gflop_s"] > 0 and r["winograd_gflop_s"] > 0 and r["tf_gflop_s"] > 0


def test_int8_conv_smoke(tmp_path):
  out = tmp_path / "i8.json"
  int8_conv.main(["--smoke", "--json", str(out)])
  result = _load(out)
  assert [r["layer"] for r in result["rows"]] == [name for name, *_ in int8_conv.LAYERS]
  for r in result["rows"]:
    assert r["fp32_ms"] > 0 and r["int8_ms"] > 0
    assert r["fp32_rel_max_err"] < 1e-5  # fp32: the rule's algorithm, exact to rounding
    # Quantized to 8 bits: about 1% RMS error on these inputs, and never exact.
    assert 1e-4 < r["int8_rel_rms_err"] < 0.03
    if "int8_wino2_ms" in r:
      assert 1e-4 < r["int8_wino2_rel_rms_err"] < 0.04
  assert "int8_wino2_ms" in result["rows"][1] and "int8_wino2_ms" not in result["rows"][10]


def test_conv_choice_cost_smoke(tmp_path):
  out = tmp_path / "cc.json"
  conv_choice_cost.main(["--smoke", "--rounds", "2", "--json", str(out)])
  result = _load(out)
  # The generator's first two trunk convs at 32x32, width 1/8 (64 -> 8 channels), batch 1,
  # traced as inference traces them (filters given: the "infer" use).
  layers = [
    "infer 1x32x32x3 3x3x3x8 float32 s1x1 p1,1,1,1",
    "infer 1x32x32x8 3x3x8x8 float32 s1x1 p1,1,1,1",
  ]
  assert [r["layer"] for r in result["rows"]] == layers * 2
  for r in result["rows"]:
    times = {k[:-3]: v for k, v in r.items() if k.endswith("_ms")}
    assert "xla" in times and r["rule"] in times and min(times.values()) > 0
    assert r["chosen"] == conv_choice.pick(times) and r["measure_s"] > 0
    assert r["rule_over_xla"] == pytest.approx(times[r["rule"]] / times["xla"])
  for t in result["rounds"]:
    this = [r for r in result["rows"] if r["round"] == t["round"]]
    assert t["layers"] == 2 and t["measure_s"] >= sum(r["measure_s"] for r in this)
    assert t["chosen_ms"] == pytest.approx(sum(r[r["chosen"] + "_ms"] for r in this))
    slower = sum(r["rule_over_xla"] > 1 + conv_choice.MARGIN for r in this)
    assert t["rule_slower_than_xla"] == slower

  # The critic's layers for its gradient penalty: strided 4x4 convs, im2col by the rule.
  gp = tmp_path / "cc_gp.json"
  conv_choice_cost.main(["--smoke", "--objective", "gp", "--json", str(gp)])
  rows = _load(gp)["rows"]
  assert [r["layer"].split()[:3] for r in rows] == [
    ["gp", "1x32x32x3", "4x4x3x8"],
    ["gp", "1x16x16x8", "4x4x8x16"],
  ]
  assert {r["rule"] for r in rows} == {"im2col"}


def test_png_encode_smoke(tmp_path):
  """Every contender runs, decodes back to its photo (checked in the script), and the ratios
  are against Pillow's default."""
  out = tmp_path / "png.json"
  result = png_encode.main(["--smoke", "--json", str(out)])
  assert _load(out)["photos"] == result["photos"] == 2
  rows = {r["encoder"]: r for r in result["rows"]}
  assert set(rows) == set(png_encode.CONTENDERS)
  assert rows[png_encode.BASELINE]["time vs default"] == 1.0
  for row in rows.values():
    assert row["s"] > 0 and row["MB"] > 0
    assert row["size vs default"] == pytest.approx(row["MB"] / rows[png_encode.BASELINE]["MB"])


@pytest.mark.slow
def test_colorize_bench_smoke(tmp_path, monkeypatch):
  import colorize_e2e as colorize_bench
  from helpers import random_generator_variables, small_config

  from chromagan_jax.weights import checkpoint

  config = small_config()
  ckpt = tmp_path / "ckpt"
  checkpoint.save_generator(ckpt, random_generator_variables(config), config)
  out = tmp_path / "colorize.json"
  scratch = tmp_path / "scratch"  # Where the bench's temporary folder goes.
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  colorize_bench.main(["--ckpt", str(ckpt), "--sizes", "0.3", "--repeats", "1"]
                      + ["--output", str(out)])  # fmt: skip
  # Its photos and exported models are gone (TF's autograph leaves its own files there).
  assert not [f for f in os.listdir(scratch) if f.startswith("bench_colorize_")]
  result = _load(out)
  # The network stage runs what colorize runs: the checkpoint's "auto" (the rule on CPU).
  assert result["network_conv_impl"] == ("winograd" if jax.default_backend() == "cpu" else "xla")
  (row,) = result["photos"]
  assert row["size"] == "640x480" and row["end_to_end_s"] > 0
  assert row["sum_of_stages_s"] == pytest.approx(sum(row[f"{s}_s"] for s in colorize_bench.STAGES))
  # The 8-bit LittleCMS path agrees with ours to a few levels (8-bit Lab rounding).
  assert row["littlecms_vs_ours_max_abs"] <= 8
  for name, diff in result["network"]["max_abs_ab_vs_colorize"].items():
    assert diff < (5e-2 if "int8" in name else 1e-4), name
  full, head_free = result["loading"]
  assert full["params_loaded"] > head_free["params_loaded"] > 0


@pytest.mark.slow  # five colorize/network processes
def test_colorize_bench_folder_smoke(tmp_path):
  """--synthetic: before (--workers 0) and after, and the network alone, on the same photos;
  the figures the folder table prints are there and consistent."""
  import colorize_e2e as colorize_bench
  from helpers import random_generator_variables, small_config

  from chromagan_jax.weights import checkpoint

  config = small_config()
  ckpt = tmp_path / "ckpt"
  checkpoint.save_generator(ckpt, random_generator_variables(config), config)
  out = tmp_path / "folder.json"
  colorize_bench.main(["--ckpt", str(ckpt), "--synthetic", "3", "--synthetic_mp", "0.05",
                       "--rounds", "1", "--batch_size", "2", "--output", str(out)])  # fmt: skip
  result = _load(out)
  assert result["photos"] == 3 and result["megapixels"] == pytest.approx(0.15, rel=0.05)
  assert [r["code"] for r in result["runs"]] == ["before", "after"]
  for run in result["runs"]:
    assert run["child"]["status"] == 0 and run["network"]["calls"] == 2
    assert run["photos_per_s"] == pytest.approx(3 / run["wall_s"])
    assert run["wall_over_network"] == pytest.approx(run["wall_s"] / run["network_s"])
    assert 0 < run["cores_busy"] < 2 * os.cpu_count() and run["peak_rss_mib"] > 0


@pytest.mark.slow  # exports, and a process per contender and round
def test_runtimes_bench_smoke(tmp_path):
  """bench/runtimes.py on an input-sensitive small model: each contender timed once per round
  in a rotated order, its ratios to jax-auto, and its accuracy against jax-xla: the fp32 runtimes
  agree to float rounding, the int8 model differs but stays within a few Lab units. A runtime
  whose package is missing is skipped with its reason."""
  import runtimes
  from helpers import ab_input_sensitivity, colourful_generator_variables, small_config

  from chromagan_jax.weights import checkpoint

  config = small_config()
  variables = colourful_generator_variables(config)
  assert ab_input_sensitivity(variables, config) * runtimes.LAB_PER_AB > 20.0
  ckpt = tmp_path / "ckpt"
  checkpoint.save_generator(ckpt, variables, config)
  out = tmp_path / "runtimes.json"
  asked = ["jax-auto", "jax-xla", "ort-fp32", "ort-int8", "ov-int8"]
  runtimes.main(["--ckpt", str(ckpt), "--rounds", "2", "--calls", "2", "--contenders",
                 ",".join(asked), "--json", str(out)])  # fmt: skip
  result = _load(out)
  names = [r["contender"] for r in result["rows"]]
  assert sorted(names + list(result["skipped"])) == sorted(asked)
  assert {"jax-auto", "jax-xla", "ort-fp32", "ort-int8"} <= set(names)
  assert names[0] == "jax-xla" and result["quantization"]["ort-int8"].startswith("quantize_static")
  # Round 1 runs the contenders in round 0's order rotated by one.
  order = [[r["name"] for r in result["runs"] if r["round"] == k] for k in (0, 1)]
  assert order[1] == order[0][1:] + order[0][:1] and order[0] == names
  rows = {r["contender"]: r for r in result["rows"]}
  for row in rows.values():
    assert row["batch"] == 1 and row["calls"] == 4 and 0 < row["p25_ms"] <= row["median_ms"]
    assert row["median_vs_jax_auto"] == pytest.approx(
      row["median_ms"] / rows["jax-auto"]["median_ms"]
    )
    assert row["peak_rss_mib"] > 0
  assert rows["jax-xla"]["max_dab_lab"] == 0.0
  for name in ("jax-auto", "ort-fp32"):
    assert rows[name]["max_dab_lab"] < 0.05, name
  assert 0.05 < rows["ort-int8"]["mean_dab_lab"] < 5.0


def test_runtimes_names_the_missing_packages(monkeypatch):
  """A contender whose runtime is not installed is skipped with the packages it needs."""
  import runtimes

  monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda name: None)
  assert runtimes.missing("ov-int8") == "not installed: onnx, jax2onnx, openvino, nncf"
