"""Math of the continuous flows against independent ground truth.

* the exact trace and Frobenius norm, and the MLP field's closed-form trace
  (value and parameter gradients), against the autograd Jacobian;
* Hutchinson's estimates are unbiased (mean over many probes);
* a linear field f(z, t) = A z, whose flow is expm(A) with log-det tr(A) and
  whose RNODE integrals are known, checks the whole ODE bookkeeping;
* densities of a random (untrained, non-trivial) field integrate to 1 on a
  grid, and so does the augmented joint density; the importance estimate of
  the augmented marginal matches brute-force quadrature over the augmented
  coordinate;
* the adjoint method gives the same gradients as backpropagation through the
  solver.
"""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from scipy.stats import multivariate_normal
from torch import Tensor, nn

from skflow.flows.continuous import (
    CNF,
    ContinuousFlow,
    FlowMatching,
    ODEDynamics,
    SolverSettings,
    TimeConditionedMLP,
    draw_probe,
    minibatch_ot_pairing,
    solve_rowwise_dopri5,
)

ACCURATE = SolverSettings("dopri5", rtol=1e-9, atol=1e-10)


class LinearField(nn.Module):
    """f(z, t) = A z, a field whose flow is known in closed form."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.as_tensor(matrix, dtype=torch.float64))

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        return z @ self.matrix.T


def random_field(n_features: int, seed: int = 0, hidden: tuple = (16, 16), gain: float = 1.5) -> TimeConditionedMLP:
    """An untrained field, with weights scaled up so the flow is far from trivial."""
    torch.manual_seed(seed)
    field = TimeConditionedMLP(n_features, hidden, "tanh").double()
    with torch.no_grad():
        for parameter in field.parameters():
            parameter.mul_(gain)
    return field


def brute_force_trace(field: nn.Module, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
    """Trace of each row's full autograd Jacobian ``df/dz``, shape ``(n,)``."""
    traces = []
    for row in range(z.shape[0]):
        time = t if t.numel() == 1 else t[row : row + 1]
        side = None if context is None else context[row : row + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda v, time=time, side=side: field(time, v[None], side)[0], z[row]
        )
        traces.append(torch.trace(jacobian))
    return torch.stack(traces)


class Untrained(ContinuousFlow):
    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return -self.log_prob(x, context)


def test_exact_trace_and_frobenius_match_autograd_jacobian() -> None:
    field = random_field(3)
    dynamics = ODEDynamics(field)
    dynamics.configure("exact", regularise=True)
    z = torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    velocity, trace, kinetic, frobenius = dynamics(t, (z, z.new_zeros(5), z.new_zeros(5), z.new_zeros(5)))
    for row in range(5):
        jacobian = torch.autograd.functional.jacobian(lambda v: field(t, v[None])[0], z[row])
        assert torch.allclose(trace[row], torch.trace(jacobian), atol=1e-12)
        assert torch.allclose(frobenius[row], jacobian.pow(2).sum(), atol=1e-12)
    assert torch.allclose(velocity, field(t, z))
    assert torch.allclose(kinetic, field(t, z).pow(2).sum(1))


@pytest.mark.parametrize("hidden", [(7,), (9, 11)])
@pytest.mark.parametrize("activation", ["tanh", "softplus", "silu", "gelu", "elu"])
def test_closed_form_trace_matches_autograd_jacobian(hidden: tuple, activation: str) -> None:
    torch.manual_seed(0)
    field = TimeConditionedMLP(5, hidden, activation, n_context=2).double()
    with torch.no_grad():
        for parameter in field.parameters():
            parameter.mul_(1.5)
    z = torch.randn(6, 5, dtype=torch.float64)
    context = torch.randn(6, 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    velocity, trace = field.velocity_and_trace(t, z, context)
    assert torch.allclose(trace, brute_force_trace(field, t, z, context), atol=1e-12)
    assert torch.equal(velocity, field(t, z, context))


def test_closed_form_trace_gradient_matches_the_backward_pass_trace() -> None:
    # Training through the trace (CNF with an exact training trace, no RNODE
    # terms) must get the same parameter gradients as d backward passes.
    field = random_field(4, seed=2, hidden=(8, 6))
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64)
    _, trace = field.velocity_and_trace(t, z, create_graph=True)
    closed = torch.autograd.grad(trace.pow(2).sum(), list(field.parameters()), materialize_grads=True)
    velocity = field(t, z)
    reference, _ = ODEDynamics._exact_trace(velocity, z, create_graph=True)
    backward = torch.autograd.grad(reference.pow(2).sum(), list(field.parameters()), materialize_grads=True)
    assert sum(bool(gradient.abs().max() > 1e-3) for gradient in backward) >= 4  # a real signal
    for ours, theirs in zip(closed, backward):
        assert torch.allclose(ours, theirs, atol=1e-12)


