"""How many CPU threads torch may use inside a fit or a scoring call.

torch starts with one intra-op thread per core and keeps it whatever else runs
on the machine. For the small matrix products of a tabular flow that is a bad
bargain: each of its OpenMP threads spins waiting for the others at every
operation, so when another process holds a core (a BLAS job, another fit, a
joblib worker) every operation waits for a thread that is not running, and a
fit that takes one second alone can take tens of seconds. This module decides,
for one piece of work, how many threads are worth it, and sets that for its
duration only:

* an explicit choice wins: the estimator's ``n_threads``;
* never more than the caller allows: ``torch.get_num_threads()`` on entry
  (which reflects ``torch.set_num_threads``, ``OMP_NUM_THREADS`` and
  threadpoolctl's limits) and ``OMP_NUM_THREADS`` itself (which joblib's loky
  workers set for their children);
* never more than the cores nobody else is using, from the kernel's count of
  runnable threads and its one-minute load average;
* one thread per :data:`MACS_PER_THREAD` multiply-accumulates of a forward
  pass, so small models and batches run on one thread, where the fork-join
  costs more than the arithmetic it splits;
* one thread when several skflow calls run at once in one process (joblib's
  threading backend): they already keep the cores busy. A call that started
  alone and chose more drops to one when the training engine next checks
  (:func:`share_with_concurrent_work`, once per epoch).

The caller's setting is restored afterwards. torch's thread count is per OS
thread once set, so each thread saves and restores its own.

:func:`blas_threads` applies the same policy to the BLAS behind numpy and
scipy (through threadpoolctl), for the array work a fit does outside torch:
the moments and eigendecompositions of a Gaussian start.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = [
    "MACS_PER_THREAD",
    "blas_threads",
    "busy_cores",
    "choose_n_threads",
    "free_cores",
    "share_with_concurrent_work",
    "torch_threads",
]

# Multiply-accumulates of one forward pass per extra thread. A 256-row batch
# through an 8-layer RealNVP with 2x128 hidden units is ~5e7: below two of
# these, so it runs on one thread; scoring 8192 such rows asks for many.
MACS_PER_THREAD = 2**26

_lock = threading.Lock()
_active = 0  # skflow regions running now in this process, all threads together
_local = threading.local()

# Probing the machine costs microseconds, but a scoring call on a few rows
# costs little more; reuse a probe for this long.
_PROBE_TTL_SECONDS = 1.0
_probe_cache: tuple[float, int] | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _env_thread_limit() -> int | None:
    """``OMP_NUM_THREADS`` as an int, or None when unset or not a number."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _read_busy_cores() -> int:
    """Cores kept busy by other threads: runnable threads now, or the load average.

    ``/proc/loadavg``'s fourth field counts the threads runnable at this
    instant, the reading thread included; the load average remembers the last
    minute, including this process's own earlier work, so one core of it is
    taken to be ours. The larger of the two errs towards fewer threads.
    """
    try:
        with open("/proc/loadavg") as file:
            fields = file.read().split()
        runnable_now = int(fields[3].split("/")[0]) - 1
        load = float(fields[0])
    except (OSError, ValueError, IndexError):
        if not hasattr(os, "getloadavg"):
            return 0
        runnable_now, load = 0, os.getloadavg()[0]
    return max(0, runnable_now, round(load) - 1)


def busy_cores() -> int:
    """Cores busy with other work (cached for a second; see :func:`_read_busy_cores`)."""
    global _probe_cache
    now = time.monotonic()
    cached = _probe_cache
    if cached is not None and now - cached[0] < _PROBE_TTL_SECONDS:
        return cached[1]
    busy = _read_busy_cores()
    _probe_cache = (now, busy)
    return busy


def free_cores() -> int:
    """Cores not busy with other work, at least 1: a thread budget for other libraries' BLAS calls."""
    return max(1, available_cores() - busy_cores())


