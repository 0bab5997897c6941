"""bench/accelerator.py: runs without TensorFlow/tfds/clu, --smoke on CPU, its batch search."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)

import accelerator  # noqa: E402

# The bench in a fresh interpreter where importing TensorFlow, tfds or clu fails, as on an
# accelerator image without them; it also checks that none got imported some other way.
_BLOCKED_RUN = textwrap.dedent(
  """
  import sys
  BLOCKED = ("tensorflow", "tensorflow_datasets", "clu")
  for name in BLOCKED:
    sys.modules[name] = None  # `import name` now raises ImportError.
  sys.path.insert(0, {bench!r})
  import jax
  jax.config.update("jax_disable_most_optimizations", True)
  import accelerator
  accelerator.main(sys.argv[1:])
  loaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None]
  assert not loaded, loaded
  """
)


def _load(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.slow
def test_smoke_runs_without_tensorflow(tmp_path):
  out = tmp_path / "acc.json"
  script = _BLOCKED_RUN.format(bench=BENCH)
  proc = subprocess.run(
    [sys.executable, "-c", script, "--smoke", "--json", str(out)],
    cwd=ROOT, capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = _load(out)
  assert result["machine"]["tensorflow"] is None and result["machine"]["jax_backend"] == "cpu"
  rows = result["rows"]
  grid = [(r["dtype"], r["remat"], r["batch"]) for r in rows]
  assert grid == [
    (dtype, remat, batch)
    for dtype in ("float32", "bfloat16")
    for remat in (False, True)
    for batch in (2, "max")
  ]
  timed = [r for r in rows if r["batch"] == 2]
  for r in timed:
    assert "error" not in r, r
    assert r["img_s"] > 0 and r["mfu"] > 0 and r["matmul_peak_tflop_s"] > 0
    assert r["compile_s"] > 0 and r["xla_bytes"] > 0 and r["finite_losses"]
    assert r["peak_bytes_in_use"] == "n/a"  # CPU reports no device memory.
    assert r["model_tflop_s"] == pytest.approx(r["model_gflop_per_step"] / 1e3 / r["step_s"])
  # Model FLOPs are one count for the batch (f32, no remat); remat executes more.
  assert len({r["model_gflop_per_step"] for r in timed}) == 1
  by = {(r["dtype"], r["remat"]): r for r in timed}
  assert (
    by["float32", True]["executed_gflop_per_step"] > by["float32", False]["executed_gflop_per_step"]
  )
  # The largest batch needs a device memory limit, which CPU does not have.
  for r in rows:
    if r["batch"] == "max":
      assert r["error"].startswith("n/a"), r
  parity = result["parity"]
  assert parity["modes"] == ["float32_highest", "float32_default", "bfloat16"]
  assert [len(h) for h in parity["losses"].values()] == [3, 3, 3]
  # CPU ignores matmul precision: float32 default equals HIGHEST; bf16 differs, not wildly.
  assert parity["float32_default"]["losses_max_rel_diff"] < 1e-6
  bf16 = parity["bfloat16"]
  assert 0 < bf16["losses_max_rel_diff"] < 0.5 and 0 < bf16["updates_rel_l2_diff"] < 2


def test_largest_batch_search_finds_the_last_fitting_multiple():
  calls = []

  def need(batch):  # Linear bytes, plus a jump above 30 (e.g. another algorithm's workspace).
    calls.append(batch)
    return 1000 + 100 * batch + (2000 if batch > 30 else 0)

  found = accelerator.search_largest_batch(need, limit=5000, g=4, listed=[], cap=1024)
  assert found["batch"] == 28 and found["limit_bytes"] == 5000
  assert len(calls) == len(set(calls)) <= 8  # Each probe is a compile: few, none twice.
  assert need(28) <= 5000 < need(32)
  linear = accelerator.search_largest_batch(lambda b: 1000 + 100 * b, 5000, 8, [10, 64], 1024)
  assert linear["batch"] == 40
  assert accelerator.search_largest_batch(lambda b: 10 * b, 10**9, 8, [8, 16], 100)["batch"] == 96
  assert "error" in accelerator.search_largest_batch(lambda b: 10**6, 5000, 4, [], 64)


def test_largest_batch_search_survives_a_far_off_first_guess():
  """The line through batches 8 and 16 guesses ~100x too high when the per-image bytes grow
  past batch 64: doubling steps and bisection still find the last fitting batch (1,056), with
  few compiles, where single steps from the guess would need ~1,900 of them."""
  calls = []

  def need(batch):
    calls.append(batch)
    return 1000 + 10 * min(batch, 64) + 1000 * max(batch - 64, 0)

  found = accelerator.search_largest_batch(need, limit=10**6, g=8, listed=[], cap=16384)
  assert found["batch"] == 1056 and need(1056) <= 10**6 < need(1064)
  assert len(set(calls)) == len(calls) - 2 <= 24  # The two checks just above are repeats.


@pytest.mark.slow
def test_isolated_case_runs_in_its_own_process(tmp_path, monkeypatch):
  out = tmp_path / "iso.json"
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")  # The child's compile, as here.
  result = accelerator.main(
    ["--smoke", "--isolate", "on", "--dtypes", "float32", "--remat", "off", "--batches", "2",
     "--parity_steps", "0", "--determinism_runs", "2", "--determinism_modes", "on",
     "--json", str(out)]
  )  # fmt: skip
  (row,) = result["rows"]
  assert "error" not in row, row
  assert row["img_s"] > 0 and result["isolated"] and result["machine"]["device_kind"] == "cpu"
  assert _load(out)["rows"] == result["rows"]
  # Two processes compiled and replayed the same 3 steps: XLA:CPU ends bitwise equal.
  (label,) = result["determinism"]
  replays = result["determinism"][label]
  assert label == "on" and replays["completed"] == 2, replays
  assert replays["bitwise_equal"] and replays["losses_equal"]
  assert replays["state_abs_sum_rel_spread"] == 0
  for r in replays["runs"]:
    assert len(r["sha256"]) == 64 and len(r["losses"]) == 3 and r["batch"] == 2


def test_replays_that_differ_are_reported_apart():
  run = {"sha256": "a" * 64, "state_abs_sum": 10.0, "losses": [{"g": 1.0}]}
  same = accelerator.compare_replays([run, dict(run)])
  assert same["bitwise_equal"] and same["losses_equal"] and same["completed"] == 2
  other = {**run, "sha256": "b" * 64, "state_abs_sum": 10.5, "losses": [{"g": 1.0 + 1e-7}]}
  apart = accelerator.compare_replays([run, other])
  assert not apart["bitwise_equal"] and not apart["losses_equal"]
  assert apart["state_abs_sum_rel_spread"] == pytest.approx(0.5 / 10.5)
  failed = accelerator.compare_replays([run, {"error": "child exited 1: OOM"}])
  assert failed["completed"] == 1 and "bitwise_equal" not in failed


def test_model_flops_fall_back_to_the_host_where_the_backend_has_no_cost_analysis(monkeypatch):
  """XLA:GPU (jax 0.11.2, H200) returns None for an unoptimised program's cost analysis: the
  same step lowered for a host-CPU device gives the count (here: the same as the direct one)."""
  import jax  # noqa: PLC0415

  args = accelerator.parse_args(["--smoke", "--num_devices", "1"])
  direct = accelerator.Bench(args).model_flops(2)
  calls, original = [], jax.stages.Lowered.cost_analysis

  def none_first(self):  # The first analysis (the bench's own mesh) has none, as on GPU.
    calls.append(self)
    return None if len(calls) == 1 else original(self)

  monkeypatch.setattr(jax.stages.Lowered, "cost_analysis", none_first)
  assert accelerator.Bench(args).model_flops(2) == direct > 0
  assert len(calls) == 2


def test_empty_table_prints_its_header(capsys):
  accelerator.common.print_table([], ["dtype", "img_s"])  # --batches '': parity only.
  assert capsys.readouterr().out.split() == ["dtype", "img_s"]
