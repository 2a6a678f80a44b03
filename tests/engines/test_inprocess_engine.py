import numpy as np
import pytest

from secure_fedrec.config import load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

TINY = {
    "aggregation.protocol": "plaintext", "data.synthetic.n_users": 40, "data.synthetic.n_items": 60,
    "training.rounds": 3,
    "training.clients_per_round": 10, "model.dim": 8, "training.local_epochs": 2,
    # pinned: the engine's non-private behaviour, not the private default
    "privacy.unit": "none", "privacy.noise": "central", "training.sampling": "fixed",
}


def _trainer(**extra):
    config = load_config(None, {**TINY, **extra})
    return FederatedTrainer(config, make_split(config, load_data(config)))


def test_training_improves_on_the_initial_model():
    trainer = _trainer(**{"training.rounds": 15, "training.clients_per_round": 20})
    before = trainer.evaluate()["rmse"]
    history = trainer.run()
    assert history[-1].evaluation["rmse"] < before
    assert all(m.contributors == 20 for m in history)


def test_same_seed_same_result():
    a, b = _trainer(), _trainer()
    a.run(), b.run()
    assert np.array_equal(a.params, b.params)


def test_dropouts_shrink_the_contributors():
    trainer = _trainer(**{"training.dropout_rate": 0.5})
    history = trainer.run()
    assert sum(m.contributors for m in history) < sum(m.sampled for m in history)


def test_only_touched_item_rows_change_in_a_round():
    trainer = _trainer(**{"training.clients_per_round": 1, "training.server_optimizer": "fedavg",
                          "training.server_lr": 1.0, "training.rounds": 1})
    before = trainer.params.copy()
    trainer.run_round()
    changed = np.flatnonzero(before != trainer.params)
    layout = trainer.layout
    # the one sampled client's rated items: changed indices ⊆ its item rows + global bias
    allowed = set()
    for u in range(trainer.split.train.n_users):
        items = np.unique(trainer.client_data(u).items)
        idx = set(layout.indices_for_items(items).tolist())
        if set(changed.tolist()) <= idx:
            allowed = idx
            break
    assert allowed, "the round changed parameters outside any single client's item rows"


@pytest.mark.parametrize("implicit", [True])
def test_implicit_neumf_reports_ranking_metrics(implicit):
    trainer = _trainer(**{"data.implicit": implicit, "training.rounds": 2})
    history = trainer.run()
    ev = history[-1].evaluation
    assert 0.0 <= ev["hr@10"] <= ev["sampled_hr@10"] <= 1.0  # full ranking is the harder protocol
    assert ev["ranking_protocol"].startswith("full ranking") and "99 negatives" in ev["ranking_protocol"]


def test_a_diverged_client_is_a_dropout_and_the_others_still_aggregate(monkeypatch):
    """A client whose update is NaN does not upload; the round completes without it."""
    from secure_fedrec.training import methods

    original = methods.train_client
    calls = {"n": 0}

    def first_client_diverges(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            result.delta[:] = np.nan
        return result

    monkeypatch.setattr(methods, "train_client", first_client_diverges)
    trainer = _trainer(**{"aggregation.protocol": "secagg", "training.clients_per_round": 6})
    metrics = trainer.run_round()
    assert metrics.sampled == 6 and metrics.contributors == 5
    assert metrics.measurements["nonfinite_updates_dropped"] == 1.0
    assert np.all(np.isfinite(trainer.params))


def test_the_released_aggregate_is_what_the_server_applied():
    """``RoundServer.last_aggregate``: the mean update a (curious) server sees and applies."""
    trainer = _trainer(**{"training.server_optimizer": "fedavg", "training.server_lr": 1.0, "training.rounds": 1})
    before = trainer.params.copy()
    metrics = trainer.run_round()
    released = trainer.server.last_aggregate
    assert released is not None and len(released.contributors) == metrics.contributors == 10
    np.testing.assert_array_equal(trainer.params, before + released.total)


def test_a_canary_update_goes_through_the_same_client_halves():
    """An update training did not produce (a canary client) is encoded by ``encode_update``."""
    from secure_fedrec.aggregation import ClientUpdate
    from secure_fedrec.rounds.client import encode_update

    trainer = _trainer(**{"aggregation.protocol": "secagg"})
    plan = trainer.plan_round(0)
    broadcast = trainer.server.broadcast(plan)
    direction = np.zeros(trainer.layout.size)
    direction[:3] = 0.5
    report = encode_update(10_000, ClientUpdate.from_dense(direction, num_examples=50),
                           trainer.server.client_plan, broadcast)
    assert report.payload.dtype == np.uint64 and report.payload.size == trainer.layout.size + 1
