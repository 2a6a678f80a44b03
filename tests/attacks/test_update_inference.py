"""Server-side inference of rated items from what each protocol lets it observe."""

import numpy as np
import pytest

from attacks.inference import (
    AggregateObservation,
    ClientUpdateObservation,
    UpdateInferenceAttack,
    evaluate_item_inference,
    server_observation,
)
from attacks.metrics import evaluate_membership

N_ITEMS, DIM, N_RATED = 400, 8, 40


def _mf_update(rng, rated_fraction=N_RATED / N_ITEMS, item_table=None):
    """One client's gradient of the squared rating error w.r.t. the item table:
    (prediction - rating) * user_vector on rated rows, zero elsewhere."""
    items = item_table if item_table is not None else rng.normal(scale=0.1, size=(N_ITEMS, DIM))
    user = rng.normal(scale=0.1, size=DIM)
    rated = np.zeros(N_ITEMS, bool)
    rated[rng.choice(N_ITEMS, int(rated_fraction * N_ITEMS), replace=False)] = True
    ratings = rng.integers(1, 6, size=N_ITEMS).astype(float)
    error = items @ user - ratings
    return np.where(rated[:, None], error[:, None] * user[None, :], 0.0), rated


def test_plaintext_update_reveals_rated_items_exactly():
    rng = np.random.default_rng(0)
    update, rated = _mf_update(rng)
    observation = server_observation("plaintext", target_update=update)
    attack = UpdateInferenceAttack()
    assert np.array_equal(attack.predict(observation), rated)
    result = evaluate_item_inference(attack.score(observation), rated, num_predicted=int(rated.sum()))
    assert (result.precision, result.recall, result.auc) == (1.0, 1.0, 1.0)


def test_full_table_upload_is_differenced_against_the_broadcast():
    rng = np.random.default_rng(1)
    update, rated = _mf_update(rng)
    broadcast = rng.normal(size=(N_ITEMS, DIM))
    observation = ClientUpdateObservation.from_upload(broadcast - 0.05 * update, broadcast)
    assert evaluate_item_inference(UpdateInferenceAttack().score(observation), rated, num_predicted=1).auc == 1.0


def test_dp_noise_degrades_the_plaintext_attack():
    rng = np.random.default_rng(2)
    update, rated = _mf_update(rng)
    update /= np.linalg.norm(update)  # clip to norm 1, as DP-FedAvg does
    aucs = []
    for sigma in (0.01, 0.05, 1.0):
        noisy = update + sigma * rng.normal(size=update.shape)
        aucs.append(
            evaluate_item_inference(
                UpdateInferenceAttack().score(ClientUpdateObservation(noisy)), rated, num_predicted=1
            ).auc
        )
    assert aucs[0] > 0.99
    assert aucs[0] >= aucs[1] > aucs[2]
    assert aucs[2] < 0.65


def test_masked_update_scores_like_chance():
    """A masked update, (encode(x) + mask) mod 2^b, is uniform: row norms of it
    carry nothing about the rated items."""
    rng = np.random.default_rng(3)
    update, rated = _mf_update(rng)
    bits = 32
    encoded = np.round(update * 2**16).astype(np.int64) % 2**bits
    mask = rng.integers(0, 2**bits, size=update.shape, dtype=np.int64)
    masked = ((encoded + mask) % 2**bits).astype(float)
    scores = UpdateInferenceAttack().score(ClientUpdateObservation(masked))
    metrics = evaluate_membership(rated, scores, n_bootstrap=1000, confidence=0.99, random_state=0)
    assert 0.5 in metrics.auc


def test_aggregate_reveals_the_target_only_when_it_is_alone():
    rng = np.random.default_rng(4)
    table = rng.normal(scale=0.1, size=(N_ITEMS, DIM))
    target_update, rated = _mf_update(rng, item_table=table)
    attack = UpdateInferenceAttack()

    alone = server_observation("masking", aggregate=target_update, num_contributors=1)
    assert evaluate_item_inference(attack.score(alone), rated, num_predicted=1).auc == 1.0

    others = [_mf_update(rng, item_table=table)[0] for _ in range(199)]
    crowd = server_observation(
        "paillier", aggregate=target_update + sum(others), num_contributors=200
    )
    assert isinstance(crowd, AggregateObservation)
    result = evaluate_item_inference(attack.score(crowd), rated, num_predicted=int(rated.sum()))
    assert result.auc < 0.65
    assert result.precision < 0.3