def test_dynamics_use_the_closed_form_trace_only_where_it_applies() -> None:
    z = torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor(0.6, dtype=torch.float64)
    for hidden, closed_form in (((8, 8), True), ((8, 8, 8), False)):
        field = random_field(3, seed=4, hidden=hidden)
        assert field.has_closed_form_trace is closed_form
        dynamics = ODEDynamics(field)
        dynamics.configure("exact")
        calls: list[int] = []

        def counted(*args, field=field, calls=calls, **kwargs):
            calls.append(1)
            return TimeConditionedMLP.velocity_and_trace(field, *args, **kwargs)

        field.velocity_and_trace = counted
        with torch.no_grad():
            _, trace = dynamics(t, (z, z.new_zeros(5)))
        assert bool(calls) is closed_form
        assert torch.allclose(trace, brute_force_trace(field, t, z), atol=1e-12)
    with pytest.raises(ValueError, match="one or two hidden layers"):
        TimeConditionedMLP.velocity_and_trace(field, t, z)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_estimates_are_unbiased(distribution: str) -> None:
    field = random_field(4, seed=1)
    dynamics = ODEDynamics(field)
    t = torch.tensor(0.7, dtype=torch.float64)
    point = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    dynamics.configure("exact", regularise=True)
    _, exact_trace, _, exact_frobenius = dynamics(t, (point, *point.new_zeros(3, 1)))
    n_probes = 4000
    z = point.repeat(n_probes, 1)
    probe = draw_probe(z, distribution, torch.Generator().manual_seed(5))
    dynamics.configure(distribution, regularise=True, probe=probe)
    _, trace, _, frobenius = dynamics(t, (z, *z.new_zeros(3, n_probes)))
    for estimate, exact in ((trace, exact_trace), (frobenius, exact_frobenius)):
        standard_error = estimate.std() / math.sqrt(n_probes)
        assert abs(estimate.mean() - exact[0]) < 4 * standard_error
        assert standard_error > 0  # the estimate really is random (the test can fail)


def test_probe_has_identity_second_moment() -> None:
    z = torch.zeros(20000, 3)
    for distribution in ("rademacher", "gaussian"):
        probe = draw_probe(z, distribution, torch.Generator().manual_seed(0))
        second_moment = probe.T @ probe / len(probe)
        assert torch.allclose(second_moment, torch.eye(3), atol=0.05)
    with pytest.raises(ValueError, match="rademacher"):
        draw_probe(z, "uniform")


@pytest.mark.parametrize("solver", [ACCURATE, SolverSettings("rk4", n_steps=200)])
def test_linear_field_matches_matrix_exponential(solver: SolverSettings) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(scale=0.6, size=(3, 3))
    flow = Untrained(LinearField(matrix), 3, solver).double()
    x = rng.normal(size=(6, 3))
    x_tensor = torch.as_tensor(x)
    latent = x @ expm(matrix).T
    expected = multivariate_normal(np.zeros(3), np.eye(3)).logpdf(latent) + np.trace(matrix)
    with torch.no_grad():
        assert np.allclose(flow.log_prob(x_tensor).numpy(), expected, atol=1e-6)
        assert np.allclose(flow.encode(x_tensor).numpy(), latent, atol=1e-6)
        assert np.allclose(flow.decode(torch.as_tensor(latent)).numpy(), x, atol=1e-6)


class TimeScaledLinearField(nn.Module):
    """f(z, t) = (1 + c t) A z with one ``c`` per row: rows of very different stiffness.

    The flow from 0 to 1 is ``expm((1 + c / 2) A)``, with log-det
    ``(1 + c / 2) tr(A)``.
    """

    def __init__(self, matrix: np.ndarray, speed: np.ndarray) -> None:
        super().__init__()
        self.matrix = torch.as_tensor(matrix, dtype=torch.float64)
        self.speed = torch.as_tensor(speed, dtype=torch.float64)

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        # The row's own speed travels as its context column.
        assert context is not None
        return (1 + context[:, :1] * t.reshape(-1, 1)) * (z @ self.matrix.T)


