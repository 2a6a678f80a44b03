"""The run configuration: typed sections, loaded from TOML and validated.

Every key has a default, so ``secure-fedrec run`` works with no file. A wrong
key or value gives a :class:`ConfigError` that names the key and says what is
allowed, never a stack trace.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

__all__ = [
    "RANGES",
    "RECORD_DISTRIBUTED_DEFAULTS",
    "ConfigError",
    "Range",
    "RunConfig",
    "check_model_memory",
    "config_from_dict",
    "config_to_dict",
    "dump_toml",
    "load_config",
    "model_memory_estimate",
    "parse_override",
]


class ConfigError(ValueError):
    """A configuration file or override that is not valid."""


#: the default run's user-level budget (privacy.target_epsilon)
DEFAULT_TARGET_EPSILON = 8.0
#: upper bound of count-like keys (a finite range for every numeric key)
_MAX_COUNT = 1_000_000
#: the most rounds one masking key setup may serve (aggregation.key_rounds)
MAX_KEY_ROUNDS = 1024


@dataclass(frozen=True)
class Range:
    """A finite interval a numeric key must lie in (``low_open``/``high_open``: bound excluded)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        low, high = (str(b) if isinstance(b, int) else f"{b:g}" for b in (self.low, self.high))
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


_MAX_USERS, _MAX_ITEMS = 10**8, 10**8

#: Every numeric key's finite range, checked as the value is read, before anything is built from
#: it (1e999, nan, -1 and 1e30 never reach numpy or torch). tests/cli/test_config_ranges.py fails if
#: a numeric field of any config dataclass has no entry here: a new key needs its range. The
#: bounds are generous sanity limits (far beyond any useful run), not recommendations; the
#: memory a run's sizes need is checked on its own (:func:`check_model_memory`).
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**63 - 1),
    "data.binarize_threshold": Range(-1e9, 1e9),
    "data.rating_min": Range(-1e9, 1e9),
    "data.rating_max": Range(-1e9, 1e9),
    "data.min_user_ratings": Range(1, 10**6),
    "data.min_item_ratings": Range(1, 10**6),
    "data.test_fraction": Range(0.0, 1.0, low_open=True, high_open=True),
    "data.synthetic.n_users": Range(2, _MAX_USERS),
    "data.synthetic.n_items": Range(2, _MAX_ITEMS),
    "data.synthetic.rank": Range(1, 4096),
    "data.synthetic.mean_ratings_per_user": Range(0.0, 10**6, low_open=True),
    "data.synthetic.noise_std": Range(0.0, 100.0),
    "model.dim": Range(1, 4096),
    "model.hidden": Range(1, 4096),
    # an initial scale or learning rate past these overflows float32 training at once (NaN)
    "model.init_std": Range(0.0, 10.0, low_open=True),
    "training.rounds": Range(1, 10**6),
    "training.clients_per_round": Range(0.0, _MAX_USERS, low_open=True),
    "training.local_epochs": Range(1, 10**4),
    "training.batch_size": Range(0, 10**8),
    "training.lr": Range(0.0, 10.0, low_open=True),
    "training.reg": Range(0.0, 100.0),
    "training.positive_weight": Range(0.0, 1e4),
    "training.negatives": Range(1, 10**4),
    "training.server_lr": Range(0.0, 10.0, low_open=True),
    "training.dropout_rate": Range(0.0, 1.0, high_open=True),
    "training.straggler_rate": Range(0.0, 1.0),
    "training.checkpoint_every": Range(0, 10**6),
    "aggregation.bits": Range(8, 62),
    "aggregation.coordinate_clip": Range(0.0, 1e6, low_open=True),
    "aggregation.weight_cap": Range(0.0, 1e9, low_open=True),
    "aggregation.threshold_fraction": Range(0.0, 1.0, low_open=True),
    "aggregation.paillier_key_bits": Range(2048, 3072),
    "aggregation.key_rounds": Range(1, MAX_KEY_ROUNDS),
    "aggregation.compact_bits": Range(8, 32),
    "aggregation.compact_keep": Range(0.01, 1.0),
    "privacy.target_epsilon": Range(0.0, 1e3, low_open=True),
    "privacy.delta": Range(0.0, 1.0, low_open=True, high_open=True),
    "privacy.noise_multiplier": Range(0.0, 1e6, low_open=True),
    "privacy.clip_norm": Range(0.0, 1e6, low_open=True),
    "privacy.record_batch_size": Range(1, 10**6),
    "privacy.record_lr": Range(0.0, 100.0, low_open=True),
    "privacy.record_sample_rate": Range(0.0, 1.0, low_open=True),
    "privacy.target_quantile": Range(0.0, 1.0, low_open=True, high_open=True),
    "privacy.clip_learning_rate": Range(0.0, 10.0, low_open=True),
    "privacy.clip_count_stddev": Range(0.0, 1e9, low_open=True),
    "evaluation.k": Range(1, 10**4),
    "evaluation.recall_k": Range(1, 1000),
    "evaluation.sampled_negatives": Range(1, 10**6),
    "evaluation.every": Range(1, 10**6),
    "flower.nodes": Range(1, 1024),
    "flower.train_timeout": Range(0.0, 86_400.0),
    "flower.stage_timeout": Range(0.0, 86_400.0),
    "flower.timeout_factor": Range(1.0, 100.0),
    "flower.timeout_floor": Range(0.1, 86_400.0),
    "flower.node_wait_timeout": Range(0.0, 86_400.0, low_open=True),
}

