"""Tests of gmcourse.autoencoders against independent oracles.

* linear autoencoder = PCA: principal angles between the decoder's columns and numpy's SVD of the
  centred data. The tolerance is a certificate, not a chosen number: for any rank-k affine
  reconstruction whose decoder spans U, the mean squared error is at least tr((I - P_U) S), and
  tr((I - P_U) S) - tr((I - P_k) S) >= (lambda_k - lambda_{k+1}) sum_i sin^2(theta_i)
  (write S in its eigenbasis: both sides are sums over the eigenvalues weighted by ||P_U v_i||^2;
  exercise 2 of chapter 7). So the measured excess loss over PCA's optimum bounds the angles;
  the test checks that bound, that the angles shrink when the budget grows, and that the
  certified angle is small;
* ICA: the Amari index and the separation error E = (W A, columns permuted and scaled) - I
  against its asymptotic standard deviation, derived from the estimating equations
  E[tanh(a_i) a_j] = 0 (i != j) linearised around the sources (see `asymptotic_separation_sd`),
  at 5 sigma; scikit-learn's FastICA on the same data as a second opinion; Gaussian sources as
  the negative control that must fail; the closed-form gradient against autograd;
  the source density against scipy.stats.hypsecant;
* denoising: a linear denoising autoencoder on Gaussian data whose empirical covariance is
  exactly Sigma must converge to W = Sigma (Sigma + sigma^2 I)^{-1};
* input validation: every bad input raises an error that says what was expected.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from sklearn.decomposition import FastICA

from gmcourse.autoencoders import (
    Autoencoder, ConvAutoencoder, DenoisingAutoencoder, LinearAutoencoder, LinearICA, MLPAutoencoder, amari_index,
    fit_ica, principal_angles, sample_sech, sech_log_prob, train,
)
from gmcourse.protocol import GenerativeModel

FIVE_SIGMA_P_VALUE = scipy.stats.norm.sf(5.0) * 2  # two-sided


def gaussian_with_exact_covariance(cov, n, seed):
    """n points (n, D) float64 whose mean is exactly 0 and whose 1/n covariance is exactly ``cov``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cov.shape[0], generator=g, dtype=torch.float64)
    z = z - z.mean(dim=0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T  # empirical covariance exactly I
    return z @ torch.linalg.cholesky(cov).T


# ----------------------------------------------------------------------------- linear AE = PCA

def test_principal_angles_match_scipy_subspace_angles():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    expected = np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy()))
    torch.testing.assert_close(principal_angles(a, b), torch.from_numpy(expected), rtol=0, atol=1e-10)
    mixed = a @ torch.randn(3, 3, generator=g, dtype=torch.float64)  # same column space, other basis
    assert principal_angles(a, mixed).max() < 1e-6


def fit_linear_ae(x, k, steps):
    torch.manual_seed(0)  # same initial weights for every budget
    model = LinearAutoencoder(x.shape[1], k).double()
    train(model, x, steps=steps, batch_size=len(x), lr=3e-2, seed=0, progress=False)
    return model


