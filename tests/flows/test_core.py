"""Tests of skflow.flows.core: Chain, StandardNormal, ExactFlow and the
FlowModel protocol, against closed forms (scipy) and autograd."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

from skflow.flows import ActNorm, AffineCoupling, Bijection, Chain, ExactFlow, FlowModel, Permutation, StandardNormal
from skflow.nn import MLP
from tests.helpers import randomise_parameters


class ElementwiseAffine(Bijection):
    """y = a * x + b with fixed a, b: a bijection whose density is known in closed form."""

    def __init__(self, scale: list[float], shift: list[float]) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float64))

    def forward(self, x, context=None):
        return x * self.scale + self.shift, torch.log(self.scale.abs()).sum().expand(x.shape[0])

    def inverse(self, y, context=None):
        return (y - self.shift) / self.scale, -torch.log(self.scale.abs()).sum().expand(y.shape[0])


def test_bijection_base_class_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        Bijection()(torch.zeros(2, 2))
    with pytest.raises(NotImplementedError):
        Bijection().inverse(torch.zeros(2, 2))


def test_chain_composes_maps_and_sums_log_dets() -> None:
    first = ElementwiseAffine([2.0, 0.5], [1.0, -1.0])
    second = ElementwiseAffine([-3.0, 4.0], [0.0, 2.0])
    chain = Chain([first, second])
    x = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64)
    y, log_abs_det = chain(x)
    # second(first(x)) by hand: scales multiply, shifts compose.
    expected = (x * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])) * torch.tensor([-3.0, 4.0]) + torch.tensor(
        [0.0, 2.0]
    )
    torch.testing.assert_close(y, expected.double())
    torch.testing.assert_close(log_abs_det, torch.full((2,), math.log(2 * 0.5 * 3 * 4), dtype=torch.float64))
    x_back, inverse_log_abs_det = chain.inverse(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det)


def test_empty_chain_is_the_identity() -> None:
    x = torch.randn(4, 3)
    y, log_abs_det = Chain([])(x)
    assert torch.equal(y, x) and torch.equal(log_abs_det, torch.zeros(4))


def test_standard_normal_log_prob_matches_scipy() -> None:
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    base = StandardNormal(3).double()
    expected = multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z.numpy())
    np.testing.assert_allclose(base.log_prob(z).numpy(), expected, rtol=1e-12)


def test_standard_normal_samples_follow_dtype_and_generator() -> None:
    base = StandardNormal(2).double()
    first = base.sample(5, torch.Generator().manual_seed(3))
    second = base.sample(5, torch.Generator().manual_seed(3))
    assert first.shape == (5, 2) and first.dtype == torch.float64
    assert torch.equal(first, second)
    assert base.state_dict() == {}, "the base distribution must not add entries to the state_dict"


def test_standard_normal_samples_are_standard_normal() -> None:
    samples = StandardNormal(2).sample(20_000, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), 0.0, atol=0.03)  # 4 standard errors
    np.testing.assert_allclose(np.cov(samples, rowvar=False), np.eye(2), atol=0.04)


def test_exact_flow_log_prob_is_the_change_of_variables_density() -> None:
    # x = (z - shift) / scale with z standard normal: x ~ N(-shift/scale, 1/scale^2).
    scale, shift = np.array([2.0, 0.5]), np.array([1.0, -1.0])
    flow = ExactFlow(ElementwiseAffine(list(scale), list(shift)), StandardNormal(2).double())
    x = np.array([[0.1, 0.2], [-1.0, 3.0], [0.5, -0.5]])
    expected = norm(-shift / scale, 1 / np.abs(scale)).logpdf(x).sum(axis=1)
    np.testing.assert_allclose(flow.log_prob(torch.from_numpy(x)).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(flow.loss(torch.from_numpy(x)).numpy(), -expected, rtol=1e-12)


def _random_flow(n_features: int = 2) -> ExactFlow:
    torch.manual_seed(0)
    chain = Chain(
        [
            ActNorm(n_features),
            AffineCoupling(n_features, 1, MLP(1, 2 * (n_features - 1), (8,), "tanh")),
            Permutation.reverse(n_features),
            AffineCoupling(n_features, 1, MLP(1, 2 * (n_features - 1), (8,), "tanh")),
        ]
    ).double()
    return ExactFlow(randomise_parameters(chain, n_features, scale=0.5), StandardNormal(n_features).double())


def test_exact_flow_density_integrates_to_one() -> None:
    flow = _random_flow()
    with torch.no_grad():
        samples = flow.sample(5000, torch.Generator().manual_seed(0))
        low, high = samples.min(dim=0).values, samples.max(dim=0).values
        low, high = low - 0.5 * (high - low), high + 0.5 * (high - low)
        axes = [torch.linspace(low[j].item(), high[j].item(), 601, dtype=torch.float64) for j in range(2)]
        grid = torch.cartesian_prod(*axes)
        cell_area = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
        mass = flow.log_prob(grid).exp().sum() * cell_area
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_exact_flow_encode_decode_and_sample() -> None:
    flow = _random_flow(3)
    x = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(flow.decode(flow.encode(x)), x)
    samples = flow.sample(6, torch.Generator().manual_seed(1))
    z = StandardNormal(3).double().sample(6, torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples, flow.decode(z))
    assert isinstance(flow, FlowModel)


def test_exact_flow_pickles() -> None:
    flow = _random_flow()
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(pickle.loads(pickle.dumps(flow)).log_prob(x), flow.log_prob(x), rtol=0, atol=0)
