"""The paper's naive estimator against FIF on the noisy sinusoid.

Sorrenson et al. (ICLR 2024) motivate FIF's off-manifold correction with a
failure of the naive maximum-likelihood estimator
``tr(SG[f'(x_hat)] g'(z))``: its gradient reaches the decoder, which can
bend the manifold so that many points project onto a small patch, lowering
the latent entropy and so the loss, without bound ("diverging curvature").
FIF takes the encoder Jacobian at the data point instead and gives the
decoder only the reconstruction gradient.

This script trains the same InjectiveFlowEstimator twice per ``beta``, once
with ``encoder_jacobian_at="data"`` (FIF) and once with
``"reconstruction"`` (naive), on ``x1 ~ N(0, 1)``, ``x2 = sin(pi x1 / 2)``
plus isotropic Gaussian noise 0.1 (one latent dimension), for a fixed number
of epochs with no early stopping and no weight restoring (validation off,
``patience=None``), so that what the objective does is what is seen. After
every epoch a callback records, on 1,000 held-out rows:

* the held-out negative log-likelihood (nats per row, data units; the exact
  test-time density of :meth:`~skflow.InjectiveFlowEstimator.score_samples`);
* the reconstruction MSE (squared distance to the projection, data units);
* the largest curvature of the learned curve ``g(z)`` for ``z`` in
  ``[-2.5, 2.5]`` (finite differences on 2,001 points; the true sinusoid's
  largest curvature is ``(pi / 2)^2 = 2.47``).

Run: ``python benchmarks/fif_naive.py`` (``SKFLOW_BENCH_FAST=1`` for a quick
run). Prints a markdown table (first, best and last epoch of each run) and
writes ``benchmarks/results/fif_naive.{md,json}`` and
``benchmarks/results/fif_naive.png`` (curves per epoch and the final
manifolds).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback

# Measure the working tree, not whatever copy of skflow is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skflow import InjectiveFlowEstimator, TrainingDivergedError

FAST = os.environ.get("SKFLOW_BENCH_FAST") == "1"
RESULTS = Path(__file__).resolve().parent / "results"
NOISE = 0.1
LATENT_GRID = np.linspace(-2.5, 2.5, 2001)


def noisy_sinusoid(n_samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    position = rng.normal(size=n_samples)
    return np.c_[position, np.sin(np.pi * position / 2)] + NOISE * rng.normal(size=(n_samples, 2))


def max_curvature(curve: np.ndarray) -> float:
    """Largest curvature of a planar curve sampled at equal parameter steps, shape (m, 2)."""
    step = LATENT_GRID[1] - LATENT_GRID[0]
    first = np.gradient(curve, step, axis=0)
    second = np.gradient(first, step, axis=0)
    cross = np.abs(first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0])
    speed = np.linalg.norm(first, axis=1)
    curvature = cross / np.maximum(speed, 1e-12) ** 3
    return float(np.nanmax(curvature)) if np.isfinite(curvature).any() else math.inf


class EpochProbe(Callback):
    """Records held-out NLL, reconstruction error and curvature after every epoch."""

    def __init__(self, train: np.ndarray, test: np.ndarray) -> None:
        # The estimator standardises each column; the probe does the same
        # to speak to the model in its own units.
        self.mean, self.scale = train.mean(axis=0), train.std(axis=0)
        self.test = test
        self.records: list[dict[str, float]] = []

    def on_epoch_end(self, net, **kwargs) -> None:
        model = net.module_
        was_training = model.training
        model.eval()
        test = torch.as_tensor((self.test - self.mean) / self.scale, dtype=torch.float32)
        grid = torch.as_tensor(LATENT_GRID[:, None], dtype=torch.float32)
        with torch.no_grad():
            log_prob = model.log_prob(test).double().numpy() - np.log(self.scale).sum()
            reconstruction = model.decode(model.encode(test)).double().numpy() * self.scale + self.mean
            curve = model.decode(grid).double().numpy() * self.scale + self.mean
        model.train(was_training)
        finite = np.isfinite(log_prob)
        self.records.append(
            {
                "epoch": len(net.history),
                "heldout_nll": float(-log_prob[finite].mean()) if finite.any() else math.inf,
                "reconstruction_mse": float(((reconstruction - self.test) ** 2).sum(axis=1).mean()),
                "max_curvature": max_curvature(curve),
            }
        )


def run(estimator_name: str, beta: float, train: np.ndarray, test: np.ndarray, epochs: int) -> dict:
    probe = EpochProbe(train, test)
    estimator = InjectiveFlowEstimator(
        n_components=1,
        beta=beta,
        encoder_jacobian_at="data" if estimator_name == "FIF" else "reconstruction",
        hidden_dims=(64, 64),
        n_residual_blocks=1,
        max_epochs=epochs,
        batch_size=128,
        lr=1e-3,
        validation_fraction=None,
        patience=None,
        callbacks=[probe],
        random_state=0,
    )
    start = time.perf_counter()
    outcome = "finished"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(train)
        except (TrainingDivergedError, RuntimeError, FloatingPointError) as error:
            outcome = f"raised {type(error).__name__}"
    if outcome == "finished" and any("diverg" in str(w.message).lower() for w in caught):
        outcome = "engine reported divergence"
    curve = None
    if outcome == "finished":
        curve = estimator.inverse_transform(LATENT_GRID[:, None]).tolist()
    return {
        "estimator": estimator_name,
        "beta": beta,
        "epochs": epochs,
        "outcome": outcome,
        "seconds": time.perf_counter() - start,
        "per_epoch": probe.records,
        "final_curve": curve,
    }


def summary_rows(result: dict) -> list[str]:
    records = result["per_epoch"]
    if not records:
        return [f"| {result['estimator']} | {result['beta']:g} | - | - | - | - | {result['outcome']} |"]
    finite = [r for r in records if math.isfinite(r["heldout_nll"])]
    best = min(finite, key=lambda r: r["heldout_nll"]) if finite else records[0]
    rows = []
    for label, record in (("first", records[0]), ("best NLL", best), ("last", records[-1])):
        rows.append(
            f"| {result['estimator']} | {result['beta']:g} | {label} ({record['epoch']}) | "
            f"{record['heldout_nll']:.3f} | {record['reconstruction_mse']:.4f} | {record['max_curvature']:.3g} | "
            f"{result['outcome']} |"
        )
    return rows


def plot(results: list[dict], train: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = sorted({r["beta"] for r in results})
    figure, axes = plt.subplots(len(betas), 4, figsize=(18, 3.8 * len(betas)), squeeze=False)
    colours = {"FIF": "tab:blue", "naive": "tab:red"}
    for row, beta in enumerate(betas):
        for result in (r for r in results if r["beta"] == beta):
            epochs = [r["epoch"] for r in result["per_epoch"]]
            colour = colours[result["estimator"]]
            for column, key in enumerate(("heldout_nll", "reconstruction_mse", "max_curvature")):
                values = [r[key] for r in result["per_epoch"]]
                axes[row, column].plot(epochs, values, color=colour, label=result["estimator"])
                axes[row, column].set_yscale("symlog" if key == "heldout_nll" else "log")
                axes[row, column].set_title(f"beta = {beta:g}: {key.replace('_', ' ')}")
                axes[row, column].set_xlabel("epoch")
            if result["final_curve"] is not None:
                curve = np.asarray(result["final_curve"])
                axes[row, 3].plot(curve[:, 0], curve[:, 1], color=colour, label=f"{result['estimator']} g(z)")
        axes[row, 3].scatter(train[:, 0], train[:, 1], s=1, color="0.75", zorder=0)
        axes[row, 3].set_xlim(-4, 4)
        axes[row, 3].set_ylim(-2.5, 2.5)
        axes[row, 3].set_title(f"beta = {beta:g}: final manifold")
        axes[row, 0].legend()
        axes[row, 3].legend(loc="lower right", fontsize=8)
    figure.suptitle("Naive maximum-likelihood estimator vs FIF on the noisy sinusoid (noise 0.1, d = 1)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    torch.set_num_threads(1)
    train, test = noisy_sinusoid(2000, seed=0), noisy_sinusoid(1000, seed=1)
    epochs = 15 if FAST else 150
    betas = [1.0] if FAST else [1.0, 10.0]
    results = [run(name, beta, train, test, epochs) for beta in betas for name in ("FIF", "naive")]
    header = [
        f"Noisy sinusoid (noise {NOISE}, 2,000 training rows, 1,000 held out), hidden (64, 64), one residual block,",
        f"batch 128, lr 1e-3, {epochs} epochs, no early stopping or weight restoring, seed 0.",
        "Curvature of the true sinusoid: at most 2.47.",
        "",
        "| estimator | beta | epoch | held-out NLL | recon. MSE | max curvature | outcome |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    table = "\n".join(header + [row for result in results for row in summary_rows(result)])
    print(table)
    if FAST:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fif_naive.md").write_text(table + "\n")
    (RESULTS / "fif_naive.json").write_text(json.dumps(results, indent=1))
    plot(results, train, RESULTS / "fif_naive.png")
    print(f"wrote {RESULTS / 'fif_naive.md'}, .json and .png")


if __name__ == "__main__":
    main()
