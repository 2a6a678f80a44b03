"""Hyper-parameters that fit the data set at hand: a few named presets, picked automatically.

The plain defaults in :mod:`secure_fedrec.config` are sized for the embedded
synthetic data (2000 users, private by default). A real file gets a preset
chosen from what the run is (explicit ratings or implicit feedback; with or
without DP) and sized from the data set's public shape: the number of users
(clients per round, so that a non-private round stays within a bounded cost)
and the number of items (the model size). A preset sets **only the keys the
configuration file and ``--set`` leave unset** (``RunConfig.given``), and the
resolved values are what ``config.toml`` in ``--out`` records, with the
preset's name in ``preset``.

``preset = "none"`` keeps the plain defaults; ``preset = "NAME"`` forces one.

What the choice may look at: the users' and items' counts and the feedback
type, which the accounting already treats as public (N sets δ and the sampling
rate), and the privacy unit from the configuration. It does **not** look at
ratings per user or at any rating value: under DP, a hyper-parameter chosen
from such a statistic would be a release the accountant does not cover.

The values were tuned on MovieLens ml-latest-small and checked on data they
were not tuned on (docs/results.md, "Defaults on other data").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import ConfigError, RunConfig, config_from_dict, config_to_dict
from .data.dataset import RatingData

__all__ = ["PRESETS", "apply_preset", "choose_preset", "preset_values"]

#: most clients in one non-private round: all users of a small data set, a sample beyond
_MAX_CLIENTS_PER_ROUND = 1000
#: what a round's dense updates (iALS: every item row, 8 bytes per coordinate; the indices
#: are one shared array) may take in memory: the in-process engine holds a round's updates
#: at once
_DENSE_ROUND_BYTES = 2e9

#: name -> what it is for; the values are :func:`preset_values`
PRESETS = {
    "synthetic": "the embedded synthetic data: the plain defaults (tuned for it)",
    "explicit": "ratings, no DP: biased MF, every user (up to 1000) in each round",
    "explicit-dp": "ratings, with DP: biased MF sized for the noise (small dim, Poisson sampling)",
    "implicit": "implicit feedback, no DP: iALS-MF (closed-form user rows), rounds of dense updates "
                "sized to a memory budget",
    "implicit-dp": "implicit feedback, with DP: BPR-MF sized for the noise",
    "record": "record-level DP-SGD: the mechanism's own defaults (config.RECORD_DISTRIBUTED_DEFAULTS "
              "with distributed noise), which a user-level preset would override",
}


def choose_preset(config: RunConfig, implicit: bool) -> str:
    """The preset ``preset = "auto"`` stands for on this run."""
    if config.data.source == "synthetic":
        return "synthetic"
    if config.privacy.unit == "record":
        # one round is one DP-SGD step of the population: many rounds, no client sampling, Adam on
        # the noisy mean; the user-level presets' few rounds and sampled clients would undo that
        return "record"
    kind = "implicit" if implicit else "explicit"
    return kind if config.privacy.unit == "none" else f"{kind}-dp"


def preset_values(name: str, n_users: int, n_items: int) -> dict[str, Any]:
    """The dotted keys a preset sets, for a data set of this shape."""
    if name not in PRESETS:
        raise ConfigError(f"preset must be 'auto', 'none' or one of {', '.join(PRESETS)}; got {name!r}")
    if name in ("synthetic", "record"):
        return {}
    everyone = min(n_users, _MAX_CLIENTS_PER_ROUND)
    if name == "explicit":
        return {
            "model.name": "mf", "model.dim": 32,
            "training.sampling": "fixed", "training.clients_per_round": everyone,
            # with the closed-form private rows, 15 rounds reach RMSE 0.885 ± 0.009 on ml-latest-small
            # over 3 seeds (SVD 0.904) and 0.896 on its held-out 60 % subsample (SVD 0.919); round 10
            # was within 0.0004 of round 15, round 10 without those rows at 0.909 (docs/results.md)
            "training.rounds": 15, "training.local_epochs": 5, "training.lr": 0.05,
            "training.reg": 0.1, "training.server_optimizer": "fedadam", "training.server_lr": 0.05,
            "evaluation.every": 5,
        }
    if name == "explicit-dp":
        # Few rounds at a small server step: the noise per round shrinks with the number of
        # rounds at a fixed ε, and FedAdam turns noise on item rows nobody rated into steps of
        # the server's size every round (ml-latest-small, ε = 8: 20 rounds at 0.05 ended at
        # RMSE 0.993, 10 rounds at 0.02 at 0.958; docs/results.md)
        return {
            "model.name": "mf", "model.dim": 8,
            "training.rounds": 10, "training.clients_per_round": 0.15, "training.local_epochs": 2,
            "training.lr": 0.05, "training.reg": 0.1, "training.server_lr": 0.02,
            "evaluation.every": 5,
        }
    if name == "implicit":
        # iALS (every unrated item a weak negative, the user's row in closed form) beat BPR-MF
        # under full ranking on ml-latest-small, centrally and federated (docs/results.md). Each
        # client sends one gradient step over every item row (FCF), FedAdam moves the rows; an
        # update is dense, so a round holds as many as fit the memory budget
        dim = 64
        dense_round = max(32, int(_DENSE_ROUND_BYTES // (8 * max(1, n_items) * (dim + 1))))
        return {
            "model.name": "mf", "model.dim": dim, "training.loss": "ials",
            "training.positive_weight": 1.0, "training.reg": 0.003,
            "training.sampling": "fixed", "training.clients_per_round": min(everyone, dense_round),
            "training.rounds": 60, "training.local_epochs": 1, "training.optimizer": "sgd",
            "training.lr": 1.0, "training.batch_size": 0,
            "training.server_optimizer": "fedadam", "training.server_lr": 0.02,
            # No L2 clip in front of the masking's fixed point: at the plain ±1 about 150 of a
            # client's ~590,000 coordinates per round were clipped on ml-latest-small and the SecAgg+
            # run trained another model than plaintext (sampled HR@10 0.681 vs 0.703); ±16 still
            # clipped 11-14 coordinates in 60 rounds; at ±64 the 32-bit ring resolves 1.3e-5 with
            # 424 summands (rounding noise ~3e-7 on a mean coordinate after the division by the weights)
            "aggregation.coordinate_clip": 64.0,
            "evaluation.every": 10,
        }
    return {  # implicit-dp
        "model.name": "mf", "model.dim": 8,
        "training.rounds": 20, "training.clients_per_round": 0.15, "training.local_epochs": 2,
        "training.lr": 0.01, "training.reg": 0.001, "training.negatives": 4,
        "training.server_optimizer": "fedadam", "training.server_lr": 0.02,
        "evaluation.every": 10,
    }


def apply_preset(config: RunConfig, data: RatingData) -> RunConfig:
    """``config`` with its preset applied to the keys it does not set, for ``data``.

    Also records what loading found out: a file read as implicit feedback (a
    weight column, or no rating column) makes ``data.implicit`` true, so the
    split, model and loss follow from it. Idempotent: the result names the
    preset it used, and applying it again changes nothing.
    """
    raw = config_to_dict(config)
    if data.implicit and not config.data.implicit:
        raw["data"]["implicit"] = True
    name = config.preset
    if name == "auto":
        name = choose_preset(config_from_dict(raw), data.implicit)
    if name != "none":
        for dotted, value in preset_values(name, data.n_users, data.n_items).items():
            if dotted in config.given:
                continue
            section, key = dotted.split(".")
            raw[section][key] = value
        raw["preset"] = name
    resolved = config_from_dict(raw)
    return dataclasses.replace(resolved, given=config.given)
