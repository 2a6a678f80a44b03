"""Isolated canaries: each alone on a phantom item's coordinate, audited as independent trials."""

import dataclasses
import warnings

import numpy as np
import pytest

from attacks import (
    DiracDirections,
    GaussianTradeoff,
    MechanismFamily,
    PrivacyViolationWarning,
    audit_heldout_fdp,
    fdp_counts_reject,
    gaussian_epsilon,
)
from secure_fedrec.audit import AuditSpec, run_audit
from secure_fedrec.audit.canary_audit import pooled_heldout_audit
from secure_fedrec.audit.commands import summary_text
from secure_fedrec.audit.isolation import (
    ISOLATED_DESIGN,
    isolated_coordinates,
    isolation_problems,
    item_width,
    resolve_space,
    with_phantom_items,
)
from secure_fedrec.audit.run import (
    AuditError,
    participation_schedule,
    revealed_participation_schedule,
)
from secure_fedrec.audit.spec import spec_from_dict
from secure_fedrec.audit.twin import plan_without_noise_share
from secure_fedrec.config import ConfigError, config_from_dict
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

DELTA = 1e-5


def _gdp_family() -> MechanismFamily:
    """μ-GDP with μ = 1/s: the Gaussian mechanism with noise multiplier s."""
    return MechanismFamily(tradeoff=lambda s: GaussianTradeoff(1.0 / s),
                           epsilon=lambda s: gaussian_epsilon(1.0 / s, DELTA),
                           scales=tuple(np.geomspace(0.1, 30.0, 90)))


