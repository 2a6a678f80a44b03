"""Adam's update as one pure function, for parameters that live outside torch.

Record-level DP-SGD under secure aggregation splits one optimizer step by placement:
the server applies it to the shared parameters (:class:`secure_fedrec.rounds.optimizers.Adam`),
each client to its own private rows (:mod:`.dpsgd_shares`). Both call this function, so
the split step is the very update ``torch.optim.Adam`` would make on the whole model
(Kingma and Ba 2015, with bias correction, torch's defaults), which is what the
centralized DP-SGD twin runs (:mod:`secure_fedrec.dpsgd_twin`).

>>> import numpy as np, torch
>>> p, g = np.array([0.5, -1.0]), np.array([0.1, 0.3])
>>> ours, m, v = adam_step(p, g, np.zeros(2), np.zeros(2), step=1, lr=0.01)
>>> t = torch.tensor(p, requires_grad=True); opt = torch.optim.Adam([t], lr=0.01)
>>> t.grad = torch.tensor(g); opt.step()
>>> bool(np.allclose(ours, t.detach().numpy()))
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["ADAM_BETAS", "ADAM_EPS", "adam_step"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, *, step: int, lr: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam step (``step`` counts from 1): the new parameter and first and second moments."""
    beta1, beta2 = ADAM_BETAS
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * grad * grad
    m_hat = m / (1.0 - beta1**step)
    v_hat = v / (1.0 - beta2**step)
    return param - lr * m_hat / (np.sqrt(v_hat) + ADAM_EPS), m, v
