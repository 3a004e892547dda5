"""Tests of the thread policy (skflow._threads): its decisions, that it
restores the caller's setting, and that fit and scoring honour it and the
user's own limits. Decisions only, not timings: timings live in
benchmarks/speed.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from threadpoolctl import threadpool_limits

from skflow import RealNVPDensity, _threads
from skflow._threads import MACS_PER_THREAD, choose_n_threads, share_with_concurrent_work, torch_threads

LARGE = 64 * MACS_PER_THREAD  # work that would take every core there is


def _choose(**overrides: object) -> int:
    settings = {
        "requested": None,
        "macs": LARGE,
        "caller_threads": 8,
        "env_limit": None,
        "n_cores": 8,
        "busy": 0,
        "concurrent": 1,
    }
    settings.update(overrides)
    return choose_n_threads(**settings)  # type: ignore[arg-type]


def test_small_work_gets_one_thread_even_on_an_idle_machine() -> None:
    assert _choose(macs=MACS_PER_THREAD - 1) == 1
    assert _choose(macs=2 * MACS_PER_THREAD) == 3
    assert _choose() == 8


def test_large_work_gets_only_the_free_cores() -> None:
    assert _choose(busy=3) == 5
    assert _choose(busy=8) == 1
    assert _choose(busy=20) == 1


def test_the_callers_limits_are_never_exceeded() -> None:
    assert _choose(caller_threads=2) == 2  # torch.set_num_threads / threadpoolctl
    assert _choose(env_limit=3) == 3  # OMP_NUM_THREADS, as loky sets in its workers
    assert _choose(n_cores=4) == 4  # CPU affinity


def test_an_explicit_choice_wins_and_concurrent_calls_get_one_thread() -> None:
    assert _choose(requested=5, macs=1, busy=8) == 5
    assert _choose(concurrent=2) == 1


@pytest.fixture
def two_caller_threads(monkeypatch: pytest.MonkeyPatch):
    """A caller that allows two threads (the suite itself runs on one)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(_threads, "busy_cores", lambda: 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("two_caller_threads")
def test_the_callers_setting_is_restored_also_after_an_error() -> None:
    with torch_threads(None, macs=1) as chosen:
        assert chosen == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyError), torch_threads(None, macs=1):
        raise KeyError("boom")
    assert torch.get_num_threads() == 2
    with torch_threads(None, macs=LARGE) as chosen:
        assert chosen == 2
        with torch_threads(None, macs=LARGE) as inner:  # nested in one thread: not "concurrent"
            assert inner == 2
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_caller_threads")
def test_a_busy_machine_gets_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "busy_cores", lambda: 1)
    with torch_threads(None, macs=LARGE) as chosen:
        assert chosen == 1


@pytest.mark.usefixtures("two_caller_threads")
def test_threadpoolctl_limits_are_respected() -> None:
    with threadpool_limits(limits=1), torch_threads(None, macs=LARGE) as chosen:
        assert chosen == 1


@pytest.mark.usefixtures("two_caller_threads")
def test_concurrent_calls_from_python_threads_get_one_thread_each() -> None:
    barrier = threading.Barrier(2, timeout=10)
    seen: list[int] = []
    errors: list[Exception] = []

    def work() -> None:
        try:
            with torch_threads(None, macs=LARGE):
                barrier.wait()  # both inside at once; the first may have chosen two
                share_with_concurrent_work()  # what the engine does between epochs
                seen.append(torch.get_num_threads())
                barrier.wait()
        except (AssertionError, RuntimeError, threading.BrokenBarrierError) as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert seen == [1, 1]
    assert torch.get_num_threads() == 2
    with torch_threads(None, macs=LARGE) as chosen:  # and alone again, two
        assert chosen == 2


