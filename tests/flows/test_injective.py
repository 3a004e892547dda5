"""Free-form flow models: the surrogate's gradient and the exact densities,
against brute-force autograd Jacobians in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from skflow.flows.injective import (
    FreeFormFlow,
    FreeFormInjectiveFlow,
    decoder_jacobian,
    default_decoder,
    default_encoder,
    latent_probes,
    output_and_tangents,
)

N_FEATURES, N_COMPONENTS = 4, 2


def small_model(n_probes: int = 1, encoder_jacobian_at: str = "data", seed: int = 0) -> FreeFormInjectiveFlow:
    torch.manual_seed(seed)
    encoder = default_encoder(N_FEATURES, N_COMPONENTS, (8,), "silu", 1)
    decoder = default_decoder(N_COMPONENTS, N_FEATURES, (8,), "silu", 1)
    model = FreeFormInjectiveFlow(
        encoder,
        decoder,
        N_FEATURES,
        N_COMPONENTS,
        n_probes=n_probes,
        encoder_jacobian_at=encoder_jacobian_at,
    )
    return model.double()


def rows(n: int = 5, n_features: int = N_FEATURES, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, n_features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def exact_trace(model: FreeFormInjectiveFlow, x: torch.Tensor) -> torch.Tensor:
    """Per row ``tr(J_f(x) SG[J_g(f(x))])`` from full autograd Jacobians."""
    traces = []
    for row in x:
        z = model.encoder(row[None])[0]
        decoder_jac = jacobian(lambda latent: model.decoder(latent[None])[0], z.detach())  # (D, d)
        encoder_jac = jacobian(lambda data: model.encoder(data[None])[0], row, create_graph=True)  # (d, D)
        traces.append(torch.trace(encoder_jac @ decoder_jac))
    return torch.stack(traces)


def encoder_gradient(model: nn.Module, value: torch.Tensor) -> torch.Tensor:
    parameters = list(model.encoder.parameters())
    # Parameters the value does not depend on (the last bias, for a trace
    # of Jacobians) count as zero gradient.
    gradients = torch.autograd.grad(value, parameters, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(gradients, parameters)])


def test_fif_surrogate_with_full_probes_gives_exact_trace_and_gradient() -> None:
    model = small_model(n_probes=N_COMPONENTS)
    x = rows()
    _, _, volume_surrogate = model.surrogate_terms(x)
    expected = exact_trace(model, x)
    torch.testing.assert_close(-volume_surrogate, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        encoder_gradient(model, -volume_surrogate.sum()),
        encoder_gradient(model, expected.sum()),
        rtol=1e-9,
        atol=1e-12,
    )


def exact_naive_surrogate(model: FreeFormInjectiveFlow, x: torch.Tensor) -> torch.Tensor:
    """Per row ``tr(SG[J_f(g(f(x)))] J_g(f(x)))`` from full autograd Jacobians, the decoder's with a graph."""
    values = []
    for row in x:
        z = model.encoder(row[None])[0]
        decoder_jac = jacobian(lambda latent: model.decoder(latent[None])[0], z, create_graph=True)  # (D, d)
        x_hat = model.decoder(z[None])[0].detach()
        encoder_jac = jacobian(lambda data: model.encoder(data[None])[0], x_hat)  # (d, D), no graph
        values.append(torch.trace(encoder_jac.detach() @ decoder_jac))
    return torch.stack(values)


def all_gradients(model: nn.Module, value: torch.Tensor) -> torch.Tensor:
    parameters = list(model.parameters())
    gradients = torch.autograd.grad(value, parameters, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(gradients, parameters)])


def test_naive_surrogate_with_full_probes_gives_exact_value_and_gradient_to_both_networks() -> None:
    model = small_model(n_probes=N_COMPONENTS, encoder_jacobian_at="reconstruction")
    x = rows()
    _, _, volume_surrogate = model.surrogate_terms(x)
    expected = exact_naive_surrogate(model, x)
    torch.testing.assert_close(volume_surrogate, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        all_gradients(model, volume_surrogate.sum()), all_gradients(model, expected.sum()), rtol=1e-9, atol=1e-12
    )
    decoder_gradient = torch.autograd.grad(
        model.surrogate_terms(x)[2].sum(), list(model.decoder.parameters()), allow_unused=True
    )
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in decoder_gradient)


