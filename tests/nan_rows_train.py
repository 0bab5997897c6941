"""train.py with a Lab conversion that gives NaN: run as one process of a multi-process run,
it feeds NaN rows into the global batch, as a corrupt input would (distributed_train_test).

  python tests/nan_rows_train.py TRAIN_PY_FLAGS...
"""

import os
import runpy
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from chromagan_jax.ops import color  # noqa: E402

_rgb_to_net = color.rgb_to_net


def _nan_rows(rgb):
  lightness, ab = _rgb_to_net(rgb)
  return lightness * float("nan"), ab


color.rgb_to_net = _nan_rows
sys.argv[0] = os.path.join(_ROOT, "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")
