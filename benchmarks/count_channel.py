"""What the amplified user-level ε does not cover: the number of noise shares in each sum.

Under server sampling with distributed noise a sampled user adds its own noise share and an
unsampled one adds none, so the released sum of the two neighbouring worlds differs in the
number of shares as well as by the user's update. The amplified accountant (Zhu–Wang's general
bound over the shift alone) does not charge for that; docs/privacy.md, "The share count".

This benchmark measures the privacy loss of one concrete observer that exploits it and is *not*
told who took part: it chose every other user's update (the DP worst case lets it), all the
same unit direction ``w``, and the target's is ``x ⟂ w``. From each released sum it reads

* ``<Y, w>`` — how many other users were sampled (each adds ``w``),
* ``||Y||²`` over the ``d`` other coordinates — how many noise shares the sum holds,
* ``<Y, x>`` — the target's own contribution,

and the optimal test (the exact likelihood ratio of these sufficient statistics, the others'
Binomial count summed out; a round with fewer than ``t`` shares releases nothing) is simulated
``--trials`` times in each world. The estimate is the ε at the run's δ of that privacy-loss
distribution (``δ(ε) = E_P[(1 - e^{ε - L})₊]``, both directions). The noise is the continuous
Gaussian approximation of the discrete one (shares of scale ~10⁴ in integer units).

For each cell it prints the product's amplified ε (the run's headline), this observer's ε̂, and
the bound that covers the share count (:func:`participation_revealed_rdp`, reported by every
server-sampled distributed run as ``privacy.participation_revealed``). ε̂ must stay below the
latter; where it reaches the former, the headline is not a guarantee.

    OMP_NUM_THREADS=1 python benchmarks/count_channel.py            # ~25 min CPU
    OMP_NUM_THREADS=1 python benchmarks/count_channel.py --quick    # 20,000 trials per cell
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import special, stats
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from secure_fedrec.config import config_from_dict
from secure_fedrec.plans import Population, build_privacy_plan

RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Cell:
    name: str
    users: int
    sample_rate: float
    rounds: int
    dim: int
    threshold_fraction: float


# The shapes of the two default jobs: ml-latest-small (671 users; biased MF, dim 8: 9,066 items
# × 9 + 1 shared coordinates; its preset's 10 rounds at q = 0.15) and the synthetic default (2,000
# users, 1,801 coordinates, 18 rounds at q = 0.1); thresholds and model width varied.
CELLS = (
    Cell("ml-latest-small default (threshold 0.5)", 671, 0.15, 10, 9066 * 9 + 1, 0.5),
    Cell("ml-latest-small, threshold 0.9", 671, 0.15, 10, 9066 * 9 + 1, 0.9),
    Cell("ml-latest-small, threshold 1.0", 671, 0.15, 10, 9066 * 9 + 1, 1.0),
    Cell("ml-latest-small, dim 32, threshold 0.9", 671, 0.15, 10, 9066 * 33 + 1, 0.9),
    Cell("synthetic default (threshold 0.5)", 2000, 0.1, 18, 1801, 0.5),
)


def plan_for(cell: Cell, target_epsilon: float) -> dict[str, float]:
    """The product's own plan for the cell: its headline ε, the sum's noise, the floor of shares."""
    config = config_from_dict({
        "training": {"rounds": cell.rounds, "clients_per_round": cell.sample_rate},
        # the amplified calibration: the headline whose count channel this measures
        "privacy": {"unit": "user", "noise": "distributed", "target_epsilon": target_epsilon,
                    "calibrate_to": "amplified"},
        "aggregation": {"protocol": "secagg+", "threshold_fraction": cell.threshold_fraction},
    })
    plan = build_privacy_plan(config, Population(n_users=cell.users, expected_clients=cell.sample_rate * cell.users,
                                                 dim=cell.dim))
    for _ in range(cell.rounds):
        plan.after_round()
    return {"epsilon_amplified": plan.accountant.get_epsilon(plan.delta),
            "epsilon_participation_revealed": plan.accountant.epsilon_participation_revealed(plan.delta),
            "delta": plan.delta, "min_survivors": plan.min_survivors,
            # the std of the floor's t shares, in clip-norm units: the accounted noise multiplier
            "noise_multiplier": plan.ddg_plan.model_unit_noise_std / config.privacy.clip_norm}


class CountObserver:
    """The observer's exact log-likelihood ratio (target present / absent) for one round."""

    def __init__(self, *, others: int, q: float, t: int, share_var: float, dim: int, count: bool = True) -> None:
        self.others, self.q, self.t, self.share_var = others, q, t, share_var
        self.count = count  # False: reads only <Y, x>, the shift the amplified accountant charges for
        self.dof = dim - 2  # the coordinates other than w and x carry only noise
        mean, sd = others * q, math.sqrt(others * q * (1 - q))
        # others' counts that can be in a released sum (t shares at least, the target's own included)
        self.grid = np.arange(max(t - 1, 1, int(mean - 9 * sd)), min(others, int(mean + 9 * sd) + 2)).astype(float)
        self.log_binom = stats.binom.logpmf(self.grid, others, q)
        abort_absent = stats.binom.cdf(t - 1, others, q)
        abort_present = (1 - q) * abort_absent + q * stats.binom.cdf(t - 2, others, q)
        self.abort_loss = math.log(abort_present) - math.log(abort_absent) if abort_absent > 0 else 0.0

    def _log_density(self, on_w, on_x, norm, others, shares, target):
        var = shares * self.share_var
        target_term = -0.5 * (on_x[:, None] - target) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
        if not self.count:
            return target_term
        return (target_term - 0.5 * (on_w[:, None] - others) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
                + stats.chi2.logpdf(norm[:, None] / shares, self.dof) - np.log(shares))

    def loss(self, on_w: np.ndarray, on_x: np.ndarray, norm: np.ndarray) -> np.ndarray:
        k = self.grid[None, :]
        # a sum is released only when it holds at least t shares
        released_alone = np.where(k >= self.t, 0.0, -np.inf)
        released_with = np.where(k + 1 >= self.t, 0.0, -np.inf)
        absent = special.logsumexp(self.log_binom + released_alone + self._log_density(on_w, on_x, norm, k, k, 0.0),
                                   axis=1)
        not_sampled = self.log_binom + released_alone + math.log1p(-self.q) \
            + self._log_density(on_w, on_x, norm, k, k, 0.0)
        sampled = self.log_binom + released_with + math.log(self.q) \
            + self._log_density(on_w, on_x, norm, k, k + 1, 1.0)
        return special.logsumexp(np.concatenate([not_sampled, sampled], axis=1), axis=1) - absent


