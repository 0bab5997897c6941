"""Tests of checkpoint.load_generator: head-free partial restore, one-line errors, which
generator (trained or moving average) each inference command loads, and the msgpack weights
file (export, round trip, checksum)."""

import csv
import hashlib
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import logging as absl_logging
from helpers import (
  app_colorizers,
  assert_trees_equal,
  colourful_generator_variables,
  random_generator_variables,
  small_config,
)
from PIL import Image
from skimage import data as skdata
from skimage import metrics as skmetrics

from chromagan_jax import app, colorize, evaluate, export
from chromagan_jax.errors import CheckpointError, ShapeError, UserError
from chromagan_jax.evaluation import video_flicker
from chromagan_jax.inference import engine, exporter
from chromagan_jax.model import networks, predict
from chromagan_jax.runtime import machine
from chromagan_jax.weights import checkpoint, msgpack_file, port

jax.config.update("jax_disable_most_optimizations", True)


def _save_unpacked(directory, variables, config):
  """A generator checkpoint with one folder per array (no OCDBT), so single arrays can be
  damaged on disk; otherwise the layout of checkpoint.save_generator."""
  handlers = {
    checkpoint.GENERATOR: ocp.PyTreeCheckpointHandler(use_ocdbt=False),
    checkpoint.CONFIG: ocp.JsonCheckpointHandler(),
  }
  mngr = ocp.CheckpointManager(directory, item_handlers=handlers)
  mngr.save(
    0,
    args=ocp.args.Composite(
      **{
        checkpoint.GENERATOR: ocp.args.PyTreeSave(variables),
        checkpoint.CONFIG: ocp.args.JsonSave(config.to_dict()),
      }
    ),
  )
  mngr.wait_until_finished()
  mngr.close()


def test_head_free_load_reads_no_class_head_array(tmp_path):
  config = small_config()
  variables = random_generator_variables(config)
  _save_unpacked(tmp_path, variables, config)
  full, _ = checkpoint.load_generator(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, full, variables)
  # Delete the class head's data (keeping each array's .zarray header): a load that read it
  # would fail, as the full load below does.
  removed = 0
  for name in os.listdir(tmp_path / "0" / "generator"):
    if any(f"params.{layer}." in name for layer in networks.CLASS_HEAD):
      for root, _, files in os.walk(tmp_path / "0" / "generator" / name):
        for f in files:
          if not f.startswith("."):
            os.remove(os.path.join(root, f))
            removed += 1
  assert removed >= 2 * len(networks.CLASS_HEAD)
  head_free, saved = checkpoint.load_generator(tmp_path, with_class_head=False)
  assert saved.model.width == config.model.width
  jax.tree.map(np.testing.assert_array_equal, head_free, networks.without_class_head(variables))
  with pytest.raises(checkpoint.CheckpointError, match="cannot read the generator"):
    checkpoint.load_generator(tmp_path)


def test_reading_a_checkpoint_logs_no_orbax_warnings(tmp_path):
  """Issue 17: one evaluation printed Orbax's read-only warnings six times. Loading (config and
  weights, each through a read-only manager) logs no warning; a writing manager still may."""
  config = small_config()
  checkpoint.save_generator(tmp_path, random_generator_variables(config), config)
  records = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = records.append
  absl_logger = absl_logging.get_absl_logger()
  absl_logger.addHandler(handler)
  try:
    checkpoint.load_generator(tmp_path)
    checkpoint.load_config(tmp_path)
    assert [r.getMessage() for r in records] == []
    # The handler sees Orbax's warnings when they are not filtered (the test can fail).
    ocp.CheckpointManager(
      tmp_path, options=ocp.CheckpointManagerOptions(read_only=True, create=False)
    )
    assert any("read only" in r.getMessage() for r in records)
  finally:
    absl_logger.removeHandler(handler)
  # The filter is removed again after each read.
  assert not any(isinstance(f, checkpoint._absl_filter) for f in absl_logger.filters)


def test_checkpoint_of_another_size_is_one_line(tmp_path):
  config = small_config()
  checkpoint.save_generator(tmp_path, random_generator_variables(config), config)
  # The stored config now claims another width than the arrays have.
  meta = tmp_path / "0" / "config" / "metadata"
  meta.write_text(meta.read_text().replace('"width": 0.125', '"width": 0.25'))
  with pytest.raises(ShapeError) as err:
    checkpoint.load_generator(tmp_path, with_class_head=False)
  msg = str(err.value)
  assert "\n" not in msg and str(tmp_path) in msg and "width=0.25" in msg
  assert "expected shape" in msg and "found" in msg


