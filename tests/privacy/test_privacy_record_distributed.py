"""Record-level DP-SGD under secure aggregation (issue 20): accounting, rounding, the client step,
the noise of the sum, aborts below the planned survivors, and the configuration."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special

from protocols import BelowThreshold
from secure_fedrec.aggregation import ClientUpdate, DiscreteGaussianShareEncoding
from secure_fedrec.aggregation.session import SessionPolicy, session_parameters
from secure_fedrec.aggregation.sums import InProcessSum, ring_sum
from secure_fedrec.config import RECORD_DISTRIBUTED_DEFAULTS, ConfigError, load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.models import build_model
from secure_fedrec.plans import RecordDistributed, RecordLocal
from secure_fedrec.privacy import ddg_accounting
from secure_fedrec.privacy.ddg_accounting import (
    DistributedDiscreteGaussianAccountant,
    conditional_rounding_l2_bound,
    poisson_subsampled_rdp_symmetric,
    poisson_subsampled_rdp_upper_bound,
)
from secure_fedrec.privacy.discrete_gaussian import (
    DiscreteGaussianTable,
    discrete_gaussian_variance,
)
from secure_fedrec.privacy.distributed_dp import plan_record_discrete_gaussian
from secure_fedrec.rounds.wire import plan_from_json, plan_to_json
from secure_fedrec.runner import load_data, make_split
from secure_fedrec.training import adam, dpsgd_shares
from secure_fedrec.training.bookkeeping import BookkeepingClipping
from secure_fedrec.training.canaries import CanaryGradient, CanaryGradients
from secure_fedrec.training.dpsgd_shares import example_dim, round_examples
from secure_fedrec.training.local import ClientData
from secure_fedrec.training.methods import DistributedDpSgd

#: a small record-level job with distributed noise; plaintext is the labelled simulation of the sum
SMALL = {"privacy.unit": "record", "privacy.noise": "distributed", "privacy.target_epsilon": 4.0,
         "privacy.delta": 1e-5, "data.synthetic.n_users": 40, "data.synthetic.n_items": 30,
         "data.synthetic.mean_ratings_per_user": 12.0, "model.dim": 4, "training.rounds": 3,
         "aggregation.protocol": "plaintext", "evaluation.every": 3, "seed": 3}


def trainer_for(**overrides) -> FederatedTrainer:
    config = load_config(None, {**SMALL, **overrides})
    return FederatedTrainer(config, make_split(config, load_data(config)))


# -- accounting ------------------------------------------------------------------------------------
def test_doctests_of_the_new_math():
    for module in (ddg_accounting, adam):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("q", [0.001, 0.05, 0.3])
@pytest.mark.parametrize("z", [0.8, 2.0, 7.0])
def test_symmetric_bound_is_the_subsampled_gaussians_rdp(q, z):
    orders = [2, 3, 8, 32, 64, 256]
    base = np.arange(257) / (2 * z * z)
    ours = poisson_subsampled_rdp_symmetric(orders, q, base)
    exact = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, z, np.array(orders, float))
    np.testing.assert_allclose(ours, exact, rtol=1e-9)
    assert np.all(ours <= poisson_subsampled_rdp_upper_bound(orders, q, base) * (1 + 1e-6))


def _exact_directions(q0: np.ndarray, r: np.ndarray, q: float, alpha: int) -> tuple[float, float]:
    """Both directions of the Poisson-subsampled pair (exp((α-1) D_α)), summed over the support."""
    p = (1 - q) * q0 + q * r
    add = float(np.sum(q0 * (p / q0) ** alpha))
    remove = float(np.sum(p * (q0 / p) ** alpha))
    return add, remove


@pytest.mark.parametrize("q", [0.01, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("alpha", [2, 3, 7, 20])
def test_remove_is_at_most_add_for_symmetric_privacy_losses(q, alpha):
    """docs/privacy.md §4.4: the lemma that lets the binomial expansion bound both directions,
    checked exactly on symmetric mechanisms (randomized response; a shifted discrete Gaussian;
    a sum of discrete Gaussians, i.e. a symmetric non-Gaussian noise)."""
    cases = []
    for w in (1.5, 4.0, 30.0):  # randomized response: P(0) = 1/(1+w) under Q, swapped under R
        cases.append((np.array([1 / (1 + w), w / (1 + w)]), np.array([w / (1 + w), 1 / (1 + w)])))
    grid = np.arange(-12, 13)  # every mass stays far above the float64 underflow
    for sigma, shift in ((0.6, 1), (2.0, 3), (3.0, 1)):
        pmf = np.exp(-grid.astype(float) ** 2 / (2 * sigma**2))
        pmf /= pmf.sum()
        cases.append((pmf, np.roll(pmf, shift)))
    two = np.convolve(cases[-1][0], cases[-1][0], mode="same")  # two shares of a small discrete Gaussian
    two /= two.sum()
    cases.append((two, np.roll(two, 2)))
    for q0, r in cases:
        add, remove = _exact_directions(q0, r, q, alpha)
        assert remove <= add * (1 + 1e-12)
        moments = [float(np.sum(q0 * (r / q0) ** k)) for k in range(alpha + 1)]
        binomial = sum(special.comb(alpha, k) * (1 - q) ** (alpha - k) * q**k * moments[k] for k in range(alpha + 1))
        assert add == pytest.approx(binomial, rel=1e-9)


def test_symmetric_accountant_matches_the_gaussian_and_keeps_its_option():
    accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=500.0, num_shares=50, dim=1000,
                                                       subsampling="symmetric")
    accountant.step(noise_multiplier=3.0, sample_rate=0.2, steps=50)
    gaussian = rdp_privacy_accountant.RdpAccountant(orders=list(map(float, accountant.orders)))
    from dp_accounting import dp_event

    gaussian.compose(dp_event.PoissonSampledDpEvent(0.2, dp_event.GaussianDpEvent(3.0)), 50)
    rdp_only = DistributedDiscreteGaussianAccountant(l2_sensitivity=500.0, num_shares=50, dim=1000,
                                                     subsampling="symmetric", use_shift_profile=False)
    rdp_only.extend(accountant.history)
    assert rdp_only.get_epsilon(1e-6) == pytest.approx(gaussian.get_epsilon(1e-6), rel=1e-9)
    # with the dominating Gaussian (ddg_dominance) it is the subsampled Gaussian's PLD: below RDP
    assert accountant.get_epsilon(1e-6) < 0.95 * gaussian.get_epsilon(1e-6)
    general = DistributedDiscreteGaussianAccountant(l2_sensitivity=500.0, num_shares=50, dim=1000)
    general.step(noise_multiplier=3.0, sample_rate=0.2, steps=50)
    assert general.get_epsilon(1e-6) > 1.5 * accountant.get_epsilon(1e-6)  # the general bound's factor 3
    assert accountant.state_dict()["options"]["subsampling"] == "symmetric"
    assert "subsampling" not in general.state_dict()["options"]  # the user-level saved form is unchanged
    with pytest.raises(ValueError, match="options"):
        general.load_state_dict(accountant.state_dict())


def test_the_plan_lands_on_its_target_and_its_tau_is_negligible():
    plan = plan_record_discrete_gaussian(
        target_epsilon=1.0, delta=1e-6, clip_norm=1.0, dim=80_000, example_dim=10, bits=32, min_survivors=300,
        max_clients=600, max_examples=80_000, sample_rate=0.2, steps=50)
    assert 0.99 <= plan.epsilon <= 1.0 * (1 + 1e-9)
    assert plan.wrap_probability <= 1e-9 and plan.share_sigma <= 200
    assert plan.gamma * plan.l2_sensitivity == pytest.approx(1.0, rel=2e-3)  # the rounding costs < 0.2 %
    assert ddg_accounting.ddg_tau(plan.share_sigma, 600) < 1e-100
    assert plan.model_unit_noise_std == pytest.approx(plan.gamma * math.sqrt(300) * plan.share_sigma)
    with pytest.raises(ValueError, match="bits"):
        plan_record_discrete_gaussian(
            target_epsilon=1.0, delta=1e-6, clip_norm=1.0, dim=80_000, example_dim=10, bits=16, min_survivors=300,
            max_clients=600, max_examples=80_000, sample_rate=0.2, steps=50)


# -- the sampler -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.7, 40.0, 200.0])
def test_guide_table_counts_like_the_binary_search(sigma):
    table = DiscreteGaussianTable(sigma)
    highs = np.random.default_rng(0).integers(0, 2**63, 200_000, dtype=np.uint64) * np.uint64(2)
    prefix = highs >> np.uint64(64 - table._guide_bits)
    sure = ~table._guide_unsure[prefix]
    direct = np.searchsorted(table._hi, highs, side="right")
    np.testing.assert_array_equal(table._guide_count[prefix][sure], direct[sure])
    assert sure.mean() > 0.9
    draws = table.sample(400_000)
    assert np.var(draws) == pytest.approx(discrete_gaussian_variance(sigma), rel=0.02)
    assert abs(np.mean(draws)) < 5 * math.sqrt(discrete_gaussian_variance(sigma) / 400_000)


# -- per-example rounding ----------------------------------------------------------------------------
def test_each_rounded_example_stays_within_the_joint_sensitivity():
    rng = np.random.default_rng(1)
    gamma, clip, dim, beta = 0.01, 1.0, 10, math.exp(-0.5)
    bound = conditional_rounding_l2_bound(clip, gamma, dim, beta)
    shared_share = rng.random(500)  # split of C² between the shared and private parts
    shared = rng.normal(size=(500, dim))
    shared *= (clip * np.sqrt(shared_share) / np.linalg.norm(shared, axis=1))[:, None]
    private_sq = clip**2 * (1 - shared_share)
    scaled = shared / gamma
    levels = round_examples(scaled, values_norm=np.linalg.norm(scaled, axis=1), dim=dim, beta=beta)
    assert np.all((levels * levels).sum(1) * gamma**2 + private_sq <= (gamma * bound) ** 2 * (1 + 1e-12))
    assert np.all(np.abs(levels - scaled) < 1)
    # plain randomized rounding (β = 0) is unbiased; the conditional re-draw shrinks a row a little
    # (KLS 2021 §4: the rejected draws are the longest), by well under 1 % at this norm
    row = np.repeat(scaled[:1], 20_000, axis=0)
    norms = np.linalg.norm(row, axis=1)
    np.testing.assert_allclose(round_examples(row, values_norm=norms, dim=dim, beta=0.0).mean(0), scaled[0],
                               atol=0.02)
    np.testing.assert_allclose(round_examples(row, values_norm=norms, dim=dim, beta=beta).mean(0), scaled[0],
                               rtol=0.01, atol=0.02)


# -- the client step ---------------------------------------------------------------------------------
def _method(model, **kwargs):
    defaults = {"sample_rate": 1.0, "clip_norm": 0.5, "gamma": 1e-4, "rounding_beta": math.exp(-0.5),
                "example_dim": example_dim(model.layout()), "noise_stddev": 1.0, "denominator": 10.0}
    return DistributedDpSgd(**{**defaults, **kwargs})


def _client(n=15, seed=0):
    rng = np.random.default_rng(seed)
    model = build_model("mf", n_users=3, n_items=20, dim=4, seed=seed)
    data = ClientData(user=1, items=rng.choice(20, n, replace=False), ratings=rng.integers(1, 6, n).astype(float))
    return model, data


def test_client_step_sends_the_rounded_clipped_sum_and_steps_its_private_rows():
    model, data = _client()
    method = _method(model)
    layout = model.layout()
    reference = build_model("mf", n_users=3, n_items=20, dim=4, seed=0)
    reference.load_state_dict(model.state_dict())
    with BookkeepingClipping(reference, max_grad_norm=method.clip_norm) as clipping:
        users = torch.full((len(data.items),), data.user)
        losses = torch.nn.MSELoss(reduction="none")(reference(users, torch.as_tensor(data.items)),
                                                    torch.as_tensor(data.ratings, dtype=torch.float32))
        clipping.backward(losses)
    expected = layout.flatten({n: p.grad for n, p in reference.named_parameters() if n in layout.names})
    before = model.private_rows(data.user)
    state: dict = {}
    result = dpsgd_shares.shares_step(model, data, method, np.random.default_rng(0), state)
    sent = np.zeros(layout.size)
    sent[layout.indices_for_items(result.items)] = -result.delta * method.gamma
    assert np.all(result.delta == np.round(result.delta))
    # q = 1: every example; each coordinate is off by less than one lattice step per example
    np.testing.assert_allclose(sent, expected, atol=method.gamma * len(data.items) + 1e-5)
    after = model.private_rows(data.user)
    assert all(not torch.equal(before[name], after[name]) for name in before)
    assert state["step"] == 1 and set(state["moments"]) == set(model.private_names)
    assert model.private_rows(0)["user_factors.weight"].equal(build_model(
        "mf", n_users=3, n_items=20, dim=4, seed=0).private_rows(0)["user_factors.weight"])  # others untouched


def test_an_empty_batch_sends_nothing_but_still_noises_the_private_rows():
    model, data = _client(n=3)
    method = _method(model, sample_rate=1e-12)
    before = model.private_rows(data.user)
    result = dpsgd_shares.shares_step(model, data, method, np.random.default_rng(0), {})
    assert result.items.size == 0 and not np.any(result.delta)
    assert not torch.equal(before["user_bias.weight"], model.private_rows(data.user)["user_bias.weight"])


class _Recorder(CanaryGradients):
    def __init__(self, canaries):
        self.canaries, self.seen = canaries, []

    def for_step(self, client, round_index, step):
        return self.canaries

    def included(self, client, round_index, step, sampled):
        self.seen.append((client, round_index, step, sampled.tolist()))


def test_gradient_canaries_join_the_sum_before_the_noise():
    from secure_fedrec.training.canaries import StepCanaries

    model, data = _client(n=5)
    method = _method(model)
    layout = model.layout()
    direction = np.zeros(method.example_dim)
    direction[0] = 3.0  # clipped to 0.5 like an example
    coords = layout.indices_for_items(np.array([7]))[:method.example_dim]
    hook = _Recorder([CanaryGradient(indices=coords, values=direction)])
    empty = _method(model, sample_rate=1.0)
    plain = dpsgd_shares.shares_step(model, ClientData(1, np.zeros(0, int), np.zeros(0)), empty,
                                     np.random.default_rng(0), {}, StepCanaries(hook, client=1, round_index=4))
    assert hook.seen == [(1, 4, 0, [True])]
    sent = np.zeros(layout.size)
    sent[layout.indices_for_items(plain.items)] = -plain.delta * method.gamma
    np.testing.assert_allclose(sent[coords[0]], 0.5, atol=method.gamma)
    assert np.count_nonzero(sent) == 1
    too_wide = _Recorder([CanaryGradient(indices=np.arange(method.example_dim + 1),
                                         values=np.ones(method.example_dim + 1))])
    with pytest.raises(ValueError, match="at most"):
        dpsgd_shares.shares_step(model, data, method, np.random.default_rng(0), {},
                                 StepCanaries(too_wide, client=1, round_index=0))


def test_a_trainer_hands_its_canary_hook_to_every_client():
    trainer = trainer_for(**{"training.rounds": 1})
    hook = _Recorder([])
    trainer.canary_gradients = hook
    trainer.run()
    assert sorted(client for client, *_ in hook.seen) == sorted(trainer.population.tolist())


def test_the_encoding_refuses_what_is_not_on_the_lattice():
    encoding = DiscreteGaussianShareEncoding(gamma=0.01, share_sigma=3.0, bits=32, max_level=100.0,
                                             noise_stddev=1.0, wrap_probability=0.0)
    from secure_fedrec.aggregation import ClientContext

    ctx = ClientContext(round_index=0, n_clients=2, expected_clients=2.0)
    for values in (np.array([0.5]), np.array([101.0]), np.array([np.nan])):
        with pytest.raises(ValueError, match="integers"):
            encoding.client(ClientUpdate(indices=np.array([1]), values=values, size=4), ctx)


# -- the noise of the sum, and aborts ----------------------------------------------------------------
def test_the_sum_carries_sigma_c_for_any_number_of_survivors_at_or_above_the_minimum():
    """Issue 20: the released sum's noise variance is (σC)² at the planned minimum of survivors,
    and n/t times that with n >= t survivors (more shares, more noise), within sampling error."""
    trainer = trainer_for()
    plan: RecordDistributed = trainer.privacy
    encoding = plan.pipeline.encoding
    t = plan.min_survivors
    zero = ClientUpdate(indices=np.zeros(0, np.int64), values=np.zeros(0), size=4000)
    from secure_fedrec.aggregation import ClientContext, ServerContext

    ctx = ClientContext(round_index=0, n_clients=2 * t, expected_clients=float(2 * t))
    target = plan.ddg.noise_multiplier * plan.ddg.gamma * plan.ddg.l2_sensitivity  # z · C' in model units
    share_var = discrete_gaussian_variance(encoding.share_sigma) * encoding.gamma**2
    for survivors in (t, t + 3, 2 * t):
        payloads = {c: encoding.client(zero, ctx)[0] for c in range(survivors)}
        summed = ring_sum(payloads, {}, bits=encoding.bits, min_survivors=t)
        noise = encoding.server(summed, ServerContext(0, survivors, float(survivors)))[0].total
        expected = survivors * share_var
        # the sample variance of 4000 Gaussian coordinates is within 4 standard errors (sqrt(2/m))
        assert np.var(noise) == pytest.approx(expected, rel=4 * math.sqrt(2 / zero.size))
        # ... and that is (σC)² at the minimum, n/t times it above (the shares are sized for t)
        assert expected == pytest.approx((target**2) * survivors / t, rel=1e-6)
    with pytest.raises(BelowThreshold):
        ring_sum({c: payloads[c] for c in range(t - 1)}, {}, bits=encoding.bits, min_survivors=t)


def test_plaintext_simulation_is_bit_identical_to_the_secure_sums():
    rng = np.random.default_rng(5)
    payloads = {c: rng.integers(0, 2**32, 300, dtype=np.uint64) for c in range(7)}
    dropouts = {3: "upload"}
    simulated = ring_sum(payloads, dropouts, bits=32, min_survivors=4)
    policy = SessionPolicy(protocol="secagg+", min_survivors=4)
    for protocol in ("secagg", "secagg+"):
        session = session_parameters(SessionPolicy(protocol=protocol, min_survivors=4), 7, bits=32,
                                     vector_length=300)
        masked = InProcessSum(protocol).run(payloads, session, round_index=0, dropouts={3: "masked_input"})
        assert masked.contributors == simulated.contributors
        np.testing.assert_array_equal(np.asarray(masked.total, dtype=np.uint64) & np.uint64(2**32 - 1),
                                      simulated.total)
    assert policy.min_survivors == 4


def test_fewer_survivors_than_planned_release_nothing_and_still_cost_privacy():
    trainer = trainer_for(**{"aggregation.protocol": "secagg", "training.dropout_rate": 0.7,
                             "training.rounds": 2})
    before = trainer.params.copy()
    history = trainer.run()
    aborted = [m for m in history if m.measurements.get("aborted")]
    assert aborted, "with 70 % dropouts the planned minimum (half the clients) cannot survive"
    assert all(m.contributors == 0 for m in aborted)
    if len(aborted) == len(history):
        np.testing.assert_array_equal(trainer.params, before)
    assert len(trainer.privacy.accountant) == len(history)  # every round is charged


def test_the_plans_floor_is_the_accountants_shares_and_the_protocols_min_survivors():
    """Issue 20 (c): the number of noise shares the accountant assumes is the session's
    ``min_survivors``, which SecAgg+ enforces inside the protocol: one survivor fewer and the
    server does not start unmasking (no client is asked for a share); exactly that many and the
    sum is released."""
    from protocols.masking import SecAggPlus, run_session
    from protocols.masking import messages as m
    from protocols.testing import FrameLog

    trainer = trainer_for(**{"data.synthetic.n_users": 24, "aggregation.protocol": "secagg+"})
    plan: RecordDistributed = trainer.privacy
    n = len(trainer.population)
    t = plan.min_survivors
    session = trainer.server.session(n)
    assert t == plan.accountant.num_shares == session.min_survivors == math.floor(0.9 * n) < n
    params = session.masking_params()
    assert params.min_survivors == t
    # the shares the clients add are sized for exactly t of them (σ_share = z·Δ₂/√t)
    assert plan.accountant.share_sigma(plan.ddg.noise_multiplier) == pytest.approx(plan.ddg.share_sigma)
    rng = np.random.default_rng(1)
    inputs = {c: rng.integers(0, 2**params.bits, params.vector_length, dtype=np.uint64) for c in range(n)}
    too_many = {c: "masked_input" for c in range(n - t + 1)}
    log = FrameLog()
    with pytest.raises(BelowThreshold) as info:
        run_session(inputs, params, interceptor=log, dropouts=too_many)
    assert (info.value.survivors, info.value.threshold) == (t - 1, t)
    assert info.value.stage != "unmasking"
    assert not log.find(m.UnmaskRequest)
    protocol = SecAggPlus(degree=session.degree, threshold=session.threshold, min_survivors=session.min_survivors)
    with pytest.raises(BelowThreshold):
        protocol.run_round(inputs, bits=params.bits, dropouts=too_many)
    enough = {c: "masked_input" for c in range(n - t)}
    released = protocol.run_round(inputs, bits=params.bits, dropouts=enough)
    assert len(released.contributors) == t
    np.testing.assert_array_equal(released.total, ring_sum(inputs, enough, bits=params.bits, min_survivors=t).total)


def test_the_audit_reads_the_gradient_sum_and_the_population_accountant():
    """`secure-fedrec audit` on this mechanism: the release is the noisy gradient sum over the public
    q·N (ExpectedBatchMean, not a client mean), and the claim tested is the run's one DDG accountant."""
    from secure_fedrec.aggregation import Aggregate
    from secure_fedrec.audit.families import mechanism_family
    from secure_fedrec.audit.hook import released_sum

    trainer = trainer_for(**{"training.rounds": 2})
    plan: RecordDistributed = trainer.privacy
    mean = np.array([0.5, -1.0, 2.0])
    got = released_sum(trainer.server, Aggregate(total=mean, weight_total=0.0, contributors=(0, 1)))
    np.testing.assert_allclose(got, mean * plan.expected_batch)
    trainer.run()
    family = mechanism_family(plan, plan.delta)
    assert family is not None
    assert family.epsilon(1.0) == pytest.approx(plan.accountant.get_epsilon(plan.delta))
    assert family.epsilon(2.0) < family.epsilon(1.0)  # more noise, smaller claim: the symmetric bound kept


