"""Orbax checkpoints: one layout shared by training, the converter and colorization.

A checkpoint directory holds one sub-directory per step, each with a ``config`` item and the
weights items it has:
  * ``generator``: ``{'params', 'batch_stats'}`` of the generator, all that inference needs;
  * ``generator_ema``: the same with the moving average of the parameters, when training keeps
    one (``config.optimizer.ema_decay``); inference prefers it (:func:`load_generator`);
  * ``train``: everything else of the train state (critic, optimizer states, step, rng);
  * ``vgg16``: VGG16 classifier (or trunk-only) params: ``convert vgg16`` output;
  * ``critic``: critic ``{'params'}``: ``convert critic`` output;
  * ``config``: the JSON config the checkpoint was trained (or converted) with; its ``model``
    section rebuilds the networks, and converted checkpoints record ``converted`` (kind,
    source file, the input preprocessing the weights were trained with).
Training writes ``generator`` + ``train`` (+ ``generator_ema``); ``python -m
chromagan_jax.convert`` writes step 0 with one weights item. Splitting the generator out lets
``colorize.py`` read ~0.7 GB instead of the full ~2.7 GB train state, and lets converted
weights and trained checkpoints load the same way. Directories written by earlier converters
(``params/`` + ``conversion.json``) are refused in one line naming the re-conversion command.

For passing weights on, a generator also travels as one pickle-free file
(:mod:`msgpack_file`); :func:`load_generator` and :func:`load_config` take such a file wherever
they take a directory.
"""

import contextlib
import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from chromagan_jax.configs import upgrade
from chromagan_jax.errors import CheckpointError, UserError
from chromagan_jax.model import networks, shapes
from chromagan_jax.weights import msgpack_file

GENERATOR = "generator"


GENERATOR_EMA = "generator_ema"


TRAIN = "train"


VGG16 = "vgg16"


CRITIC = "critic"


CONFIG = "config"


WEIGHT_ITEMS = (GENERATOR, GENERATOR_EMA, TRAIN, VGG16, CRITIC)


# The layout of earlier converters: an Orbax PyTree in params/ and a JSON description.
LEGACY_PARAMS = "params"


LEGACY_INFO = "conversion.json"


def file_sha256(path) -> tuple[str, int]:
  """(SHA-256 hex digest, size in bytes) of a file, read in 1 MiB chunks."""
  digest, size = hashlib.sha256(), 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
      size += len(chunk)
  return digest.hexdigest(), size


def log_provenance(where, config) -> None:
  """Logs, in one line, the source file a converted checkpoint came from and its SHA-256.

  HDF5 keeps no checksum of its datasets: the digest the converter recorded is what lets a
  user tell which file (and whether an intact one) the weights were converted from.
  """
  converted = config.get("converted") if hasattr(config, "get") else None
  if converted is not None and converted.get("sha256"):
    logging.info(
      "%s: converted from %s (sha256 %s, %s bytes)",
      where,
      converted.get("source"),
      converted.sha256,
      f"{converted.get('size_bytes', 0):,}",
    )


def absolute(path) -> epath.Path:
  """``path`` as an absolute local path (Orbax's async saves reject relative ones); URLs kept."""
  return epath.Path(path) if "://" in str(path) else epath.Path(os.fspath(path)).absolute()


def resolve_directory(path) -> epath.Path:
  """Accepts a training workdir (uses ``<workdir>/checkpoints``) or a checkpoint directory."""
  path = absolute(path)
  if (path / "checkpoints").is_dir():
    return path / "checkpoints"
  return path


def manager(directory, max_to_keep=None, read_only=False) -> ocp.CheckpointManager:
  """A CheckpointManager over ``directory`` with the items above.

  ``read_only`` managers (evaluate, colorize, the app) are built with the options Orbax would
  otherwise force with a warning each, and without its "Given directory is read only" warning:
  reading is what was asked for, and one evaluation builds several managers (issue 17 saw six
  such warnings for one evaluation).
  """
  options = ocp.CheckpointManagerOptions(
    max_to_keep=None if read_only else max_to_keep,
    create=not read_only,
    read_only=read_only,
    save_interval_steps=0 if read_only else 1,
  )
  handlers = {item: ocp.StandardCheckpointHandler() for item in WEIGHT_ITEMS}
  handlers[CONFIG] = ocp.JsonCheckpointHandler()
  with _absl_filter(_READ_ONLY_NOTICE) if read_only else contextlib.nullcontext():
    return ocp.CheckpointManager(absolute(directory), options=options, item_handlers=handlers)


