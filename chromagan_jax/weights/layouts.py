"""Our parameter layouts for outside weights: layer names in file order and the
preprocessing each source was trained with.

One place for the names every mapping (:mod:`keras_port`, :mod:`torch_port`) produces; the
shapes they must have are the model's, checked once by
:func:`chromagan_jax.model.shapes.check`.
"""

from typing import Any

from chromagan_jax.model import networks

# Input preprocessing each weight source was trained with (see networks.vgg_preprocess).
PREPROCESSING_KERAS = "caffe"


PREPROCESSING_TORCH = "torch"


PREPROCESSING_CHROMAGAN = "none"


# VGG16 layer names in network order (the table is networks.VGG16_BLOCKS).
VGG16_CONVS = tuple(
  f"block{b}_conv{i}"
  for b, (n, _) in enumerate(networks.VGG16_BLOCKS, start=1)
  for i in range(1, n + 1)
)


# block1_conv1 .. block4_conv3: the generator's trunk (networks.TRUNK_DEPTH blocks).
TRUNK_CONVS = VGG16_CONVS[: sum(n for n, _ in networks.VGG16_BLOCKS[: networks.TRUNK_DEPTH])]


VGG16_TOP = networks.VGG16_TOP


# The ChromaGAN generator's own layers per kind, in the order of the authors' model
# definition. Keras (2 and 3) lists a functional model's layers by decreasing depth (longest
# path to an output), ties broken by traversal order. In this graph that order, restricted
# to one kind of layer, is exactly the definition order: the four global convs (depths
# 23..17) precede the mid-level ones (13, 11), which precede the decoder (8..1); the fusion
# Dense layers (14..12) precede the class head (2..0); the global BNs (22..16) precede the
# mid-level ones (12, 10). The file's auto-generated names (conv2d_7, ...) depend on what
# else was built in the session and are never used. Shapes are checked for every layer and,
# when the file holds its model config, conv strides too (the five 512->512 convs differ
# only by stride and position).
_GLOBAL_CONVS = tuple(f"global_conv{i}" for i in range(1, len(networks.GLOBAL_STRIDES) + 1))


GENERATOR_CONVS = (
  *_GLOBAL_CONVS,
  "mid_conv1",
  "mid_conv2",
  *(f"dec_conv{i}" for i in range(1, 7)),
)


GENERATOR_BNS = ("global_bn1", "global_bn2", "global_bn3", "global_bn4", "mid_bn1", "mid_bn2")


GENERATOR_DENSES = (
  "global_fc1",
  "global_fc2",
  "global_fc3",
  "class_fc1",
  "class_fc2",
  "class_fc3",
)


GENERATOR_STRIDES = dict(zip(_GLOBAL_CONVS, networks.GLOBAL_STRIDES, strict=True))  # Others: 1.


CRITIC_CONVS = tuple(f"conv{i}" for i in range(1, len(networks.CRITIC_LAYERS) + 2))


CRITIC_STRIDES = {f"conv{i}": s for i, (_, s) in enumerate(networks.CRITIC_LAYERS, start=1)}


# The real files' sizes, named when a download saved a web page instead (keras_h5.not_hdf5_message):
# the generator holds 171 M float32 values (685 MB), x3 with the Adam slots model.save keeps;
# the critic 2.8 M (11 MB).
EXPECTED_FILES = {
  "generator": "my_model_colorization.h5, 0.68-2.1 GB (with or without the optimizer state)",
  "critic": "my_model_discriminator.h5, 11-34 MB",
  "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels.h5, 553 MB (the _notop file 59 MB; "
  "torchvision's vgg16-397923af.pth 553 MB)",
}


def vgg16_trunk_params(classifier_params) -> dict[str, Any]:
  """The generator's ``params['vgg16']`` (block1_conv1 .. block4_conv3) from VGG16 params.

  Accepts classifier params (``{'vgg16': ..., 'fc1': ...}``) or trunk-only ``{'vgg16': ...}``.
  """
  trunk = classifier_params["vgg16"]
  return {name: dict(trunk[name]) for name in TRUNK_CONVS}
