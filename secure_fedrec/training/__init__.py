"""Local training on one client: plain epochs, record-level DP-SGD, book-keeping clipping.

* :mod:`.local` — a client's examples and :func:`~.local.train_client` (plain local epochs);
* :mod:`.dpsgd` — record-level DP-SGD with Opacus, book-keeping clipping (:mod:`.bookkeeping`);
* :mod:`.record_sampling` — how Opacus' Poisson loader samples (torch-free: the accountants use it);
* :mod:`.methods` — the two methods a privacy plan chooses between, as sendable values.

Nothing is imported here: :mod:`.record_sampling` must stay importable without torch.
"""
