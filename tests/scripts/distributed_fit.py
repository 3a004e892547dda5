"""Launched by tests/test_distributed.py under torchrun: one rank of two data-parallel fits.

Every rank fits the same RealNVPDensity on the same rows with
``accelerator="auto"`` and saves its final weights, history and held-out
score to ``<out>/rank<r>.pt``. A second fit trains a model whose loss turns
NaN on rank 1 only, in its third epoch: every rank must leave training
together (no hang), warn, and restore the same best weights.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from skflow import RealNVPDensity
from skflow.flows import FlowModel
from tests.helpers_distributed import SETTINGS, held_out_rows, training_rows


class _NaNOnRankOne(FlowModel):
    """Wraps a flow; its training loss becomes NaN on rank 1 after ``after`` calls."""

    def __init__(self, flow: torch.nn.Module, after: int) -> None:
        super().__init__()
        self.flow = flow
        self.after = after
        self.calls = 0

    def loss(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        loss = self.flow.loss(x)
        if torch.distributed.get_rank() == 1 and self.calls > self.after:
            return loss * float("nan")
        return loss

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow.log_prob(x)

    def sample(self, n_samples: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        return self.flow.sample(n_samples, generator)

    def encode(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow.encode(x)

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow.decode(z)


class _DivergingDensity(RealNVPDensity):
    def build_model(self, n_features: int) -> FlowModel:
        # 2700 training rows, two ranks, 64-row shards: 22 steps per epoch (plus the
        # one initialisation pass), so NaN appears in the third epoch.
        return _NaNOnRankOne(super().build_model(n_features), after=2 * 22 + 5)


def main(out: Path) -> None:
    estimator = RealNVPDensity(**SETTINGS, accelerator="auto").fit(training_rows())
    rank = torch.distributed.get_rank()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # init="identity": the wrapper hides the ExactFlow the Gaussian start is put in front of.
        diverging = _DivergingDensity(**{**SETTINGS, "max_epochs": 5}, init="identity", accelerator="auto").fit(
            training_rows()
        )
    torch.save(
        {
            "world_size": torch.distributed.get_world_size(),
            "state": estimator.model_.state_dict(),
            "score": estimator.score(held_out_rows()),
            "history": estimator.history_,
            "diverged_state": diverging.model_.flow.state_dict(),
            "diverged_history": diverging.history_,
            "diverged_best_epoch": diverging.best_epoch_,
            "diverged_warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        },
        out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