#: bytes a run may plan to hold for its model; default: 3/4 of the machine's memory
#: (``SECURE_FEDREC_MEMORY_LIMIT`` overrides, in bytes)
MEMORY_LIMIT_ENV = "SECURE_FEDREC_MEMORY_LIMIT"


@dataclass
class SyntheticConfig:
    # Sized for the private default: user-level DP needs many users (the noise on the mean
    # shrinks with N at a fixed ε); docs/privacy.md §5.1 has the numbers behind these values.
    n_users: int = 2000
    n_items: int = 200
    rank: int = 5
    mean_ratings_per_user: float = 45.0
    noise_std: float = 0.5

    def validate(self) -> None:
        _check(self.n_users >= 2, "data.synthetic.n_users", "must be >= 2")
        _check(self.n_items >= 2, "data.synthetic.n_items", "must be >= 2")
        _check(self.rank >= 1, "data.synthetic.rank", "must be >= 1")
        _check(self.mean_ratings_per_user > 0, "data.synthetic.mean_ratings_per_user", "must be > 0")
        _check(self.noise_std >= 0, "data.synthetic.noise_std", "must be >= 0")


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a path to a ratings file / directory
    format: str = "auto"
    implicit: bool = False
    binarize_threshold: float | None = None
    min_user_ratings: int = 1
    min_item_ratings: int = 1
    split: Literal["auto", "holdout", "leave-last-out"] = "auto"
    test_fraction: float = 0.2
    # columns of a file with a header (csv, atomic; guessed from common names when unset)
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None  # a rating, or a weight/count (then implicit feedback)
    timestamp_col: str | None = None
    # leave-last-out on a file without timestamps: hold out one random interaction per user
    # (recorded in the run's dataset notes), or stop with an error
    without_timestamps: Literal["random", "error"] = "random"
    # the rating scale [rating_min, rating_max] of a file whose format does not fix it (a
    # generic csv); unset, it is read from the ratings, which a private run refuses
    # (the scale sets the model's starting global bias: docs/privacy.md)
    rating_min: float | None = None
    rating_max: float | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self) -> None:
        from .data.loaders import FORMATS

        _check(self.format in FORMATS, "data.format",
               f"must be one of {', '.join(map(repr, FORMATS))} (also for synthetic data); got {self.format!r}")
        _check(0.0 < self.test_fraction < 1.0, "data.test_fraction", "must be in (0, 1)")
        _check(1 <= self.min_user_ratings <= _MAX_COUNT, "data.min_user_ratings", f"must be in [1, {_MAX_COUNT}]")
        _check(1 <= self.min_item_ratings <= _MAX_COUNT, "data.min_item_ratings", f"must be in [1, {_MAX_COUNT}]")
        _check(self.binarize_threshold is None or abs(self.binarize_threshold) <= 1e9,
               "data.binarize_threshold", "must be a finite number in [-1e9, 1e9]")
        _check((self.rating_min is None) == (self.rating_max is None), "data.rating_min",
               "and data.rating_max are set together")
        if self.rating_min is not None and self.rating_max is not None:
            _check(-1e9 <= self.rating_min < self.rating_max <= 1e9, "data.rating_min",
                   "must be below data.rating_max, both finite numbers in [-1e9, 1e9]")
        for role in ("user", "item", "rating", "timestamp"):
            name = getattr(self, f"{role}_col")
            _check(name is None or 0 < len(name) <= 200, f"data.{role}_col", "must be a column name")
        self.synthetic.validate()