def simulate(observer: CountObserver, *, present: bool, trials: int, rounds: int, rng: np.random.Generator,
             chunk: int = 20_000) -> np.ndarray:
    """Total privacy loss over the rounds, per trial, in one world."""
    total = np.zeros(trials)
    for _ in range(rounds):
        others = rng.binomial(observer.others, observer.q, trials).astype(float)
        sampled = (rng.random(trials) < observer.q).astype(float) if present else np.zeros(trials)
        shares = others + sampled
        released = shares >= observer.t
        total[~released] += observer.abort_loss
        spread = np.sqrt(shares * observer.share_var)
        on_w = others + rng.normal(0.0, 1.0, trials) * spread
        on_x = sampled + rng.normal(0.0, 1.0, trials) * spread
        norm = shares * rng.chisquare(observer.dof, trials)
        index = np.flatnonzero(released)
        for start in range(0, len(index), chunk):
            part = index[start:start + chunk]
            total[part] += observer.loss(on_w[part], on_x[part], norm[part])
    return total


def epsilon_at(delta: float, loss: np.ndarray) -> float:
    """ε with ``E[(1 - e^{ε - L})₊] = δ`` over samples of the privacy loss ``L`` (bisection)."""
    lo, hi = 0.0, 80.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(np.clip(1 - np.exp(mid - loss), 0, None)) > delta:
            lo = mid
        else:
            hi = mid
    return lo


def measure(cell: Cell, *, trials: int, target_epsilon: float, seed: int) -> dict:
    plan = plan_for(cell, target_epsilon)
    t = int(plan["min_survivors"])
    observer = CountObserver(others=cell.users - 1, q=cell.sample_rate, t=t,
                             share_var=plan["noise_multiplier"] ** 2 / t, dim=cell.dim)
    rng = np.random.default_rng(seed)
    started = time.process_time()
    present = simulate(observer, present=True, trials=trials, rounds=cell.rounds, rng=rng)
    absent = simulate(observer, present=False, trials=trials, rounds=cell.rounds, rng=rng)
    delta = plan["delta"]
    quarters = [max(epsilon_at(delta, p), epsilon_at(delta, -a))
                for p, a in zip(np.array_split(present, 4), np.array_split(absent, 4))]
    estimate = max(epsilon_at(delta, present), epsilon_at(delta, -absent))
    # the same observer reading only <Y, x>: what the amplified accountant is a bound for
    shift_only = CountObserver(others=cell.users - 1, q=cell.sample_rate, t=t,
                               share_var=plan["noise_multiplier"] ** 2 / t, dim=cell.dim, count=False)
    shift_present = simulate(shift_only, present=True, trials=trials, rounds=cell.rounds, rng=rng)
    shift_absent = simulate(shift_only, present=False, trials=trials, rounds=cell.rounds, rng=rng)
    shift_estimate = max(epsilon_at(delta, shift_present), epsilon_at(delta, -shift_absent))
    return {**asdict(cell), **plan, "trials_per_world": trials, "seed": seed,
            "epsilon_observed_shift_only": shift_estimate,
            "epsilon_observed": estimate, "epsilon_observed_quarters": quarters,
            "observed_over_amplified": estimate / plan["epsilon_amplified"],
            "mean_loss_present": float(present.mean()), "cpu_seconds": time.process_time() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200_000, help="simulated runs per world and cell")
    parser.add_argument("--quick", action="store_true", help="20,000 trials per cell")
    parser.add_argument("--epsilon", type=float, default=8.0, help="the run's target ε")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "count_channel.json")
    args = parser.parse_args(argv)
    trials = 20_000 if args.quick else args.trials
    rows = []
    for index, cell in enumerate(tqdm(CELLS, desc="cells")):
        rows.append(measure(cell, trials=trials, target_epsilon=args.epsilon, seed=args.seed + index))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "OMP_NUM_THREADS=1 python benchmarks/count_channel.py"
                                        + (" --quick" if args.quick else ""), "rows": rows}, indent=1))
    print("| cell | t | accounted σ/C | amplified ε (headline) | ε̂ reading the shift only | ε̂ reading the share count"
          " too (4 quarters) | ε̂ / headline | proven ε (participation revealed) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        quarters = " / ".join(f"{e:.2f}" for e in r["epsilon_observed_quarters"])
        print(f"| {r['name']} | {r['min_survivors']} | {r['noise_multiplier']:.3f} | {r['epsilon_amplified']:.2f} | "
              f"{r['epsilon_observed_shift_only']:.2f} | **{r['epsilon_observed']:.2f}** ({quarters}) | {r['observed_over_amplified']:.2f} | "
              f"{r['epsilon_participation_revealed']:.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
