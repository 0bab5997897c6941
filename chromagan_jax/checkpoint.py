"""Orbax checkpoints: one layout shared by training, the converter and colorization.

A checkpoint directory holds one sub-directory per step, each with three items:
  * ``generator``: ``{'params', 'batch_stats'}`` of the generator, all that inference needs;
  * ``train``: everything else of the train state (critic, optimizer states, step, rng),
    absent from converted checkpoints;
  * ``config``: the JSON config the checkpoint was trained (or converted) with; its ``model``
    section rebuilds the generator.
Splitting the generator out lets ``colorize.py`` read ~0.7 GB instead of the full ~2.7 GB
train state, and lets converted weights and trained checkpoints load the same way.
"""

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from chromagan_jax import models
from chromagan_jax.errors import CheckpointError

GENERATOR = "generator"
TRAIN = "train"
CONFIG = "config"
ITEMS = (GENERATOR, TRAIN, CONFIG)


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
  """A CheckpointManager over ``directory`` with the three items above."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep, create=not read_only, read_only=read_only
  )
  handlers = {
    GENERATOR: ocp.StandardCheckpointHandler(),
    TRAIN: ocp.StandardCheckpointHandler(),
    CONFIG: ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(absolute(directory), options=options, item_handlers=handlers)


def save(mngr, step: int, generator, train, config, force: bool = False) -> bool:
  """Saves (asynchronously) the generator variables, the rest of the state and the config."""
  config_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  items = {GENERATOR: ocp.args.StandardSave(generator), CONFIG: ocp.args.JsonSave(config_dict)}
  if train is not None:
    items[TRAIN] = ocp.args.StandardSave(train)
  return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore(mngr, step: int, abstract_generator, abstract_train):
  """Restores (generator, train) onto the shardings of the given abstract pytrees.

  Shapes are checked against the checkpoint's metadata first: Orbax would otherwise restore
  arrays of another model size without complaint.
  """
  meta = mngr.item_metadata(step)
  for name, abstract in ((GENERATOR, abstract_generator), (TRAIN, abstract_train)):
    # Leaf order is compared (optax's named tuples are stored under other key names).
    saved = [tuple(m.shape) for m in jax.tree.leaves(meta[name])]
    wanted = jax.tree_util.tree_leaves_with_path(abstract)
    for i, (path, leaf) in enumerate(wanted):
      found = saved[i] if i < len(saved) and len(saved) == len(wanted) else None
      if found != tuple(leaf.shape):
        raise CheckpointError(
          f"checkpoint {mngr.directory}/{step} does not fit this model/config: "
          f"{name}{jax.tree_util.keystr(path)} has shape {found}, the config needs "
          f"{tuple(leaf.shape)}; use a fresh --workdir or the config it was trained with"
        )
  try:
    out = mngr.restore(
      step,
      args=ocp.args.Composite(
        **{
          GENERATOR: ocp.args.StandardRestore(abstract_generator),
          TRAIN: ocp.args.StandardRestore(abstract_train),
        }
      ),
    )
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
      f"checkpoint {mngr.directory}/{step} does not fit this model/config ({e}); "
      "use a fresh --workdir or the config it was trained with"
    ) from e
  return out[GENERATOR], out[TRAIN]


def save_generator(directory, variables, config, step: int = 0) -> None:
  """Writes generator variables as a checkpoint that ``colorize.py --ckpt`` accepts."""
  mngr = manager(directory)
  save(mngr, step, variables, None, config, force=True)
  mngr.wait_until_finished()
  mngr.close()


def load_config(directory, step=None) -> tuple[int, ml_collections.ConfigDict]:
  """(step, config) stored in a checkpoint directory; ``step=None`` picks the latest."""
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
  return step, ml_collections.ConfigDict(json.loads(config_file.read_text()))


def _is_class_head(path) -> bool:
  return any(getattr(k, "key", None) in models.CLASS_HEAD for k in path)


def load_generator(
  directory, step=None, with_class_head: bool = True
) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  """Generator variables ``{'params', 'batch_stats'}`` and the config of a checkpoint.

  ``directory``: a training workdir, its ``checkpoints`` directory or a converter output.
  ``with_class_head=False`` reads only what ab depends on: the class head's arrays
  (:data:`models.CLASS_HEAD`, 124 M of 171 M parameters at the paper's size) are not read
  from disk at all (an Orbax partial restore), for ``models.Generator(with_class_head=False)``.
  Every array's shape is checked against the generator that the stored config describes.
  Arrays are restored on the default device.

  Raises:
    CheckpointError: missing, unreadable or corrupt checkpoint, or arrays that do not fit
      its config; one line naming the directory (and the first parameter that differs).
  """
  directory = resolve_directory(directory)
  step, config = load_config(directory, step)
  where = f"{directory}/{step}"
  if not (directory / str(step) / GENERATOR).is_dir():
    raise CheckpointError(f"{where}: checkpoint has no generator item")
  try:
    model = models.models_from_config(config.model)[0].clone(with_class_head=with_class_head)
    size = config.model.image_size
    wanted = jax.eval_shape(
      functools.partial(model.init, train=False),
      jax.random.key(0),
      jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
    )
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{where}: config does not describe a generator ({e})") from None
  handler = ocp.PyTreeCheckpointHandler()
  item_dir = directory / str(step) / GENERATOR
  try:
    meta = handler.metadata(item_dir).tree
  except Exception as e:  # noqa: BLE001 - any unreadable metadata is a corrupt checkpoint.
    raise CheckpointError(f"{where}: cannot read the generator ({type(e).__name__}: {e})") from None
  found = dict(jax.tree_util.tree_leaves_with_path(meta, is_leaf=_is_array_metadata))
  found = {jax.tree_util.keystr(p): tuple(m.shape) for p, m in found.items()}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  for path, leaf in jax.tree_util.tree_leaves_with_path(wanted):
    key = jax.tree_util.keystr(path)
    if found.get(key) != tuple(leaf.shape):
      raise CheckpointError(
        f"{where} does not fit the generator its config describes (image_size "
        f"{config.model.image_size}, width {config.model.width}): {GENERATOR}{key} has shape "
        f"{found.get(key)}, expected {tuple(leaf.shape)}"
      )
  abstract = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), wanted
  )
  try:
    out = handler.restore(
      item_dir,
      args=ocp.args.PyTreeRestore(
        item=abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=not with_class_head,
      ),
    )
  except Exception as e:  # noqa: BLE001 - tensorstore/Orbax errors on damaged files.
    raise CheckpointError(f"{where}: cannot read the generator ({type(e).__name__}: {e})") from None
  finally:
    handler.close()
  return out, config


def _is_array_metadata(x) -> bool:
  return hasattr(x, "shape") and hasattr(x, "dtype")
