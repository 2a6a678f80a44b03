import numpy as np
import pytest

from secure_fedrec.config import load_config
from secure_fedrec.engine import FederatedTrainer
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
    from secure_fedrec.engine import inprocess

    original = inprocess.train_client
    calls = {"n": 0}

    def first_client_diverges(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            result.delta[:] = np.nan
        return result

    monkeypatch.setattr(inprocess, "train_client", first_client_diverges)
    trainer = _trainer(**{"aggregation.protocol": "secagg", "training.clients_per_round": 6})
    metrics = trainer.run_round()
    assert metrics.sampled == 6 and metrics.contributors == 5
    assert metrics.measurements["nonfinite_updates_dropped"] == 1.0
    assert np.all(np.isfinite(trainer.params))