def test_naive_surrogate_gradient_is_the_log_volume_gradient_for_a_linear_pair() -> None:
    # g(z) = A z with the encoder f = A^+ (reconstruction-optimal): the naive
    # estimator is then exact, and the gradient of 1/2 log det(A^T A) with
    # respect to A is A (A^T A)^-1 = (A^+)^T in closed form.
    generator = torch.Generator().manual_seed(5)
    matrix = torch.randn(N_FEATURES, N_COMPONENTS, generator=generator, dtype=torch.float64)
    decoder = nn.Linear(N_COMPONENTS, N_FEATURES, bias=False).double()
    encoder = nn.Linear(N_FEATURES, N_COMPONENTS, bias=False).double()
    with torch.no_grad():
        decoder.weight.copy_(matrix)
        encoder.weight.copy_(torch.linalg.pinv(matrix))
    model = FreeFormInjectiveFlow(
        encoder, decoder, N_FEATURES, N_COMPONENTS, n_probes=N_COMPONENTS, encoder_jacobian_at="reconstruction"
    ).double()
    _, _, volume_surrogate = model.surrogate_terms(rows(1))
    (gradient,) = torch.autograd.grad(volume_surrogate.sum(), decoder.weight)
    torch.testing.assert_close(gradient, torch.linalg.pinv(matrix).T, rtol=1e-10, atol=1e-12)


def test_single_probe_gradient_is_unbiased() -> None:
    model = small_model(n_probes=1)
    x = rows(3)
    expected = encoder_gradient(model, exact_trace(model, x).sum())
    torch.manual_seed(123)
    draws = torch.stack([encoder_gradient(model, -model.surrogate_terms(x)[2].sum()) for _ in range(300)])
    standard_error = draws.std(dim=0) / math.sqrt(len(draws))
    z_scores = (draws.mean(dim=0) - expected) / (standard_error + 1e-12)
    # Many parameters are tested at once: 4.5 standard errors keeps the
    # family-wise false alarm rate small while a biased estimator (e.g. a
    # probe scaling that is off by a factor) fails by far.
    assert z_scores.abs().max() < 4.5
    # The single-probe estimator is genuinely random, so the test has power.
    assert draws.std(dim=0).max() > 1e-3


def test_decoder_learns_only_from_reconstruction() -> None:
    model = small_model(n_probes=1)
    _, latent_nll, volume_surrogate = model.surrogate_terms(rows())
    decoder_parameters = list(model.decoder.parameters())
    gradients = torch.autograd.grad((latent_nll + volume_surrogate).sum(), decoder_parameters, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in gradients)


def test_latent_probes_are_scaled_orthonormal() -> None:
    like = torch.zeros((), dtype=torch.float64)
    probes = latent_probes(7, 3, 3, like)  # (K, n, d)
    gram = torch.einsum("kni,knj->nij", probes, probes)
    torch.testing.assert_close(gram, 3.0 * torch.eye(3, dtype=torch.float64).expand(7, 3, 3))
    single = latent_probes(5, 3, 1, like)
    torch.testing.assert_close(single.pow(2).sum(-1), torch.full((1, 5), 3.0, dtype=torch.float64))


def test_decoder_jacobian_matches_autograd() -> None:
    model = small_model()
    z = rows(4, N_COMPONENTS)
    with torch.no_grad():  # forward mode must work where inference runs
        forward_mode = decoder_jacobian(model.decoder, z, chunk_size=1)
    for index, latent in enumerate(z):
        brute = jacobian(lambda point: model.decoder(point[None])[0], latent)
        torch.testing.assert_close(forward_mode[index], brute)


def test_manifold_log_density_matches_brute_force_jacobian() -> None:
    model = small_model()
    x = rows(6)
    scale = torch.tensor([0.5, 2.0, 1.5, 3.0], dtype=torch.float64)
    with torch.no_grad():
        log_density = model.log_prob_manifold(x)
        log_density_scaled = model.log_prob_manifold(x, scale=scale)
    for index, row in enumerate(x):
        z = model.encoder(row[None])[0].detach()
        decoder_jac = jacobian(lambda latent: model.decoder(latent[None])[0], z)
        log_latent = -0.5 * (z.pow(2).sum() + N_COMPONENTS * math.log(2 * math.pi))
        half_log_det = 0.5 * torch.linalg.slogdet(decoder_jac.T @ decoder_jac).logabsdet
        torch.testing.assert_close(log_density[index], log_latent - half_log_det)
        scaled_jac = scale[:, None] * decoder_jac
        half_log_det_scaled = 0.5 * torch.linalg.slogdet(scaled_jac.T @ scaled_jac).logabsdet
        torch.testing.assert_close(log_density_scaled[index], log_latent - half_log_det_scaled)


