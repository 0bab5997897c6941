"""Single-process training-loop claims: TensorBoard scalars and sample grids, checkpoint
retention, a SIGTERM stop then a resume from that checkpoint, and the second-signal path.

(Multi-process stop/save decisions are tested in distributed_test.)
"""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from skimage import color as skcolor
from tensorboard.backend.event_processing import event_accumulator

from chromagan_jax.configs import tiny
from chromagan_jax.data import pipeline, sources
from chromagan_jax.training import trainer
from chromagan_jax.weights import checkpoint


def read_events(workdir):
  """{tag: [(step, value)]}: scalars as floats, images as decoded uint8 arrays."""
  acc = event_accumulator.EventAccumulator(
    str(workdir), size_guidance={event_accumulator.TENSORS: 0}
  )
  acc.Reload()
  out = {}
  for tag in acc.Tags()["tensors"]:
    for event in acc.Tensors(tag):
      value = tf.make_ndarray(event.tensor_proto)
      if value.dtype == object:  # an image summary: [width, height, png, ...]
        value = tf.io.decode_png(value[2]).numpy()
      out.setdefault(tag, []).append((event.step, value))
  return out


@pytest.mark.slow  # two short training runs: ~50 s CPU on 2 cores
def test_sigterm_stop_checkpoints_grids_scalars_and_resume(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.num_train_steps = 50
  config.checkpoint_every_steps = 1
  config.max_checkpoints_to_keep = 2
  config.log_every_steps = 2
  config.sample_every_steps = 2
  real = pipeline.create_train_iterator
  steps_fed = []

  def killing_iterator(cfg, **kwargs):
    for i, batch in enumerate(real(cfg, **kwargs)):
      steps_fed.append(i)
      if i == 2 and len(steps_fed) == 3:  # While step 3 runs, in the first run only.
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(pipeline, "create_train_iterator", killing_iterator)
  state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 3
  mngr = checkpoint.manager(tmp_path / "checkpoints", read_only=True)
  assert mngr.all_steps() == [2, 3]  # every step saved, two kept
  mngr.close()

  events = read_events(tmp_path)
  for tag in ("g/mse", "g/adv", "d/real", "d/fake", "d/gp", "images_per_sec"):
    steps = [s for s, _ in events[tag]]
    assert steps == [1, 2, 3], (tag, steps)  # at every checkpoint (each step), and the stop
    assert all(np.isfinite(float(v)) for _, v in events[tag])
  assert 0 < float(events["g/mse"][0][1]) < 1
  # Sample grids at step 2 and at the stop: rows of [grey | colorized | truth], one per
  # held-out photo (the bundled set has fewer than num_samples).
  assert [s for s, _ in events["samples"]] == [2, 3]
  grid = events["samples"][-1][1]
  size = config.model.image_size
  rows = min(config.num_samples, len(sources.bundled_photos("holdout")))
  assert grid.shape == (rows * size, 3 * size, 3)
  grey, colorized, truth = (grid[:, i * size : (i + 1) * size].astype(int) for i in range(3))
  assert np.abs(grey - grey[..., :1]).max() <= 1  # neutral
  assert np.abs(truth - truth[..., :1]).mean() > 5  # the colour photos
  lightness = [skcolor.rgb2lab(x.astype(np.uint8))[..., 0] for x in (grey, colorized, truth)]
  assert np.abs(lightness[0] - lightness[2]).mean() < 1  # grey keeps the truth's L
  assert np.abs(lightness[1] - lightness[2]).mean() < 3  # colorized too (up to the gamut)

  # Resume right after the SIGTERM checkpoint: from step 3, on to 5.
  config.num_train_steps = 5
  steps_fed.clear()
  resumed = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(resumed.step) == 5 and len(steps_fed) >= 2
  mngr = checkpoint.manager(tmp_path / "checkpoints", read_only=True)
  assert mngr.all_steps() == [4, 5]
  mngr.close()
  events = read_events(tmp_path)
  assert [s for s, _ in events["g/mse"]] == [1, 2, 3, 4, 5]
  assert [s for s, _ in events["samples"]] == [2, 3, 4, 5]


def test_second_signal_stops_waiting():
  """The first SIGINT/SIGTERM asks for a checkpoint and a stop; a second one gives up."""
  previous = signal.getsignal(signal.SIGINT)
  with trainer._StopRequest() as stop:
    assert stop.signum is None
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGINT
  assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
