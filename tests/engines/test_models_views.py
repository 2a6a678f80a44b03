import numpy as np
import pytest
import torch

from secure_fedrec.models import build_model


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_client_view_scores_equal_full_model(name):
    model = build_model(name, n_users=6, n_items=20, dim=4)
    items = np.array([2, 5, 11])
    view = model.client_view(3, items)
    full = model(torch.full((3,), 3), torch.as_tensor(items))
    local = view(torch.zeros(3, dtype=torch.long), torch.arange(3))
    assert torch.allclose(full, local)


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_view_delta_lines_up_with_layout_indices(name):
    model = build_model(name, n_users=6, n_items=20, dim=4)
    layout = model.layout()
    items = np.array([1, 7, 8])
    view = model.client_view(0, items)
    with torch.no_grad():
        for p in view.parameters():
            p.add_(torch.randn(p.shape))
    delta = model.view_delta(view, items)
    flat_before = layout.flatten(model.shared_state())
    flat = flat_before.copy()
    flat[layout.indices_for_items(items)] += delta
    model.load_shared_state(layout.unflatten(flat))
    got = dict(model.named_parameters())
    for name_, p in view.named_parameters():
        if name_ in model.item_row_names:
            assert torch.allclose(got[name_][torch.as_tensor(items)], p)
        elif name_ in model.shared_names:
            assert torch.allclose(got[name_], p)


def test_score_all_items_matches_forward():
    model = build_model("neumf", n_users=4, n_items=9, dim=3)
    users = torch.tensor([0, 2])
    scores = model.score_all_items(users)
    for r, u in enumerate(users.tolist()):
        assert torch.allclose(scores[r], model(torch.full((9,), u), torch.arange(9)), atol=1e-6)