def test_linear_autoencoder_spans_top_k_principal_subspace():
    dim, k, n = 6, 2, 300
    spectrum = torch.tensor([4.0, 2.5, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0]
    x = (torch.randn(n, dim, generator=g, dtype=torch.float64) * spectrum.sqrt()) @ basis.T + 0.3
    # oracle: numpy's SVD of the centred data
    centred = (x - x.mean(dim=0)).numpy()
    _, singular_values, vt = np.linalg.svd(centred, full_matrices=False)
    eigenvalues = singular_values**2 / n  # of the 1/n covariance, descending
    top_k = torch.from_numpy(vt[:k].T)  # (D, k)
    pca_loss = eigenvalues[k:].sum()  # the smallest reachable mean squared error at rank k
    gap = eigenvalues[k - 1] - eigenvalues[k]
    assert gap > 1.0  # a well-separated subspace (the test is about optimisation, not near-ties)

    sin2_sums, certificates = [], []
    for steps in (60, 240):
        model = fit_linear_ae(x, k, steps)
        with torch.no_grad():
            excess = model.loss(x).item() - pca_loss
        angles = principal_angles(model.decoder_weight.detach(), top_k)
        sin2_sums.append(float((torch.sin(angles) ** 2).sum()))
        certificates.append(excess / gap)
        assert excess > -1e-9  # nothing beats PCA
        assert sin2_sums[-1] <= certificates[-1] + 1e-9  # the inequality in the module docstring
    assert sin2_sums[1] < sin2_sums[0] / 10  # more steps, closer to the principal subspace
    # what 240 full-batch steps certify from the loss alone: every principal angle below 2 degrees
    assert math.sqrt(certificates[1]) < math.sin(math.radians(2.0)), certificates


# ----------------------------------------------------------------------------- ICA

def test_sech_density_matches_scipy_hypsecant_and_sampler_passes_ks():
    s = torch.linspace(-30, 30, 601, dtype=torch.float64)
    torch.testing.assert_close(sech_log_prob(s), torch.from_numpy(scipy.stats.hypsecant.logpdf(s.numpy())),
                               rtol=0, atol=1e-12)
    draws = sample_sech((20_000,), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert scipy.stats.kstest(draws.numpy(), scipy.stats.hypsecant.cdf).pvalue > FIVE_SIGMA_P_VALUE


def test_linear_ica_density_integrates_to_one_and_samples_have_its_covariance():
    model = LinearICA(2)
    with torch.no_grad():
        model.unmixing.copy_(torch.tensor([[1.2, 0.4], [-0.3, 0.8]], dtype=torch.float64))
        model.mean.copy_(torch.tensor([0.5, -1.0], dtype=torch.float64))
    h = 0.05
    axis = torch.arange(-40, 40, h, dtype=torch.float64) + h / 2
    grid = torch.cartesian_prod(axis, axis)
    total = torch.exp(model.log_prob(grid)).sum().item() * h * h
    assert abs(total - 1) < 1e-3, total  # tails beyond |x| = 40 are below e^{-20}; midpoint error ~ h^2
    # sources of variance pi^2/4: Cov(x) = (pi^2/4) A A^T, checked at 5 sigma per entry
    n = 50_000
    x = model.sample(n, seed=6)
    a = model.mixing
    expected = math.pi**2 / 4 * a @ a.T
    centred = x - model.mean
    products = centred[:, :, None] * centred[:, None, :]  # (n, 2, 2)
    error_bar = products.std(dim=0) / math.sqrt(n)
    assert ((products.mean(dim=0) - expected).abs() < 5 * error_bar).all()


def test_ica_gradient_matches_autograd_and_natural_gradient_is_gradient_times_wtw():
    g = torch.Generator().manual_seed(2)
    model = LinearICA(3)
    with torch.no_grad():
        model.unmixing.copy_(torch.randn(3, 3, generator=g, dtype=torch.float64) + 2 * torch.eye(3))
        model.mean.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    x = torch.randn(50, 3, generator=g, dtype=torch.float64) * 2
    model.log_prob(x).mean().backward()
    gradient = model.gradient(x)
    torch.testing.assert_close(gradient, model.unmixing.grad, rtol=0, atol=1e-12)
    w = model.unmixing.detach()
    torch.testing.assert_close(model.natural_gradient(x), gradient @ w.T @ w, rtol=0, atol=1e-12)


def asymptotic_separation_sd(sources):
    """Standard deviation of E_ij (i != j) for ML-ICA with score -tanh, from the linearised estimating equations.

    At the optimum the estimated sources are a_i = s'_i + sum_k E_ik s'_k, where s'_i = d_i s_i is
    the true source rescaled so that mean tanh(s'_i) s'_i = 1 (the diagonal equations). To first
    order the off-diagonal equations mean_n tanh(a_i) a_j = 0 read
        m_ij + alpha_i sigma_j^2 E_ij + E_ji = 0,   m_ji + alpha_j sigma_i^2 E_ji + E_ij = 0,
    with m_ij = mean_n tanh(s'_i) s'_j, alpha_i = E tanh'(s'_i), sigma_j^2 = E s'_j^2; the noise
    (m_ij, m_ji) has variances E tanh^2(s'_i) sigma_j^2 / n and covariance 1/n.
    Returns (D, D) standard deviations (0 on the diagonal) and the scaled sources.
    """
    n, dim = sources.shape
    scales = []
    for i in range(dim):  # solve mean tanh(d s) d s = 1 for d > 0 by bisection (monotone in d)
        lo, hi = 1e-3, 1e3
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if (torch.tanh(mid * sources[:, i]) * mid * sources[:, i]).mean() < 1 else (lo, mid)
        scales.append(math.sqrt(lo * hi))
    s = sources * torch.tensor(scales, dtype=sources.dtype)
    alpha = (1 - torch.tanh(s) ** 2).mean(dim=0)
    var = (s**2).mean(dim=0)
    tanh2 = (torch.tanh(s) ** 2).mean(dim=0)
    sd = torch.zeros(dim, dim, dtype=torch.float64)
    for i in range(dim):
        for j in range(i + 1, dim):
            jac = torch.tensor([[alpha[i] * var[j], 1.0], [1.0, alpha[j] * var[i]]], dtype=torch.float64)
            noise = torch.tensor([[tanh2[i] * var[j], 1.0], [1.0, tanh2[j] * var[i]]], dtype=torch.float64) / n
            inverse = torch.linalg.inv(jac)
            cov = inverse @ noise @ inverse.T
            sd[i, j], sd[j, i] = cov[0, 0].sqrt(), cov[1, 1].sqrt()
    return sd, torch.tensor(scales, dtype=torch.float64)


def separation_error(unmixing, mixing, scales):
    """E = W A Lambda^{-1} Pi^{-1} - I with the permutation Pi matched greedily and Lambda the ML scales."""
    p = unmixing @ mixing  # (D, D), a scaled permutation plus E
    order = p.abs().argmax(dim=0)  # estimated component that carries each true source
    assert sorted(order.tolist()) == list(range(len(order))), "not a permutation: separation failed"
    g = p[order]  # row j is the estimate of source j: diagonal-dominant
    signs = torch.sign(torch.diagonal(g))
    return (g * signs[:, None]) / scales[None, :] - torch.eye(len(p), dtype=p.dtype)


def laplace_mixture(n=4000, dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, dim, generator=g, dtype=torch.float64) - 0.5
    sources = -torch.sign(u) * torch.log1p(-2 * u.abs()) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    mixing = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return sources, mixing, sources @ mixing.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def test_ica_recovers_laplace_sources_up_to_permutation_and_scale_at_five_sigma():
    sources, mixing, x = laplace_mixture()
    model, losses = fit_ica(x, steps=400, lr=0.2, progress=False)
    unmixing = model.unmixing.detach()
    assert model.natural_gradient(x).abs().max() < 1e-7  # converged: the estimating equations hold
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))  # ascent never lowered the likelihood
    sd, scales = asymptotic_separation_sd(sources)
    error = separation_error(unmixing, mixing, scales)
    off = ~torch.eye(3, dtype=torch.bool)
    assert (error[off].abs() < 5 * sd[off]).all(), (error, sd)
    # the Amari index this error bar allows: E at 5 sigma, plugged into the index of (I + E) Lambda
    amari_bound = amari_index(torch.eye(3, dtype=torch.float64) + 5 * sd, torch.diag(scales))
    ours = amari_index(unmixing, mixing)
    assert ours < amari_bound, (ours, amari_bound)
    # second opinion: scikit-learn's FastICA (fixed-point, log cosh contrast) on the same data
    fast = FastICA(n_components=3, whiten="unit-variance", random_state=0, max_iter=2000, tol=1e-8).fit(x.numpy())
    theirs = amari_index(torch.from_numpy(fast.components_), mixing)
    assert theirs < amari_bound, (theirs, amari_bound)
    # both found the same sources: our unmixing undoes FastICA's estimate of the mixing
    assert amari_index(unmixing, torch.from_numpy(fast.mixing_)) < amari_bound