def _trials(mu: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    included = rng.random(n) < 0.5
    return rng.standard_normal(n) + mu * included, included


def test_heldout_fdp_stays_below_the_claim_of_a_correct_gaussian_mechanism():
    family = _gdp_family()  # the claim: noise multiplier 1 (μ = 1)
    claimed = gaussian_epsilon(1.0, DELTA)
    for seed in range(5):
        scores, included = _trials(1.0, 20000, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("error", PrivacyViolationWarning)
            result = audit_heldout_fdp(scores, included, family=family, design="simulated independent trials",
                                       epsilon_claimed=claimed, delta=DELTA, random_state=seed)
        assert 0.0 <= result.epsilon_lower_bound <= claimed
        assert result.epsilon_lower_bound >= 0.5 * claimed  # 20,000 independent trials: tight
        assert result.details["design"] == "simulated independent trials"


def test_heldout_fdp_flags_a_mechanism_with_half_the_claimed_noise():
    family = _gdp_family()
    claimed = gaussian_epsilon(1.0, DELTA)
    scores, included = _trials(2.0, 20000, 7)  # μ = 2: half the noise the claim says
    with pytest.warns(PrivacyViolationWarning):
        result = audit_heldout_fdp(scores, included, family=family, design="simulated", epsilon_claimed=claimed,
                                   delta=DELTA, random_state=0)
    assert result.violation and result.epsilon_lower_bound > claimed


def test_heldout_fdp_validates_its_inputs():
    scores, included = _trials(1.0, 100, 0)
    with pytest.raises(ValueError, match="design"):
        audit_heldout_fdp(scores, included, family=_gdp_family(), design="")
    with pytest.raises(ValueError, match="same length"):
        audit_heldout_fdp(scores[:-1], included, family=_gdp_family(), design="x")
    with pytest.raises(ValueError):
        audit_heldout_fdp(np.where(included, np.nan, 0.0), included, family=_gdp_family(), design="x")
    assert not fdp_counts_reject(GaussianTradeoff(1.0), 0, 0 + 1, 0, 1, 0.95)  # one trial shows nothing


def test_dirac_directions_check_their_coordinates():
    with pytest.raises(ValueError, match="distinct"):
        DiracDirections(np.array([1, 1]), 4)
    with pytest.raises(ValueError, match="lie in"):
        DiracDirections(np.array([4]), 4)
    assert DiracDirections(np.array([3, 0]), 4).project(np.array([1.0, 2.0, 3.0, 4.0])).tolist() == [4.0, 1.0]


def _config(protocol="plaintext", **privacy):
    return config_from_dict({
        "data": {"synthetic": {"n_users": 200, "n_items": 300, "mean_ratings_per_user": 15}},
        "model": {"dim": 8},
        "privacy": {"unit": "user", "noise": "central", "target_epsilon": 4.0, **privacy},
        "aggregation": {"protocol": protocol},
        "training": {"rounds": 4, "clients_per_round": 0.5, "local_epochs": 1, "checkpoint_every": 0},
        "evaluation": {"every": 100},
    })


def test_phantom_items_are_rated_by_nobody_and_give_one_coordinate_per_canary():
    config = _config()
    split = make_split(config, load_data(config))
    width = item_width(config, split)
    assert width == 9  # dim 8 + the item bias
    grown = with_phantom_items(split, 3)
    assert grown.train.n_items == split.train.n_items + 3 and len(grown.train) == len(split.train)
    trainer = FederatedTrainer(config, grown)
    coordinates = isolated_coordinates(trainer.layout, split.train.n_items, 25)
    assert np.unique(coordinates).size == 25
    rated = np.zeros(trainer.layout.size, dtype=bool)
    from secure_fedrec.audit.hook import item_coordinates
    rated[item_coordinates(trainer.layout, np.unique(grown.train.items))] = True
    assert not rated[coordinates].any()


def test_isolation_is_refused_where_canaries_would_not_be_independent():
    config = _config()
    assert isolation_problems(config, "clients", implicit=False) == []
    assert isolation_problems(config, "clients", implicit=True)
    adaptive = dataclasses.replace(config, privacy=dataclasses.replace(config.privacy, clipping="adaptive"))
    assert any("adaptive" in p for p in isolation_problems(adaptive, "clients", implicit=False))
    assert resolve_space("auto", adaptive, "clients", implicit=False) == "model"
    with pytest.raises(ValueError, match="independent trials"):
        resolve_space("isolated", adaptive, "clients", implicit=False)
    with pytest.raises(AuditError, match="independent trials"):
        run_audit(adaptive, AuditSpec(canaries=50, canary_space="isolated", attacks=()))


def test_isolated_user_level_audit_is_held_to_one_test_fixed_in_advance():
    result = run_audit(_config(), AuditSpec(canaries=4000, canary_space="isolated", attacks=(), n_bootstrap=10,
                                            ceiling_repeats=1))
    canary = result["canary_audit"]
    assert canary["space"] == "isolated" and "independent trials" in canary["design"]
    assert canary["best_score"] in (None, "llr") and canary["best_method"] in (None, "heldout_fdp")
    assert canary["headline_test"].startswith("llr/heldout_fdp")
    assert canary["epsilon_hat"] <= result["epsilon"] and not result["violation"]
    assert canary["epsilon_hat"] >= 0.25 * result["epsilon"]  # 4000 independent canaries, 4 rounds
    assert canary["control"]["epsilon_hat"] >= 4.0  # the same canaries without noise
    assert result["delta"] == pytest.approx(min(1 / (10 * 200), 200 ** -1.1))  # the run's own δ


def test_canary_sybils_withhold_their_distributed_noise_share():
    config = _config("secagg", noise="distributed")
    trainer = FederatedTrainer(config, make_split(config, load_data(config)))
    plan = plan_without_noise_share(trainer.server.client_plan)
    assert plan.pipeline.encoding.noise_share(1000).tolist() == [0] * 1000
    assert np.any(trainer.server.client_plan.pipeline.encoding.noise_share(1000) != 0)


def test_isolated_gradient_canaries_at_record_level_and_the_model_space_fallback():
    config = _config(unit="record", noise="distributed")  # the labelled plaintext simulation of the sum
    result = run_audit(config, AuditSpec(canaries=2000, attacks=(), n_bootstrap=10, ceiling_repeats=1,
                                         control=False))
    canary = result["canary_audit"]
    assert canary["kind"] == "gradients" and canary["space"] == "isolated"
    assert canary["epsilon_hat"] <= result["epsilon"] and not result["violation"]
    model_space = run_audit(config, AuditSpec(canaries=200, canary_space="model", attacks=(), n_bootstrap=10,
                                              ceiling_repeats=0, control=False))["canary_audit"]
    assert model_space["space"] == "model" and model_space["headline_test"].startswith("largest one-run")


def test_sybils_that_withhold_noise_never_carry_a_round_over_the_survivor_floor():
    # the reviewer's setup: E = 20 clients a round, min_survivors = 10, 90 % of them drop out,
    # 100 isolated canary clients that add no noise share: without the rule every round released
    from types import SimpleNamespace

    from protocols import BelowThreshold
    from secure_fedrec.audit.isolation import phantom_items_needed
    from secure_fedrec.audit.run import _make_hook

    config = config_from_dict({
        "data": {"synthetic": {"n_users": 40, "n_items": 60, "mean_ratings_per_user": 10}},
        "model": {"dim": 4},
        "privacy": {"unit": "user", "noise": "distributed", "target_epsilon": 8.0},
        "aggregation": {"protocol": "secagg"},
        "training": {"rounds": 6, "clients_per_round": 0.5, "local_epochs": 1, "checkpoint_every": 0,
                     "dropout_rate": 0.9},
        "evaluation": {"every": 100},
    })
    split = make_split(config, load_data(config))
    grown = with_phantom_items(split, phantom_items_needed(100, item_width(config, split)))
    trainer = FederatedTrainer(config, grown)
    hook = _make_hook("clients", AuditSpec(canaries=100, canary_space="isolated", attacks=()), trainer, None, 0,
                      first_phantom=split.train.n_items)
    assert hook.withhold_noise
    floor = trainer.server.privacy.min_survivors
    honest_counts, released = [], []
    check = hook.check_release

    def recording_check(server, plan, outcome):
        canaries = set(plan.canaries)
        honest_counts.append(sum(1 for c in outcome.contributors if c not in canaries))
        check(server, plan, outcome)  # raises below the floor: then nothing is released
        released.append(honest_counts[-1])

    hook.check_release = recording_check
    trainer.auditor = hook
    trainer.run()
    # 90 % dropout: most rounds have too few honest shares, and every one of those released nothing
    below = [h for h in honest_counts if h < floor]
    assert len(below) >= len(honest_counts) // 2 and all(h >= floor for h in released)
    assert len(hook.projections) == len(released)  # the canaries saw only the rounds released
    plan = SimpleNamespace(canaries=tuple(range(1000, 1050)))
    with pytest.raises(BelowThreshold):
        check(trainer.server, plan, SimpleNamespace(contributors=tuple(range(floor - 1)) + plan.canaries))
    check(trainer.server, plan, SimpleNamespace(contributors=tuple(range(floor)) + plan.canaries))


def test_record_level_dropouts_refuse_isolated_gradient_canaries():
    config = _config(unit="record", noise="distributed")
    dropping = dataclasses.replace(config, training=dataclasses.replace(config.training, dropout_rate=0.1))
    assert any("dropouts" in p for p in isolation_problems(dropping, "gradients", implicit=False))
    assert resolve_space("auto", dropping, "gradients", implicit=False) == "model"


def test_the_isolated_canaries_of_two_runs_are_pooled_as_one_audit():
    collected = []
    results = [run_audit(dataclasses.replace(_config(), seed=seed),
                         AuditSpec(canaries=2000, canary_space="isolated", attacks=(), n_bootstrap=10,
                                   ceiling_repeats=0, control=False),
                         collect_canaries=collected.append) for seed in (0, 1)]
    assert len(collected) == 2 and all(c["design"] == ISOLATED_DESIGN for c in collected)
    pooled = pooled_heldout_audit(collected, seed=0)
    assert pooled["runs"] == 2 and pooled["canaries"] == 4000
    assert pooled["included"] == sum(int(c["included"].sum()) for c in collected)
    assert "pooled over 2 independent runs" in pooled["design"]
    assert 0.0 <= pooled["epsilon_hat"] <= results[0]["epsilon"] and not pooled["violation"]
    assert pooled["epsilon"] == pytest.approx(results[0]["epsilon"])
    # runs of different mechanisms are refused
    assert all(c["rounds"] == 4 and c["sample_rate"] == pytest.approx(0.5) for c in collected)
    for change in ({"epsilon": collected[1]["epsilon"] * 2}, {"rounds": 5}, {"sample_rate": 0.25}):
        with pytest.raises(ValueError, match="same mechanism"):
            pooled_heldout_audit([collected[0], {**collected[1], **change}])


def test_participation_schedule_fixes_the_rounds_taken_part_independently_of_inclusion():
    schedule = participation_schedule(1000, 6, 2, seed=3)
    assert schedule.shape == (6, 1000) and schedule.dtype == bool
    assert np.all(schedule.sum(axis=0) == 2)  # every canary, member or not, exactly twice
    assert np.array_equal(schedule, participation_schedule(1000, 6, 2, seed=3))
    assert 0.25 < schedule[0].mean() < 0.42  # 2 of 6 rounds, uniformly


@pytest.mark.parametrize("rounds", [1, 2])
def test_an_audit_with_participation_known_is_held_to_the_un_amplified_claim(rounds):
    config = _config()
    result = run_audit(config, AuditSpec(canaries=4000, canary_space="isolated", attacks=(), n_bootstrap=10,
                                         ceiling_repeats=1, participation="known", rounds_taken_part=rounds))
    canary = result["canary_audit"]
    known = result["privacy"]["participation_known"]["epsilon_by_rounds_taken_part"][str(rounds)]
    assert canary["claimed_epsilon"] == pytest.approx(known)  # what metrics.json reports for that many rounds
    assert canary["participation"]["rounds_taken_part"] == rounds
    assert canary["participation"]["amplified_epsilon"] == pytest.approx(result["epsilon"])
    assert canary["participation"]["unobserved"] == 0
    assert canary["epsilon_hat"] <= known and not result["violation"]
    assert canary["epsilon_hat"] >= 0.5 * known  # one unmixed Gaussian shift per canary: tight
    assert canary["control"]["epsilon_hat"] >= 4.0
    assert canary["estimate"] is None  # the one-shot estimates model Poisson participation
    text = summary_text(result)
    assert f"held to ε = {known:.3f}: privacy.participation_known for {rounds} round" in text
    assert "ε̂/(ε held to)" in text


def test_participation_known_is_refused_where_it_does_not_apply():
    spec = AuditSpec(canaries=200, canary_space="isolated", attacks=(), participation="known")
    with pytest.raises(AuditError, match="private_sampling"):
        run_audit(_config("secagg+", noise="distributed", private_sampling=True), spec)
    with pytest.raises(AuditError, match="isolated"):
        run_audit(_config(), dataclasses.replace(spec, canary_space="model"))
    with pytest.raises(AuditError, match="rounds_taken_part"):
        run_audit(_config(), dataclasses.replace(spec, rounds_taken_part=5))
    with pytest.raises(AuditError, match="unit = 'user'"):
        run_audit(_config(unit="record", noise="distributed"), dataclasses.replace(spec, canary_space="auto"))
    with pytest.raises(ConfigError, match="audit.participation"):
        spec_from_dict({"participation": "maybe"})
    with pytest.raises(ConfigError, match="audit.rounds_taken_part"):
        spec_from_dict({"rounds_taken_part": 0})


def test_revealed_participation_is_a_poisson_coin_per_canary_and_round():
    schedule = revealed_participation_schedule(20_000, 5, 0.2, seed=4)
    assert schedule.shape == (5, 20_000) and schedule.dtype == bool
    assert 0.19 < schedule.mean() < 0.21
    assert np.array_equal(schedule, revealed_participation_schedule(20_000, 5, 0.2, seed=4))


@pytest.mark.parametrize("calibrate_to", ["amplified", "participation_revealed"])
def test_an_audit_with_participation_revealed_is_held_to_the_proven_claim(calibrate_to):
    """Canaries take part by their own coins, members or not, the scores use the rounds they took part in,
    and the claim is the figure proven for every observer (privacy.participation_revealed)."""
    config = _config("secagg+", noise="distributed", calibrate_to=calibrate_to)
    result = run_audit(config, AuditSpec(canaries=4000, canary_space="isolated", attacks=(), n_bootstrap=10,
                                         ceiling_repeats=1, participation="revealed"))
    canary = result["canary_audit"]
    revealed = result["privacy"]["participation_revealed"]
    proven = revealed["epsilon"]
    # held to the same claim charged at the noise shares the released sums carried (the sybils' not counted)
    assert canary["claimed_epsilon"] == pytest.approx(revealed["epsilon_at_released_shares"], rel=1e-6)
    assert canary["claimed_epsilon"] <= proven and canary["planned_epsilon"] == pytest.approx(proven, rel=1e-6)
    assert "charged at the noise shares" in canary["claim"]
    if calibrate_to == "participation_revealed":
        assert proven == pytest.approx(result["epsilon"], rel=1e-9)
    assert canary["participation"]["claim"].startswith("privacy.participation_revealed")
    # four rounds at q = 0.5: about 1/16 of the canaries never take part
    assert 0.04 < canary["participation"]["never_took_part"] / 4000 < 0.09
    assert canary["epsilon_hat"] <= canary["claimed_epsilon"] and not result["violation"]
    assert canary["estimate"] is None and "noise_calibration" in canary
    assert canary["ceiling"]["participation"] == "revealed"  # the ideal runs take part by coins too
    if calibrate_to == "amplified":  # held to another figure than the run's ε: the summary names it
        assert "privacy.participation_revealed" in summary_text(result)


def test_participation_revealed_is_refused_without_server_sampled_distributed_noise():
    spec = AuditSpec(canaries=200, canary_space="isolated", attacks=(), participation="revealed")
    with pytest.raises(AuditError, match="privacy.noise = 'distributed'"):
        run_audit(_config(), spec)
    with pytest.raises(AuditError, match="private_sampling"):
        run_audit(_config("secagg+", noise="distributed", private_sampling=True), spec)
