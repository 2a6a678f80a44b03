"""What a federated recommender model must offer the engine.

Parameters are split in two. *Shared* parameters (item embeddings, item
biases, MLP towers) are what clients update and send through secure
aggregation. *Private* parameters (the user's own embedding and bias) are
kept by each client and never leave it. The engine works on the shared
parameters as one flat float vector, described by a :class:`ParamLayout`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.dataset import RatingData

__all__ = ["FederatedModel", "ParamLayout"]


@dataclass(frozen=True)
class ParamLayout:
    """Where each shared parameter lives in the flat vector.

    ``item_rows`` lists the shared parameters whose first axis is indexed by
    item: a client that rated items ``I`` changes only those rows of them
    (which is what lets the engine keep client updates sparse).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    item_rows: frozenset[str]

    @property
    def offsets(self) -> dict[str, int]:
        out, pos = {}, 0
        for name, shape in zip(self.names, self.shapes):
            out[name] = pos
            pos += int(np.prod(shape))
        return out

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def flatten(self, tensors: dict[str, torch.Tensor]) -> np.ndarray:
        return np.concatenate(
            [tensors[n].detach().cpu().numpy().reshape(-1).astype(np.float64) for n in self.names]
        )

    def unflatten(self, flat: np.ndarray) -> dict[str, torch.Tensor]:
        if flat.shape != (self.size,):
            raise ValueError(f"expected a flat vector of {self.size} values, got shape {flat.shape}")
        out, pos = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = int(np.prod(shape))
            out[name] = torch.as_tensor(flat[pos:pos + k].reshape(shape), dtype=torch.float32)
            pos += k
        return out

    @property
    def n_items(self) -> int:
        """Rows of the item-indexed parameters (0 if there are none)."""
        return next((shape[0] for name, shape in zip(self.names, self.shapes) if name in self.item_rows), 0)

    def indices_for_items(self, items: np.ndarray) -> np.ndarray:
        """Flat indices a client touching ``items`` may change: their item rows plus every
        non-item parameter (sorted). Every item: one read-only array shared by all callers
        (a round of dense updates then holds one copy of the indices, not one per client)."""
        items = np.asarray(items, dtype=np.int64)
        if len(items) == self.n_items and len(items) and items[0] == 0 and items[-1] == len(items) - 1 \
                and np.all(np.diff(items) == 1):
            return _every_index(self.size)
        parts = []
        for name, shape, start in zip(self.names, self.shapes, self.offsets.values()):
            width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if name in self.item_rows:
                parts.append((start + items[:, None] * width + np.arange(width)[None, :]).reshape(-1))
            else:
                parts.append(np.arange(start, start + int(np.prod(shape))))
        return np.sort(np.concatenate(parts))


@functools.lru_cache(maxsize=4)
def _every_index(size: int) -> np.ndarray:
    indices = np.arange(size, dtype=np.int64)
    indices.setflags(write=False)
    return indices


class FederatedModel(nn.Module):
    """A recommender whose ``forward(users, items)`` returns a score per pair."""

    #: names of shared parameters, in flat-vector order
    shared_names: tuple[str, ...] = ()
    #: shared parameters indexed by item along their first axis
    item_row_names: frozenset[str] = frozenset()
    #: private per-user parameters, indexed by user along their first axis
    private_names: tuple[str, ...] = ()
    #: "explicit" (regression on ratings) or "implicit" (ranking interactions)
    task: str = "explicit"
    #: the training loss: "mse" (explicit), "bce" (pointwise, sampled negatives) or "bpr" (pairwise)
    objective: str = "mse"

    def layout(self) -> ParamLayout:
        params = dict(self.named_parameters())
        return ParamLayout(
            names=self.shared_names,
            shapes=tuple(tuple(params[n].shape) for n in self.shared_names),
            item_rows=self.item_row_names,
        )

    def shared_state(self) -> dict[str, torch.Tensor]:
        params = dict(self.named_parameters())
        return {n: params[n].detach().clone() for n in self.shared_names}

    def load_shared_state(self, tensors: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        with torch.no_grad():
            for n in self.shared_names:
                params[n].copy_(tensors[n])

    def private_rows(self, user: int) -> dict[str, torch.Tensor]:
        params = dict(self.named_parameters())
        return {n: params[n][user].detach().clone() for n in self.private_names}

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per-example L2 penalty on the parameters the example touches."""
        raise NotImplementedError

    # -- client views ---------------------------------------------------------------------
    def spawn(self, *, n_users: int, n_items: int, initialize: bool = True) -> FederatedModel:
        """A fresh model of the same class and hyper-parameters, of another size
        (``initialize=False``: parameters left for the caller to fill)."""
        return type(self)(n_users=n_users, n_items=n_items, initialize=initialize,  # type: ignore[call-arg]
                          **self.hparams)  # type: ignore[attr-defined]

    def client_view(self, user: int, items: np.ndarray) -> FederatedModel:
        """The small model one client trains: its own private rows (as user 0), the rows of
        ``items`` (sorted, unique; item ``items[j]`` becomes local item ``j``) and every
        non-item shared parameter."""
        view = self.spawn(n_users=1, n_items=len(items), initialize=False)
        src = dict(self.named_parameters())
        idx = torch.as_tensor(items, dtype=torch.long)
        with torch.no_grad():
            for name, param in view.named_parameters():
                if name in self.private_names:
                    param.copy_(src[name][user:user + 1])
                elif name in self.item_row_names:
                    param.copy_(src[name][idx])
                else:
                    param.copy_(src[name])
        return view

    def view_delta(self, view: FederatedModel, items: np.ndarray) -> np.ndarray:
        """The change of the shared parameters a trained view carries, in the order of
        ``layout().indices_for_items(items)`` (items sorted ascending)."""
        src = dict(self.named_parameters())
        got = dict(view.named_parameters())
        idx = torch.as_tensor(items, dtype=torch.long)
        parts = []
        for name in self.shared_names:
            base = src[name][idx] if name in self.item_row_names else src[name]
            parts.append((got[name].detach() - base.detach()).reshape(-1))
        return torch.cat(parts).double().numpy()

    def store_private(self, user: int, view: FederatedModel) -> None:
        """Keep the client's trained private rows (the in-process stand-in for the client's disk)."""
        src = dict(self.named_parameters())
        got = dict(view.named_parameters())
        with torch.no_grad():
            for name in self.private_names:
                src[name][user].copy_(got[name][0])

    def score_all_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user (rows) — used for full-ranking evaluation."""
        raise NotImplementedError

    def prepare_for_evaluation(self, train: RatingData) -> None:
        """Client-side work before predicting (e.g. refitting private rows); none by default."""
