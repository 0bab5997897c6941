"""The msgpack weights file: a generator and its config in one pickle-free file.

Written by :func:`save_msgpack` (``python -m chromagan_jax.export --format msgpack``): the line
``MSGPACK_MAGIC``, the SHA-256 (hex) of the payload and a newline, then the payload, a
``flax.serialization`` msgpack map ``{'config': JSON text, 'generator': variables}``. The
digest is checked on every load, so a truncated or altered copy fails in one line.
"""

import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import serialization

from chromagan_jax.errors import CheckpointError

MSGPACK_MAGIC = b"chromagan-jax generator msgpack v1\n"


_DIGEST_LEN = 64  # Hex SHA-256, then b"\n".


def is_msgpack_file(path) -> bool:
  """Whether ``path`` is a file in the msgpack weights format (starts with MSGPACK_MAGIC)."""
  path = os.fspath(path)
  if "://" in path or not os.path.isfile(path):
    return False
  with open(path, "rb") as f:
    return f.read(len(MSGPACK_MAGIC)) == MSGPACK_MAGIC


def save_msgpack(path, variables, config) -> str:
  """Writes generator ``variables`` (with or without the class head) and ``config`` (its
  ``model`` section rebuilds the network) as one msgpack file; returns the payload's SHA-256.

  Arrays are stored as float32 NumPy (``flax.serialization``'s ndarray extension): no pickle,
  bit-exact on reading.
  """
  config_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  tree = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  payload = serialization.msgpack_serialize({"config": json.dumps(config_dict), "generator": tree})
  digest = hashlib.sha256(payload).hexdigest()
  with open(path, "wb") as f:
    f.write(MSGPACK_MAGIC + digest.encode("ascii") + b"\n" + payload)
  return digest


def load_msgpack(path) -> tuple[dict[str, Any], ml_collections.ConfigDict, str]:
  """(generator variables as NumPy, config, payload SHA-256) of a :func:`save_msgpack` file.

  Raises CheckpointError (one line) when the payload's SHA-256 differs from the recorded one
  (a truncated, altered or damaged file) or the file is not in this format.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    data = f.read()
  header = len(MSGPACK_MAGIC) + _DIGEST_LEN + 1
  if not data.startswith(MSGPACK_MAGIC) or len(data) < header or data[header - 1 : header] != b"\n":
    raise CheckpointError(f"{path}: not a chromagan-jax msgpack weights file")
  recorded = data[len(MSGPACK_MAGIC) : header - 1].decode("ascii", "replace")
  payload = data[header:]
  actual = hashlib.sha256(payload).hexdigest()
  if actual != recorded:
    raise CheckpointError(
      f"{path}: SHA-256 of the weights is {actual}, the file records {recorded}: the file is "
      f"truncated or altered ({len(data):,} bytes); copy it again"
    )
  try:
    tree = serialization.msgpack_restore(payload)
    config = ml_collections.ConfigDict(json.loads(tree["config"]))
    variables = tree["generator"]
  except Exception as e:  # noqa: BLE001 - a payload that passed its digest but is not ours.
    raise CheckpointError(f"{path}: unreadable msgpack weights ({type(e).__name__}: {e})") from None
  return variables, config, actual
