"""The local optimizers without torch.optim: bit-identical to torch's, and no torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from secure_fedrec.training.optimizers import Adam, make_optimizer


def _problem(seed: int):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(7, 3, generator=gen, requires_grad=True),
              torch.randn(3, generator=gen, requires_grad=True),
              torch.randn(2, 2, generator=gen, requires_grad=True)]  # never gets a gradient
    x = torch.randn(11, 7, generator=gen)
    y = torch.randn(11, 3, generator=gen)
    return params, x, y


def _train(params, x, y, opt, steps: int):
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = ((x @ params[0] + params[1] - y) ** 2).mean()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("name, reference", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
@pytest.mark.parametrize("lr", [0.05, 1e-3])
def test_updates_are_bit_identical_to_torch_optim(name, reference, lr):
    mine, x, y = _problem(0)
    theirs, _, _ = _problem(0)
    got = _train(mine, x, y, make_optimizer(mine, name, lr), steps=25)
    want = _train(theirs, x, y, reference(theirs, lr=lr), steps=25)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_bad_arguments_are_refused():
    params, _, _ = _problem(1)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(params, "adagrad", 0.1)
    with pytest.raises(ValueError, match="lr"):
        Adam(params, float("nan"))


def test_local_training_does_not_import_torch_dynamo():
    """What a Flower node pays per train message: constructing a torch.optim optimizer would
    import torch._dynamo (1-3 s); our local training does not."""
    script = """
import sys
import numpy as np
from secure_fedrec.config import load_config
from secure_fedrec.inputs import build_model_for, load_data, make_split
from secure_fedrec.training.local import ClientData, LocalTraining, train_client
config = load_config(None, {"data.synthetic.n_users": 20, "data.synthetic.n_items": 60})
split = make_split(config, load_data(config))
model = build_model_for(config, split)
rows = np.flatnonzero(split.train.users == 0)
data = ClientData(user=0, items=split.train.items[rows], ratings=split.train.ratings[rows])
for optimizer in ("adam", "sgd"):
    train_client(model, data, LocalTraining(epochs=2, optimizer=optimizer), np.random.default_rng(0))
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
