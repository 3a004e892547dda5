"""Anomaly detection with a normalizing flow on a real dataset (ADBench's breastw)
===============================================================================

Wraps :class:`skflow.RealNVPDensity` in :class:`skflow.DensityOutlierDetector`
behind a MinMax scaler (a scikit-learn Pipeline), fits it without labels on
70% of the Wisconsin breast-cancer data (malignant cases, 35% of the rows, are
the anomalies and stay in the training part, as in ADBench's unsupervised
protocol), and evaluates the ranking on the other 30% against
:class:`~sklearn.ensemble.IsolationForest` fitted on the same split.

The features are integer scores 1-10; after MinMax scaling they lie on a grid
of spacing 1/9, which the flow detects and dequantises (``dequantize="auto"``).

Data: ``../shared/data/adbench/4_breastw.npz`` relative to the repository root
(ADBench, Han et al. 2022; originally UCI / ODDS).
Output: ``examples/output/anomaly_detection_breastw.png`` with the ROC curves
and the distribution of ``decision_function`` on the test part for normal and
anomalous rows (negative = predicted outlier).
Set ``SKFLOW_EXAMPLES_FAST=1`` for a short smoke run (few epochs).

The ranking (ROC) is what the detector is for here: with 35% anomalies in the
training data, ``contamination="auto"`` (Tukey's fence on the training
scores, which assumes outliers form a thin tail) sets the threshold below
nearly every test row; pass ``contamination=0.35`` when the share is known.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from skflow import DensityOutlierDetector, RealNVPDensity

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST", "") not in ("", "0")
REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data" / "adbench" / "4_breastw.npz"
OUTPUT = Path(__file__).resolve().parent / "output" / "anomaly_detection_breastw.png"


def main() -> None:
    if not DATA.exists():
        raise SystemExit(f"Expected the ADBench file at {DATA} (../shared/data/adbench from the repository root).")
    data = np.load(DATA)
    X, y = data["X"].astype(np.float64), data["y"].astype(int)
    X_train, X_test, _, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=1)

    # The flow of DensityOutlierDetector's default, spelled out to shorten
    # training in the fast mode: noise_std=0.3 smooths the fitted density.
    flow = RealNVPDensity(noise_std=0.3, random_state=0, max_epochs=5 if FAST else 200)
    detectors = {
        "RealNVP, log-density": make_pipeline(MinMaxScaler(), DensityOutlierDetector(estimator=flow)),
        "RealNVP, typicality": make_pipeline(
            MinMaxScaler(), DensityOutlierDetector(estimator=flow, score_type="typicality")
        ),
        "IsolationForest": make_pipeline(MinMaxScaler(), IsolationForest(random_state=0)),
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
    flow_detector = detectors["RealNVP, log-density"][-1]
    print(
        f"dequantised columns: {flow_detector.estimator_.dequantized_features_.sum()} of {X.shape[1]}, "
        f"bin widths {np.unique(np.round(flow_detector.estimator_.dequantization_widths_, 4))}"
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
    histogram_axis.axvline(0.0, color="black", linestyle="--", linewidth=1, label="threshold (contamination='auto')")
    histogram_axis.set(
        xlabel="decision_function = log-density - offset_ (clipped at the 2nd percentile)",
        ylabel="test rows",
        title="RealNVP detector scores",
    )
    histogram_axis.legend(fontsize=8)
    figure.suptitle("Unsupervised anomaly detection on breastw (ADBench), 70/30 split")
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, dpi=120)
    print(f"saved {OUTPUT}")


if __name__ == "__main__":
    main()
