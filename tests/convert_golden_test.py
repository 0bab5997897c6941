"""The weight converter on files written by the real libraries (tests/fixtures/).

tests/convert_formats.py writes the Keras 2 and torch layouts without those libraries, from
the converter's own model of the formats; these golden files were written by tf_keras (Keras
2.21) and torch 2.13 themselves (tests/fixtures/make_fixtures.py, which also stored each
library's output on a fixed input): VGG16 in four formats and a whole ChromaGAN generator
saved by Keras 2, as the authors' files are. The converted weights must reproduce those
outputs.
"""

import importlib.util
import os

import numpy as np
import pytest

from chromagan_jax.model import networks, shapes
from chromagan_jax.weights import keras_port, port

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
_spec = importlib.util.spec_from_file_location("make_fixtures", f"{FIXTURES}/make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
WIDTH = 1 / 64  # make_fixtures.CHANNELS: VGG16's 64 ... 512 channels at width 1/64.
FC_WIDTH = 256  # scaled(256, 1/64) = make_fixtures.FC units.


@pytest.mark.parametrize(
  ("name", "out", "preprocessing"),
  [
    ("vgg16_tiny_keras2_weights.h5", "vgg16_tiny_keras2_out.npy", "caffe"),
    ("vgg16_tiny_keras2_model.h5", "vgg16_tiny_keras2_out.npy", "caffe"),
    ("vgg16_tiny_torch.pth", "vgg16_tiny_torch_out.npy", "torch"),
    ("vgg16_tiny_torch_legacy.pth", "vgg16_tiny_torch_out.npy", "torch"),
  ],
)
def test_vgg16_files_written_by_the_real_libraries(name, out, preprocessing):
  weights = port.read(os.path.join(FIXTURES, name), "vgg16")
  params = weights.variables["params"]
  assert weights.preprocessing == preprocessing
  assert networks.scaled(512, WIDTH) == make_fixtures.CHANNELS[-1][1]
  assert networks.scaled(FC_WIDTH, WIDTH) == make_fixtures.FC
  # The library's own logits on the same input (the weights' preprocessing is the caller's).
  teacher = networks.VGG16Classifier(
    width=WIDTH, num_classes=make_fixtures.CLASSES, fc_width=FC_WIDTH, preprocessing="none"
  )
  got = np.asarray(teacher.apply({"params": params}, make_fixtures.tiny_input()), np.float64)
  want = np.load(os.path.join(FIXTURES, out)).astype(np.float64)
  assert np.abs(want).max() > 0.05 and np.ptp(want, axis=-1).min() > 0.01  # not degenerate
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max() + 1e-7)


def test_generator_saved_whole_by_keras2():
  """The authors' kind of file: a whole generator saved by Keras 2 (tf_keras) model.save."""
  path = os.path.join(FIXTURES, "generator_tiny_keras2_model.h5")
  variables, _ = keras_port.chromagan_generator_from_keras(path)
  fields = shapes.made_for(variables)
  assert fields["image_size"] == make_fixtures.GEN_SIZE
  assert fields["width"] == pytest.approx(make_fixtures.GEN_WIDTH)
  gen = networks.Generator(**fields)
  ab, probs = gen.apply(variables, make_fixtures.generator_input(), train=False)
  want = np.load(os.path.join(FIXTURES, "generator_tiny_keras2_out.npz"))
  assert np.ptp(want["ab"]) > 0.01  # not a constant output
  np.testing.assert_allclose(np.asarray(ab), want["ab"], rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(probs), want["probs"], rtol=0, atol=1e-6)
