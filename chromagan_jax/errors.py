"""Errors the user can fix: bad flags, configs, files, data or weights.

Every such error derives from :class:`UserError`, whose message is one line naming the file or
setting and the problem. Every command (through ``runtime/runner.py``) catches ``UserError``
alone and prints ``error: <message>`` without a traceback; anything else is a bug and keeps
its traceback.

The subclasses say where the error arose; they live here (not in the modules that raise them)
so that a module can raise another's error without importing it, and are re-exported by their
modules (``checkpoint.CheckpointError`` is ``errors.CheckpointError``).
"""


class UserError(ValueError):
  """Bad input the user can correct; the message is one line naming the culprit.

  A ``ValueError`` so that callers which already treat bad values as ``ValueError`` keep
  working.
  """


class ConfigError(UserError):
  """The config does not fit the machine, the data or the given weights."""


class CheckpointError(UserError):
  """A checkpoint directory is missing, empty or does not fit the model."""


class DataError(UserError):
  """The training or evaluation data is missing, empty or unreadable."""


class ConversionError(UserError):
  """A weight file cannot be read or does not fit: wrong kind of file, truncated, or shapes."""


class ImageError(UserError):
  """An image file cannot be read; the message names the file and the problem."""


class EvalError(UserError):
  """Bad evaluation input (no data, unreadable source)."""


class NonFiniteLossError(UserError):
  """A loss became NaN/inf; the run stops without checkpointing the bad state."""


class VideoError(UserError):
  """A video file cannot be colorized: empty, not a video, no video stream, unsupported codec,
  corrupt or truncated; the message names the file and the problem."""


class ShapeError(UserError):
  """Weights (a file, a converted or a training checkpoint) do not fit the configured model."""


class MissingExtraError(UserError):
  """A feature's optional dependencies (a ``pip install 'chromagan-jax[extra]'``) are missing;
  the message names the extra (see :mod:`chromagan_jax.extras`)."""
