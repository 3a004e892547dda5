"""Free-form injective flows: cost of a training step, and digits versus PCA.

Part 1 times one optimisation step (forward, backward, Adam update) of the
same encoder/decoder pair (the estimator's default networks, D = 64, batch
256) trained three ways:

* ``autoencoder``: reconstruction only, ``beta ||x - g(f(x))||^2``;
* ``fif``: the FIF loss with one latent probe (skflow's implementation);
* ``exact``: reconstruction plus the exact negative log-likelihood, with the
  volume term ``-1/2 log det(J_f J_f^T)`` from the full encoder Jacobian
  (``d`` vector-Jacobian products kept in the graph, then differentiated).

Part 2 reduces sklearn's digits (8x8 images, D = 64) to ``d`` components
with InjectiveFlowEstimator and with PCA, and reports held-out
reconstruction MSE (per pixel) and held-out mean log-likelihood; PCA's is
the probabilistic-PCA likelihood of ``sklearn.decomposition.PCA.score``.
Digits are integers 0-16: skflow dequantises them during training and scores
at the integer points, so its value approximates ``log P(x)`` (unit bins);
PCA's is the Gaussian density at the same points.

Run: ``python benchmarks/fif_benchmark.py`` (``SKFLOW_BENCH_FAST=1`` for a
quick run; ``--steps-only`` for part 1 alone, which prints its table and
writes nothing). Prints markdown tables and writes
``benchmarks/results/fif_benchmark.json``. Step times are medians over the
timed steps, so that a burst of load from other processes does not skew them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

# Measure the working tree, not whatever copy of skflow is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skflow import InjectiveFlowEstimator
from skflow.flows.injective import FreeFormInjectiveFlow, default_decoder, default_encoder

FAST = os.environ.get("SKFLOW_BENCH_FAST") == "1"
RESULTS = Path(__file__).resolve().parent / "results"


def exact_loss(model: FreeFormInjectiveFlow, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction plus exact NLL with the encoder-Jacobian volume (d VJPs in the graph)."""
    x = x.detach().requires_grad_(True)
    z = model.encoder(x)
    x_hat = model.decoder(z)
    rows = []
    for direction in torch.eye(z.shape[1]):
        (row,) = torch.autograd.grad(z, x, direction.expand_as(z), create_graph=True)
        rows.append(row)
    jacobian = torch.stack(rows, dim=1)  # (n, d, D)
    half_log_det = 0.5 * torch.linalg.slogdet(jacobian @ jacobian.transpose(1, 2)).logabsdet
    nll = 0.5 * z.pow(2).sum(1) - half_log_det
    return model.beta * (x - x_hat).pow(2).sum(1) + nll


def autoencoder_loss(model: FreeFormInjectiveFlow, x: torch.Tensor) -> torch.Tensor:
    return model.beta * (x - model.decoder(model.encoder(x))).pow(2).sum(1)


def time_steps(loss_function, model, x: torch.Tensor, n_steps: int) -> float:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    seconds = []
    for step in range(n_steps + 2):  # two warm-up steps
        start = time.perf_counter()
        optimiser.zero_grad()
        loss_function(model, x).mean().backward()
        optimiser.step()
        if step >= 2:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def step_costs(n_features: int = 64, batch: int = 256) -> list[dict]:
    n_steps = 5 if FAST else 20
    x = torch.randn(batch, n_features, generator=torch.Generator().manual_seed(0))
    records = []
    for n_components in (8, 16, 32):
        torch.manual_seed(0)
        model = FreeFormInjectiveFlow(
            default_encoder(n_features, n_components),
            default_decoder(n_components, n_features),
            n_features,
            n_components,
        )
        model.train()
        seconds = {
            "autoencoder": time_steps(autoencoder_loss, model, x, n_steps),
            "fif": time_steps(lambda m, rows: m.loss(rows), model, x, n_steps),
            "exact": time_steps(exact_loss, model, x, n_steps),
        }
        records.append(
            {
                "n_components": n_components,
                **{f"{key}_ms": 1000 * value for key, value in seconds.items()},
                "fif_over_autoencoder": seconds["fif"] / seconds["autoencoder"],
                "exact_over_fif": seconds["exact"] / seconds["fif"],
            }
        )
    return records


def digits_versus_pca() -> list[dict]:
    X, _ = load_digits(return_X_y=True)
    X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
    records = []
    for n_components in (2, 8):
        start = time.perf_counter()
        fif = InjectiveFlowEstimator(
            n_components=n_components, max_epochs=30 if FAST else 300, batch_size=64, patience=30, random_state=0
        ).fit(X_train)
        fif_seconds = time.perf_counter() - start
        pca = PCA(n_components=n_components).fit(X_train)
        pca_reconstruction = pca.inverse_transform(pca.transform(X_test))
        records.append(
            {
                "n_components": n_components,
                "fif_mse": float(fif.reconstruction_error(X_test).mean() / X.shape[1]),
                "pca_mse": float(((X_test - pca_reconstruction) ** 2).mean()),
                "fif_loglik": float(fif.score(X_test)),
                "fif_manifold_loglik": float(fif.score_samples_manifold(X_test).mean()),
                "pca_loglik": float(pca.score(X_test)),
                "fif_epochs": int(fif.n_iter_),
                "fif_best_epoch": int(fif.best_epoch_),
                "fif_fit_seconds": fif_seconds,
            }
        )
    return records


def markdown(records: list[dict]) -> str:
    keys = list(records[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for record in records:
        cells = [f"{value:.4g}" if isinstance(value, float) else str(value) for value in record.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-only", action="store_true", help="time the training steps only; write no results")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    steps = step_costs()
    print("## Milliseconds per training step (D = 64, batch 256, one thread, median)\n")
    print(markdown(steps), "\n")
    if arguments.steps_only:
        return
    digits = digits_versus_pca()
    print("## Digits (held-out 25%): reconstruction MSE per pixel and mean log-likelihood\n")
    print(markdown(digits))
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "fast": FAST,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "step_costs": steps,
        "digits": digits,
    }
    (RESULTS / "fif_benchmark.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