def test_server_observation_refuses_what_the_protocol_hides():
    with pytest.raises(ValueError):
        server_observation("secagg", target_update=np.ones((3, 2)))
    with pytest.raises(ValueError):
        server_observation("plaintext", aggregate=np.ones((3, 2)), num_contributors=5)
    with pytest.raises(ValueError):
        server_observation("tor", target_update=np.ones((3, 2)))
    with pytest.raises(ValueError):
        ClientUpdateObservation(np.array([[np.nan]]))
    with pytest.raises(ValueError):
        AggregateObservation(np.ones((3, 2)), 0)


def test_predict_top_k_and_evaluate():
    observation = ClientUpdateObservation(np.array([[3.0], [0.0], [1.0], [2.0]]))
    predicted = UpdateInferenceAttack().predict(observation, num_items=2)
    assert predicted.tolist() == [True, False, False, True]
    rated = np.array([True, False, True, False])
    result = evaluate_item_inference(UpdateInferenceAttack().score(observation), rated, predicted)
    assert (result.precision, result.recall, result.num_predicted, result.num_rated) == (
        0.5,
        0.5,
        2,
        2,
    )
    assert result.auc == pytest.approx(0.75)


def _implicit_update(rng, n_positive=20, negatives_per_positive=4, local_steps=1, lr=0.5):
    """Local SGD on binary cross-entropy with sampled negatives (implicit feedback).
    Returns the uploaded item-table delta and the mask of positive items."""
    items = rng.normal(scale=0.3, size=(N_ITEMS, DIM))
    user = rng.normal(scale=0.3, size=DIM)
    chosen = rng.choice(N_ITEMS, n_positive * (1 + negatives_per_positive), replace=False)
    positives, negatives = chosen[:n_positive], chosen[n_positive:]
    labels = np.r_[np.ones(positives.size), np.zeros(negatives.size)]
    local = items.copy()
    for _ in range(local_steps):
        logits = local[chosen] @ user
        residual = 1 / (1 + np.exp(-logits)) - labels  # dBCE/dlogit
        grad_items = residual[:, None] * user[None, :]
        grad_user = residual @ local[chosen]
        local[chosen] -= lr * grad_items
        user -= lr * grad_user / chosen.size
    rated = np.zeros(N_ITEMS, bool)
    rated[positives] = True
    return local - items, rated


@pytest.mark.parametrize("local_steps", [1, 5])
def test_direction_attack_separates_positives_from_sampled_negatives(local_steps):
    rng = np.random.default_rng(5)
    delta, rated = _implicit_update(rng, local_steps=local_steps)
    observation = ClientUpdateObservation(delta)
    norm = evaluate_item_inference(UpdateInferenceAttack("norm").score(observation), rated,
                                   num_predicted=int(rated.sum()))
    direction = evaluate_item_inference(
        UpdateInferenceAttack("direction").score(observation), rated, num_predicted=int(rated.sum())
    )
    assert norm.precision < 0.6  # sampled negatives are non-zero rows too
    assert direction.auc > 0.99 and direction.precision > 0.95
    assert (
        not UpdateInferenceAttack("direction", positives_are_minority=False)
        .predict(observation, num_items=20)[rated]
        .any()
    )


def test_direction_attack_on_aggregate_falls_back_to_norm():
    agg = AggregateObservation(np.array([[3.0, 4.0], [0.0, 1.0]]), 5)
    assert UpdateInferenceAttack("direction").score(agg).tolist() == [1.0, 0.2]
    with pytest.raises(ValueError):
        UpdateInferenceAttack("magic").score(agg)


def test_item_inference_needs_the_attackers_own_guess_count():
    # Defaulting to the top-|rated| items would hand the attacker the target's own count.
    scores, rated = np.array([3.0, 0.0, 1.0, 0.0]), np.array([True, False, True, False])
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_item_inference(scores, rated)
    assert evaluate_item_inference(scores, rated, num_predicted=1).precision == 1.0
    assert evaluate_item_inference(scores, rated, num_predicted=4).precision == 0.5
