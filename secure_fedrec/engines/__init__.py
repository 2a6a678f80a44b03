"""The engines: transports that run a round's client steps and server step (:mod:`secure_fedrec.rounds`).

* :mod:`.inprocess` — every client in this process, one after another;
* :mod:`.flower` — clients on Flower nodes (simulation or deployment), the sum over Flower messages;
* :mod:`.checkpoint` — crash-safe checkpoints of an in-process run.
"""
