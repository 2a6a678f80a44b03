"""ServerApp: Flower's Message-API FedAvg over every connected node, as shipped."""

import json
import time

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    times = str(rc.get("times-file", ""))

    def stamp(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        # Flower calls this after each round's train and evaluate exchanges (round 0: before).
        if times:
            with open(times, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"round": server_round, "time": time.time()}) + "\n")
        return MetricRecord({"round": server_round})

    nodes = max(1, len(list(grid.get_node_ids())))
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=nodes,
                      min_evaluate_nodes=nodes, min_available_nodes=nodes)
    strategy.start(grid=grid, initial_arrays=ArrayRecord([np.ones((1, 1))]),
                   num_rounds=int(rc["num-server-rounds"]), evaluate_fn=stamp)