@dataclass
class ModelConfig:
    # auto: biased MF, trained on ratings (explicit) or with BPR on interactions (implicit)
    name: Literal["auto", "mf", "neumf"] = "auto"
    dim: int = 8  # the default synthetic data has rank 5; fewer coordinates, less total noise
    hidden: int = 32
    init_std: float = 0.1
    # explicit MF: each client solves its private row (p_u, b_u) in closed form before local
    # training and before predicting (ridge regression on its own ratings; models/mf.py)
    solve_private: bool = True

    def validate(self) -> None:
        _check(self.dim >= 1, "model.dim", "must be >= 1")  # upper bound: RANGES and the memory estimate
        _check(1 <= self.hidden <= 4096, "model.hidden", "must be in [1, 4096]")
        _check(0 < self.init_std <= 10, "model.init_std", "must be in (0, 10]")


@dataclass
class TrainingConfig:
    rounds: int = 18
    clients_per_round: float = 0.1  # a fraction of all users if < 1, else a count
    sampling: Literal["fixed", "poisson"] = "poisson"  # what the DP accountants assume
    local_epochs: int = 2
    batch_size: int = 0  # 0: full batch (all of the client's ratings)
    lr: float = 0.05
    optimizer: Literal["adam", "sgd"] = "adam"
    reg: float = 0.05
    negatives: int = 4  # implicit feedback: sampled negatives per positive
    # auto: "mse" for ratings; for implicit feedback "bpr" (pairwise ranking), or the pointwise
    # "bce" with record-level DP (DP-SGD clips one example, and a BPR pair touches two items);
    # "ials": MF's weighted squared error over every item, the user's row in closed form
    loss: Literal["auto", "mse", "bce", "bpr", "ials"] = "auto"
    # iALS: an interaction's squared error weighs 1 + positive_weight, an unrated item's 1
    positive_weight: float = 1.0
    server_optimizer: Literal["fedavg", "fedadam"] = "fedadam"
    server_lr: float = 0.05
    dropout_rate: float = 0.0  # fraction of sampled clients that vanish mid-protocol
    straggler_rate: float = 0.0  # fraction of sampled clients that finish only one local epoch
    checkpoint_every: int = 5  # rounds between crash-safe checkpoints in --out (0: never)

    def validate(self) -> None:
        _check(self.rounds >= 1, "training.rounds", "must be >= 1")
        _check(self.clients_per_round > 0, "training.clients_per_round", "must be > 0")
        _check(
            self.clients_per_round < 1 or float(self.clients_per_round).is_integer(),
            "training.clients_per_round", "must be a fraction in (0, 1) or a whole number of clients",
        )
        _check(self.local_epochs >= 1, "training.local_epochs", "must be >= 1")
        _check(self.batch_size >= 0, "training.batch_size", "must be >= 0 (0 = full batch)")
        _check(self.lr > 0, "training.lr", "must be > 0")
        _check(self.reg >= 0, "training.reg", "must be >= 0")
        _check(self.server_lr > 0, "training.server_lr", "must be > 0")
        _check(0.0 <= self.dropout_rate < 1.0, "training.dropout_rate", "must be in [0, 1)")
        _check(0.0 <= self.straggler_rate <= 1.0, "training.straggler_rate", "must be in [0, 1]")
        _check(1 <= self.negatives <= 1000, "training.negatives", "must be in [1, 1000]")
        _check(0.0 <= self.positive_weight <= 1e4, "training.positive_weight", "must be in [0, 10000]")
        _check(self.checkpoint_every >= 0, "training.checkpoint_every", "must be >= 0")