_READ_ONLY_NOTICE = "Given directory is read only"


class _absl_filter:
  """Drops absl log records whose format string starts with ``prefix``, while in the block."""

  def __init__(self, prefix: str):
    self._prefix = prefix

  def filter(self, record) -> bool:
    return not str(record.msg).startswith(self._prefix)

  def __enter__(self):
    logging.get_absl_logger().addFilter(self)
    return self

  def __exit__(self, *exc):
    logging.get_absl_logger().removeFilter(self)


def complete_steps(directory) -> list[int]:
  """Steps of ``directory`` whose save completed, without a manager (no multi-host barrier).

  Orbax writes a step into a temporary directory and renames it (or, on object stores, marks
  it committed) when every process has written its part: a save cut short is never listed.
  """
  return sorted(ocp.path.step.checkpoint_steps(absolute(directory)))


def save(mngr, step: int, items: dict[str, Any], config, force: bool = False) -> bool:
  """Saves (asynchronously) weights items (``{GENERATOR: ..., TRAIN: ...}``) and the config."""
  config_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
  args[CONFIG] = ocp.args.JsonSave(config_dict)
  return mngr.save(step, args=ocp.args.Composite(**args), force=force)


def restore(mngr, step: int, wanted: dict[str, Any]) -> dict[str, Any]:
  """Restores weights items (``{name: abstract pytree}``) onto the abstract trees' shardings.

  Shapes are checked against the checkpoint's metadata first (:func:`shapes.check_shapes`):
  Orbax would otherwise restore arrays of another model size without complaint.
  """
  source = f"checkpoint {mngr.directory}/{step}"
  meta = mngr.item_metadata(step)
  found = {}
  for name, abstract in wanted.items():
    if name not in meta or meta[name] is None:
      raise shapes.mismatch(
        source,
        f"it has no {name} item",
        target="this config",
        remedy="resume with the config it was trained with (config.optimizer.ema_decay decides "
        "whether there is a generator_ema item), or use a fresh --workdir",
      )
    # Matched by leaf order: optax's named tuples are stored under other key names.
    leaves = jax.tree.leaves(meta[name])
    if len(leaves) != len(jax.tree.leaves(abstract)):
      raise shapes.mismatch(
        source,
        f"its {name} item holds {len(leaves)} arrays, the config needs "
        f"{len(jax.tree.leaves(abstract))}",
        made_for_fields=lambda: _saved_model_fields(mngr.directory, step),
        remedy=_RESUME_REMEDY,
      )
    found[name] = jax.tree.unflatten(jax.tree.structure(abstract), leaves)
  shapes.check_shapes(
    found,
    wanted,
    source,
    made_for_fields=lambda: _saved_model_fields(mngr.directory, step),
    remedy=_RESUME_REMEDY,
  )
  try:
    out = mngr.restore(
      step,
      args=ocp.args.Composite(
        **{name: ocp.args.StandardRestore(tree) for name, tree in wanted.items()}
      ),
    )
  except (ValueError, KeyError, TypeError) as e:
    detail = " ".join(str(e).split())  # Orbax's messages span lines; errors here are one.
    raise CheckpointError(
      f"{source} does not fit this model/config ({detail}); use a fresh --workdir or the "
      "config it was trained with"
    ) from e
  return {name: out[name] for name in wanted}


_RESUME_REMEDY = "use that model config, or a fresh --workdir"


def _saved_model_fields(directory, step) -> dict[str, Any]:
  """The model fields a checkpoint's stored config names (for error messages)."""
  return load_config(directory, step)[1].model.to_dict()


def save_weights(directory, item: str, tree, config, step: int = 0) -> None:
  """Writes one weights ``item`` (see the module docstring) and ``config`` as a checkpoint."""
  if item not in WEIGHT_ITEMS:
    raise ValueError(f"unknown checkpoint item {item!r}; expected one of {WEIGHT_ITEMS}")
  config_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  mngr = manager(directory)
  args = {item: ocp.args.StandardSave(tree), CONFIG: ocp.args.JsonSave(config_dict)}
  mngr.save(step, args=ocp.args.Composite(**args), force=True)
  mngr.wait_until_finished()
  mngr.close()


