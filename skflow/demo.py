"""The README's main job: RealNVPDensity against GaussianMixture on digits.

Run with ``python -m skflow``. Fits both models on 80% of scikit-learn's
bundled digits (8x8 images, integer pixels 0-16) and prints the held-out
log-likelihood of each, in the same units.

Both models see the same dequantised data: each integer pixel value ``k`` is
treated as the unit bin ``[k - 1/2, k + 1/2)``. RealNVPDensity does this
internally (``dequantize="auto"``); the Gaussian mixture is fitted to the
training pixels plus uniform noise on ``[-1/2, 1/2)``. Both are then scored at
the integer values, so a held-out log-likelihood is (up to the approximation
of the bin's mass by its centre density) the log-probability of the image.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from ._threads import free_cores
from .realnvp import RealNVPDensity

__all__ = ["main", "run_demo"]


def _silent(line: str) -> None:
    """Progress sink that drops every line."""


def _best_gaussian_mixture(
    X_train: np.ndarray, seed: int, candidates: Sequence[int], progress: Callable[[str], None] = _silent
) -> GaussianMixture:
    """GaussianMixture with the number of components chosen on a validation split."""
    rng = np.random.default_rng(seed)
    jittered = X_train + rng.uniform(-0.5, 0.5, size=X_train.shape)
    fit_part, valid_part = train_test_split(jittered, test_size=0.1, random_state=seed)
    scores: dict[int, float] = {}
    for k in candidates:
        start = time.perf_counter()
        mixture = GaussianMixture(k, covariance_type="full", random_state=seed).fit(fit_part)
        scores[k] = mixture.score(valid_part)
        progress(
            f"      n_components={k:<2}  validation log-lik {scores[k]:9.2f}  ({time.perf_counter() - start:.1f}s)"
        )
    best = max(scores, key=lambda k: scores[k])
    progress(f"      refitting n_components={best} on all training images")
    return GaussianMixture(best, covariance_type="full", random_state=seed).fit(jittered)


def run_demo(
    seed: int = 0, max_epochs: int = 200, progress: Callable[[str], None] | None = None
) -> list[dict[str, float | str]]:
    """Fit both models on digits and return one result row per model.

    Parameters
    ----------
    seed : int, default=0
        Seeds the split and both models.
    max_epochs : int, default=200
        Upper bound on the flow's epochs (early stopping usually ends sooner).
    progress : callable or None, default=None
        Receives a line (a str) as each phase starts and ends; when given,
        the flow also prints its compact training report (``verbose=1``).
        None is silent.

    Returns
    -------
    rows : list of dict
        ``model``, ``heldout_loglik`` (nats per image), ``bits_per_dim`` and
        ``fit_seconds`` for each model.
    """
    X = load_digits().data
    X_train, X_test = train_test_split(X, test_size=0.2, random_state=seed)
    n_dims = X.shape[1]
    rows = []

    say = progress or _silent

    say(f"[1/2] RealNVPDensity: training on {len(X_train)} images (early stopping on 10% held out) ...")
    start = time.perf_counter()
    flow = RealNVPDensity(max_epochs=max_epochs, random_state=seed, verbose=int(progress is not None)).fit(X_train)
    flow_seconds = time.perf_counter() - start
    say(f"      done in {flow_seconds:.1f}s: {flow.n_iter_} epochs, weights of epoch {flow.best_epoch_} kept")
    rows.append(("RealNVPDensity", flow.score(X_test), flow_seconds))

    candidates = (1, 2, 4, 8, 16)
    say(f"[2/2] GaussianMixture: choosing n_components among {candidates} on a validation split ...")
    start = time.perf_counter()
    # sklearn's mixture runs on BLAS threads, one per core; on a machine
    # where other work holds cores they would wait for each other as torch's
    # do, so the mixture gets the free cores only (skflow sizes its own).
    with threadpool_limits(limits=free_cores(), user_api="blas"):
        mixture = _best_gaussian_mixture(X_train, seed, candidates, say)
    mixture_seconds = time.perf_counter() - start
    say(f"      done in {mixture_seconds:.1f}s")
    rows.append((f"GaussianMixture(n_components={mixture.n_components})", mixture.score(X_test), mixture_seconds))

    return [
        {
            "model": name,
            "heldout_loglik": loglik,
            "bits_per_dim": -loglik / (n_dims * math.log(2)),
            "fit_seconds": seconds,
        }
        for name, loglik, seconds in rows
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``python -m skflow``."""
    parser = argparse.ArgumentParser(
        prog="python -m skflow",
        description="Fit RealNVPDensity and GaussianMixture on scikit-learn's digits; print held-out likelihoods.",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the models (default 0)")
    parser.add_argument("--max-epochs", type=int, default=200, help="maximum training epochs of the flow")
    args = parser.parse_args(argv)

    print("Digits (1797 images, 64 integer pixels 0-16), 80/20 split, dequantised.", flush=True)
    results = run_demo(seed=args.seed, max_epochs=args.max_epochs, progress=lambda line: print(line, flush=True))
    print("\nHeld-out scores:")
    header = f"{'model':<36} {'log-lik / image':>16} {'bits / dim':>11} {'fit s':>7}"
    print(header)
    print("-" * len(header))
    for row in results:
        print(
            f"{row['model']:<36} {row['heldout_loglik']:>16.2f} {row['bits_per_dim']:>11.3f} {row['fit_seconds']:>7.1f}"
        )
    return 0
