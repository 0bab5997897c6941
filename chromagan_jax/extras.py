"""The optional dependencies: each feature beyond colorizing photos imports its own on use.

``pip install chromagan-jax`` (the core) converts the authors' ``.h5`` weights and colorizes
photos and folders; the extras of ``pyproject.toml`` add the rest (``train``: TensorFlow,
tensorflow-datasets, clu, TensorBoard; ``app``: Flask; ``video``: PyAV; ``export``: ONNX and
TensorFlow; ``demo``: scikit-image's photos and ``train``). A module that needs one imports it
through :func:`require` where it is used, never at import time, so that the core imports
without them and a missing extra is one line naming it instead of a traceback.
"""

import importlib
from types import ModuleType

from chromagan_jax.errors import MissingExtraError


def missing(extra: str, feature: str) -> MissingExtraError:
  """The one-line error for ``feature`` (e.g. 'video') without the extra ``extra``."""
  return MissingExtraError(
    f"{feature} needs the '{extra}' extra: pip install 'chromagan-jax[{extra}]'"
  )


def require(module: str, extra: str, feature: str) -> ModuleType:
  """Imports ``module`` (dotted) for ``feature``; :func:`missing` when it is not installed.

  A module that is installed but fails to import for another reason keeps its ImportError
  (and traceback): reinstalling the extra would not be the cure.
  """
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError:
    raise missing(extra, feature) from None