@pytest.mark.parametrize("reverse", [False, True])
def test_rowwise_adaptive_solver_matches_closed_form_row_by_row(reverse: bool) -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(scale=0.5, size=(3, 3))
    speed = np.array([0.0, 1.0, 8.0, 30.0, 0.5])
    x = rng.normal(size=(5, 3))
    dynamics = ODEDynamics(TimeScaledLinearField(matrix, speed))
    context = torch.as_tensor(speed[:, None])
    dynamics.configure("exact", context=context)
    state = (torch.as_tensor(x), torch.zeros(5, dtype=torch.float64))
    with torch.no_grad():
        end, log_det = solve_rowwise_dopri5(dynamics, state, rtol=1e-9, atol=1e-10, reverse=reverse)
    for row in range(5):
        # Backwards, time runs from 1 to 0: the inverse map, and the negated integral.
        exponent = (1 + speed[row] / 2) * matrix * (-1 if reverse else 1)
        assert np.allclose(end[row].numpy(), expm(exponent) @ x[row], atol=1e-7)
        assert log_det[row].item() == pytest.approx(np.trace(exponent), abs=1e-7)
    assert dynamics.context is context  # restored after row subsets were evaluated


def test_rowwise_adaptive_solver_results_do_not_depend_on_the_batch() -> None:
    flow = Untrained(random_field(2, seed=4, gain=2.0), 2, SolverSettings("dopri5", 1e-4, 1e-5)).double()
    x = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    with torch.no_grad():
        together = flow.log_prob(x)
        alone = torch.cat([flow.log_prob(x[i : i + 1]) for i in range(60)])
        reversed_order = flow.log_prob(x.flip(0)).flip(0)
    assert torch.allclose(together, alone, rtol=0, atol=1e-10)
    assert torch.allclose(together, reversed_order, rtol=0, atol=1e-10)
    # torchdiffeq's batched controller, used in training, shares one step sequence per batch: the
    # same rows then score differently alone and together, which is what the per-row solver removes.
    with torch.enable_grad():
        batched_together = flow.log_prob(x).detach()
        batched_alone = torch.cat([flow.log_prob(x[i : i + 1]).detach() for i in range(60)])
    assert (batched_together - batched_alone).abs().max() > 1e-8


def test_rowwise_adaptive_solver_gives_up_on_stiff_rows() -> None:
    dynamics = ODEDynamics(LinearField(np.array([[-1e6]])))
    dynamics.configure(None)
    with torch.no_grad(), pytest.raises(RuntimeError, match="stiff"):
        solve_rowwise_dopri5(dynamics, torch.ones(2, 1, dtype=torch.float64), 1e-8, 1e-8, max_steps=50)


def test_linear_field_rnode_integrals_and_training_loss() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.normal(scale=0.5, size=(2, 2))
    x = rng.normal(size=(4, 2))
    cnf = CNF(LinearField(matrix), 2, ACCURATE, trace_estimator="exact", kinetic_weight=0.3, jacobian_weight=0.2)
    cnf = cnf.double()
    outputs = cnf.latent_and_log_det(torch.as_tensor(x), "exact", regularise=True)
    # Kinetic energy: integral_0^1 ||A expm(tA) x||^2 dt, by Simpson's rule on a fine grid.
    times = np.linspace(0, 1, 2001)
    speeds = np.stack([((x @ expm(t * matrix).T) @ matrix.T) ** 2 for t in times]).sum(axis=2)
    weights = np.ones_like(times)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    kinetic = (weights[:, None] * speeds).sum(0) * (times[1] - times[0]) / 3
    assert np.allclose(outputs[2].detach().numpy(), kinetic, rtol=1e-6)
    assert np.allclose(outputs[3].detach().numpy(), (matrix**2).sum(), rtol=1e-8)
    expected_nll = -(multivariate_normal(np.zeros(2), np.eye(2)).logpdf(x @ expm(matrix).T) + np.trace(matrix))
    expected_loss = expected_nll + 0.3 * kinetic + 0.2 * (matrix**2).sum()
    assert np.allclose(cnf.loss(torch.as_tensor(x)).detach().numpy(), expected_loss, rtol=1e-6)


def grid_integral(log_density: Tensor, spacing: float) -> float:
    return float(log_density.exp().sum() * spacing**2)


