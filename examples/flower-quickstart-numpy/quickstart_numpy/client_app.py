"""ClientApp: "training" adds noise to the global arrays, "evaluation" reports a number."""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = [a + np.random.rand(*a.shape) for a in msg.content["arrays"].to_numpy_ndarrays()]
    content = RecordDict({"arrays": ArrayRecord(arrays),
                          "metrics": MetricRecord({"random_metric": float(np.random.rand()), "num-examples": 1})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    content = RecordDict({"metrics": MetricRecord({"random_metric": float(np.random.rand()), "num-examples": 1})})
    return Message(content=content, reply_to=msg)