@dataclass
class AggregationConfig:
    protocol: Literal["plaintext", "secagg", "secagg+", "paillier"] = "secagg+"
    bits: int = 32
    coordinate_clip: float = 1.0
    weighting: Literal["examples", "uniform"] = "examples"
    weight_cap: float = 100.0  # an update's weight is min(examples, cap) / cap
    threshold_fraction: float = 0.5  # survivors needed, as a fraction of the sampled clients
    paillier_key_bits: int = 2048
    # "dense": every coordinate in the `bits` ring; "compact": a public subset of `compact_keep` of the
    # coordinates, randomly rotated, in a `compact_bits` ring at user level; at record level the subset
    # alone, in the `bits` ring (each example is rounded on its own; docs/privacy.md §4.5)
    encoding: Literal["dense", "compact"] = "dense"
    compact_bits: int = 16  # 8 and 16 travel in 1- and 2-byte words (user level)
    compact_keep: float = 0.46  # fraction of the coordinates uploaded each round
    # SecAgg / SecAgg+: rounds that share one key setup (protocols.masking.multiround), so that a
    # steady round is two exchanges instead of four; 1 = a fresh session every round. Every client
    # sampled in any of the session's rounds is a member and uploads in each of them (a zero vector
    # when not sampled): the cost grows with the union of the samples (docs/flower.md). Ignored by
    # plaintext and Paillier (whose keys are dealt once per run).
    key_rounds: int = 1

    def validate(self) -> None:
        _check(8 <= self.bits <= 62, "aggregation.bits", "must be in [8, 62]")
        _check(self.coordinate_clip > 0, "aggregation.coordinate_clip", "must be > 0")
        _check(self.weight_cap > 0, "aggregation.weight_cap", "must be > 0")
        _check(0.0 < self.threshold_fraction <= 1.0, "aggregation.threshold_fraction", "must be in (0, 1]")
        _check(self.paillier_key_bits in (2048, 3072), "aggregation.paillier_key_bits", "must be 2048 or 3072")
        _check(self.encoding in ("dense", "compact"), "aggregation.encoding", "must be 'dense' or 'compact'")
        _check(8 <= self.compact_bits <= 32, "aggregation.compact_bits", "must be in [8, 32]")
        _check(0.01 <= self.compact_keep <= 1.0, "aggregation.compact_keep", "must be in [0.01, 1]")
        _check(1 <= self.key_rounds <= MAX_KEY_ROUNDS, "aggregation.key_rounds", f"must be in [1, {MAX_KEY_ROUNDS}]")


