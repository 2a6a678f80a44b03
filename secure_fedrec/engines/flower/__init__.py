"""Run a secure_fedrec job on Flower 1.42 (simulation or deployment), with our own protocols.

``run_flower(config, out_dir, mode="sim"|"deployment", num_nodes=K)`` starts
what it needs on 127.0.0.1, runs the job and stops everything; it returns the
same metrics dict as :func:`secure_fedrec.runner.run_job`. Needs the
``flower`` extra (``flwr[simulation]``); importing this package does not.
See docs/flower.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["FlowerRunError", "LocalFederation", "register", "run_flower"]

if TYPE_CHECKING:
    from .launcher import FlowerRunError, LocalFederation, register, run_flower


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import launcher

        return getattr(launcher, name)
    raise AttributeError(name)
