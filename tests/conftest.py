"""Shared pytest setup: repo root importable (``configs.*``), quiet TensorFlow, Keras on TF."""

import os
import sys

# Must be set before TensorFlow/Keras are imported by any test module.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