def test_encoder_volume_matches_brute_force_jacobian() -> None:
    model = small_model()
    x = rows(6)
    scale = torch.tensor([0.5, 2.0, 1.5, 3.0], dtype=torch.float64)
    with torch.no_grad():
        log_density = model.log_prob_manifold(x, volume="encoder")
        log_density_scaled = model.log_prob_manifold(x, scale=scale, volume="encoder")
    for index, row in enumerate(x):
        z = model.encoder(row[None])[0].detach()
        encoder_jac = jacobian(lambda data: model.encoder(data[None])[0], row)  # (d, D)
        log_latent = -0.5 * (z.pow(2).sum() + N_COMPONENTS * math.log(2 * math.pi))
        half_log_det = 0.5 * torch.linalg.slogdet(encoder_jac @ encoder_jac.T).logabsdet
        torch.testing.assert_close(log_density[index], log_latent + half_log_det)
        # In coordinates x' = scale * x the encoder's Jacobian is J_f / scale.
        scaled_jac = encoder_jac / scale
        half_log_det_scaled = 0.5 * torch.linalg.slogdet(scaled_jac @ scaled_jac.T).logabsdet
        torch.testing.assert_close(log_density_scaled[index], log_latent + half_log_det_scaled)


def test_full_log_density_adds_normal_space_gaussian() -> None:
    model = small_model()
    model.residual_variance.fill_(0.3)
    x = rows(6)
    with torch.no_grad():
        residual = x - model.decode(model.encode(x))
        expected = model.log_prob_manifold(x) - 0.5 * (
            (N_FEATURES - N_COMPONENTS) * math.log(2 * math.pi * 0.3) + residual.pow(2).sum(1) / 0.3
        )
        torch.testing.assert_close(model.log_prob(x), expected)
        # Maximum likelihood: sum ||r||^2 / (n (D - d)).
        variance = model.fit_residual_variance(x)
    assert variance == pytest.approx(float(residual.pow(2).sum() / (6 * (N_FEATURES - N_COMPONENTS))))


def test_validation_density_uses_the_encoder_volume_and_log_prob_the_decoder_one() -> None:
    # The model itself says what the engine validates with: the encoder-Jacobian
    # density (trustworthy before the decoder inverts the encoder), while
    # log_prob keeps the paper's decoder-Jacobian one. Untrained, they differ.
    model = small_model(seed=3)
    model.residual_variance.fill_(0.5)
    x = rows(5, seed=4)
    with torch.no_grad():
        validation = model.validation_log_prob(x)
        reported = model.log_prob(x)
        residual = x - model.decode(model.encode(x))
    off_manifold = -0.5 * ((N_FEATURES - N_COMPONENTS) * math.log(2 * math.pi * 0.5) + residual.pow(2).sum(1) / 0.5)
    for index, row in enumerate(x):
        z = model.encoder(row[None])[0].detach()
        log_latent = -0.5 * (z.pow(2).sum() + N_COMPONENTS * math.log(2 * math.pi))
        encoder_jac = jacobian(lambda data: model.encoder(data[None])[0], row)  # (d, D)
        decoder_jac = jacobian(lambda latent: model.decoder(latent[None])[0], z)  # (D, d)
        encoder_volume = 0.5 * torch.linalg.slogdet(encoder_jac @ encoder_jac.T).logabsdet
        decoder_volume = -0.5 * torch.linalg.slogdet(decoder_jac.T @ decoder_jac).logabsdet
        torch.testing.assert_close(validation[index], log_latent + encoder_volume + off_manifold[index])
        torch.testing.assert_close(reported[index], log_latent + decoder_volume + off_manifold[index])
    assert (validation - reported).abs().min() > 1e-3
    with pytest.raises(ValueError, match="volume"):
        model.log_prob_manifold(x, volume="both")


