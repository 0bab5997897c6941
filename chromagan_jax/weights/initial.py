"""What a fresh training run starts from: the VGG16 teacher and trunk, the generator, the critic.

Each of ``config.init.vgg16``, ``.generator`` and ``.critic`` is read once by
:func:`port.read` and checked once against ``config.model`` by
:func:`chromagan_jax.model.shapes.check` (ShapeError naming the file, the first parameter that
differs and the model the weights were made for).
"""

import dataclasses
from typing import Any

from absl import logging

from chromagan_jax.model import networks, shapes
from chromagan_jax.weights import layouts, port


@dataclasses.dataclass
class StartingWeights:
  """Host (NumPy) weights a run starts from; None where the config gives none.

  Attributes:
    teacher: the frozen KL teacher's ``VGG16Classifier`` params, from a VGG16 file with its
      classifier top (None from a notop file: the KL term is disabled).
    trunk: ``params['vgg16']`` of the generator (block1_conv1 .. block4_conv3).
    generator: ``{'params', 'batch_stats'}`` of the whole generator, trunk included.
    critic: the critic's ``params``.
  """

  teacher: dict[str, Any] | None = None
  trunk: dict[str, Any] | None = None
  generator: dict[str, Any] | None = None
  critic: dict[str, Any] | None = None


def _read_checked(path, network: str, model_config, source: str) -> port.Weights:
  """``network``'s weights at ``path``, checked against ``model_config``."""
  weights = port.read(path, network)
  shapes.check(weights.variables, model_config, network, source, layer_names=weights.layer_names)
  return weights


def starting_weights(config, resuming: bool = False) -> StartingWeights:
  """The weights a run of ``config`` starts from, each checked against ``config.model``.

  ``config.init.vgg16`` gives the KL teacher and the generator's VGG16 trunk: a notop file
  (``..._notop.h5``, a torchvision state dict without ``classifier.*`` or its conversion)
  the trunk alone, and the KL term is disabled, with a warning; empty, the trunk starts from
  random weights and there is no teacher. ``config.init.generator`` (the authors' generator
  ``.h5``, a converted directory, a training workdir or a msgpack file) sets the whole
  generator, trunk and batch statistics included; ``config.init.critic`` (a critic ``.h5`` or
  a converted critic directory) the critic. ``resuming``: the checkpoint holds the generator
  and the critic, so only the teacher is read.
  """
  out = StartingWeights()
  if config.init.vgg16:
    vgg = _read_checked(config.init.vgg16, "vgg16", config.model, config.init.vgg16)
    params = vgg.variables["params"]
    if networks.vgg16_has_top(params):
      out.teacher = params
    else:
      logging.warning(
        "%s has no classifier top (notop): the VGG16 trunk starts from its convolutions and "
        "the KL term is disabled (no teacher)",
        config.init.vgg16,
      )
    out.trunk = layouts.vgg16_trunk_params(params)
    if vgg.preprocessing != config.model.vgg_preprocessing:
      logging.warning(
        "%s was trained with %r input preprocessing but config.model.vgg_preprocessing=%r "
        "(the reference feeds grey [0, 1] without normalisation)",
        config.init.vgg16,
        vgg.preprocessing,
        config.model.vgg_preprocessing,
      )
  else:
    logging.warning(
      "config.init.vgg16 is empty: the VGG16 trunk starts from random weights and the KL "
      "term is disabled ('ChromaGAN w/o class'). Convert ImageNet VGG16 weights with "
      "`python -m chromagan_jax.convert` for the full model."
    )
  if resuming:
    return out
  if config.init.generator:
    path = config.init.generator
    out.generator = _read_checked(path, "generator", config.model, f"generator of {path}").variables
  if config.init.critic:
    path = config.init.critic
    critic = _read_checked(path, "critic", config.model, f"critic of {path}")
    out.critic = critic.variables["params"]
  return out