def save_generator(directory, variables, config, step: int = 0) -> None:
  """Writes generator variables as a checkpoint that ``colorize.py --ckpt`` accepts."""
  save_weights(directory, GENERATOR, variables, config, step)


def load_config(directory, step=None) -> tuple[int, ml_collections.ConfigDict]:
  """(step, config) stored in a checkpoint directory; ``step=None`` picks the latest.

  The config comes back upgraded to today's fields (:func:`upgrade.upgrade`), whatever
  version saved it.
  A msgpack weights file (:func:`msgpack_file.save_msgpack`) is step 0.
  """
  if msgpack_file.is_msgpack_file(directory):
    return 0, upgrade.upgrade(msgpack_file.load_msgpack(directory)[1])
  directory = resolve_directory(directory)
  if not directory.is_dir():
    raise CheckpointError(f"{directory}: checkpoint directory not found")
  steps = manager(directory, read_only=True).all_steps()
  if not steps:
    raise CheckpointError(f"{directory}: no checkpoints in this directory")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise CheckpointError(f"{directory}: no checkpoint for step {step} (have {sorted(steps)})")
  config_file = directory / str(step) / CONFIG / "metadata"
  if not config_file.exists():
    raise CheckpointError(f"{directory}/{step}: checkpoint has no config item")
  return step, upgrade.upgrade(json.loads(config_file.read_text()))


def is_legacy_conversion(directory) -> bool:
  """Whether ``directory`` is an earlier converter's ``params/`` + ``conversion.json``."""
  directory = epath.Path(directory)
  return (directory / LEGACY_INFO).is_file() and (directory / LEGACY_PARAMS).is_dir()


def _refuse_legacy(directory) -> CheckpointError:
  """The one-line error for an earlier converter's directory: the command that re-converts it."""
  info = json.loads((directory / LEGACY_INFO).read_text())
  kind, source = info.get("kind", "KIND"), info.get("source", "SOURCE")
  return CheckpointError(
    f"{directory}: converted by an earlier version ({LEGACY_PARAMS}/ + {LEGACY_INFO}), no "
    f"longer read; convert the file again: python -m chromagan_jax.convert {kind} {source} NEW_DIR"
  )


def _is_array_metadata(x) -> bool:
  return hasattr(x, "shape") and hasattr(x, "dtype")


def _check_stored(variables, config, network: str, where: str, **check):
  """:func:`shapes.check` of ``variables`` against the ``network`` their stored ``config``
  describes; returns the abstract variables to restore. A config that describes no such
  network raises CheckpointError."""
  try:
    return shapes.check(
      variables,
      config.model,
      network,
      where,
      target=f"the model its config describes ({shapes.describe(config.model)})",
      **check,
    )
  except UserError:
    raise
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{where}: config does not describe a {network} ({e})") from None


def _restore_item(
  directory, step, config, item: str, network: str | None = None, with_class_head: bool = True
):
  """Restores ``item`` of ``directory/step`` on the default device.

  With ``network`` the saved arrays are first checked against that network as the stored
  config describes it (:func:`_check_stored`), and only its arrays are restored
  (``with_class_head=False``: the generator's class head is not read); without, the item is
  restored as saved. Unreadable or damaged data raises CheckpointError.
  """
  where = f"{directory}/{step}"
  item_dir = directory / str(step) / item
  if not item_dir.is_dir():
    if "converted" in config:
      raise CheckpointError(
        f"{directory}: holds converted {config.converted.kind!r} weights, {item!r} weights "
        "were expected"
      )
    raise CheckpointError(f"{where}: checkpoint has no {item} item")
  handler = ocp.PyTreeCheckpointHandler()
  try:
    try:
      meta = handler.metadata(item_dir).tree
    except Exception as e:  # noqa: BLE001 - any unreadable metadata is a corrupt checkpoint.
      raise CheckpointError(f"{where}: cannot read the {item} ({type(e).__name__}: {e})") from None
    if network is None:
      expected = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta, is_leaf=_is_array_metadata
      )
    else:
      expected = _check_stored(meta, config, network, where, with_class_head=with_class_head)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), expected
    )
    try:
      return handler.restore(
        item_dir,
        args=ocp.args.PyTreeRestore(
          item=abstract,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
          partial_restore=not with_class_head,
        ),
      )
    except Exception as e:  # noqa: BLE001 - tensorstore/Orbax errors on damaged files.
      raise CheckpointError(f"{where}: cannot read the {item} ({type(e).__name__}: {e})") from None
  finally:
    handler.close()