# -- plan, configuration, wire ----------------------------------------------------------------------
def test_noise_placement_is_honoured_and_checked():
    assert isinstance(trainer_for().privacy, RecordDistributed)
    assert isinstance(trainer_for(**{"privacy.noise": "local", "privacy.noise_multiplier": 1.0,
                                     "aggregation.protocol": "plaintext"}).privacy, RecordLocal)
    with pytest.raises(ConfigError, match="'central' is not available at record level"):
        load_config(None, {**SMALL, "privacy.noise": "central"})
    with pytest.raises(ConfigError, match="record-level placement"):
        load_config(None, {"privacy.unit": "user", "privacy.noise": "local"})
    with pytest.raises(ConfigError, match="in-process engine only"):
        load_config(None, {**SMALL, "engine": "flower-sim"})


def test_the_mechanisms_defaults_fill_only_what_the_user_left_unset():
    config = load_config(None, {"privacy.unit": "record", "privacy.noise": "distributed"})
    for dotted, value in RECORD_DISTRIBUTED_DEFAULTS.items():
        section, key = dotted.split(".")
        assert getattr(getattr(config, section), key) == value
    mine = load_config(None, {"privacy.unit": "record", "training.rounds": 7, "privacy.record_lr": 0.5})
    assert mine.training.rounds == 7 and mine.privacy.record_lr == 0.5
    assert mine.privacy.record_optimizer == "adam"
    local = load_config(None, {"privacy.unit": "record", "privacy.noise": "local"})
    assert local.training.rounds == 18 and local.privacy.record_optimizer == "sgd"  # untouched
    assert "given" not in __import__("secure_fedrec.config", fromlist=["x"]).config_to_dict(mine)


