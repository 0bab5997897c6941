"""`make demo` shrunk: the real entry point (python -m chromagan_jax.demo) for 2 training
steps instead of 300; everything after training (colorize, grid, evaluation) runs as is."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from chromagan_jax.data import images, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # a training run, colorize and evaluate in a subprocess
def test_demo_end_to_end(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")  # as the tests: faster compiles
  # This checkout's package, whatever the environment has installed.
  env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
  proc = subprocess.run(
    [sys.executable, "-m", "chromagan_jax.demo", "--workdir", "demo", "--steps", "2"],
    capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  work = tmp_path / "demo"
  assert "training configs/cpu.py for 2 steps" in proc.stdout
  assert sorted(os.listdir(work / "train" / "checkpoints")) == ["2"]
  holdout = sources.bundled_photos("holdout")
  originals = [images.read_rgb(p) for p in holdout]
  colorized = sorted(os.listdir(work / "colorized"))
  assert len(colorized) == len(holdout) > 0
  for path, original in zip(holdout, originals, strict=True):
    name = os.path.splitext(os.path.basename(path))[0] + "_colorized.png"
    assert np.asarray(Image.open(work / "colorized" / name)).shape == original.shape
  grid = np.asarray(Image.open(work / "before_after.png"))
  assert grid.shape[0] == 256 * len(holdout) and grid.shape[2] == 3
  with open(work / "eval" / "summary.json") as f:
    summary = json.load(f)
  assert summary["num_images"] == len(holdout)
  for result in ("colorized", "baseline"):
    assert np.isfinite(summary["mean"][result]["psnr"]), result
  assert "before/after grid" in proc.stdout and "PSNR" in proc.stdout
