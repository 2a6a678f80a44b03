"""A small L2-regularised logistic regression (the attack classifier).

Hand-written on scipy.optimize rather than pulling in scikit-learn for one
model: the attacks package depends only on numpy and scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

__all__ = ["LogisticRegression"]


class LogisticRegression:
    """Binary logistic regression on standardized features, fitted with L-BFGS.

    Minimises the mean log-loss plus ``l2 / 2 · ||w||²`` (intercept not penalised).
    """

    def __init__(self, l2: float = 1e-2, max_iter: int = 500):
        self.l2 = l2
        self.max_iter = max_iter

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
        x = np.asarray(features, dtype=float)
        y = np.asarray(labels, dtype=float)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError("features must be (n, d) and labels (n,)")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or infinite values")
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        z = (x - self.mean_) / self.scale_
        n, d = z.shape

        def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = params[:d], params[d]
            logits = z @ w + b
            # log(1 + e^t) - y t, computed stably
            loss = np.mean(np.logaddexp(0.0, logits) - y * logits) + 0.5 * self.l2 * w @ w
            residual = (special.expit(logits) - y) / n
            grad = np.r_[z.T @ residual + self.l2 * w, residual.sum()]
            return float(loss), grad

        result = optimize.minimize(
            loss_and_grad,
            np.zeros(d + 1),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter},
        )
        self.coef_, self.intercept_ = result.x[:d], float(result.x[d])
        self.converged_ = bool(result.success)
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=float) - self.mean_) / self.scale_
        return z @ self.coef_ + self.intercept_

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of the positive class, shape ``(n,)``."""
        return special.expit(self.decision_function(features))
