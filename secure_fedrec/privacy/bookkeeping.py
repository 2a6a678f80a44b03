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

from types import TracebackType
from typing import Self

import torch
from torch import nn

__all__ = ["BookkeepingClipping", "UnsupportedLayerError"]

# Opacus' clip factor is C / (‖g_i‖ + 1e-6), capped at 1; the same here so both modes agree.
_NORM_EPSILON = 1e-6


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
            if isinstance(layer, nn.Embedding):
                if (layer.padding_idx is not None or layer.max_norm is not None or layer.scale_grad_by_freq
                        or layer.sparse):
                    raise UnsupportedLayerError(
                        f"{name}: embeddings with padding_idx, max_norm, scale_grad_by_freq or sparse "
                        "gradients are not supported by book-keeping clipping")
            elif not isinstance(layer, nn.Linear):
                owned = [f"{name}.{n}" if name else n for n, p in layer.named_parameters(recurse=False)
                         if p.requires_grad]
                raise UnsupportedLayerError(
                    f"parameters {owned} belong to a {type(layer).__name__}: book-keeping clipping computes "
                    "per-example gradients of Embedding and Linear layers only; use grad_sample_mode = "
                    "'hooks' or 'ghost'")
            if any(id(p) in covered for p in own):
                raise UnsupportedLayerError(
                    f"{name}: a parameter shared with another layer (tied weights) has a per-example "
                    "gradient norm with cross terms book-keeping clipping does not compute")
            self._layers.append(layer)
            covered.update(id(p) for p in own)
        self._records: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Self:
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
        self._records[layer] = (inputs[0].detach(), output)

    def backward(self, per_example_loss: torch.Tensor) -> torch.Tensor:
        """Set ``p.grad`` to the sum of per-example gradients clipped to ``max_grad_norm``
        (jointly over every parameter) and return the per-example norms before clipping.

        ``per_example_loss`` has one entry per example (the criterion with ``reduction="none"``)
        of the forward pass just made. An empty batch gives zero gradients.
        """
        records, self._records = self._records, {}
        batch = per_example_loss.shape[0] if per_example_loss.dim() else 0
        if per_example_loss.dim() != 1:
            raise ValueError(f"expected one loss per example (shape [batch]), got {tuple(per_example_loss.shape)}")
        if batch == 0:
            for layer in self._layers:
                for param in layer.parameters(recurse=False):
                    if param.requires_grad:
                        param.grad = torch.zeros_like(param)
            return per_example_loss.new_zeros(0)
        used = [layer for layer in self._layers if layer in records]
        grads_out = torch.autograd.grad(per_example_loss.sum(), [records[layer][1] for layer in used],
                                        allow_unused=True)
        squared = per_example_loss.new_zeros(batch, dtype=torch.float32)
        terms = []
        for layer, delta in zip(used, grads_out):
            inputs, output = records[layer]
            if delta is None:  # the output did not reach the loss: no gradient from this layer
                delta = torch.zeros_like(output)
            self._check_shapes(layer, inputs, delta, batch)
            delta_sq = delta.pow(2).sum(1)
            if isinstance(layer, nn.Embedding):
                squared += delta_sq
            else:
                if layer.weight.requires_grad:
                    squared += delta_sq * inputs.pow(2).sum(1)
                if layer.bias is not None and layer.bias.requires_grad:
                    squared += delta_sq
            terms.append((layer, inputs, delta))
        norms = squared.sqrt()
        factor = (self.max_grad_norm / (norms + _NORM_EPSILON)).clamp(max=1.0)
        for layer, inputs, delta in terms:
            scaled = delta * factor[:, None]
            if isinstance(layer, nn.Embedding):
                layer.weight.grad = torch.zeros_like(layer.weight).index_add_(0, inputs, scaled)
            else:
                if layer.weight.requires_grad:
                    layer.weight.grad = scaled.T @ inputs
                if layer.bias is not None and layer.bias.requires_grad:
                    layer.bias.grad = scaled.sum(0)
        for layer in self._layers:
            if layer not in records:  # not called in this forward pass: its gradient is zero
                for param in layer.parameters(recurse=False):
                    if param.requires_grad:
                        param.grad = torch.zeros_like(param)
        return norms

    @staticmethod
    def _check_shapes(layer: nn.Module, inputs: torch.Tensor, delta: torch.Tensor, batch: int) -> None:
        expected_input_dim = 1 if isinstance(layer, nn.Embedding) else 2
        if inputs.dim() != expected_input_dim or inputs.shape[0] != batch or delta.shape[0] != batch:
            kind = "indices of shape [batch]" if expected_input_dim == 1 else "inputs of shape [batch, features]"
            raise UnsupportedLayerError(
                f"{type(layer).__name__}: book-keeping clipping needs {kind} (one lookup or row per example), "
                f"got input {tuple(inputs.shape)} for a batch of {batch}")