def test_free_form_flow_density_is_change_of_variables_through_decoder() -> None:
    torch.manual_seed(0)
    n_features = 3
    model = FreeFormFlow(
        default_encoder(n_features, n_features, (8,), "silu", 1),
        default_decoder(n_features, n_features, (8,), "silu", 1),
        n_features,
    ).double()
    x = rows(5, n_features)
    with torch.no_grad():
        log_density = model.log_prob(x)
    for index, row in enumerate(x):
        z = model.encoder(row[None])[0].detach()
        decoder_jac = jacobian(lambda latent: model.decoder(latent[None])[0], z)
        log_latent = -0.5 * (z.pow(2).sum() + n_features * math.log(2 * math.pi))
        torch.testing.assert_close(log_density[index], log_latent - torch.linalg.slogdet(decoder_jac).logabsdet)


def test_loss_runs_under_no_grad_and_updates_residual_variance_only_in_training() -> None:
    model = small_model()
    x = rows(8)
    model.eval()
    with torch.no_grad():
        loss = model.loss(x)
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    assert float(model.residual_variance) == 1.0
    model.train()
    model.loss(x)
    assert float(model.residual_variance) != 1.0


def test_invalid_configurations_raise() -> None:
    encoder, decoder = nn.Linear(3, 2), nn.Linear(2, 3)
    with pytest.raises(ValueError, match="n_probes"):
        FreeFormInjectiveFlow(encoder, decoder, 3, 2, n_probes=3)
    with pytest.raises(ValueError, match="n_components"):
        FreeFormInjectiveFlow(encoder, decoder, 3, 4)
    with pytest.raises(ValueError, match="encoder_jacobian_at"):
        FreeFormInjectiveFlow(encoder, decoder, 3, 2, encoder_jacobian_at="latent")


class Doubler(nn.Module):
    """A module the hand-written tangent rules do not know: exercises the forward-mode fallback."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sin(h)


@pytest.mark.parametrize("linear_skip", [False, True])
def test_output_and_tangents_match_forward_mode_and_keep_graph_only_on_output(linear_skip: bool) -> None:
    torch.manual_seed(0)
    network = nn.Sequential(
        default_decoder(N_COMPONENTS, 5, (8,), "silu", 1, linear_skip),
        nn.Tanh(),
        Doubler(),
        nn.Identity(),
        nn.Linear(5, N_FEATURES),
    ).double()
    with torch.no_grad():
        # The linear-skip networks start with zero last layers: randomise every
        # weight so the hand-written rule for LinearSkip is tested on both branches.
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.5)
    z = rows(6, N_COMPONENTS).requires_grad_(True)
    directions = torch.randn(3, 6, N_COMPONENTS, dtype=torch.float64)
    outputs, tangents = output_and_tangents(network, z, directions)
    torch.testing.assert_close(outputs, network(z))
    for direction, tangent in zip(directions, tangents):
        expected = torch.func.jvp(network, (z.detach(),), (direction,))[1]
        torch.testing.assert_close(tangent, expected, rtol=1e-12, atol=1e-12)
    assert outputs.requires_grad
    assert not tangents.requires_grad


@pytest.mark.parametrize("beta", [10.0, 0.5])
def test_objective_selection_is_the_objective_with_the_exact_encoder_volume(beta: float) -> None:
    """selection="objective": beta ||x - g(f(x))||^2 - log N(f(x)) - 1/2 log det(J_f J_f^T), from autograd."""
    model = small_model()
    model.beta = beta
    model.selection = "objective"
    x = rows(6)
    expected = []
    for row in x:
        z = model.encoder(row[None])[0]
        encoder_jac = jacobian(lambda data: model.encoder(data[None])[0], row)  # (d, D)
        log_volume = 0.5 * torch.logdet(encoder_jac @ encoder_jac.T)
        latent = -0.5 * (z.pow(2).sum() + N_COMPONENTS * math.log(2 * math.pi))
        squared = (row - model.decoder(z[None])[0]).pow(2).sum()
        expected.append(latent + log_volume - beta * squared)
    with torch.no_grad():
        torch.testing.assert_close(model.validation_log_prob(x), torch.stack(expected), rtol=1e-10, atol=1e-10)
    # The likelihood selection differs from it by the residual Gaussian, not the beta term.
    model.selection = "likelihood"
    with torch.no_grad():
        likelihood = model.validation_log_prob(x)
    assert not torch.allclose(likelihood, torch.stack(expected))


def test_unknown_selection_is_rejected() -> None:
    with pytest.raises(ValueError, match="selection"):
        FreeFormInjectiveFlow(nn.Linear(3, 2), nn.Linear(2, 3), 3, 2, selection="nll")
