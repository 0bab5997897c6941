"""The convolution algorithm as one value: :class:`ConvPolicy`, built once at the entry.

What each ``config.model.conv_impl`` (:data:`IMPLS`) means, the one place it is stated:
  * ``"xla"``: ``lax.conv_general_dilated`` for every conv (XLA's kernels; cuDNN on GPU).
  * ``"winograd"``, ``"winograd2"``, ``"winograd4"``: the fixed per-layer rule
    (:func:`conv_rule.rule`: Winograd for thick stride-1 3x3 convs, tile size chosen per layer or
    fixed 2 / 4; im2col for strided, 1x1 and 4x4 ones in training; XLA for the rest), on any
    backend and dtype.
  * ``"auto"``: ``"winograd"`` for float32 on CPU (the fastest measured there,
    bench/RESULTS.md), ``"xla"`` elsewhere (accelerators have their own algorithms; Winograd
    loses too much precision in bfloat16).
  * ``"measure"``: for float32 on CPU, each layer's algorithm timed once per machine and use
    (:class:`conv_choice.Chooser`, its choices kept on disk); ``"xla"`` elsewhere. The entry
    builds it as ``"auto"`` when several processes run one program (each would time on its own).

The policy carries every input of the decision: the backend, the CPU's vector ISA (read once at
the entry: the rule's tile threshold depends on it), the chooser of ``"measure"`` and the XLA:CPU
compiler options of inference programs. It is hashable, so the networks hold it as a static
field; :meth:`ConvPolicy.resolve` fixes it per network (dtype and use) before it is.
"""

import dataclasses
import functools

import jax.numpy as jnp

from chromagan_jax.ops import conv_choice, conv_rule, inference_weights

FIXED = ("xla", "winograd", "winograd2", "winograd4")
IMPLS = ("auto", "measure", *FIXED)


@dataclasses.dataclass(frozen=True)
class ConvPolicy:
  """How a network computes its convolutions.

  Attributes:
    impl: one of :data:`IMPLS` (after :meth:`resolve`: one of :data:`FIXED` or "measure").
    backend: JAX backend the programs run on ("cpu", "gpu", "tpu").
    isa: the CPU's vector ISA, one of ``conv_rule.MIN_TILES`` ("avx512", "avx2", "other").
    objective: the use a network's convs are chosen for, one of ``conv_choice.OBJECTIVES``.
    chooser: the per-layer chooser of "measure" (None for every other impl).
    compiler_options: XLA:CPU options of inference programs, as (name, value) pairs.
  """

  impl: str = "xla"
  backend: str = "cpu"
  isa: str = "other"
  objective: str = "fwd"
  chooser: conv_choice.Chooser | None = None
  compiler_options: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    if self.impl not in IMPLS:
      raise ValueError(f"unknown conv_impl {self.impl!r}; expected one of {IMPLS}")
    if self.isa not in conv_rule.MIN_TILES:
      raise ValueError(f"unknown ISA {self.isa!r}; expected one of {tuple(conv_rule.MIN_TILES)}")
    if self.objective not in conv_choice.OBJECTIVES:
      raise ValueError(
        f"unknown objective {self.objective!r}; expected one of {conv_choice.OBJECTIVES}"
      )
    if self.impl == "measure" and self.chooser is None:
      raise ValueError("conv_impl 'measure' needs a conv_choice.Chooser")

  def resolve(self, dtype=jnp.float32, objective: str = "fwd") -> "ConvPolicy":
    """This policy for a network of compute ``dtype`` whose convs serve ``objective``:
    "auto" and "measure" become what they mean there (module docstring)."""
    impl = self.impl
    if impl in ("auto", "measure"):
      fast = self.backend == "cpu" and jnp.dtype(dtype) == jnp.float32
      impl = ("winograd" if impl == "auto" else "measure") if fast else "xla"
    return dataclasses.replace(self, impl=impl, objective=objective)

  def conv_general_dilated(self, prepared=None, layer: str | None = None, initializing=False):
    """The ``conv_general_dilated`` of ``nn.Conv`` layer ``layer`` (its params path) of a
    resolved policy; None for XLA's (flax's default).

    ``prepared``: the network's inference weights (``inference_weights.inference_filters``: the
    layer then takes its transformed Winograd filters) or a ``inference_weights.Recording``
    (learning which it takes); None in training. ``initializing``: the network is being
    initialised (shapes only: "measure" follows the rule, untimed).
    """
    if self.impl == "auto":
      raise ValueError("resolve() the policy before building a network with it")
    if self.impl == "xla":
      return None
    inference = prepared is not None
    if self.impl == "measure" and not initializing:
      use = "infer" if inference and self.objective == "fwd" else self.objective
      chooser = self.chooser

      def choose(lhs_shape, rhs_shape, strides, pads):
        return chooser.choose(lhs_shape, rhs_shape, jnp.float32, strides, pads, use)

    else:
      tile = int(self.impl[-1]) if self.impl[-1].isdigit() else "auto"
      choose = functools.partial(conv_rule.rule, tile=tile, isa=self.isa, inference=inference)
    return inference_weights.conv_with(choose, prepared, layer)
