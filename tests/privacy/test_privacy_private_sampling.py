"""Private client sampling (user level, distributed noise): every member uploads every round and
takes part by its own CSPRNG coin, so the server cannot tell who was sampled, and the privacy
loss is a pure shift (every share is in every sum), accounted with the symmetric bound."""

from __future__ import annotations

import numpy as np
import pytest

from secure_fedrec.config import ConfigError, load_config
from secure_fedrec.rounds.wire import plan_from_json, plan_to_json
from secure_fedrec.runner import load_data, make_split, run_job

SMALL = {"data.synthetic.n_users": 60, "data.synthetic.n_items": 30, "data.synthetic.mean_ratings_per_user": 10.0,
         "training.rounds": 3, "training.clients_per_round": 0.2, "evaluation.every": 3,
         "privacy.target_epsilon": 8.0, "aggregation.threshold_fraction": 0.9}


@pytest.mark.parametrize("overrides", [
    {"privacy.noise": "central"},
    {"privacy.unit": "record"},
    {"privacy.clipping": "adaptive"},
    {"aggregation.encoding": "compact"},
    {"aggregation.protocol": "paillier"},
])
def test_private_sampling_is_refused_where_it_does_not_apply(overrides):
    with pytest.raises(ConfigError, match="private_sampling"):
        load_config(None, {**SMALL, "privacy.private_sampling": True, **overrides})


def test_every_member_uploads_every_round_and_the_accounting_is_symmetric():
    result = run_job(load_config(None, {**SMALL, "privacy.private_sampling": True}))
    assert [r["sampled"] for r in result["rounds"]] == [60] * 3
    assert [r["contributors"] for r in result["rounds"]] == [60] * 3  # uploads tell nothing
    privacy = result["privacy"]
    assert privacy["private_sampling"] is True and "symmetric" in privacy["accountant"]
    assert privacy["participation_known"] is None and privacy["participation"].startswith("hidden")
    assert 0 < privacy["epsilon"] <= 8.0 * 1.001
    assert np.isfinite(result["final"]["rmse"])
    public = run_job(load_config(None, SMALL))
    # the server's Poisson sample is public to it: fewer uploaders, and the un-amplified figure
    assert max(r["sampled"] for r in public["rounds"]) < 60
    assert public["privacy"]["participation_known"]["epsilon_worst_user"] > 8.0


def test_the_symmetric_bound_affords_less_noise_than_the_general_one():
    from secure_fedrec.engines.inprocess import FederatedTrainer
    from secure_fedrec.inputs import resolve_config

    def plan(private, **extra):
        # where amplification matters (at ε = 8 over 3 rounds both bounds are the unsampled one)
        config = resolve_config(load_config(None, {**SMALL, "privacy.private_sampling": private,
                                                   "privacy.target_epsilon": 2.0, "training.rounds": 10,
                                                   "training.clients_per_round": 0.1, **extra}))
        return FederatedTrainer(config, make_split(config, load_data(config))).privacy

    def multiplier(p):
        return p.ddg_plan.total_sigma / p.ddg_plan.l2_sensitivity

    hidden, public = plan(True), plan(False, **{"privacy.calibrate_to": "amplified"})
    proven = plan(False)  # the default: server sampling charged with participation revealed
    assert hidden.accountant.subsampling == "symmetric" and public.accountant.subsampling == "general"
    assert proven.accountant.subsampling == "revealed"
    # at the same target ε the symmetric bound (with the dominating Gaussian's PLD) needs the smallest
    # noise multiplier, the unproven general bound more, and no amplification at all the most
    assert multiplier(hidden) < multiplier(public) < multiplier(proven)


def test_the_clients_coin_rate_travels_in_the_client_plan_and_is_checked():
    from secure_fedrec.engines.inprocess import FederatedTrainer
    from secure_fedrec.inputs import resolve_config

    config = resolve_config(load_config(None, {**SMALL, "privacy.private_sampling": True}))
    trainer = FederatedTrainer(config, make_split(config, load_data(config)))
    plan = trainer.server.client_plan
    assert plan.private_sampling_rate == pytest.approx(0.2)
    assert plan_from_json(plan_to_json(plan)).private_sampling_rate == pytest.approx(0.2)
    text = plan_to_json(plan).replace('"private_sampling_rate": 0.2', '"private_sampling_rate": 1.5')
    with pytest.raises(ValueError):
        plan_from_json(text)
