"""torchvision's VGG16 state dict -> Flax variables (read without torch).

torch's OIHW / (out, in) layouts become HWIO / (in, out), and fc1's input axis is permuted
from torchvision's NCHW flatten to NHWC (a silent bug otherwise: plausible-looking logits).
Shapes are checked where the result meets a model (:func:`chromagan_jax.model.shapes.check`).
"""

import math
import re
from typing import Any

import numpy as np

from chromagan_jax.errors import ConversionError
from chromagan_jax.weights import layouts, torch_pickle


def vgg16_from_torch(path) -> dict[str, Any]:
  """VGG16Classifier params from a torchvision VGG16 state dict (``vgg16-397923af.pth``).

  Read without torch. OIHW -> HWIO, Linear (out, in) -> Dense (in, out), and fc1's input
  axis permuted from torchvision's NCHW flatten to NHWC. torchvision's adaptive average
  pool to 7x7 is the identity at 224x224 inputs (the only size the weights were trained at).
  A state dict without ``classifier.*`` gives ``{'vgg16': ...}`` only. 'torch' preprocessing.
  """
  state = torch_pickle.read_state_dict(path)
  state = {k.removeprefix("module."): v for k, v in state.items()}
  if any(k.startswith("features.") and k.endswith("running_mean") for k in state):
    raise ConversionError(f"{path}: has batch-norm layers: this is vgg16_bn, plain VGG16 expected")

  def indexed(prefix):
    found = {}
    for k, v in state.items():
      m = re.fullmatch(rf"{prefix}\.(\d+)\.(weight|bias)", k)
      if m:
        found.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return [found[i] for i in sorted(found)]

  convs = indexed("features")
  if not convs:
    raise ConversionError(
      f"{path}: no 'features.N.weight' tensors (found {list(state)[:4]}...): not a "
      "torchvision VGG16 state dict"
    )
  if len(convs) != len(layouts.VGG16_CONVS):
    raise ConversionError(
      f"{path}: has {len(convs)} convolutions, VGG16 has {len(layouts.VGG16_CONVS)} "
      f"({'VGG19?' if len(convs) == 16 else 'another network?'})"
    )
  trunk = {}
  for name, layer in zip(layouts.VGG16_CONVS, convs, strict=True):
    w = layer.get("weight")
    if w is None or w.ndim != 4 or "bias" not in layer:
      raise ConversionError(f"{path}: {name}: expected an OIHW conv weight and a bias")
    trunk[name] = {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": layer["bias"]}
  params = {"vgg16": trunk}
  linears = indexed("classifier")
  if linears:
    if len(linears) != len(layouts.VGG16_TOP) or any(lin.get("weight") is None for lin in linears):
      raise ConversionError(
        f"{path}: expected 3 Linear layers classifier.0/3/6, found {len(linears)}"
      )
    channels = trunk[layouts.VGG16_CONVS[-1]]["kernel"].shape[3]
    for name, layer in zip(layouts.VGG16_TOP, linears, strict=True):
      w = layer["weight"]
      if w.ndim != 2 or "bias" not in layer:
        raise ConversionError(f"{path}: {name}: expected a (out, in) Linear weight and a bias")
      if name == "fc1":
        side = math.isqrt(w.shape[1] // channels)
        if w.shape[1] != side * side * channels:
          raise ConversionError(
            f"{path}: classifier.0: expected weight (F, {channels}*H*W) over a square map, "
            f"found {w.shape}"
          )
        # Input index c*H*W + h*W + w (NCHW flatten) -> h*W*C + w*C + c (NHWC flatten).
        kernel = w.reshape(w.shape[0], channels, side, side).transpose(2, 3, 1, 0)
        kernel = kernel.reshape(-1, w.shape[0])
      else:
        kernel = w.T
      params[name] = {"kernel": np.ascontiguousarray(kernel), "bias": layer["bias"]}
  return params
