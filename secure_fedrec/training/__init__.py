"""Local training on one client: plain epochs, record-level DP-SGD, book-keeping clipping.

* :mod:`.local` — a client's examples and :func:`~.local.train_client` (plain local epochs);
* :mod:`.dpsgd` — record-level DP-SGD with Opacus, book-keeping clipping (:mod:`.bookkeeping`);
* :mod:`.dpsgd_shares` — one client's part of a record-level DP-SGD step under secure aggregation;
* :mod:`.canaries` — the engine-side hook for an audit's gradient canaries;
* :mod:`.adam` — Adam's update as a pure function (the step split between server and clients);
* :mod:`.methods` — the three methods a privacy plan chooses between, as sendable values;
* :mod:`.record_sampling` — a re-export of :mod:`secure_fedrec.privacy.record_sampling`.

Nothing is imported here: the planning modules must stay importable without torch.
"""
