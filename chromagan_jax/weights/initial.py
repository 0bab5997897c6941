"""What a fresh training run starts from: the VGG16 teacher and trunk, the generator, the critic.

Each is read by :mod:`port` and checked once against ``config.model`` (ShapeError naming the
file, the first parameter that differs and the model the weights were made for).
"""

import dataclasses
from typing import Any

from absl import logging

from chromagan_jax.model import shapes
from chromagan_jax.weights import layouts, port


def load_vgg(config) -> dict[str, Any] | None:
  """VGG16 params from ``config.init.vgg16`` (checked), or None with a warning.

  With the classifier top the params are the frozen KL teacher and (:func:`initial_weights`)
  the generator's trunk. A notop file (``..._notop.h5``, a torchvision state dict without
  ``classifier.*`` or its conversion) gives the 13 convolutions only: the trunk starts from
  them and the KL term is disabled, with a warning (:func:`has_top` tells the two apart).
  """
  if not config.init.vgg16:
    logging.warning(
      "config.init.vgg16 is empty: the VGG16 trunk starts from random weights and the KL "
      "term is disabled ('ChromaGAN w/o class'). Convert ImageNet VGG16 weights with "
      "`python -m chromagan_jax.convert` for the full model."
    )
    return None
  params, preprocessing = port.load_vgg16(config.init.vgg16, require_top=False)
  # A VGG16 of another input size or width would otherwise fail inside the jitted step with
  # an anonymous dot_general shape error; the standard files fit only image_size=224, width=1
  # (the convolutions alone, of a notop file, fit any image size at width 1).
  expected = layouts.abstract_variables(config.model, "vgg16")["params"]
  if not layouts.has_top(params):
    expected = {"vgg16": expected["vgg16"]}
    logging.warning(
      "%s has no classifier top (notop): the VGG16 trunk starts from its convolutions and "
      "the KL term is disabled (no teacher)",
      config.init.vgg16,
    )
  shapes.check_shapes(
    params, expected, config.init.vgg16, made_for_fields=lambda: shapes.made_for(params)
  )
  if preprocessing != config.model.vgg_preprocessing:
    logging.warning(
      "%s was trained with %r input preprocessing but config.model.vgg_preprocessing=%r "
      "(the reference feeds grey [0, 1] without normalisation)",
      config.init.vgg16,
      preprocessing,
      config.model.vgg_preprocessing,
    )
  return params


@dataclasses.dataclass
class InitialWeights:
  """Host (NumPy) weights a fresh run starts from; None where the config gives none.

  Attributes:
    trunk: ``params['vgg16']`` of the generator (block1_conv1 .. block4_conv3).
    generator: ``{'params', 'batch_stats'}`` of the whole generator, trunk included.
    critic: the critic's ``params``.
  """

  trunk: dict[str, Any] | None = None
  generator: dict[str, Any] | None = None
  critic: dict[str, Any] | None = None


def initial_weights(config, vgg_params=None) -> InitialWeights:
  """The weights a fresh run of ``config`` starts from, each checked against ``config.model``.

  The VGG16 trunk comes from ``vgg_params`` (``config.init.vgg16``, already checked by
  :func:`load_vgg`); ``config.init.generator`` (the authors' generator ``.h5``, a converted
  directory or a training workdir) sets the whole generator, trunk and batch statistics
  included; ``config.init.critic`` (a critic ``.h5`` or a converted critic directory)
  the critic. A mismatch raises ShapeError naming the file, the first parameter that differs
  and the model the weights were made for.
  """
  out = InitialWeights()
  if vgg_params is not None:
    out.trunk = layouts.vgg16_trunk_params(vgg_params)
  if not (config.init.generator or config.init.critic):
    return out
  if config.init.generator:
    variables = port.load_generator_variables(config.init.generator)
    for collection in ("params", "batch_stats"):  # Parameters first: the clearer message.
      shapes.check_shapes(
        variables[collection],
        layouts.abstract_variables(config.model, "generator")[collection],
        f"generator of {config.init.generator}",
        made_for_fields=lambda: shapes.made_for(variables),
      )
    out.generator = variables
  if config.init.critic:
    critic = port.load_critic(config.init.critic)
    shapes.check_shapes(
      critic["params"],
      layouts.abstract_variables(config.model, "critic")["params"],
      f"critic of {config.init.critic}",
      made_for_fields=lambda: shapes.made_for(critic),
    )
    out.critic = critic["params"]
  return out
