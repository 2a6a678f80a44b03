"""Recommendation models whose parameters split into shared (aggregated) and private (client-only)."""

from .base import FederatedModel, ParamLayout
from .mf import BiasedMF
from .neumf import NeuMF

__all__ = ["BiasedMF", "FederatedModel", "NeuMF", "ParamLayout", "build_model"]


def build_model(name: str, *, n_users: int, n_items: int, dim: int, **kwargs) -> FederatedModel:
    """Construct a model by its config name (``mf`` or ``neumf``)."""
    if name == "mf":
        return BiasedMF(n_users=n_users, n_items=n_items, dim=dim, **kwargs)
    if name == "neumf":
        return NeuMF(n_users=n_users, n_items=n_items, dim=dim, **kwargs)
    raise ValueError(f"unknown model {name!r}; choose 'mf' or 'neumf'")
