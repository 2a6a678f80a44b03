"""Per-example clipped gradient sums in one backward pass ("book-keeping" clipping).

DP-SGD needs, for a batch, ``Σ_i min(1, C/‖g_i‖) g_i`` where ``g_i`` is example
``i``'s gradient over *all* trainable parameters. For the two layer types our
recommenders are made of, both the norms and the clipped sum follow from each
layer's input ``a`` and the gradient of the summed loss with respect to its
output ``δ`` (row ``i`` of ``δ`` is example ``i``'s alone, since no layer mixes
examples):

* ``nn.Embedding`` looked up once per example: ``g_i`` is ``δ_i`` placed on row
  ``a_i``, so ``‖g_i‖² = ‖δ_i‖²`` and the clipped sum is an ``index_add`` of
  ``c_i δ_i``;
* ``nn.Linear`` on ``[batch, features]``: ``g_i = δ_i a_iᵀ`` (and ``δ_i`` for the
  bias), so ``‖g_i‖² = ‖δ_i‖²‖a_i‖² (+ ‖δ_i‖²)`` and the clipped sum is
  ``(c∘δ)ᵀ a`` (and ``Σ c_i δ_i``).

One ``autograd.grad`` call to the layer outputs gives every ``δ`` (no parameter
gradient is formed on the way), then the sums are written into ``p.grad``.
This is Bu et al., "Differentially Private Optimization on Large Model at
Small Cost" (ICML 2023), specialised to layers without a sequence axis, where
the "ghost norm" is exact.

Why hand-written: Opacus (1.6) offers per-sample hooks, which materialise a
``batch × rows × dim`` tensor per embedding and then clip it parameter by
parameter, and ghost clipping, which needs a second backward pass; on NeuMF
either costs more than 3× a non-private step (``benchmarks/dp_overhead.py``).
No maintained library ships book-keeping for torch modules (the authors'
``fastDP`` is not on PyPI). Opacus still does everything else: the Poisson
sampler, the noise and the step (:class:`~opacus.optimizers.DPOptimizerFastGradientClipping`
takes ``p.grad`` as the clipped sum), and
``tests/privacy/test_privacy_ghost_clipping.py`` checks the result against
Opacus' two modes and against one backward pass per example.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Self

import torch
from torch import nn

__all__ = ["BookkeepingClipping", "LayerGradient", "PerExampleGradients", "UnsupportedLayerError",
           "supports_bookkeeping"]

# Opacus' clip factor is C / (‖g_i‖ + 1e-6), capped at 1; the same here so both modes agree.
_NORM_EPSILON = 1e-6


@dataclass(frozen=True)
class _Record:
    """What a layer's forward pass left for the backward: its input and output, the input's
    autograd node, and both tensors' version counters (to detect in-place changes)."""

    inputs: torch.Tensor
    input_grad_fn: object
    output: torch.Tensor
    input_version: int
    output_version: int


@dataclass(frozen=True)
class LayerGradient:
    """One layer's part of a batch's per-example gradients: example ``i``'s gradient is
    ``delta[i]`` on row ``inputs[i]`` (``nn.Embedding``) or ``delta[i] inputs[i]ᵀ`` and
    ``delta[i]`` (``nn.Linear``'s weight and bias)."""

    layer: nn.Module
    inputs: torch.Tensor
    delta: torch.Tensor


@dataclass(frozen=True)
class PerExampleGradients:
    """A batch's per-example gradients, layer by layer, and their joint norms (before clipping)."""

    batch: int
    layers: tuple[LayerGradient, ...]
    norms: torch.Tensor

    def clip_factors(self, max_grad_norm: float) -> torch.Tensor:
        """``min(1, C / (‖g_i‖ + 1e-6))`` per example (Opacus' formula)."""
        return (max_grad_norm / (self.norms + _NORM_EPSILON)).clamp(max=1.0)


class UnsupportedLayerError(TypeError):
    """The module has a trainable parameter book-keeping clipping cannot compute per example."""