def test_a_closed_form_private_row_is_refused_at_record_level():
    config = load_config(None, {"privacy.unit": "record"})
    object.__setattr__(config.model, "solve_private", True)  # the key another branch adds
    with pytest.raises(ConfigError, match="solve_private"):
        config.validate()


def test_every_client_takes_part_and_the_plan_travels_to_a_node():
    trainer = trainer_for(**{"training.clients_per_round": 0.1})
    plan = trainer.plan_round(0)
    assert plan.sampled.tolist() == sorted(trainer.population.tolist())
    assert trainer.server.expected_clients == len(trainer.population)
    assert plan_from_json(plan_to_json(trainer.server.client_plan)) == trainer.server.client_plan
    summary = trainer.privacy.summary()
    assert summary["clients_per_round"] == len(trainer.population)
    assert "does not apply" in summary["assumptions"] and "SIMULATION" in summary["statement"]


def test_a_run_spends_its_target_and_the_guard_stops_before_more():
    trainer = trainer_for()
    history = trainer.run()
    eps = [m.measurements["epsilon"] for m in history]
    assert eps == sorted(eps) and 0.97 * 4.0 <= eps[-1] <= 4.0 * (1 + 1e-9)
    assert trainer.privacy.summary()["epsilon_gaussian_pld"] < eps[-1]  # the continuous cross-check
    trainer.config.training.rounds = 5
    trainer.run()
    assert len(trainer.history) == 3 and "stopped before" in trainer.privacy.stopped_reason
    assert all(m.contributors == len(trainer.population) for m in history)
    assert history[-1].evaluation["rmse"] < 2.0