@dataclass
class PrivacyConfig:
    # Private by default: user-level DP, noise shares added by the clients under masking.
    unit: Literal["none", "record", "user"] = "user"
    # Where the noise is added. User level: "central" (the server, after the sum) or "distributed"
    # (each client's discrete Gaussian share before the secure sum). Record level: "distributed"
    # (a round is one DP-SGD step of the whole population, whose noise the clients add in shares
    # under the secure sum) or "local" (each client runs DP-SGD with its own full noise and trusts
    # nobody with its update). docs/privacy.md §1 says what each protects against.
    noise: Literal["central", "distributed", "local"] = "distributed"
    # calibrates the noise for the planned rounds, and the budget guard stops before exceeding it
    target_epsilon: float | None = DEFAULT_TARGET_EPSILON
    # default min(1/(10N), N^-1.1) for N privacy units (users; training ratings at record level)
    delta: float | None = None
    # when set, this noise multiplier is used as is (central or record level) and target_epsilon
    # only guards the budget; the distributed noise is always calibrated from target_epsilon
    noise_multiplier: float | None = None
    clip_norm: float = 1.0  # user: L2 bound of a client update; record: of one example's gradient
    accountant: Literal["pld", "rdp"] = "pld"
    record_batch_size: int = 32  # record level, local noise: expected Poisson batch size of each client's DP-SGD
    # record level, distributed noise: each rating's Poisson sampling rate q in a round (one DP-SGD
    # step); the step's noisy gradient sum is divided by the public expected batch q·N
    record_sample_rate: float = 0.2
    # record level: DP-SGD's local optimizer. Plain SGD lets the untouched item rows take their
    # noise in closed form (a sparse client, 2x cheaper per step: docs/privacy.md §2.1.1); on
    # MovieLens it beats Adam at ε = 8 and loses at ε <= 4, where a smaller record_lr helps
    # (docs/results.md)
    record_optimizer: Literal["sgd", "adam"] = "sgd"
    record_lr: float = 1.0
    # user level: "adaptive" moves clip_norm (the initial value) toward the target quantile of the
    # update norms (Andrew et al. 2021); the accounting stays that of noise_multiplier z
    clipping: Literal["fixed", "adaptive"] = "fixed"
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2  # η_C of the geometric update C <- C exp(-η_C (b̄ - γ))
    clip_count_stddev: float | None = None  # σ_b of the clipped-count sum; default E[clients]/20
    # record level: how per-example gradients are clipped; all modes give the same clipped sums
    # (tests/privacy/test_privacy_ghost_clipping.py). "auto" = "bookkeeping": one backward pass,
    # Embedding/Linear layers only, 2-3x faster than the best Opacus mode (benchmarks/dp_overhead.py);
    # "hooks" / "ghost": Opacus' per-sample hooks / ghost clipping, for models with other layers
    grad_sample_mode: Literal["auto", "bookkeeping", "ghost", "hooks"] = "auto"
    # user level, distributed noise: every member uploads every round and takes part by its own
    # CSPRNG coin (rate q), uploading zero plus its noise share otherwise, so the server does not
    # learn who was sampled and the amplified ε holds against it too; costs N clients per round
    # in the secure sum instead of q·N (docs/privacy.md, "Client sampling and who knows it")
    private_sampling: bool = False
    # The ε the noise is calibrated to and the run reports. "proven": the figure proven for every
    # observer in this configuration — under server sampling with distributed noise the
    # participation-revealed one, elsewhere (central noise, private sampling, record level) the
    # amplified one, which is proven there. "participation_revealed": the same, refused where it
    # does not apply. "amplified" (user level, distributed noise, server sampling): amplification by
    # the hidden sample, not charged for the number of noise shares in each sum, which a sampled
    # user's own share changes: NOT a proven bound (~30 % less noise at ε = 8; the default until
    # session 10). docs/privacy.md, "The share count"
    calibrate_to: Literal["proven", "amplified", "participation_revealed"] = "proven"

    def validate(self) -> None:
        _check(self.target_epsilon is None or self.target_epsilon > 0, "privacy.target_epsilon", "must be > 0")
        _check(self.delta is None or 0 < self.delta < 1, "privacy.delta", "must be in (0, 1)")
        _check(self.noise_multiplier is None or self.noise_multiplier > 0, "privacy.noise_multiplier",
               "must be > 0")
        _check(self.clip_norm > 0, "privacy.clip_norm", "must be > 0")
        _check(self.record_batch_size >= 1, "privacy.record_batch_size", "must be >= 1")
        _check(0.0 < self.record_sample_rate <= 1.0, "privacy.record_sample_rate", "must be in (0, 1]")
        _check(self.record_lr > 0, "privacy.record_lr", "must be > 0")
        _check(0.0 < self.target_quantile < 1.0, "privacy.target_quantile", "must be in (0, 1)")
        _check(self.clip_learning_rate > 0, "privacy.clip_learning_rate", "must be > 0")
        _check(self.clip_count_stddev is None or self.clip_count_stddev > 0, "privacy.clip_count_stddev",
               "must be > 0")
        _check(self.clipping == "fixed" or self.unit == "user", "privacy.clipping",
               "= 'adaptive' needs privacy.unit = 'user' (it adapts the clip norm of client updates)")
        if self.unit == "none":
            return
        _check(not (self.unit == "user" and self.noise == "local"), "privacy.noise",
               "= 'local' is a record-level placement (each client's own DP-SGD); user level takes "
               "'central' or 'distributed'")
        _check(not (self.unit == "record" and self.noise == "central"), "privacy.noise",
               "= 'central' is not available at record level: 'distributed' gives the same DP-SGD step "
               "without trusting the server with the noise, 'local' adds it on every client")
        _check(self.target_epsilon is not None or self.noise_multiplier is not None, "privacy.target_epsilon",
               "or privacy.noise_multiplier must be set when privacy.unit is not 'none'")
        _check(not (self.unit == "user" and self.noise == "distributed" and self.noise_multiplier is not None),
               "privacy.noise_multiplier", "cannot be set with privacy.noise = 'distributed': the noise "
               "shares are calibrated from privacy.target_epsilon")


@dataclass
class EvaluationConfig:
    # implicit feedback: full ranking over every unrated item, the 1 + 99 sampled protocol, or
    # both side by side (full: hr@10, ndcg@10, recall@20; sampled: sampled_hr@10, ...)
    ranking: Literal["full", "sampled", "both"] = "both"
    k: int = 10
    recall_k: int = 20
    sampled_negatives: int = 99
    every: int = 1  # evaluate every N rounds (and always after the last)

    def validate(self) -> None:
        _check(1 <= self.k <= 1000, "evaluation.k", "must be in [1, 1000]")
        _check(1 <= self.recall_k <= 1000, "evaluation.recall_k", "must be in [1, 1000]")
        _check(1 <= self.sampled_negatives <= 10_000, "evaluation.sampled_negatives", "must be in [1, 10000]")
        _check(self.every >= 1, "evaluation.every", "must be >= 1")


