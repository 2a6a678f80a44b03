"""The centralized DP-SGD twin of record-level DP-SGD under secure aggregation.

What the federated mechanism (:class:`~secure_fedrec.plans.RecordDistributed`) is
measured against: DP-SGD run by one trusted party on the pooled ratings, with Opacus'
Poisson sampler and DP optimizer (noise, then Adam), and everything else the federated
run uses — the same model and initial parameters, the joint per-example clipping to
``C`` (book-keeping clipping, :mod:`secure_fedrec.training.bookkeeping`: Opacus' hooks
would materialise a batch × 9,066 × dim tensor per item table), the same sampling
rate ``q``, number of steps, public denominator ``q·N``, optimizer and learning rate.

Two noise levels (``noise=``):

* ``"same"`` — the noise std the federated run's accountant charges, ``σ·C`` with
  ``σ`` the plan's multiplier over its (rounding-inflated) sensitivity, and the same
  accountant: the same ε by construction. The gap to the federated run is then what
  distributing the noise costs (rounding, noise sized for the guaranteed minimum of
  survivors rather than for all of them).
* ``"own"`` — the noise a centralized DP-SGD would calibrate for itself at the same
  target ε with the tight PLD accountant of the continuous Gaussian: the sceptic's
  comparison, which also prices the discrete mechanism's accounting;
* ``"none"`` — neither clipping nor noise: what the same schedule reaches without privacy.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .config import ConfigError, RunConfig
from .data.dataset import Split
from .evaluation import evaluate
from .inputs import build_model_for
from .training.bookkeeping import BookkeepingClipping
from .training.local import loss_fn

__all__ = ["TwinResult", "train_dpsgd_twin", "twin_as_run_result"]


@dataclass
class TwinResult:
    metrics: dict[str, float | str]
    privacy: dict[str, Any]
    steps: int
    seconds: float
    history: list[dict[str, Any]]


def train_dpsgd_twin(config: RunConfig, split: Split, *, noise: Literal["same", "own", "none"] = "same"
                     ) -> TwinResult:
    """Centralized DP-SGD on ``split.train`` with the federated run's settings (module docstring)."""
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    from .engines.inprocess import server_for
    from .plans import RecordDistributed

    p, t = config.privacy, config.training
    if not (p.unit == "record" and p.noise == "distributed"):
        raise ConfigError("the DP-SGD twin mirrors privacy.unit = 'record' with privacy.noise = 'distributed'")
    if config.model_name != "mf" or config.data.implicit:
        raise ConfigError("the DP-SGD twin is implemented for explicit ratings (biased MF)")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model_for(config, split)
    plan = server_for(config, split, model).privacy
    assert isinstance(plan, RecordDistributed)
    q, steps = plan.sample_rate, t.rounds
    clip = p.clip_norm
    if noise == "same":
        stddev = plan.ddg.model_unit_noise_std
        accountant = plan.accountant.copy()
        accountant.history = []
        charge = {"noise_multiplier": plan.ddg.noise_multiplier, "sample_rate": q}
    elif noise == "none":  # the same schedule without privacy: no clipping, no noise (the ε = ∞ point)
        from .privacy.accounting import create_accountant

        stddev, clip = 0.0, 1e12
        accountant = create_accountant("rdp")
        charge = {"noise_multiplier": 0.0, "sample_rate": q}
    else:
        from .privacy.accounting import create_accountant
        from .privacy.calibration import calibrate_noise_multiplier

        if p.target_epsilon is None:
            raise ConfigError("noise = 'own' calibrates to privacy.target_epsilon, which is not set")
        z = calibrate_noise_multiplier(p.target_epsilon, plan.delta, sample_rate=q, steps=steps, accountant="pld")
        stddev = z * p.clip_norm
        accountant = create_accountant("pld")
        charge = {"noise_multiplier": z, "sample_rate": q}

    train = split.train
    users = torch.as_tensor(train.users, dtype=torch.long)
    items = torch.as_tensor(train.items, dtype=torch.long)
    ratings = torch.as_tensor(train.ratings, dtype=torch.float32)
    n = len(users)
    # the DP noise is a secret: its generator is seeded from the OS, never from the run's seed
    generator = torch.Generator().manual_seed(secrets.randbits(63))
    sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=q, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.record_lr, weight_decay=t.reg)
    if p.record_optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=p.record_lr)
    dp_optimizer = DPOptimizerFastGradientClipping(
        optimizer, noise_multiplier=stddev / clip, max_grad_norm=clip,
        expected_batch_size=plan.expected_batch, loss_reduction="mean", generator=generator)
    criterion = loss_fn(model)
    every = config.evaluation.every
    history: list[dict[str, Any]] = []
    done = 0
    with BookkeepingClipping(model, max_grad_norm=clip) as clipping:
        while done < steps:
            for batch in sampler:
                dp_optimizer.zero_grad(set_to_none=True)
                index = torch.as_tensor(batch, dtype=torch.long)
                losses = criterion(model(users[index], items[index]), ratings[index]) if len(index) else ratings[:0]
                clipping.backward(losses)  # an empty batch still takes a noise-only step
                dp_optimizer.step()
                accountant.step(**charge)
                done += 1
                if done % every == 0 or done == steps:
                    spent = accountant.get_epsilon(plan.delta)
                    history.append({"round": done, **_evaluate(model, config, split),
                                    "epsilon": spent if math.isfinite(spent) else None})
                if done == steps:
                    break
    final = history[-1] if history else {}
    metrics = {k: v for k, v in final.items() if k not in ("round", "epsilon")}
    privacy = {
        "unit": "record", "noise": {"same": "central DP-SGD twin", "own": "central DP-SGD twin (own PLD noise)",
                                    "none": "central twin without clipping or noise"}[noise], "delta": plan.delta,
        "target_epsilon": p.target_epsilon, "epsilon": accountant.get_epsilon(plan.delta) if done else 0.0,
        "noise_multiplier_over_clip": stddev / p.clip_norm, "clip_norm": clip, "sample_rate": q,
        "steps": done, "expected_batch": plan.expected_batch,
        "accountant": ("the federated run's (DDG RDP, symmetric subsampling)" if noise == "same"
                       else "PLD of the Poisson-subsampled Gaussian (dp-accounting)"),
        "statement": (f"record-level DP (any single rating): ε={accountant.get_epsilon(plan.delta):.3g}, "
                      f"δ={plan.delta:.2g}; centralized DP-SGD (a trusted server adds the noise), the twin "
                      "of the federated run"),
    }
    if noise == "none":
        privacy.update(epsilon=None, statement="no differential privacy: the twin's schedule without "
                                                   "clipping or noise")
    if noise == "same":
        from .privacy.accounting import create_accountant

        pld = create_accountant("pld")
        pld.step(noise_multiplier=stddev / p.clip_norm, sample_rate=q, steps=done)
        privacy["epsilon_gaussian_pld"] = pld.get_epsilon(plan.delta)
    return TwinResult(metrics=metrics, privacy=privacy, steps=done, seconds=time.perf_counter() - started,
                      history=history)


def _evaluate(model, config: RunConfig, split: Split) -> dict[str, float]:
    cfg = config.evaluation
    out = evaluate(model, split, k=cfg.k, ranking=cfg.ranking, sampled_negatives=cfg.sampled_negatives,
                   seed=config.seed)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def twin_as_run_result(config: RunConfig, result: TwinResult, dataset: dict[str, Any]) -> dict[str, Any]:
    """The twin's result in the shape of ``run_job``'s (what a study row and the report read)."""
    from .config import config_to_dict

    return {"config": config_to_dict(config), "seed": config.seed, "engine": "central", "protocol": "central",
            "model": config.model_name, "dataset": dataset, "rounds": result.history,
            "final": result.metrics, "privacy": result.privacy, "wall_time_seconds": result.seconds,
            "bytes_sent_per_client_mean": 0.0}