def test_ica_cannot_separate_gaussian_sources():
    """Negative control: with Gaussian sources every rotation of the whitened data fits equally well."""
    sources, mixing, _ = laplace_mixture()
    gaussian = torch.randn(sources.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    model, _ = fit_ica(gaussian @ mixing.T, steps=400, lr=0.2, progress=False)
    sd, scales = asymptotic_separation_sd(sources)  # the bound that the Laplace sources met
    amari_bound = amari_index(torch.eye(3, dtype=torch.float64) + 5 * sd, torch.diag(scales))
    assert amari_index(model.unmixing.detach(), mixing) > 3 * amari_bound


# ----------------------------------------------------------------------------- denoising

def test_linear_denoising_autoencoder_converges_to_sigma_over_sigma_plus_noise():
    dim, n, sigma = 3, 1000, 0.7
    g = torch.Generator().manual_seed(4)
    b = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    cov = b @ b.T + 0.2 * torch.eye(dim, dtype=torch.float64)
    x = gaussian_with_exact_covariance(cov, n, seed=5)
    optimum = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(dim, dtype=torch.float64))  # eq. ch7-eq-dae-linear
    # Error bar: least squares of x on ONE noisy copy x + sigma eps has, per entry, the standard error
    # sqrt(R_ii [(X~^T X~)^{-1}]_jj) with R = Sigma - W Sigma the residual covariance. The DAE sees a
    # fresh copy at every step and its learning rate decays to 0, so it averages many copies and
    # must land within 5 of those standard errors (it lands far inside).
    noisy = x + sigma * torch.randn(n, dim, generator=g, dtype=torch.float64)
    residual = cov - optimum @ cov
    standard_error = torch.sqrt(torch.outer(torch.diagonal(residual), torch.diagonal(torch.linalg.inv(noisy.T @ noisy))))
    errors = []
    for steps in (50, 300):
        torch.manual_seed(1)
        autoencoder = LinearAutoencoder(dim, dim).double()
        train(DenoisingAutoencoder(autoencoder, sigma), x, steps=steps, batch_size=n, lr=3e-2, seed=2,
              progress=False)
        w = (autoencoder.decoder.weight @ autoencoder.encoder.weight).detach()
        errors.append((w - optimum).abs())
    assert errors[1].max() < errors[0].max() / 3
    assert (errors[1] < 5 * standard_error).all(), (errors[1], standard_error)
    # and it is not the identity a plain autoencoder would learn: the shrinkage is far outside the error bar
    assert ((optimum - torch.eye(dim, dtype=torch.float64)).abs().max() > 10 * standard_error.max())


