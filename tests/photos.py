"""Real photos for tests: scikit-image ships these inside its wheel."""

import numpy as np
import skimage.data
import skimage.transform


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
