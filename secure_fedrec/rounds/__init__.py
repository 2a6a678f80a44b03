"""One federated round, split where the network is: a client step and a server step.

* :mod:`.client` — :func:`client_step` (train, then the pipeline's client halves),
  :class:`ClientPlan` (what a client is told once), :class:`RoundBroadcast` (each round);
* :mod:`.server` — :class:`RoundServer`: sampling, the broadcast, the session's parameters
  and :meth:`~RoundServer.finish_round` (server halves, optimizer, accountant);
* :mod:`.wire` — the plan and the broadcast as JSON, for engines that cross a network;
* :mod:`.optimizers`, :mod:`.sampling`, :mod:`.metrics` — the server's optimizers, client
  sampling, and the metrics of a round.

Both engines (:mod:`secure_fedrec.engines`) call these and only move the values between them.
"""
