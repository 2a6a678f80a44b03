"""Differential privacy for secure_fedrec: accountants, calibration, noise and clipping.

Three privacy units (see docs/privacy.md):

* record level — DP-SGD on each client (Opacus); one persistent accountant per
  client (:class:`ClientAccountants`);
* user level — DP-FedAvg with central Gaussian noise on the clipped sum
  (:func:`clip_updates_l2`, :func:`add_gaussian_noise`, :class:`PldAccountant`);
* user level under secure aggregation — distributed discrete Gaussian shares
  added by the clients (:mod:`.discrete_gaussian`,
  :class:`DistributedDiscreteGaussianAccountant`).
"""

from .accounting import (
    INTEGER_RDP_ORDERS,
    Accountant,
    AccountantStateError,
    ClientAccountants,
    EpsilonDistribution,
    PldAccountant,
    RdpAccountant,
    StepRecord,
    create_accountant,
)
from .budget import BudgetExceededError, BudgetStatus, PrivacyBudget
from .calibration import (
    CalibrationError,
    calibrate_ddg_total_sigma,
    calibrate_noise_multiplier,
    default_delta,
)
from .clipping import (
    AdaptiveClipNorm,
    ClipResult,
    NonFiniteUpdateError,
    clip_updates_l2,
    effective_update_noise_multiplier,
)
from .ddg_accounting import (
    DistributedDiscreteGaussianAccountant,
    conditional_rounding_l2_bound,
    ddg_rdp,
    ddg_tau,
    poisson_subsampled_rdp_upper_bound,
)
from .discrete_gaussian import (
    DiscreteGaussianTable,
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    distributed_noise_share_sigma,
    sample_discrete_gaussian,
    sample_discrete_gaussian_exact,
    wrap_probability,
)
from .distributed_dp import (
    DdgPlan,
    RoundingFailedError,
    conditional_randomized_round,
    plan_distributed_discrete_gaussian,
    randomized_round,
)
from .noise import add_gaussian_noise, csprng_normal

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