class _RecordThreads(Callback):
    def initialize(self) -> _RecordThreads:
        self.seen_: list[int] = []
        return self

    def on_epoch_begin(self, net, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.seen_.append(torch.get_num_threads())


@pytest.mark.usefixtures("two_caller_threads")
@pytest.mark.parametrize(("n_threads", "hidden", "expected"), [(None, (16,), 1), (2, (16,), 2), (1, (512, 512), 1)])
def test_fit_trains_with_the_chosen_threads_and_restores(n_threads, hidden, expected) -> None:
    recorder = _RecordThreads()
    X = np.random.default_rng(0).normal(size=(200, 3))
    flow = RealNVPDensity(
        n_layers=2,
        hidden_dims=hidden,
        max_epochs=2,
        callbacks=[recorder],
        n_threads=n_threads,
        random_state=0,
        device="cpu",  # on a GPU the policy leaves the caller's threads alone (tested below)
    )
    flow.fit(X)
    assert recorder.seen_ == [expected, expected]
    assert torch.get_num_threads() == 2
    flow.score_samples(X)
    flow.sample(3, random_state=0)
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_caller_threads")
def test_a_large_fit_uses_the_free_cores() -> None:
    recorder = _RecordThreads()
    X = np.random.default_rng(0).normal(size=(256, 4))
    # 256 rows x ~530k parameters per step: above MACS_PER_THREAD.
    flow = RealNVPDensity(
        n_layers=2, hidden_dims=(512, 512), max_epochs=1, callbacks=[recorder], random_state=0, device="cpu"
    )
    flow.fit(X)
    assert recorder.seen_ == [2]
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_caller_threads")
@pytest.mark.parametrize(("busy", "expected"), [(0, 2), (1, 1)])
def test_scoring_the_benchmark_flow_uses_the_free_cores(monkeypatch: pytest.MonkeyPatch, busy, expected) -> None:
    # The speed benchmark's scoring case: 8 layers of (128, 128) on 50-D rows,
    # ~2e5 parameters, so one 1024-row pass is ~3 x MACS_PER_THREAD.
    monkeypatch.setattr(_threads, "busy_cores", lambda: busy)
    X = np.random.default_rng(0).normal(size=(64, 50))
    flow = RealNVPDensity(max_epochs=1, random_state=0, device="cpu", n_threads=1).fit(X)
    flow.set_params(n_threads=None)
    seen: list[int] = []
    log_prob = flow.model_.log_prob

    def recording(rows, context=None):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return log_prob(rows, context)

    monkeypatch.setattr(flow.model_, "log_prob", recording)
    flow.score_samples(np.random.default_rng(1).normal(size=(3000, 50)))
    assert seen == [expected] * 3  # three 1024-row passes
    assert torch.get_num_threads() == 2


def test_busy_cores_reads_a_count() -> None:
    busy = _threads._read_busy_cores()
    assert isinstance(busy, int) and busy >= 0


def test_n_threads_is_validated() -> None:
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="n_threads"):
        RealNVPDensity(n_threads=0, max_epochs=1).fit(X)


@pytest.mark.usefixtures("two_caller_threads")
def test_on_a_gpu_the_callers_threads_are_left_alone() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    recorder = _RecordThreads()
    X = np.random.default_rng(0).normal(size=(200, 3))
    RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=1, callbacks=[recorder], device="cuda").fit(X)
    assert recorder.seen_ == [2]
    with torch_threads(None, macs=1, device=torch.device("cuda")) as chosen:
        assert chosen == 2


def _blas_thread_counts() -> set[int]:
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_blas_threads_follow_the_policy_and_restore_the_caller() -> None:
    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS is loaded
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_thread_counts()
        with _threads.blas_threads(None, macs=MACS_PER_THREAD - 1) as chosen:
            assert chosen == 1
            assert _blas_thread_counts() == {1}
        assert _blas_thread_counts() == before
        with _threads.blas_threads(2, macs=1.0) as chosen:  # an explicit n_threads wins
            assert chosen == 2
            assert _blas_thread_counts() == {2}
    # Never above the caller's own limit, however large the work.
    with threadpool_limits(limits=1, user_api="blas"), _threads.blas_threads(None, macs=LARGE) as chosen:
        assert chosen == 1


def test_the_gaussian_start_runs_its_array_work_on_the_policy_s_blas_threads(monkeypatch) -> None:
    from skflow import base

    seen: list[set[int]] = []
    add = base._MomentSums.add

    def recording_add(self, X, sample_weight=None):
        seen.append(_blas_thread_counts())
        return add(self, X, sample_weight)

    monkeypatch.setattr(base._MomentSums, "add", recording_add)
    X = np.random.default_rng(0).normal(size=(200, 3))
    with threadpool_limits(limits=2, user_api="blas"):
        RealNVPDensity(n_layers=2, hidden_dims=(8,), max_epochs=1, init="gaussian", random_state=0).fit(X)
        RealNVPDensity(n_layers=2, hidden_dims=(8,), max_epochs=1, init="gaussian", n_threads=2, random_state=0).fit(X)
    # 200 x 3 rows: one thread by the policy; n_threads=2 is honoured.
    assert seen == [{1}, {2}]


def test_a_streamed_gaussian_start_decides_its_blas_threads_once_for_the_pass(monkeypatch, tmp_path) -> None:
    from skflow import MemmapSource, base

    seen: list[set[int]] = []
    entered: list[float] = []
    add, blas_threads = base._MomentSums.add, base.blas_threads

    def recording_add(self, X, sample_weight=None):
        seen.append(_blas_thread_counts())
        return add(self, X, sample_weight)

    def counting_blas_threads(n_threads, *, macs):
        entered.append(macs)
        return blas_threads(n_threads, macs=macs)

    monkeypatch.setattr(base._MomentSums, "add", recording_add)
    monkeypatch.setattr(base, "blas_threads", counting_blas_threads)
    path = tmp_path / "rows.npy"
    np.save(path, np.random.default_rng(0).normal(size=(200, 3)))
    source = MemmapSource(np.load(path, mmap_mode="r"), chunk_rows=50)
    with threadpool_limits(limits=2, user_api="blas"):
        RealNVPDensity(n_layers=2, hidden_dims=(8,), max_epochs=1, init="gaussian", random_state=0).fit(source)
    assert seen == [{1}] * 4  # every chunk's sums on the policy's one thread
    # Deciding costs milliseconds: once for the pass, once for the start, not once per chunk.
    assert entered == [50.0 * 3 * 3, 3.0**3]