def test_random_field_density_integrates_to_one() -> None:
    flow = Untrained(random_field(2, seed=2), 2, SolverSettings("rk4", n_steps=12)).double()
    axis = torch.linspace(-7, 7, 71, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_density = flow.log_prob(grid)
    standard = -0.5 * grid.pow(2).sum(1) - math.log(2 * math.pi)
    assert (log_density - standard).abs().max() > 0.5  # the flow is far from the identity
    assert grid_integral(log_density, float(axis[1] - axis[0])) == pytest.approx(1.0, abs=5e-3)


def test_augmented_joint_and_marginal_densities() -> None:
    # One data dimension and one augmented dimension: the joint density lives
    # on a 2-D grid, the marginal on its first axis.
    solver = SolverSettings("rk4", n_steps=12)
    cnf = CNF(random_field(2, seed=4), 1, solver, n_augment=1, n_importance_samples=1000).double()
    axis = torch.linspace(-7, 7, 71, dtype=torch.float64)
    spacing = float(axis[1] - axis[0])
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_joint = cnf.state_log_prob(grid).reshape(71, 71)
    standard = -0.5 * grid.pow(2).sum(1).reshape(71, 71) - math.log(2 * math.pi)
    assert (log_joint - standard).abs().max() > 0.5
    assert grid_integral(log_joint, spacing) == pytest.approx(1.0, abs=5e-3)
    quadrature_marginal = log_joint.exp().sum(1) * spacing  # integral over a at each x
    every = 5
    with torch.no_grad():
        importance_marginal = cnf.log_prob(axis[::every, None]).exp()
    # Importance sampling with 1000 draws: within ~10% of the density.
    assert torch.allclose(importance_marginal, quadrature_marginal[::every], rtol=0.1, atol=2e-3)
    assert float(importance_marginal.sum() * spacing * every) == pytest.approx(1.0, abs=0.05)


def test_augmented_sampling_encoding_and_shapes() -> None:
    solver = SolverSettings("rk4", n_steps=10)
    cnf = CNF(random_field(3, seed=5), 2, solver, n_augment=1, n_importance_samples=3).double()
    x = torch.randn(7, 2, dtype=torch.float64)
    with torch.no_grad():
        code = cnf.encode(x)
        assert code.shape == (7, 3)
        assert torch.allclose(cnf.decode(code), x, atol=1e-6)
        assert cnf.sample(5, torch.Generator().manual_seed(0)).shape == (5, 2)
        assert cnf.log_prob(x).shape == (7,)
    assert cnf.loss(x).shape == (7,)


def test_adjoint_gradients_match_backpropagation() -> None:
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    probe = draw_probe(x, "rademacher", torch.Generator().manual_seed(1))
    gradients = []
    for adjoint in (False, True):
        solver = SolverSettings("dopri5", 1e-8, 1e-9, adjoint=adjoint)
        flow = Untrained(random_field(2, seed=6, hidden=(8,)), 2, solver).double()
        z1, log_det, kinetic, frobenius = flow.latent_and_log_det(x, "rademacher", probe, regularise=True)
        (flow.base.log_prob(z1) + log_det + kinetic + frobenius).sum().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in flow.parameters()]))
    assert gradients[0].abs().max() > 1e-3
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-6)


def test_nfe_counts_solver_evaluations() -> None:
    flow = Untrained(random_field(2, seed=7), 2, SolverSettings("rk4", n_steps=5)).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        flow.encode(x)
    assert flow.nfe == 20  # four evaluations per RK4 step
    loose = Untrained(flow.dynamics.field, 2, SolverSettings("dopri5", 1e-2, 1e-2)).double()
    tight = Untrained(flow.dynamics.field, 2, SolverSettings("dopri5", 1e-8, 1e-8)).double()
    with torch.no_grad():
        loose.log_prob(x)
        tight.log_prob(x)
    assert 0 < loose.nfe < tight.nfe


def test_validation_density_uses_the_validation_solver_and_log_prob_the_accurate_one() -> None:
    rng = np.random.default_rng(2)
    matrix = rng.normal(scale=0.6, size=(2, 2))
    x = rng.normal(size=(5, 2))
    accurate = SolverSettings("rk4", n_steps=50)
    cheap = SolverSettings("rk4", n_steps=2)
    flow = Untrained(LinearField(matrix), 2, accurate, validation_solver=cheap).double()
    reference = Untrained(LinearField(matrix), 2, cheap).double()
    exact = multivariate_normal(np.zeros(2), np.eye(2)).logpdf(x @ expm(matrix).T) + np.trace(matrix)
    with torch.no_grad():
        validation = flow.validation_log_prob(torch.as_tensor(x)).numpy()
        assert flow.nfe == 8  # 2 RK4 steps, 4 evaluations each
        reported = flow.log_prob(torch.as_tensor(x)).numpy()
        assert flow.nfe == 200
        np.testing.assert_allclose(validation, reference.log_prob(torch.as_tensor(x)).numpy(), rtol=0, atol=1e-12)
    assert np.allclose(reported, exact, atol=1e-6)
    assert not np.allclose(validation, exact, atol=1e-6)  # the cheap solve is visibly different
    # Without validation settings, validation is the accurate density.
    torch.testing.assert_close(
        reference.validation_log_prob(torch.as_tensor(x)), reference.log_prob(torch.as_tensor(x))
    )