# -- the step split by placement, and the centralized twin ---------------------------------------
def test_the_split_adam_step_is_torch_adam_on_the_whole_model():
    from secure_fedrec.rounds.optimizers import Adam

    model = build_model("mf", n_users=3, n_items=5, dim=2, seed=1)
    layout = model.layout()
    reference = build_model("mf", n_users=3, n_items=5, dim=2, seed=1)
    torch_adam = torch.optim.Adam(reference.parameters(), lr=0.05)
    server = Adam(lr=0.05)
    params = layout.flatten(model.shared_state())
    state: dict = {"moments": {}}
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        grads = {name: torch.as_tensor(rng.normal(size=tuple(p.shape)), dtype=torch.float32)
                 for name, p in reference.named_parameters()}
        for name, p in reference.named_parameters():
            p.grad = grads[name].clone()
        torch_adam.step()
        params = server.step(params, -layout.flatten(grads))  # the server sees the descent direction
        for name in model.private_names:  # client 1's private rows, on the client
            current = dict(model.named_parameters())[name][1].detach().double().numpy()
            m, v = state["moments"].get(name, (np.zeros_like(current), np.zeros_like(current)))
            updated, m, v = adam.adam_step(current, grads[name][1].double().numpy(), m, v, step=step, lr=0.05)
            state["moments"][name] = (m, v)
            with torch.no_grad():
                dict(model.named_parameters())[name][1].copy_(torch.as_tensor(updated))
    np.testing.assert_allclose(params, layout.flatten(reference.shared_state()), atol=1e-6)
    for name in model.private_names:
        np.testing.assert_allclose(model.private_rows(1)[name], reference.private_rows(1)[name], atol=1e-6)


