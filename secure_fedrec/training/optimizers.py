"""Local optimizers without ``torch.optim``: torch's Adam and SGD updates, op for op.

Why hand-written: constructing any ``torch.optim.Optimizer`` imports
``torch._dynamo`` (``Optimizer.add_param_group`` is wrapped by
``torch._disable_dynamo``, which imports it on first call), 1–3 s of imports
that a Flower node pays on every ``train`` message, since Flower 1.42 starts a
fresh ClientApp process per message (docs/flower.md, "Light nodes").
``foreach=False``, ``TORCHDYNAMO_DISABLE`` or plain SGD do not avoid it.

The updates are those of ``torch.optim.Adam`` / ``torch.optim.SGD`` with their
defaults (no weight decay, no momentum, no amsgrad) on CPU, where torch runs the
single-tensor kernels: the same operations in the same order, so the results are
bit-identical (``tests/engines/test_local_optimizers.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["SGD", "Adam", "make_optimizer"]


class SGD:
    """``torch.optim.SGD(params, lr)``: ``p -= lr * grad``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


class Adam(SGD):
    """``torch.optim.Adam(params, lr)`` with betas (0.9, 0.999) and eps 1e-8
    (torch's ``_single_tensor_adam``, the branch without capturable/differentiable)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = [0] * len(self.params)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.beta1, self.beta2
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            self.steps[i] += 1
            step = float(self.steps[i])
            exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = self.lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def make_optimizer(params: Iterable[torch.Tensor], name: str, lr: float) -> SGD:
    """``"adam"`` or ``"sgd"``, as ``training.optimizer`` names them."""
    if name == "adam":
        return Adam(params, lr)
    if name == "sgd":
        return SGD(params, lr)
    raise ValueError(f"unknown optimizer {name!r}; expected 'adam' or 'sgd'")
