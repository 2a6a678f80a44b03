"""What the dominating Gaussian (secure_fedrec/privacy/ddg_dominance.py) changes, without training.

Prints, for docs/privacy.md "The dominating Gaussian":

* record-level DP-SGD under secure aggregation on ml-latest-small (the issue-20 defaults): the
  noise σ/C its plan calibrates to at ε = 1 and 8 (needs ../shared/data/ml-latest-small);
* at the amplified synthetic default's noise (σ/C 0.775, q = 0.1, 18 rounds, δ = 5e-5): the ε of
  fixed-size cohorts (replace-one: dp-accounting's PLD of the subsampled Gaussian at half the
  multiplier) against revealed participation (the exact mixture).

    OMP_NUM_THREADS=1 python benchmarks/ddg_dominance.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from secure_fedrec.privacy.ddg_dominance import shift_profile_epsilon

DATA = ROOT.parent / "shared" / "data" / "ml-latest-small"


def record_level_noise() -> None:
    from secure_fedrec.config import load_config
    from secure_fedrec.engines.inprocess import FederatedTrainer
    from secure_fedrec.inputs import load_data, make_split, resolve_config

    for epsilon in (1.0, 8.0):
        config = resolve_config(load_config(None, {
            "data.source": str(DATA), "privacy.unit": "record", "privacy.noise": "distributed",
            "privacy.target_epsilon": epsilon}))
        privacy = FederatedTrainer(config, make_split(config, load_data(config))).privacy
        print(f"record level, ml-latest-small, ε = {epsilon:g}: σ/C = "
              f"{privacy.summary()['noise_multiplier_over_clip']:.3f}")


def cohorts_against_revealed(z: float = 0.775, q: float = 0.1, rounds: int = 18, delta: float = 5e-5) -> None:
    fixed = shift_profile_epsilon(delta, [(z / 2, q, rounds)], hidden=True)
    revealed = shift_profile_epsilon(delta, [(z, q, rounds)], hidden=False)
    print(f"σ/C = {z}, q = {q}, {rounds} rounds, δ = {delta:g}: fixed-size cohorts (replace-one) ε = {fixed:.2f}, "
          f"participation revealed ε = {revealed:.2f}")


if __name__ == "__main__":
    if DATA.exists():
        record_level_noise()
    else:
        print(f"{DATA} is absent: the record-level part is skipped")
    cohorts_against_revealed()
