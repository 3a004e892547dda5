"""Tests of skflow.flows.linear: ActNorm's data-dependent initialisation and
permutations."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from skflow.flows import ActNorm, Permutation


def test_actnorm_initialises_to_zero_mean_unit_variance() -> None:
    x = 3.0 + 5.0 * torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = ActNorm(3).double().train()
    y, log_abs_det = layer(x)
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(y.std(dim=0, unbiased=False), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)
    expected = -torch.log(x.std(dim=0, unbiased=False)).sum()
    torch.testing.assert_close(log_abs_det, expected.expand(500), rtol=0, atol=1e-5)
    assert bool(layer.initialized)


def test_actnorm_initialises_only_once_and_not_in_eval_mode() -> None:
    layer = ActNorm(2).eval()
    layer(torch.randn(10, 2) * 7)
    assert not bool(layer.initialized) and torch.equal(layer.bias, torch.zeros(2))
    layer.train()
    layer(torch.randn(10, 2))
    bias = layer.bias.detach().clone()
    layer(torch.randn(10, 2) + 100)
    assert torch.equal(layer.bias, bias)


def test_actnorm_constant_feature_gives_finite_scale() -> None:
    x = torch.cat([torch.ones(8, 1), torch.randn(8, 1)], dim=1)
    y, log_abs_det = ActNorm(2).train()(x)
    assert torch.isfinite(y).all() and torch.isfinite(log_abs_det).all()


def test_actnorm_leaves_a_feature_constant_in_the_first_batch_unscaled() -> None:
    # A rare-valued column: all zeros (or nearly) in the first batch, 40 in a later row.
    first_batch = torch.cat([1e-3 * torch.randn(64, 1), torch.randn(64, 1)], dim=1)
    stack = torch.nn.Sequential(*(ActNorm(2, max_init_scale=10.0) for _ in range(8))).train()
    h = first_batch
    for layer in stack:
        h, _ = layer(h)
    for layer in stack:
        assert layer.log_scale[0].item() == 0.0
    h = torch.tensor([[40.0, 0.0]])
    for layer in stack.eval():
        h, _ = layer(h)
    # Shifted by the batch means, never amplified: no compounding through the stack.
    assert abs(h[0, 0].item() - 40.0) < 0.1


def test_actnorm_initialised_state_survives_state_dict_and_pickle() -> None:
    layer = ActNorm(2).train()
    layer(torch.randn(10, 2))
    restored = ActNorm(2)
    restored.load_state_dict(layer.state_dict())
    assert bool(restored.initialized)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    assert bool(torch.load(buffer, weights_only=False).initialized)
    assert bool(pickle.loads(pickle.dumps(layer)).initialized)


def test_actnorm_single_row_batch() -> None:
    y, _ = ActNorm(3).train()(torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(y, torch.zeros(1, 3))


def test_permutation_reorders_and_restores() -> None:
    layer = Permutation(torch.tensor([2, 0, 1]))
    x = torch.tensor([[10.0, 20.0, 30.0]])
    y, log_abs_det = layer(x)
    assert torch.equal(y, torch.tensor([[30.0, 10.0, 20.0]]))
    assert torch.equal(log_abs_det, torch.zeros(1))
    assert torch.equal(layer.inverse(y)[0], x)


def test_permutation_constructors() -> None:
    assert Permutation.reverse(4).permutation.tolist() == [3, 2, 1, 0]
    first = Permutation.random(6, torch.Generator().manual_seed(0)).permutation
    second = Permutation.random(6, torch.Generator().manual_seed(0)).permutation
    assert torch.equal(first, second) and sorted(first.tolist()) == list(range(6))


@pytest.mark.parametrize("indices", [[0, 0, 1], [1, 2, 3], [[0, 1]]])
def test_permutation_rejects_non_permutations(indices) -> None:
    with pytest.raises(ValueError, match="permutation"):
        Permutation(torch.tensor(indices))


def test_actnorm_reads_its_initialized_buffer_only_until_it_is_set() -> None:
    # The flag is a buffer (state_dict, pickling); reading it is a device read,
    # so a trained layer must stop reading it, yet a loaded state must count.
    class CountingBuffer(torch.Tensor):
        reads = 0

        def __bool__(self) -> bool:
            CountingBuffer.reads += 1
            return super().__bool__()

    layer = ActNorm(2).train()
    layer.initialized = layer.initialized.as_subclass(CountingBuffer)
    for _ in range(5):
        layer(torch.randn(10, 2))
    assert CountingBuffer.reads == 2  # before and after the initialising batch, never again
    fresh = ActNorm(2).train()
    fresh(torch.randn(10, 2) + 50)
    bias = fresh.bias.detach().clone()
    fresh.load_state_dict(ActNorm(2).state_dict())  # an uninitialised state: the next batch initialises
    x = torch.randn(10, 2) - 7
    fresh(x)
    torch.testing.assert_close(fresh.bias.detach(), -x.mean(dim=0))
    assert not torch.equal(fresh.bias.detach(), bias)
    trained = ActNorm(2)
    trained.load_state_dict(layer.state_dict())
    before = trained.bias.detach().clone()
    trained.train()(torch.randn(10, 2) + 100)  # an initialised state: no re-initialisation
    assert torch.equal(trained.bias.detach(), before)
