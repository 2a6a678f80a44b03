"""The ServerApp: FedAvg in Flower's DefaultWorkflow, with the secure aggregation the run config asks for.

In your own app, replace ``SecAggPlusWorkflow(...)`` by ``SecureAggregationWorkflow(...)``
(``from protocols.flower import SecureAggregationWorkflow``); the ClientApp's
``secaggplus_mod`` by ``secure_aggregation_mod``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import (
    default_evaluate_workflow,
    default_fit_workflow,
)
from flwr.serverapp import Grid, ServerApp

from .counting import CountingGrid
from .task import initial_parameters

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    rounds = int(rc["num-server-rounds"])
    aggregation = str(rc["aggregation"])
    timeout = float(rc["timeout"]) or None
    nodes = max(2, len(list(grid.get_node_ids())))
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=2, min_evaluate_clients=2,
                      min_available_clients=nodes,
                      initial_parameters=ndarrays_to_parameters(initial_parameters(int(rc["model-size"]))))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    if aggregation == "ours":
        from protocols.flower import SecureAggregationWorkflow

        fit = SecureAggregationWorkflow(key_rounds=int(rc["key-rounds"]), timeout=timeout)
    elif aggregation == "flower-secagg+":
        fit = SecAggPlusWorkflow(num_shares=nodes, reconstruction_threshold=nodes // 2 + 1, timeout=timeout)
    elif aggregation == "none":
        fit = default_fit_workflow
    else:
        raise ValueError(f"aggregation must be 'ours', 'flower-secagg+' or 'none', not {aggregation!r}")
    counting = CountingGrid(grid)
    costs: list[dict] = []

    def timed_fit(g, ctx) -> None:
        before = counting.snapshot()
        wall, cpu = time.perf_counter(), time.process_time()
        fit(g, ctx)
        costs.append({"round": len(costs) + 1, "fit_seconds": time.perf_counter() - wall,
                      "fit_server_cpu_seconds": time.process_time() - cpu, **counting.since(before)})

    def timed_evaluate(g, ctx) -> None:
        wall = time.perf_counter()
        default_evaluate_workflow(g, ctx)
        costs[-1]["evaluate_seconds"] = time.perf_counter() - wall
        metrics = ctx.history.losses_distributed
        costs[-1]["loss"] = metrics[-1][1] if metrics else None

    DefaultWorkflow(fit_workflow=timed_fit, evaluate_workflow=timed_evaluate)(counting, legacy)
    target = str(rc.get("costs-file", ""))
    if target:
        ours = getattr(fit, "costs", [])
        for row, cost in zip(costs, ours):
            row.update(setup=cost.setup, protocol_server_cpu_seconds=cost.server_seconds,
                       protocol_client_cpu_seconds=cost.client_seconds, contributors=cost.contributors)
        Path(target).write_text(json.dumps({"aggregation": aggregation, "nodes": nodes, "rounds": costs,
                                            "final_parameters": _final(legacy)}, indent=1), encoding="utf-8")


def _final(legacy: LegacyContext) -> list[float]:
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import parameters_to_ndarrays
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    params = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    weights, bias = parameters_to_ndarrays(params)
    return [float(bias[0]), *map(float, weights[:8])]