def load_item(directory, item: str, step=None) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  """One weights item (see the module docstring), as saved, and the config of a checkpoint.

  ``directory``: a training workdir, its ``checkpoints`` directory or a converter output
  (an earlier converter's ``params/`` + ``conversion.json`` is refused). Arrays are restored
  on the default device.
  """
  directory = resolve_directory(directory)
  if is_legacy_conversion(directory):
    raise _refuse_legacy(directory)
  step, config = load_config(directory, step)
  log_provenance(f"{directory}/{step}", config)
  return _restore_item(directory, step, config, item), config


def has_generator_ema(directory, step: int) -> bool:
  """Whether step ``step`` of a checkpoint directory holds the moving-average generator."""
  return (resolve_directory(directory) / str(step) / GENERATOR_EMA).is_dir()


def generator_item(directory, step: int, ema: bool | None = None) -> str:
  """The generator item to read from step ``step`` of a checkpoint directory.

  ``ema``: None picks the moving-average generator (``generator_ema``) when the step has one,
  else the trained one; True requires it (CheckpointError without); False the trained one.
  """
  directory = resolve_directory(directory)
  has_ema = has_generator_ema(directory, step)
  if ema and not has_ema:
    raise CheckpointError(
      f"{directory}/{step}: has no moving-average generator "
      "(trained with config.optimizer.ema_decay=0)"
    )
  if has_ema and ema is not False:
    logging.info("%s/%s: using the moving-average generator (generator_ema)", directory, step)
    return GENERATOR_EMA
  return GENERATOR


def load_generator(
  directory, step=None, with_class_head: bool = True, ema: bool | None = None
) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  """Generator variables ``{'params', 'batch_stats'}`` and the config of a checkpoint.

  ``ema``: None reads the moving-average generator (``generator_ema``) when the checkpoint
  has one, else the trained one; True requires it; False reads the trained one.

  ``directory``: a training workdir, its ``checkpoints`` directory or a converter output.
  ``with_class_head=False`` reads only what ab depends on: the class head's arrays
  (:data:`networks.CLASS_HEAD`, 124 M of 171 M parameters at the paper's size) are not read
  from disk at all (an Orbax partial restore), for ``networks.Generator(with_class_head=False)``.
  Every array's shape is checked against the generator that the stored config describes.
  Arrays are restored on the default device.

  Raises:
    CheckpointError: missing, unreadable or corrupt checkpoint (one line naming it).
    ShapeError: arrays that do not fit its config (naming the first parameter that differs).
  """
  if msgpack_file.is_msgpack_file(directory):
    return _load_msgpack_generator(directory, with_class_head)
  directory = resolve_directory(directory)
  step, config = load_config(directory, step)
  log_provenance(f"{directory}/{step}", config)
  item = generator_item(directory, step, ema)
  out = _restore_item(directory, step, config, item, "generator", with_class_head)
  return out, config


def read_msgpack(path) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  """(generator variables as saved, NumPy; config as saved) of a msgpack weights file,
  checked by its SHA-256 (:func:`msgpack_file.load_msgpack`), not yet against a model."""
  path = os.fspath(path)
  variables, config, digest = msgpack_file.load_msgpack(path)
  logging.info("%s: msgpack weights, sha256 %s verified", path, digest)
  log_provenance(path, config)
  return variables, config


def _load_msgpack_generator(path, with_class_head: bool):
  """:func:`load_generator` of a msgpack weights file (checked by its SHA-256, then shapes)."""
  path = os.fspath(path)
  variables, config = read_msgpack(path)
  if not with_class_head:
    variables = networks.without_class_head(variables)
  _check_stored(variables, config, "generator", path, with_class_head=with_class_head)
  device = jax.devices()[0]
  return jax.tree.map(lambda x: jax.device_put(np.asarray(x), device), variables), config
