"""train.py end to end: on a folder with a corrupt file (subprocess) and on mock imagenet2012."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import photo_batch
from PIL import Image

from chromagan_jax.configs import tiny
from chromagan_jax.training import trainer
from chromagan_jax.weights import checkpoint

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # two train.py processes (each imports TensorFlow and JAX, then trains)
def test_train_py_on_a_folder_with_a_corrupt_file(tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  for i, rgb in enumerate(photo_batch(6, size=80)["rgb"]):
    Image.fromarray(rgb).save(photos / f"p{i}.{'png' if i % 2 else 'jpg'}")
  (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  workdir = tmp_path / "work"
  cmd = [
    sys.executable,
    os.path.join(_ROOT, "train.py"),
    f"--config={os.path.join(_ROOT, 'configs', 'tiny.py')}",
    f"--workdir={workdir}",
    "--config.data.source=folder",
    f"--config.data.path={photos}",
    "--config.num_train_steps=2",
  ]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "broken.jpg" in result.stderr
  assert "data/skipped_files=1" in result.stderr  # The running count, logged with the losses.
  assert checkpoint.manager(workdir / "checkpoints", read_only=True).latest_step() == 2

  # Bad input: a missing folder is one clear line, exit code 1, no traceback.
  cmd[-2] = f"--config.data.path={tmp_path / 'nope'}"
  result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 1
  assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_training_on_mock_imagenet2012(tmp_path):
  config = tiny.get_config()
  config.data.source = "tfds"
  config.data.tfds_name = "imagenet2012"
  config.num_train_steps = 2
  with tfds.testing.mock_data(num_examples=16):
    state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(state))