def test_the_twin_runs_the_federated_runs_noise_steps_and_accountant():
    from secure_fedrec.centralized_dpsgd import train_dpsgd_twin

    config = load_config(None, SMALL)
    split = make_split(config, load_data(config))
    federated = FederatedTrainer(config, split)
    federated.run()
    same = train_dpsgd_twin(config, split, noise="same")
    assert same.steps == config.training.rounds
    assert same.privacy["epsilon"] == pytest.approx(federated.privacy.summary()["epsilon"], rel=1e-12)
    assert same.privacy["noise_multiplier_over_clip"] == pytest.approx(
        federated.privacy.ddg.model_unit_noise_std / config.privacy.clip_norm)
    own = train_dpsgd_twin(config, split, noise="own")
    assert own.privacy["epsilon"] <= 4.0 * (1 + 1e-3)
    assert own.privacy["noise_multiplier_over_clip"] < same.privacy["noise_multiplier_over_clip"]  # tighter PLD
    free = train_dpsgd_twin(config, split, noise="none")
    assert free.privacy["epsilon"] is None and "rmse" in free.metrics
    with pytest.raises(ConfigError, match="twin"):
        train_dpsgd_twin(load_config(None, {**SMALL, "privacy.noise": "local", "privacy.noise_multiplier": 1.0}),
                         split)


