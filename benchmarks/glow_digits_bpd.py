"""Bits per dimension on scikit-learn's 8x8 digits: Glow vs RealNVP vs GaussianMixture.

Protocol, the same for every model:

* data: ``sklearn.datasets.load_digits`` (1797 images, 64 pixels, integer
  intensities 0..16), split 80/20 with ``random_state=0``;
* dequantisation: every model learns a continuous density of pixels that
  were jittered uniformly on ``[k - 1/2, k + 1/2)`` (skflow's estimators do
  this in every training batch; the GaussianMixture is fitted to
  ``n_jitter`` jittered copies of the training set) and is scored at the
  integer pixels themselves;
* units: held-out ``bits/dim = -mean(score_samples(X_test)) / (64 ln 2)``
  (:func:`skflow.metrics.bits_per_dim`), i.e. Glow's bits per dimension for
  17 intensity levels; lower is better. ``log2(17) = 4.09`` is a uniform
  distribution over the levels;
* the GaussianMixture's number of components and covariance type are tuned
  on a validation split of the training set (best by validation bits/dim),
  then it is refitted on the whole training set.

Usage::

    python benchmarks/glow_digits_bpd.py            # full run (CPU minutes)
    python benchmarks/glow_digits_bpd.py --quick    # smoke test, tiny models

Writes ``benchmarks/results/glow_digits_bpd.json`` (``glow_digits_bpd_quick.json``
with ``--quick``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from skflow import GlowDensity, RealNVPDensity
from skflow.metrics import bits_per_dim

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def jittered(X: np.ndarray, n_copies: int, rng: np.random.Generator) -> np.ndarray:
    """``n_copies`` copies of ``X`` with uniform noise on [-1/2, 1/2) per pixel."""
    return np.concatenate([X + rng.uniform(-0.5, 0.5, size=X.shape) for _ in range(n_copies)])


def tuned_gaussian_mixture(X_train: np.ndarray, seed: int, n_jitter: int, quick: bool) -> tuple[GaussianMixture, dict]:
    """GaussianMixture with components x covariance type chosen on a validation split."""
    rng = np.random.default_rng(seed)
    X_fit, X_valid = train_test_split(X_train, test_size=0.2, random_state=seed)
    grid = [(k, cov) for k in ((1, 4) if quick else (1, 2, 4, 8, 16, 32)) for cov in ("full", "diag")]
    best, best_bpd = None, np.inf
    for n_components, covariance_type in grid:
        model = GaussianMixture(n_components, covariance_type=covariance_type, reg_covar=1e-3, random_state=seed)
        model.fit(jittered(X_fit, n_jitter, rng))
        bpd = bits_per_dim(model, X_valid)
        if bpd < best_bpd:
            best, best_bpd = (n_components, covariance_type), bpd
    n_components, covariance_type = best
    model = GaussianMixture(n_components, covariance_type=covariance_type, reg_covar=1e-3, random_state=seed)
    model.fit(jittered(X_train, n_jitter, rng))
    return model, {"n_components": n_components, "covariance_type": covariance_type, "reg_covar": 1e-3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, few epochs (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)

    X = load_digits().data
    X_train, X_test = train_test_split(X, test_size=0.2, random_state=args.seed)
    epochs = 2 if args.quick else args.max_epochs
    common = {"max_epochs": epochs, "patience": 15, "batch_size": 64, "random_state": args.seed}
    n_steps, hidden_channels = (1, 8) if args.quick else (4, 64)
    n_layers, hidden_dims = (2, (16,)) if args.quick else (8, (128, 128))
    flows = {
        f"GlowDensity (image, L=2, K={n_steps}, {hidden_channels} channels)": GlowDensity(
            image_shape=(1, 8, 8),
            n_intensity_levels=17,
            n_levels=2,
            n_steps=n_steps,
            hidden_channels=hidden_channels,
            **common,
        ),
        f"RealNVPDensity ({n_layers} layers, {hidden_dims})": RealNVPDensity(
            n_layers=n_layers,
            hidden_dims=hidden_dims,
            **common,
        ),
    }

    rows = []
    for name, flow in flows.items():
        start = time.perf_counter()
        flow.fit(X_train)
        seconds = time.perf_counter() - start
        n_parameters = sum(p.numel() for p in flow.model_.parameters())
        rows.append(
            {
                "model": name,
                "test_bpd": flow.bits_per_dim(X_test),
                "train_bpd": flow.bits_per_dim(X_train),
                "fit_seconds": seconds,
                "epochs": flow.n_iter_,
                "best_epoch": flow.best_epoch_,
                "n_parameters": n_parameters,
                "params": {k: repr(v) for k, v in flow.get_params().items()},
            }
        )
        print(f"{name}: {rows[-1]['test_bpd']:.3f} bits/dim held out ({seconds:.0f} s)", flush=True)

    start = time.perf_counter()
    mixture, chosen = tuned_gaussian_mixture(X_train, args.seed, n_jitter=1 if args.quick else 4, quick=args.quick)
    seconds = time.perf_counter() - start
    n_parameters = int(mixture._n_parameters())
    rows.append(
        {
            "model": f"GaussianMixture ({chosen['n_components']}, {chosen['covariance_type']})",
            "test_bpd": bits_per_dim(mixture, X_test),
            "train_bpd": bits_per_dim(mixture, X_train),
            "fit_seconds": seconds,
            "epochs": None,
            "best_epoch": None,
            "n_parameters": n_parameters,
            "params": chosen,
        }
    )

    print()
    print("| model | held-out bits/dim | train bits/dim | fit (s) | epochs (best) | parameters |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        epochs_text = "-" if row["epochs"] is None else f"{row['epochs']} ({row['best_epoch']})"
        print(
            f"| {row['model']} | {row['test_bpd']:.3f} | {row['train_bpd']:.3f} | {row['fit_seconds']:.0f} "
            f"| {epochs_text} | {row['n_parameters']:,} |"
        )
    print(
        f"\nuniform over 17 levels: {np.log2(17):.3f} bits/dim; digits 80/20 split, seed {args.seed}, "
        f"{len(X_train)} train / {len(X_test)} test images"
    )

    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / ("glow_digits_bpd_quick.json" if args.quick else "glow_digits_bpd.json")
    output.write_text(
        json.dumps(
            {
                "protocol": "sklearn digits, 80/20 split, dequantised (unit bins), bits/dim = -mean log p / (64 ln 2)",
                "seed": args.seed,
                "torch_version": torch.__version__,
                "results": rows,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