def choose_n_threads(
    *,
    requested: int | None,
    macs: float,
    caller_threads: int,
    env_limit: int | None,
    n_cores: int,
    busy: int | None,
    concurrent: int,
) -> int:
    """The policy itself, as a pure function of what it looks at.

    Parameters
    ----------
    requested : int or None
        The estimator's ``n_threads``; an int is used as given.
    macs : float
        Multiply-accumulates of one forward pass (rows x parameters).
    caller_threads : int
        ``torch.get_num_threads()`` when the work starts.
    env_limit : int or None
        ``OMP_NUM_THREADS``, when set.
    n_cores : int
        Cores this process may use.
    busy : int or None
        Cores busy with other work; None when not measured (only needed when
        the work is large enough for more than one thread).
    concurrent : int
        skflow regions running in this process, this one included.

    Returns
    -------
    n_threads : int
        At least 1.
    """
    if requested is not None:
        return int(requested)
    if concurrent > 1:
        return 1
    limit = min(caller_threads, n_cores, env_limit or n_cores)
    by_work = 1 + int(macs // MACS_PER_THREAD)
    wanted = min(limit, by_work)
    if wanted <= 1:
        return 1
    free = n_cores - (busy or 0)
    return max(1, min(wanted, free))


def _decide(n_threads: int | None, *, macs: float, caller_threads: int, concurrent: int) -> int:
    """:func:`choose_n_threads` with this machine's cores, limits and (only if it matters) load."""
    # Probe the machine only when the work could use more than one thread.
    by_work = 1 + int(macs // MACS_PER_THREAD)
    probe = n_threads is None and concurrent == 1 and min(caller_threads, by_work) > 1
    return choose_n_threads(
        requested=n_threads,
        macs=macs,
        caller_threads=caller_threads,
        env_limit=_env_thread_limit(),
        n_cores=available_cores(),
        busy=busy_cores() if probe else None,
        concurrent=concurrent,
    )


def share_with_concurrent_work() -> None:
    """Drop this thread to one torch thread if other skflow work runs in this process.

    Called between epochs; the setting on entry to :func:`torch_threads` is
    restored on exit as usual.
    """
    inside_chosen_region = getattr(_local, "depth", 0) > 0 and getattr(_local, "explicit", 0) == 0
    if _active > 1 and inside_chosen_region and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


@contextmanager
def torch_threads(n_threads: int | None, *, macs: float, device: torch.device | None = None) -> Iterator[int]:
    """Run the body with torch's intra-op threads chosen by :func:`choose_n_threads`.

    Parameters
    ----------
    n_threads : int or None
        The estimator's ``n_threads`` (None: decide).
    macs : float
        Multiply-accumulates of one forward pass of the work (rows per batch
        times the model's parameters is a good enough estimate).
    device : torch.device, optional
        Off the CPU the host only launches kernels; the caller's setting is
        kept unless ``n_threads`` is given.

    Yields
    ------
    n_threads : int
        The number of threads in effect.
    """
    global _active
    caller = torch.get_num_threads()
    if n_threads is None and device is not None and device.type != "cpu":
        yield caller
        return
    depth = getattr(_local, "depth", 0)
    explicit = getattr(_local, "explicit", 0)
    if depth == 0:
        with _lock:
            _active += 1
    _local.depth = depth + 1
    _local.explicit = explicit + (n_threads is not None)
    try:
        # Nested regions of one thread (a detector fitting its estimator)
        # count once; the inner one is capped by the outer one's setting.
        chosen = _decide(n_threads, macs=macs, caller_threads=caller, concurrent=_active)
        if chosen != caller:
            torch.set_num_threads(chosen)
        try:
            yield chosen
        finally:
            if torch.get_num_threads() != caller:
                torch.set_num_threads(caller)
    finally:
        _local.depth = depth
        _local.explicit = explicit
        if depth == 0:
            with _lock:
                _active -= 1


@contextmanager
def blas_threads(n_threads: int | None, *, macs: float) -> Iterator[int]:
    """Run the body with numpy's and scipy's BLAS threads chosen by :func:`choose_n_threads`.

    The BLAS library starts, like torch, with a thread per core, and its
    threads spin at every call as torch's do, so a fit's own array work
    (the power sums and eigendecompositions of ``init="gaussian"``) gets the
    same policy as its torch work: the estimator's ``n_threads`` if set, else
    no more than the work, the caller's BLAS limit, ``OMP_NUM_THREADS`` and
    the free cores allow. The caller's limit is restored afterwards.

    Parameters
    ----------
    n_threads : int or None
        The estimator's ``n_threads`` (None: decide).
    macs : float
        Multiply-accumulates of one BLAS call of the work.

    Yields
    ------
    n_threads : int
        The number of BLAS threads in effect.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    caller = max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)
    # skflow work already running in this process, and this.
    chosen = _decide(n_threads, macs=macs, caller_threads=caller, concurrent=_active + 1)
    with threadpool_limits(limits=chosen, user_api="blas"):
        yield chosen