@dataclass
class FlowerConfig:
    """What ``--engine flower-sim`` / ``flower`` (and ``secure-fedrec flower``) start and wait for."""

    # virtual nodes (simulation) or SuperNodes (deployment) the launcher starts; users are split
    # among them (a ServerApp takes the split from its nodes' node-config)
    nodes: int = 5
    # seconds a node may take to train (or evaluate) / to answer one protocol stage before its users
    # count as dropped out; 0: derived from the measured reply times of the same stage, a node being
    # gone once it is timeout_factor times later than the slowest reply (never sooner than
    # timeout_floor seconds; engines/flower/deadlines.py)
    train_timeout: float = 0.0
    stage_timeout: float = 0.0
    timeout_factor: float = 3.0
    timeout_floor: float = 5.0
    node_wait_timeout: float = 120.0  # seconds the server waits for every node to connect

    def validate(self) -> None:
        _check(1 <= self.nodes <= 1024, "flower.nodes", "must be in [1, 1024]")
        for key in ("train_timeout", "stage_timeout"):
            _check(0.0 <= getattr(self, key) <= 86_400.0, f"flower.{key}",
                   "must be in [0, 86400] seconds (0: derived from measured reply times)")
        _check(1.0 <= self.timeout_factor <= 100.0, "flower.timeout_factor", "must be in [1, 100]")
        _check(0.1 <= self.timeout_floor <= 86_400.0, "flower.timeout_floor", "must be in [0.1, 86400] seconds")
        _check(0.0 < self.node_wait_timeout <= 86_400.0, "flower.node_wait_timeout", "must be in (0, 86400] seconds")


