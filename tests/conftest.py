"""Test-session settings.

The suite runs many tiny models; one intra-op thread per process is faster for
them than two, and with pytest-xdist's two workers on two cores it avoids the
oversubscription that makes OpenMP threads spin against each other. Setting it
through the environment also reaches the subprocesses some tests start (a
fresh interpreter loading a pickled model must compute exactly as this one).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