# ----------------------------------------------------------------------------- digits-sized models, protocol

@pytest.mark.parametrize("make", [lambda: MLPAutoencoder(64, 5), lambda: ConvAutoencoder(5, channels=4),
                                  lambda: LinearAutoencoder(64, 5)])
def test_autoencoders_map_digit_shapes_and_follow_the_protocol(make):
    model = make()
    assert isinstance(model, GenerativeModel) and model.log_prob_kind == "none"
    x = torch.rand(7, 64)
    assert model.encode(x).shape == (7, 5) and model(x).shape == (7, 64)
    assert model.loss(x).shape == () and model.reconstruction_error(x).shape == (7,)
    with pytest.raises(NotImplementedError, match="no density"):
        model.log_prob(x)
    path = model.interpolate(x[0], x[1], n_steps=5)
    with torch.no_grad():
        torch.testing.assert_close(path[[0, -1]], model(x[:2]))  # the ends are the reconstructions


def test_sample_decodes_codes_drawn_from_the_gaussian_fitted_to_the_codes():
    model = LinearAutoencoder(4, 2).double()
    x = torch.randn(3000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) @ torch.diag(
        torch.tensor([3.0, 1.0, 0.5, 0.1], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="fit_latent_gaussian"):
        model.sample(3)
    model.fit_latent_gaussian(x)
    samples = model.sample(20_000, seed=2)
    torch.testing.assert_close(samples, model.sample(20_000, seed=2))  # seeded
    # decoding is affine, so the samples' mean is decode(mean code) and their covariance U C U^T
    with torch.no_grad():
        codes = model.encode(x)
        u = model.decoder_weight
        expected_cov = u @ torch.cov(codes.T) @ u.T
        expected_mean = model.decode(codes.mean(dim=0, keepdim=True))[0]
    n = len(samples)
    mean_error_bar = torch.sqrt(torch.diagonal(expected_cov) / n)
    assert ((samples.mean(dim=0) - expected_mean).abs() < 5 * mean_error_bar).all()
    # variance of a sample variance of Gaussian data: 2 v^2 / n
    var_error_bar = torch.sqrt(2 * torch.diagonal(expected_cov) ** 2 / n)
    assert ((samples.var(dim=0) - torch.diagonal(expected_cov)).abs() < 5 * var_error_bar).all()


def test_denoising_loss_scores_clean_targets_from_corrupted_inputs():
    autoencoder = LinearAutoencoder(3, 3).double()
    with torch.no_grad():  # make the autoencoder the identity map
        autoencoder.encoder.weight.copy_(torch.eye(3))
        autoencoder.encoder.bias.zero_()
        autoencoder.decoder.weight.copy_(torch.eye(3))
        autoencoder.decoder.bias.zero_()
    dae = DenoisingAutoencoder(autoencoder, noise_std=0.5)
    x = torch.zeros(40_000, 3, dtype=torch.float64)
    # the identity reproduces the noise: E||sigma eps||^2 = D sigma^2 = 0.75; per-example sd = sigma^2 sqrt(2 D)
    loss = dae.loss(x, generator=torch.Generator().manual_seed(0)).item()
    assert abs(loss - 0.75) < 5 * 0.25 * math.sqrt(6) / math.sqrt(len(x))
    assert autoencoder.loss(x).item() == 0.0  # the plain autoencoder sees no noise


# ----------------------------------------------------------------------------- input validation

def test_bad_inputs_raise_errors_that_say_what_was_expected():
    model = MLPAutoencoder(64, 4)
    with pytest.raises(ValueError, match=r"shape \(n, 64\).*flatten"):
        model(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(3, 64, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.encode(np.zeros((3, 64)))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        model.decode(torch.rand(3, 5))
    with pytest.raises(ValueError, match="noise_std must be a number > 0"):
        DenoisingAutoencoder(model, noise_std=0.0)
    with pytest.raises(TypeError, match="Autoencoder"):
        DenoisingAutoencoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="latent_dim must be an int >= 1"):
        LinearAutoencoder(64, 0)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train(model, torch.rand(10, 64), steps=0)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        train(model, torch.rand(10, 64), steps=1, lr=-1.0)
    with pytest.raises(TypeError, match="model must be"):
        train(torch.nn.Linear(64, 64), torch.rand(10, 64))
    with pytest.raises(ValueError, match="more than latent_dim"):
        model.fit_latent_gaussian(torch.rand(3, 64))
    with pytest.raises(ValueError, match="covariance is singular"):
        x = torch.randn(100, 2, dtype=torch.float64)
        fit_ica(torch.cat([x, x[:, :1] + x[:, 1:]], dim=1))
    with pytest.raises(ValueError, match="n > D"):
        fit_ica(torch.randn(3, 5))
    with pytest.raises(ValueError, match="square matrix"):
        amari_index(torch.eye(3), torch.ones(3, 2))
    with pytest.raises(ValueError, match="same number of rows"):
        principal_angles(torch.rand(4, 2), torch.rand(5, 2))