@dataclass
class RunConfig:
    seed: int = 0
    engine: Literal["inprocess", "flower-sim", "flower"] = "inprocess"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    flower: FlowerConfig = field(default_factory=FlowerConfig)
    # hyper-parameters for the data set at hand (secure_fedrec/presets.py): "auto" picks a preset
    # from the data's size and feedback type and the privacy unit, and it sets only the keys that
    # neither the file nor --set gives; "none" keeps the plain defaults; or a preset's name
    preset: str = "auto"
    #: dotted keys the file and the overrides set (what a preset and a mechanism's defaults leave alone); not a config key
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def validate(self) -> None:
        for section in (self.data, self.model, self.training, self.aggregation, self.privacy,
                        self.evaluation, self.flower):
            section.validate()
        if self.data.source == "synthetic":
            check_model_memory(self, self.data.synthetic.n_users, self.data.synthetic.n_items)
        p = self.privacy
        if p.unit == "user":
            _check(self.training.sampling == "poisson", "training.sampling",
                   "must be 'poisson' with privacy.unit = 'user': the accountant assumes Poisson "
                   "sampling of clients")
        if p.private_sampling:
            _check(p.unit == "user" and p.noise == "distributed", "privacy.private_sampling",
                   "needs privacy.unit = 'user' and privacy.noise = 'distributed' (record level already "
                   "takes every client every round; central noise trusts the server anyway)")
            _check(p.clipping == "fixed" and self.aggregation.encoding == "dense", "privacy.private_sampling",
                   "needs privacy.clipping = 'fixed' and aggregation.encoding = 'dense'")
            _check(self.aggregation.protocol in ("secagg", "secagg+"), "privacy.private_sampling",
                   "needs a masking protocol (secagg or secagg+)")
        if p.calibrate_to == "participation_revealed":
            _check(p.unit == "user" and p.noise == "distributed" and not p.private_sampling, "privacy.calibrate_to",
                   "= 'participation_revealed' applies to user-level distributed noise under server sampling "
                   "(central noise, private sampling and record level have no share-count channel)")
        if p.unit == "user" and p.noise == "distributed":
            _check(self.aggregation.protocol != "plaintext", "aggregation.protocol",
                   "must be a secure protocol (secagg, secagg+, paillier) with privacy.noise = "
                   "'distributed': with plaintext the server sees each client's barely-noised update")
            _check(p.target_epsilon is not None, "privacy.target_epsilon",
                   "must be set with privacy.noise = 'distributed' (the noise shares are calibrated to it)")
        loss = self.loss_name
        _check((loss == "mse") == (not self.data.implicit), "training.loss",
               f"= {loss!r} does not fit {'implicit' if self.data.implicit else 'explicit'} feedback "
               "(mse for ratings; bpr or bce for implicit feedback)")
        _check(not (loss in ("bpr", "ials") and p.unit == "record"), "training.loss",
               f"= {loss!r} is not supported with privacy.unit = 'record' (DP-SGD clips one "
               "example's gradient; use 'bce')")
        _check(not (loss == "ials" and self.model_name != "mf"), "training.loss",
               "= 'ials' needs model.name = 'mf' (its user rows are solved in closed form)")
        if p.unit == "record" and p.noise == "distributed":
            _check(self.aggregation.protocol != "plaintext" or self.engine == "inprocess", "aggregation.protocol",
                   "= 'plaintext' with record-level distributed noise is a simulation of the secure sum for "
                   "studies, run by the in-process engine only (engine = 'inprocess')")
        if p.unit == "record":
            # A private row solved in closed form from the user's ratings is an un-noised function
            # of them, and every gradient the client releases afterwards depends on it: record-level
            # DP needs the private rows trained by the same clipped, noised step (docs/privacy.md §4.4).
            _check(not getattr(self.model, "solve_private", False), "model.solve_private",
                   "must be false with privacy.unit = 'record': the closed-form private row is not "
                   "covered by DP-SGD's noise")
        if self.aggregation.encoding == "compact":
            _check(p.unit in ("user", "record"), "aggregation.encoding",
                   "'compact' needs differential privacy (privacy.unit = 'user' or 'record')")
            _check(self.aggregation.protocol != "plaintext" or (p.unit == "record" and p.noise == "distributed"),
                   "aggregation.encoding",
                   "'compact' needs a secure protocol (the plaintext sum adds float updates; only record-level "
                   "distributed noise simulates the ring sum)")

    @property
    def model_name(self) -> str:
        if self.model.name != "auto":
            return self.model.name
        return "neumf" if self.data.implicit and self.training.loss != "ials" else "mf"

    @property
    def loss_name(self) -> str:
        """The training loss: ``training.loss``, or the one ``auto`` stands for."""
        if self.training.loss != "auto":
            return self.training.loss
        if not self.data.implicit:
            return "mse"
        return "bce" if self.privacy.unit == "record" else "bpr"

    @property
    def split_protocol(self) -> str:
        if self.data.split != "auto":
            return self.data.split
        return "leave-last-out" if self.data.implicit else "holdout"


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def _check_range(key: str, value: Any) -> None:
    """A numeric value must be finite, and inside its key's range (:data:`RANGES`)."""
    if value is None or isinstance(value, (bool, str)):
        return
    bounds = RANGES.get(key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number{f' in {bounds}' if bounds else ''}; got {value!r}")
    if bounds is not None and value not in bounds:
        raise ConfigError(f"{key} must be in {bounds}; got {value!r}")


def model_memory_estimate(config: RunConfig, n_users: int, n_items: int) -> int:
    """Bytes a run of ``config`` on ``n_users`` × ``n_items`` holds for its model, an upper bound.

    Parameters: two embedding tables of ``dim`` plus a bias per user and item (NeuMF's GMF and
    MLP tables; MF has one) and NeuMF's MLP; each held about six times as float64 (the model,
    the shared vector, FedAdam's two moments, the round's sum, a client's update).
    """
    m = config.model
    parameters = (n_users + n_items) * (2 * m.dim + 2) + 4 * m.dim * m.hidden + 2 * m.hidden
    return 6 * 8 * parameters


def memory_limit() -> int:
    """Bytes a run may plan for: ``SECURE_FEDREC_MEMORY_LIMIT``, else 3/4 of physical memory."""
    configured = os.environ.get(MEMORY_LIMIT_ENV)
    if configured:
        if not configured.strip().isdigit() or int(configured) < 1:
            raise ConfigError(f"{MEMORY_LIMIT_ENV} must be a positive whole number of bytes; got {configured!r}")
        return int(configured)
    try:
        return int(0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no sysconf: assume a small machine
        return 4 << 30


def check_model_memory(config: RunConfig, n_users: int, n_items: int) -> None:
    """A :class:`ConfigError` before anything is allocated if the model cannot fit in memory."""
    need, limit = model_memory_estimate(config, n_users, n_items), memory_limit()
    if need > limit:
        raise ConfigError(
            f"model.dim = {config.model.dim} for {n_users} users and {n_items} items needs about "
            f"{need / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB this machine allows "
            f"({MEMORY_LIMIT_ENV} sets the limit): use a smaller model.dim or fewer users/items")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's annotation (int/float/bool/str/Literal/Optional)."""
    origin = get_origin(annotation)
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if value is None and len(options) < len(get_args(annotation)):
            return None
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - _NOT_KEYS
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; valid keys here: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw or f.name in _NOT_KEYS:
            continue
        annotation = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(annotation):
            kwargs[f.name] = _build(annotation, raw[f.name], key + ".")
        else:
            kwargs[f.name] = _coerce(raw[f.name], annotation, key)
            _check_range(key, kwargs[f.name])
    return cls(**kwargs)


#: RunConfig fields that are bookkeeping, not configuration keys
_NOT_KEYS = frozenset({"given"})

#: record-level DP-SGD with distributed noise: one round is one DP-SGD step of the whole
#: population, so its good settings differ from the user-level defaults (many rounds, Adam on
#: the noisy mean gradient, no weight decay, evaluation every few steps). They apply to the keys
#: the file and ``--set`` leave unset; docs/privacy.md §4.4 and docs/results.md say how they
#: were chosen.
RECORD_DISTRIBUTED_DEFAULTS: dict[str, Any] = {
    "training.rounds": 50,
    "training.reg": 0.0,
    "privacy.record_optimizer": "adam",
    "privacy.record_lr": 0.02,
    # the noise shares are sized for this fraction of the clients: with everyone surviving the
    # sum carries 1/sqrt(0.9) = 1.054 times the accounted noise (0.5 would make it 1.41 times);
    # a round that loses more than 10 % of its clients releases nothing
    "aggregation.threshold_fraction": 0.9,
    "evaluation.every": 10,
}


def _dotted_keys(raw: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in raw.items():
        if isinstance(value, dict):
            keys |= _dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def _mechanism_defaults(raw: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """``raw`` with the chosen mechanism's own defaults for the keys it does not set."""
    privacy = raw.get("privacy", {})
    if not isinstance(privacy, dict):
        return raw
    unit = privacy.get("unit", PrivacyConfig.unit)
    noise = privacy.get("noise", PrivacyConfig.noise)
    defaults: dict[str, Any] = {}
    if unit == "record" and noise == "distributed":
        defaults.update(RECORD_DISTRIBUTED_DEFAULTS)
    if unit == "record" and "solve_private" in {f.name for f in dataclasses.fields(ModelConfig)}:
        defaults["model.solve_private"] = False  # the closed-form private row (see RunConfig.validate)
    resolved = {section: dict(value) if isinstance(value, dict) else value for section, value in raw.items()}
    for dotted, value in defaults.items():
        if dotted in given:
            continue
        section, key = dotted.split(".")
        table = resolved.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = value
    return resolved


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    given = _dotted_keys(raw)
    config = _build(RunConfig, _mechanism_defaults(raw, given), "")
    config.given = frozenset(given)
    config.validate()
    return config


#: Python spellings some users type for TOML booleans; accepted so that ``--set x=True`` works too
_PYTHON_BOOLEANS = {"True": True, "False": False}


def parse_override(text: str) -> tuple[str, Any]:
    """One ``--set KEY=VALUE`` of any command: the value is a TOML value.

    ``true``/``false``, numbers, ``"quoted strings"`` and arrays parse as TOML;
    a bare word that is not TOML (``privacy.unit=none``) is taken as a string,
    and Python's ``True``/``False`` as booleans. Every subcommand (run,
    baseline, audit, study, flower) uses this one parser.

    >>> parse_override("data.implicit=true")
    ('data.implicit', True)
    >>> parse_override('privacy.unit="record"')
    ('privacy.unit', 'record')
    >>> parse_override("privacy.unit=none")
    ('privacy.unit', 'none')
    >>> parse_override("training.rounds=10")
    ('training.rounds', 10)
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    if raw in _PYTHON_BOOLEANS:
        return key, _PYTHON_BOOLEANS[raw]
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw  # a bare word is a string
    except RecursionError:
        raise ConfigError(f"--set {key}: value nested too deeply") from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a TOML file (or the defaults when ``path`` is None) and apply dotted overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not str(path).strip():
            raise ConfigError("the config file path is empty")
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"the config file {path} is a folder") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8 (fuzz contract, fuzz/targets.py)
            raise ConfigError(f"{path} is not valid TOML: not UTF-8 ({exc.reason})") from None
        except RecursionError:  # tomllib recurses per nesting level (fuzz contract)
            raise ConfigError(f"{path} is not valid TOML: nested too deeply") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted}: {part} is not a table")
        node[leaf] = value
    return config_from_dict(raw)


def config_to_dict(config: Any) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    for name in _NOT_KEYS:
        out.pop(name, None)
    return out


def dump_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of scalars as TOML (the resolved config copy in --out)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def emit(table: dict[str, Any], name: str) -> None:
        plain = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        if name:
            lines.append(f"\n[{name}]")
        for k, v in plain.items():
            lines.append(f"{k} = {scalar(v)}")
        for k, v in nested.items():
            emit(v, f"{name}.{k}" if name else k)

    emit(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"
