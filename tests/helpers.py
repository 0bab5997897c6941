"""Helpers shared by several test modules (test modules never import each other).

Real photos (scikit-image ships them inside its wheel), a tree assertion,
random Keras weights, and torchvision's VGG16 layout. Keras is imported only by the helpers
that need it, so importing this module stays cheap.
"""

import jax
import numpy as np
import skimage.data
import skimage.transform

# torchvision's VGG16 layout: conv indices in `features`, Linear indices in `classifier`.
TORCH_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TORCH_LINEARS = (0, 3, 6)


def photo_batch(n=8, size=64):
  """``{'rgb': uint8 (n, size, size, 3)}`` of real photos, with flips and crops for variety."""
  photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
  out = []
  for i in range(n):
    img = photos[i % len(photos)]
    if i >= len(photos):
      img = img[:, ::-1] if i % 2 else img[i * 7 :, i * 5 :]
    out.append(skimage.transform.resize(img, (size, size), preserve_range=True))
  return {"rgb": np.stack(out).round().astype(np.uint8)}


def assert_trees_equal(got, want):
  """Same keys, and every array bit-identical."""
  flat_got = dict(jax.tree_util.tree_leaves_with_path(got))
  flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
  assert sorted(map(str, flat_got)) == sorted(map(str, flat_want))
  for path, value in flat_want.items():
    np.testing.assert_array_equal(flat_got[path], value, err_msg=jax.tree_util.keystr(path))


def randomize(model, seed):
  """Random weights for a Keras model: LeCun-normal kernels, small biases, batch norm with
  non-trivial gamma/beta/mean/variance."""
  import keras  # noqa: PLC0415 - only the Keras tests pay for importing TensorFlow.

  rng = np.random.default_rng(seed)
  for layer in model._flatten_layers(include_self=False, recursive=True):
    if not layer.weights or isinstance(layer, keras.Model):
      continue
    values = []
    for v in layer.weights:
      shape, name = tuple(v.shape), v.name
      if name == "kernel":
        fan_in = int(np.prod(shape[:-1]))
        values.append(rng.normal(0, 1 / np.sqrt(fan_in), shape))
      elif name in ("gamma", "moving_variance"):
        values.append(rng.uniform(0.5, 1.5, shape))
      elif name == "moving_mean":
        values.append(rng.normal(0, 0.5, shape))
      else:  # bias, beta
        values.append(rng.normal(0, 0.1, shape))
    layer.set_weights([x.astype(np.float32) for x in values])
