"""Fit NGBoost's Normal regressor on arrays from a folder and write its held-out log-likelihood.

Run by ``benchmarks/conditional.py`` with the interpreter of a separate
environment that has NGBoost installed (NGBoost pins scikit-learn < 1.7, so
it stays out of skflow's environment; see ``benchmarks/README.md``). This
file imports neither skflow nor anything of the benchmark: only numpy and
ngboost.

    python _ngboost_worker.py FOLDER

reads ``FOLDER/{X_train,y_train,X_test,y_test}.npy`` and writes
``FOLDER/ngboost.json`` with the mean held-out log p(y | x) of a fitted
``NGBRegressor(Dist=Normal)`` and its per-row values.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from ngboost import NGBRegressor
from ngboost.distns import Normal


def main() -> None:
    folder = Path(sys.argv[1])
    arrays = {name: np.load(folder / f"{name}.npy") for name in ("X_train", "y_train", "X_test", "y_test")}
    start = time.perf_counter()
    model = NGBRegressor(Dist=Normal, random_state=0, verbose=False)
    model.fit(arrays["X_train"], arrays["y_train"])
    log_density = model.pred_dist(arrays["X_test"]).logpdf(arrays["y_test"])
    result = {
        "mean_log_density": float(np.mean(log_density)),
        "log_density": [float(value) for value in log_density],
        "seconds": time.perf_counter() - start,
    }
    (folder / "ngboost.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
