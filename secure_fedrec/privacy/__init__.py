"""Differential privacy for secure_fedrec: accountants, calibration, noise and clipping.

Three privacy units (see docs/privacy.md):

* record level — DP-SGD on each client (Opacus); one persistent accountant per
  client (:class:`ClientAccountants`);
* user level — DP-FedAvg with central Gaussian noise on the clipped sum
  (:func:`clip_updates_l2`, :func:`add_gaussian_noise`, :class:`PldAccountant`);
* user level under secure aggregation — distributed discrete Gaussian shares
  added by the clients (:mod:`.discrete_gaussian`,
  :class:`DistributedDiscreteGaussianAccountant`).

The names below are loaded on first use (PEP 562), so that a client that only
rounds and samples noise (:mod:`.rounding`, :mod:`.discrete_gaussian`) never imports
the accountants' libraries (dp_accounting, scipy).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule that defines it
_WHERE: dict[str, str] = {
    "Accountant": "accounting",
    "AccountantStateError": "accounting",
    "AdaptiveClipNorm": "clipping",
    "BudgetExceededError": "budget",
    "BudgetStatus": "budget",
    "CalibrationError": "calibration",
    "ClientAccountants": "accounting",
    "ClipResult": "clipping",
    "DdgPlan": "distributed_dp",
    "DiscreteGaussianTable": "discrete_gaussian",
    "DistributedDiscreteGaussianAccountant": "ddg_accounting",
    "EpsilonDistribution": "accounting",
    "INTEGER_RDP_ORDERS": "accounting",
    "NonFiniteUpdateError": "clipping",
    "PldAccountant": "accounting",
    "PrivacyBudget": "budget",
    "RdpAccountant": "accounting",
    "RoundingFailedError": "rounding",
    "StepRecord": "accounting",
    "add_gaussian_noise": "noise",
    "calibrate_ddg_total_sigma": "calibration",
    "calibrate_noise_multiplier": "calibration",
    "clip_updates_l2": "clipping",
    "conditional_randomized_round": "rounding",
    "conditional_rounding_l2_bound": "ddg_accounting",
    "create_accountant": "accounting",
    "csprng_normal": "noise",
    "ddg_rdp": "ddg_accounting",
    "ddg_tau": "ddg_accounting",
    "default_delta": "calibration",
    "discrete_gaussian_pmf": "discrete_gaussian",
    "discrete_gaussian_variance": "discrete_gaussian",
    "distributed_noise_share_sigma": "discrete_gaussian",
    "effective_update_noise_multiplier": "clipping",
    "plan_distributed_discrete_gaussian": "distributed_dp",
    "poisson_subsampled_rdp_upper_bound": "ddg_accounting",
    "randomized_round": "rounding",
    "sample_discrete_gaussian": "discrete_gaussian",
    "sample_discrete_gaussian_exact": "discrete_gaussian",
    "wrap_probability": "discrete_gaussian",
}

__all__ = [
    "INTEGER_RDP_ORDERS",
    "Accountant",
    "AccountantStateError",
    "AdaptiveClipNorm",
    "BudgetExceededError",
    "BudgetStatus",
    "CalibrationError",
    "ClientAccountants",
    "ClipResult",
    "DdgPlan",
    "DiscreteGaussianTable",
    "DistributedDiscreteGaussianAccountant",
    "EpsilonDistribution",
    "NonFiniteUpdateError",
    "PldAccountant",
    "PrivacyBudget",
    "RdpAccountant",
    "RoundingFailedError",
    "StepRecord",
    "add_gaussian_noise",
    "calibrate_ddg_total_sigma",
    "calibrate_noise_multiplier",
    "clip_updates_l2",
    "conditional_randomized_round",
    "conditional_rounding_l2_bound",
    "create_accountant",
    "csprng_normal",
    "ddg_rdp",
    "ddg_tau",
    "default_delta",
    "discrete_gaussian_pmf",
    "discrete_gaussian_variance",
    "distributed_noise_share_sigma",
    "effective_update_noise_multiplier",
    "plan_distributed_discrete_gaussian",
    "poisson_subsampled_rdp_upper_bound",
    "randomized_round",
    "sample_discrete_gaussian",
    "sample_discrete_gaussian_exact",
    "wrap_probability",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