def test_corrupt_checkpoint_is_one_line(tmp_path):
  config = small_config()
  checkpoint.save_generator(tmp_path, random_generator_variables(config), config)
  # Overwrite every data file of the generator item with garbage of the same size.
  damaged = 0
  for root, _, files in os.walk(tmp_path / "0" / "generator"):
    for f in files:
      path = os.path.join(root, f)
      if os.sep + "d" + os.sep in path:
        size = os.path.getsize(path)
        with open(path, "wb") as fh:
          fh.write(b"\x00garbage" * (size // 8 + 1))
        damaged += 1
  assert damaged
  with pytest.raises(checkpoint.CheckpointError) as err:
    checkpoint.load_generator(tmp_path, with_class_head=False)
  assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_inference_commands_load_the_moving_average_unless_told_otherwise(
  tmp_path, monkeypatch, capsys
):
  """A training checkpoint holds ``generator`` and ``generator_ema``: colorize.py, evaluate,
  the app and export use the moving average by default, ``evaluate --no_ema`` the trained
  one. The two items hold different colourful generators, so outputs tell them apart."""
  config = small_config()
  live = colourful_generator_variables(config, seed=0)
  ema = colourful_generator_variables(config, seed=1)
  mngr = checkpoint.manager(tmp_path / "ckpt")
  checkpoint.save(mngr, 3, {checkpoint.GENERATOR: live, checkpoint.GENERATOR_EMA: ema}, config)
  mngr.wait_until_finished()
  mngr.close()
  ckpt = str(tmp_path / "ckpt")
  photos = tmp_path / "photos"
  photos.mkdir()
  truth = {}  # At the network size: evaluate's resize is the identity.
  for name in ("astronaut", "chelsea"):
    truth[name] = np.asarray(Image.fromarray(getattr(skdata, name)()).resize((64, 64)))
    Image.fromarray(truth[name]).save(photos / f"{name}.png")

  def colours(variables, rgb):
    return engine.colorize([rgb], variables, config)[0].astype(int)

  # The two generators' pictures differ by far more than the 1 level of uint8 rounding.
  rgb = truth["astronaut"]
  assert np.abs(colours(ema, rgb) - colours(live, rgb)).mean() > 5

  # colorize.py
  out = tmp_path / "colorized"
  status = colorize.main(["--ckpt", ckpt, "--output", str(out), str(photos / "astronaut.png")])
  assert status == 0
  got = np.asarray(Image.open(out / "astronaut.png")).astype(int)
  assert np.abs(got - colours(ema, rgb)).max() <= 1

  # evaluate, default and --no_ema: the per-image PSNR of each generator's colours.
  model = predict.generator_from(config, machine.conv_policy(config.model.get("conv_impl")))
  for flags, variables, is_ema in (([], ema, True), (["--no_ema"], live, False)):
    out = tmp_path / f"eval{len(flags)}"
    argv = ["--ckpt", ckpt, "--data", str(photos), "--output", str(out), "--no_progress"]
    assert evaluate.main(argv + flags) == 0, capsys.readouterr().err
    with open(out / "per_image.csv") as f:
      rows = {os.path.basename(r["image"]): float(r["colorized_psnr"]) for r in csv.DictReader(f)}
    for name, rgb in truth.items():
      colour = np.asarray(engine.colorize_small(model, variables, rgb[None])[1])[0]
      want = skmetrics.peak_signal_noise_ratio(rgb, colour, data_range=255)
      assert rows[f"{name}.png"] == pytest.approx(want, abs=0.01), (flags, name)
    with open(out / "summary.json") as f:
      assert f'"ema": {str(is_ema).lower()}' in f.read()

  # evaluate on a video: the colorizer it would run (stopped before decoding).
  clip = tmp_path / "clip.mp4"
  clip.write_bytes(b"")
  used = []

  def stop(path, colorizer, **kwargs):
    used.append(colorizer)
    raise UserError("stopped by the test")

  monkeypatch.setattr(video_flicker, "evaluate_video", stop)
  for flags, variables in (([], ema), (["--no_ema"], live)):
    argv = ["--ckpt", ckpt, "--data", str(clip), "--output", str(tmp_path / "v")]
    assert evaluate.main(argv + flags) == 1 and "stopped by the test" in capsys.readouterr().err
    assert_trees_equal(used.pop().variables, networks.without_class_head(variables))

  # The app: the colorizer its server would use.
  served = app_colorizers(monkeypatch)
  assert app.main(["--ckpt", ckpt, "--compilation_cache", ""]) == 0
  assert_trees_equal(served[0].variables, networks.without_class_head(ema))

  # export: the ONNX graph's ab.
  import onnxruntime as ort

  onnx_path = str(tmp_path / "model.onnx")
  assert export.main(["--ckpt", ckpt, "--format", "onnx", "--output", onnx_path]) == 0
  session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  lightness = np.asarray(
    engine.predict_ab(model, networks.without_class_head(ema), rgb[None])[0], np.float32
  )
  got = session.run([exporter.OUTPUT_NAME], {exporter.INPUT_NAME: lightness})[0]
  for variables, close in ((ema, True), (live, False)):
    want = np.asarray(
      engine.predict_ab(model, networks.without_class_head(variables), rgb[None])[1]
    )
    assert (np.abs(got - want).max() < 1e-5) == close


# ----------------------------------------------------------------------------------------
# The msgpack weights file (python -m chromagan_jax.export --format msgpack).


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(checkpoint directory, its full generator variables as NumPy)."""
  config = small_config()
  directory = str(tmp_path_factory.mktemp("trained"))
  variables = random_generator_variables(config, seed=3)
  checkpoint.save_generator(directory, variables, config)
  return directory, jax.tree.map(np.asarray, variables)


def _export(ckpt, output, *flags):
  assert export.main(["--ckpt", ckpt, "--format", "msgpack", "--output", output, *flags]) == 0


def test_msgpack_round_trip_is_bit_exact(trained, tmp_path, capsys):
  directory, full = trained
  head_free = str(tmp_path / "chromagan.msgpack")
  _export(directory, head_free)
  with open(head_free, "rb") as f:
    data = f.read()
  assert f"file sha256 {hashlib.sha256(data).hexdigest()}" in capsys.readouterr().out
  assert data.startswith(msgpack_file.MSGPACK_MAGIC) and b"pickle" not in data[:200]
  variables, config = checkpoint.load_generator(head_free, with_class_head=False)
  assert_trees_equal(jax.tree.map(np.asarray, variables), networks.without_class_head(full))
  assert checkpoint.load_config(head_free)[1].model == small_config().model
  # Colorizing needs no class head; fine-tuning does, and says how to get it.
  with pytest.raises(ShapeError, match="class_fc1.*found nothing.*--with_class_head"):
    checkpoint.load_generator(head_free)
  whole = str(tmp_path / "chromagan_full.msgpack")
  _export(directory, whole, "--with_class_head")
  assert_trees_equal(jax.tree.map(np.asarray, checkpoint.load_generator(whole)[0]), full)
  assert_trees_equal(port.read(whole, "generator").variables, full)  # config.init.generator=FILE


def test_colorize_reads_the_msgpack_file_like_the_directory(trained, tmp_path):
  directory, _ = trained
  path = str(tmp_path / "chromagan.msgpack")
  _export(directory, path)
  photo = tmp_path / "in" / "p.png"
  photo.parent.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photo)
  outputs = []
  for ckpt, out in ((directory, "from_dir"), (path, "from_file")):
    assert colorize.main(["--ckpt", ckpt, "--output", str(tmp_path / out), str(photo)]) == 0
    outputs.append(np.asarray(Image.open(tmp_path / out / "p.png")))
  np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("damage", ["truncated", "one_byte_altered"])
def test_msgpack_file_damaged_is_refused_by_its_checksum(trained, tmp_path, damage):
  directory, _ = trained
  path = str(tmp_path / "chromagan.msgpack")
  _export(directory, path)
  with open(path, "r+b") as f:
    if damage == "truncated":
      f.truncate(os.path.getsize(path) - 1000)
    else:
      f.seek(os.path.getsize(path) // 2)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0x01]))
  with pytest.raises(CheckpointError, match="truncated or altered"):
    checkpoint.load_generator(path, with_class_head=False)
  messages = []
  status = colorize.main(
    ["--ckpt", path, "--output", str(tmp_path / "o"), path], log=messages.append
  )
  err = "\n".join(messages)
  assert status != 0 and "truncated or altered" in err, err