class BookkeepingClipping:
    """Clip and sum per-example gradients of ``module`` in one backward pass.

    Use as a context manager around the training loop (it holds forward hooks)::

        with BookkeepingClipping(model, max_grad_norm=C) as clipping:
            losses = criterion_without_reduction(model(x), y)
            clipping.backward(losses)   # p.grad = Σ_i clip_C(g_i) for every trainable p

    Every trainable parameter must belong to an ``nn.Embedding`` (default options,
    one lookup per example) or an ``nn.Linear`` applied once per forward pass to
    a ``[batch, features]`` input; anything else raises :class:`UnsupportedLayerError`
    (use Opacus' ``"hooks"`` or ``"ghost"`` there).
    """

    def __init__(self, module: nn.Module, *, max_grad_norm: float) -> None:
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        self.max_grad_norm = float(max_grad_norm)
        self._layers: list[nn.Module] = []
        covered: set[int] = set()
        for name, layer in module.named_modules():
            own = [p for p in layer.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            # Exact types, as Opacus matches its grad samplers: a subclass may override forward.
            if type(layer) is nn.Embedding:
                if (layer.padding_idx is not None or layer.max_norm is not None or layer.scale_grad_by_freq
                        or layer.sparse):
                    raise UnsupportedLayerError(
                        f"{name}: embeddings with padding_idx, max_norm, scale_grad_by_freq or sparse "
                        "gradients are not supported by book-keeping clipping")
            elif type(layer) is not nn.Linear:
                owned = [f"{name}.{n}" if name else n for n, p in layer.named_parameters(recurse=False)
                         if p.requires_grad]
                raise UnsupportedLayerError(
                    f"parameters {owned} belong to a {type(layer).__name__}: book-keeping clipping computes "
                    "per-example gradients of nn.Embedding and nn.Linear layers only (not subclasses); use "
                    "grad_sample_mode = 'hooks' or 'ghost'")
            if any(id(p) in covered for p in own):
                raise UnsupportedLayerError(
                    f"{name}: a parameter shared with another layer (tied weights) has a per-example "
                    "gradient norm with cross terms book-keeping clipping does not compute")
            self._layers.append(layer)
            covered.update(id(p) for p in own)
        self._covered = covered
        self._walked: set[frozenset[int]] = set()  # sets of called layers whose graph was walked
        self._records: dict[nn.Module, _Record] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Self:
        if self._handles:
            raise RuntimeError("this BookkeepingClipping is already active (its hooks are registered)")
        self._handles = [layer.register_forward_hook(self._record) for layer in self._layers]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._records = {}

    def _record(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        if layer in self._records:
            raise UnsupportedLayerError(
                f"{type(layer).__name__} layer called twice in one forward pass: its per-example "
                "gradient norm would need cross terms book-keeping clipping does not compute")
        source = inputs[0]
        self._records[layer] = _Record(source.detach(), source.grad_fn, output, source._version, output._version)

    def backward(self, per_example_loss: torch.Tensor) -> torch.Tensor:
        """Set ``p.grad`` to the sum of per-example gradients clipped to ``max_grad_norm``
        (jointly over every parameter) and return the per-example norms before clipping.

        ``per_example_loss`` has one entry per example (the criterion with ``reduction="none"``)
        of the forward pass just made. An empty batch gives zero gradients.
        """
        parts = self.per_example(per_example_loss)
        if parts.batch == 0:
            self._zero_grads(self._layers)
            return parts.norms
        factor = parts.clip_factors(self.max_grad_norm)
        for part in parts.layers:
            layer, inputs = part.layer, part.inputs
            scaled = part.delta * factor[:, None]
            if isinstance(layer, nn.Embedding):
                layer.weight.grad = torch.zeros_like(layer.weight).index_add_(0, inputs, scaled)
            else:
                if layer.weight.requires_grad:
                    layer.weight.grad = scaled.T @ inputs
                if layer.bias is not None and layer.bias.requires_grad:
                    layer.bias.grad = scaled.sum(0)
        called = {part.layer for part in parts.layers}
        self._zero_grads([layer for layer in self._layers if layer not in called])  # not called: zero
        return parts.norms

    def per_example(self, per_example_loss: torch.Tensor) -> PerExampleGradients:
        """Each called layer's input and output gradient for the forward pass just made, and every
        example's gradient norm over all trainable parameters: what :meth:`backward` sums, for a
        caller that needs each example's gradient itself (record-level DP-SGD under secure
        aggregation rounds every example's gradient on its own, :mod:`.dpsgd_shares`)."""
        records, self._records = self._records, {}
        batch = per_example_loss.shape[0] if per_example_loss.dim() else 0
        if per_example_loss.dim() != 1:
            raise ValueError(f"expected one loss per example (shape [batch]), got {tuple(per_example_loss.shape)}")
        if batch == 0:
            return PerExampleGradients(batch=0, layers=(), norms=per_example_loss.new_zeros(0))
        used = [layer for layer in self._layers if layer in records]
        self._check_graph(per_example_loss, records)
        grads_out = torch.autograd.grad(per_example_loss.sum(), [records[layer].output for layer in used],
                                        allow_unused=True)
        squared = per_example_loss.new_zeros(batch)
        parts = []
        for layer, delta in zip(used, grads_out):
            record = records[layer]
            if delta is None:  # the output did not reach the loss: no gradient from this layer
                delta = torch.zeros_like(record.output)
            self._check_shapes(layer, record.inputs, delta, batch)
            delta_sq = delta.pow(2).sum(1)
            if isinstance(layer, nn.Embedding):
                squared += delta_sq
            else:
                if layer.weight.requires_grad:
                    squared += delta_sq * record.inputs.pow(2).sum(1)
                if layer.bias is not None and layer.bias.requires_grad:
                    squared += delta_sq
            parts.append(LayerGradient(layer, record.inputs, delta))
        return PerExampleGradients(batch=batch, layers=tuple(parts), norms=squared.sqrt())

    @staticmethod
    def _zero_grads(layers: list[nn.Module]) -> None:
        for layer in layers:
            for param in layer.parameters(recurse=False):
                if param.requires_grad:
                    param.grad = torch.zeros_like(param)

    def _check_graph(self, per_example_loss: torch.Tensor, records: dict[nn.Module, _Record]) -> None:
        """Refuse what would make the per-layer formulas wrong without any error from torch:
        a layer's input or output changed in place after the call (``ReLU(inplace=True)``,
        ``emb(x).mul_(2)``: autograd would differentiate the modified value), and a covered
        parameter reaching the loss other than through its own layer's call
        (``F.embedding(x, self.emb.weight)``, ``self.lin.weight.sum()``).

        The second is a walk of the autograd graph: from the loss, every path must reach a
        covered parameter's ``AccumulateGrad`` only through the output node of that parameter's
        layer, leaving that node by any edge but the one to the layer's input. The walk costs
        ~12 % of a NeuMF step, so it is made once per set of layers a forward pass called (the
        first step of a round, for our models); a model whose use of its parameters changes
        with the batch while calling the same layers is outside what it checks.
        """
        for layer, record in records.items():
            if record.inputs._version != record.input_version or record.output._version != record.output_version:
                raise UnsupportedLayerError(
                    f"the input or output of a {type(layer).__name__} layer was modified in place after the "
                    "layer ran (e.g. ReLU(inplace=True)): book-keeping clipping would use the modified value")
        called = frozenset(id(layer) for layer in records)
        if called in self._walked:
            return
        owner_of_node = {record.output.grad_fn: layer for layer, record in records.items()}
        own_params = {layer: {id(p) for p in layer.parameters(recurse=False)} for layer in records}
        seen: set[tuple[object, nn.Module | None]] = set()
        stack: list[tuple[object, nn.Module | None]] = [(per_example_loss.grad_fn, None)]
        while stack:
            node, inside = stack.pop()
            if node is None or (node, inside) in seen:
                continue
            seen.add((node, inside))
            variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf tensor
            if variable is not None and id(variable) in self._covered:
                if inside is None or id(variable) not in own_params[inside]:
                    raise UnsupportedLayerError(
                        f"a parameter of shape {tuple(variable.shape)} reaches the loss outside its own layer's "
                        "call: its per-example gradient is not what book-keeping clipping computes")
                continue
            layer = owner_of_node.get(node) if inside is None else None
            for child, _ in node.next_functions:
                if layer is not None:  # leaving a layer's output node: the input edge goes back outside
                    stack.append((child, None if child is not None and child is records[layer].input_grad_fn
                                  else layer))
                else:
                    stack.append((child, inside))
        self._walked.add(called)

    @staticmethod
    def _check_shapes(layer: nn.Module, inputs: torch.Tensor, delta: torch.Tensor, batch: int) -> None:
        expected_input_dim = 1 if isinstance(layer, nn.Embedding) else 2
        if inputs.dim() != expected_input_dim or inputs.shape[0] != batch or delta.shape[0] != batch:
            kind = "indices of shape [batch]" if expected_input_dim == 1 else "inputs of shape [batch, features]"
            raise UnsupportedLayerError(
                f"{type(layer).__name__}: book-keeping clipping needs {kind} (one lookup or row per example), "
                f"got input {tuple(inputs.shape)} for a batch of {batch}")


def supports_bookkeeping(module: nn.Module) -> bool:
    """Whether every trainable parameter of ``module`` sits in a layer book-keeping clipping
    handles (the checks that need a forward pass — in-place changes, layers called twice,
    parameters used outside their layer — can still refuse it during training)."""
    try:
        BookkeepingClipping(module, max_grad_norm=1.0)
    except UnsupportedLayerError:
        return False
    return True
