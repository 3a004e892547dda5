"""Anomaly detection with a normalizing flow on breast-cancer measurements
=========================================================================

Wraps :class:`skflow.RealNVPDensity` in :class:`skflow.DensityOutlierDetector`
behind a log transform and a scaler (a scikit-learn Pipeline), fits it without
labels, and ranks held-out rows against
:class:`~sklearn.ensemble.IsolationForest` fitted on the same split.

Data: the Wisconsin diagnostic breast-cancer table that scikit-learn ships
(:func:`~sklearn.datasets.load_breast_cancer`, 569 tumours, 30 measurements of
cell nuclei). The benign tumours are the normal class; as in the usual
outlier-detection version of this table (ODDS' "WBC"), only a small random
share of the malignant ones is kept, here 40 rows, so that anomalies are about
10% of the data. The detectors are fitted on 70% of the rows, anomalies
included and unlabelled, and evaluated on the other 30%.

Output: ``examples/output/anomaly_detection_breast_cancer.png`` with the ROC
curves and the distribution of ``decision_function`` on the test part for
normal and anomalous rows (negative = predicted outlier).
Set ``SKFLOW_EXAMPLES_FAST=1`` for a short smoke run (few epochs).

``contamination=0.1`` sets the threshold at the known share of anomalies;
the default, ``"auto"``, puts it at Tukey's fence of the training scores.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skflow import DensityOutlierDetector, RealNVPDensity

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST", "") not in ("", "0")
# sys.argv[0] is this script's path, also where sphinx-gallery runs it for the docs.
OUTPUT = Path(sys.argv[0]).resolve().parent / "output" / "anomaly_detection_breast_cancer.png"
N_ANOMALIES = 40


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """All benign tumours (label 0) and N_ANOMALIES malignant ones drawn at random (label 1)."""
    data = load_breast_cancer()
    benign = data.data[data.target == 1]
    malignant = data.data[data.target == 0]
    keep = np.random.default_rng(0).choice(len(malignant), size=N_ANOMALIES, replace=False)
    X = np.vstack([benign, malignant[keep]])
    y = np.concatenate([np.zeros(len(benign), dtype=int), np.ones(N_ANOMALIES, dtype=int)])
    return X, y


def preprocessing() -> list:
    """Fresh preprocessing steps for each pipeline.

    The measurements are positive and right-skewed (areas, concavities):
    log1p brings them closer to symmetric, which a flow fits in fewer epochs.
    """
    return [FunctionTransformer(np.log1p), StandardScaler()]


def main() -> None:
    X, y = load_data()
    X_train, X_test, _, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=1)

    # The flow of DensityOutlierDetector's default, spelled out to shorten
    # training in the fast mode: noise_std=0.3 smooths the fitted density.
    flow = RealNVPDensity(noise_std=0.3, random_state=0, max_epochs=5 if FAST else 200)
    detectors = {
        "RealNVP, log-density": make_pipeline(
            *preprocessing(), DensityOutlierDetector(estimator=flow, contamination=0.1)
        ),
        "RealNVP, typicality": make_pipeline(
            *preprocessing(), DensityOutlierDetector(estimator=flow, score_type="typicality", contamination=0.1)
        ),
        "IsolationForest": make_pipeline(*preprocessing(), IsolationForest(contamination=0.1, random_state=0)),
    }
    decisions = {}
    for name, detector in detectors.items():
        start = time.perf_counter()
        detector.fit(X_train)
        decisions[name] = detector.decision_function(X_test)
        anomaly_score = -decisions[name]
        print(
            f"{name:22s} ROC-AUC {roc_auc_score(y_test, anomaly_score):.3f}  "
            f"PR-AUC {average_precision_score(y_test, anomaly_score):.3f}  "
            f"test rows flagged {np.mean(detector.predict(X_test) == -1):.1%}  "
            f"({time.perf_counter() - start:.1f} s)"
        )
    figure, (roc_axis, histogram_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, decision in decisions.items():
        false_positive, true_positive, _ = roc_curve(y_test, -decision)
        roc_axis.plot(
            false_positive,
            true_positive,
            linestyle="--" if "typicality" in name else "-",
            label=f"{name} (AUC {roc_auc_score(y_test, -decision):.3f})",
        )
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the test part")
    roc_axis.legend(loc="lower right", fontsize=8)

    decision = decisions["RealNVP, log-density"]
    # Clip the far tail so that both groups stay visible on one axis.
    low = np.percentile(decision, 2)
    bins = np.linspace(low, decision.max(), 40)
    histogram_axis.hist(np.clip(decision[y_test == 0], low, None), bins=bins, alpha=0.6, label="normal (benign)")
    histogram_axis.hist(np.clip(decision[y_test == 1], low, None), bins=bins, alpha=0.6, label="anomaly (malignant)")
    histogram_axis.axvline(0.0, color="black", linestyle="--", linewidth=1, label="threshold (contamination=0.1)")
    histogram_axis.set(
        xlabel="decision_function = log-density - offset_ (clipped at the 2nd percentile)",
        ylabel="test rows",
        title="RealNVP detector scores",
    )
    histogram_axis.legend(fontsize=8)
    figure.suptitle(
        f"Unsupervised anomaly detection, breast-cancer table ({N_ANOMALIES} malignant rows kept), 70/30 split"
    )
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, dpi=120)
    print(f"saved {OUTPUT}")


if __name__ == "__main__":
    main()