def test_the_last_training_probe_does_not_travel_in_pickles() -> None:
    cnf = CNF(random_field(2, seed=4), 2, SolverSettings("rk4", n_steps=2), trace_estimator="rademacher").double()
    x = torch.randn(6, 2, dtype=torch.float64)
    cnf.loss(x)
    assert cnf.dynamics.probe is not None  # kept for the adjoint's backward pass
    copy = pickle.loads(pickle.dumps(cnf))
    assert copy.dynamics.probe is None and copy.dynamics.trace_mode is None
    assert cnf.dynamics.probe is not None  # pickling does not change the original
    with torch.no_grad():
        torch.testing.assert_close(copy.log_prob(x), cnf.log_prob(x), rtol=0, atol=0)


def test_flow_matching_loss_is_the_regression_on_the_ot_path() -> None:
    # With the field equal to the conditional velocity's mean at s = 0 the
    # loss is small; check the loss against its definition for a known field.
    flow = FlowMatching(LinearField(np.zeros((2, 2))), 2, SolverSettings("rk4", n_steps=4), sigma_min=0.1).double()
    x = torch.randn(20000, 2, dtype=torch.float64)
    # For f = 0 the loss is E||(1 - sigma) e - x||^2 = (1 - sigma)^2 d + ||x||^2.
    torch.manual_seed(0)
    loss = flow.loss(x).detach()
    expected = 0.81 * 2 + x.pow(2).sum(1)
    assert float(loss.mean()) == pytest.approx(float(expected.mean()), rel=0.02)


def test_minibatch_ot_pairing_is_the_optimal_assignment() -> None:
    generator = torch.Generator().manual_seed(2)
    for _ in range(5):
        x = torch.randn(6, 3, generator=generator, dtype=torch.float64)
        noise = torch.randn(6, 3, generator=generator, dtype=torch.float64)
        order = minibatch_ot_pairing(x, noise)
        assert sorted(order.tolist()) == list(range(6))  # a permutation: the noise's distribution is kept
        cost = (x - noise[order]).pow(2).sum().item()
        # Brute force over all 720 pairings.
        best = min((x - noise[list(perm)]).pow(2).sum().item() for perm in itertools.permutations(range(6)))
        assert cost == pytest.approx(best, rel=1e-12)


def test_flow_matching_with_ot_coupling_regresses_on_the_paired_noise() -> None:
    # For the field f = 0 the per-row loss is ||(1 - sigma) e_pi(i) - x_i||^2:
    # the rows' noise after the assignment, drawn first from the seeded generator.
    flow = FlowMatching(
        LinearField(np.zeros((2, 2))), 2, SolverSettings("rk4", n_steps=4), sigma_min=0.1, coupling="minibatch_ot"
    ).double()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.manual_seed(0)
    loss = flow.loss(x).detach()
    torch.manual_seed(0)
    noise = torch.randn_like(x)
    paired = noise[minibatch_ot_pairing(x, noise)]
    torch.testing.assert_close(loss, (0.9 * paired - x).pow(2).sum(dim=1))
    independent = (0.9 * noise - x).pow(2).sum(dim=1)
    assert loss.sum() < independent.sum()  # the pairing shortens the paths
    with pytest.raises(ValueError, match="coupling"):
        FlowMatching(LinearField(np.zeros((2, 2))), 2, SolverSettings(), coupling="sinkhorn")


def test_invalid_settings_raise() -> None:
    with pytest.raises(ValueError, match="smooth"):
        TimeConditionedMLP(2, (8,), "relu")
    with pytest.raises(ValueError, match="method"):
        SolverSettings("euler")
    with pytest.raises(ValueError, match="trace"):
        CNF(random_field(2), 2, SolverSettings(), trace_estimator="none")
    with pytest.raises(ValueError, match="sigma_min"):
        FlowMatching(random_field(2), 2, SolverSettings(), sigma_min=1.0)