def test_a_study_grid_runs_the_twin_beside_the_federated_cell(tmp_path):
    from secure_fedrec.studies import parse_study, run_study

    flat = "\n".join(f"{key} = {value!r}".replace("'", '"') for key, value in SMALL.items()
                     if key not in ("privacy.target_epsilon", "seed"))
    text = f"""
[study]
name = "twin"
[base]
{flat}
[[grid]]
"privacy.target_epsilon" = [4.0]
"study.job" = ["run", "dpsgd-twin"]
"""
    outcome = run_study(parse_study(text), tmp_path, progress=False)
    assert outcome.complete, outcome.failed
    labels = sorted(row["mechanism"] for row in outcome.rows)
    assert labels == ["record/central DP-SGD twin (central)", "record/distributed (plaintext)"]
    assert len({row["epsilon"] for row in outcome.rows}) == 1
    with pytest.raises(Exception, match="study.job"):
        parse_study(text.replace('"dpsgd-twin"]', '"bogus"]'))


@pytest.mark.parametrize("protocol", ["secagg", "secagg+", "paillier"])
def test_every_secure_protocol_carries_the_mechanism(protocol):
    tiny = {"data.synthetic.n_users": 12, "data.synthetic.n_items": 12, "data.synthetic.mean_ratings_per_user": 6.0,
            "model.dim": 2, "training.rounds": 2, "evaluation.every": 2, "aggregation.protocol": protocol}
    trainer = trainer_for(**tiny)
    history = trainer.run()
    assert [m.contributors for m in history] == [len(trainer.population)] * 2
    assert history[-1].measurements["epsilon"] == trainer_for(**{**tiny, "aggregation.protocol": "plaintext"}
                                                              ).privacy.accountant.epsilon_after(
        noise_multiplier=trainer.privacy.ddg.noise_multiplier, sample_rate=trainer.privacy.sample_rate, steps=2,
        delta=trainer.privacy.delta)
    assert np.isfinite(history[-1].evaluation["rmse"])


def test_a_resumed_run_keeps_its_accountant_and_the_clients_optimizer_state(tmp_path):
    from secure_fedrec.engines.checkpoint import load_checkpoint, save_checkpoint

    first = trainer_for(**{"training.rounds": 2})
    first.run()
    save_checkpoint(first, tmp_path)
    resumed = trainer_for(**{"training.rounds": 2})
    load_checkpoint(resumed, tmp_path)
    assert len(resumed.privacy.accountant) == 2
    assert resumed.client_states.keys() == first.client_states.keys()
    some = next(iter(first.client_states))
    assert resumed.client_states[some]["step"] == 2
    for name, (m, v) in first.client_states[some]["moments"].items():
        np.testing.assert_array_equal(resumed.client_states[some]["moments"][name][0], m)
