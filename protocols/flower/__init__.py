"""Our secure aggregation as a drop-in for any Flower app: a ClientApp mod and a ServerApp workflow.

``secure_aggregation_mod`` and ``SecureAggregationWorkflow`` replace Flower's
``secaggplus_mod`` and ``SecAggPlusWorkflow``::

    from protocols.flower import SecureAggregationWorkflow, secure_aggregation_mod

    app = ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod])      # client side
    workflow = DefaultWorkflow(fit_workflow=SecureAggregationWorkflow())     # server side

with this package's SecAgg / SecAgg+ (:mod:`protocols.masking`) instead of
Flower's: full-strength keys and PRG, every frame bound to its session and round,
dropouts survived at every stage, and — with ``key_rounds > 1`` — one key setup
for several rounds (:mod:`protocols.masking.multiround`), so that a steady round is
two message exchanges instead of four. Each *node* is one party, as in Flower's
SecAgg+. The mod handles the legacy reply (``NumPyClient``: ``fitres.*`` records) and
the Message API's (one ``ArrayRecord`` and a ``MetricRecord`` with the weight).

Lives in :mod:`protocols` (not in ``secure_fedrec``) because a Flower node needs
only this: the mod imports numpy, cryptography, the masking protocol and Flower —
no torch, nothing of the recommender. Flower is imported by the modules that need
it, never by ``import protocols``. docs/flower.md ("Our protocols in your Flower
app") has the cost table against Flower's SecAgg+ and the example in
``examples/flower-numpy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["RECORD_KEY", "SecureAggregationWorkflow", "secure_aggregation_mod"]

from .records import RECORD_KEY

if TYPE_CHECKING:
    from .mod import secure_aggregation_mod
    from .workflow import SecureAggregationWorkflow


def __getattr__(name: str) -> Any:
    if name == "secure_aggregation_mod":
        from .mod import secure_aggregation_mod

        return secure_aggregation_mod
    if name == "SecureAggregationWorkflow":
        from .workflow import SecureAggregationWorkflow

        return SecureAggregationWorkflow
    raise AttributeError(name)
