"""Tests of vaecourse.models: the linear-Gaussian model (probabilistic PCA) and the nonlinear toy.

Every expected value is computed here with an independent formula (numpy, scipy, joint-Gaussian conditioning,
scipy quadrature), never by calling the code under test a second way. Exactness tests run in float64; statistical
tests fix a seed and write their tolerance as a multiple of a standard error computed in the test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, linalg, special, stats
from torch.distributions import Independent, MultivariateNormal, Normal

from vaecourse.models import LinearGaussian, NonlinearToy

F64 = torch.float64
D, d = 5, 2
BATCH_SHAPES = [(), (3,), (2, 3)]


# --------------------------------------------------------------------------------------------------------------------
# Independent reference formulas (numpy / scipy)
# --------------------------------------------------------------------------------------------------------------------


def random_params(seed: int, data_dim: int = D, latent_dim: int = d):
    """W [D, d], b [D] and a heteroscedastic noise_std [D], as numpy float64 arrays."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(data_dim, latent_dim))
    b = rng.normal(size=data_dim)
    noise_std = rng.uniform(0.3, 0.9, size=data_dim)
    return W, b, noise_std


def make_model(seed: int = 0, data_dim: int = D, latent_dim: int = d):
    W, b, s = random_params(seed, data_dim, latent_dim)
    model = LinearGaussian(torch.tensor(W), torch.tensor(b), torch.tensor(s))
    return model, (W, b, s)


def t64(array) -> torch.Tensor:
    return torch.as_tensor(np.array(array), dtype=F64)


def np_(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def marginal_cov(W, s):
    return W @ W.T + np.diag(s**2)


def np_log_marginal(x, W, b, s):
    """log N(x; b, W W^T + diag s^2) by scipy, for x of any batch shape [..., D]."""
    x = np.asarray(x)
    flat = x.reshape(-1, x.shape[-1])
    values = np.atleast_1d(stats.multivariate_normal(mean=b, cov=marginal_cov(W, s)).logpdf(flat))
    return values.reshape(x.shape[:-1])


def np_log_likelihood(x, z, W, b, s):
    """log N(x; W z + b, diag s^2), broadcasting over leading dims."""
    return stats.norm.logpdf(x, loc=z @ W.T + b, scale=s).sum(-1)


def np_conditioning(x, W, b, s):
    """p(z | x) by conditioning the joint Gaussian of (z, x) = N([0, b], [[I, W^T], [W, W W^T + Psi]])."""
    latent = W.shape[1]
    joint = np.block([[np.eye(latent), W.T], [W, marginal_cov(W, s)]])
    s_zz, s_zx, s_xx = joint[:latent, :latent], joint[:latent, latent:], joint[latent:, latent:]
    gain = np.linalg.solve(s_xx, s_zx.T).T  # Sigma_zx Sigma_xx^{-1}  [d, D]
    mean = (np.asarray(x) - b) @ gain.T  # [..., d]
    cov = s_zz - gain @ s_zx.T  # [d, d]
    return mean, cov


def np_expected_log_likelihood(x, m, S, W, b, s):
    """E_{z ~ N(m, S)} log N(x; W z + b, diag s^2)
    = sum_i [ -1/2 log(2 pi s_i^2) - ((x_i - (W m + b)_i)^2 + (W S W^T)_ii) / (2 s_i^2) ]."""
    r = x - (m @ W.T + b)
    quad = np.einsum("ij,...jk,ik->...i", W, S, W)  # diag(W S W^T)  [..., D]
    return (-0.5 * np.log(2 * np.pi * s**2) - (r**2 + quad) / (2 * s**2)).sum(-1)


def diagonal_q(m, sd):
    return Independent(Normal(t64(m), t64(sd)), 1)


def full_q(m, S):
    return MultivariateNormal(t64(m), covariance_matrix=t64(S))


def random_spd(rng, k, batch=()):
    A = rng.normal(size=(*batch, k, k))
    return A @ np.swapaxes(A, -1, -2) / k + 0.2 * np.eye(k)


# --------------------------------------------------------------------------------------------------------------------
# LinearGaussian: construction contract
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise_kind", ["float", "0-d tensor", "[D] tensor"])
def test_linear_gaussian_construction_contract(noise_kind):
    W, b, s = random_params(1)
    noise = {"float": 0.7, "0-d tensor": torch.tensor(0.7, dtype=F64), "[D] tensor": t64(s)}[noise_kind]
    expected_noise = np.full(D, 0.7) if noise_kind != "[D] tensor" else s
    model = LinearGaussian(t64(W), t64(b), noise)
    assert isinstance(model, torch.nn.Module)
    assert model.latent_dim == d and model.data_dim == D
    assert isinstance(model.W, torch.nn.Parameter) and isinstance(model.b, torch.nn.Parameter)
    np.testing.assert_allclose(np_(model.W), W, rtol=0, atol=0)
    np.testing.assert_allclose(np_(model.b), b, rtol=0, atol=0)
    assert model.noise_std.shape == (D,) and model.noise_std.dtype == F64
    np.testing.assert_allclose(np_(model.noise_std), expected_noise, rtol=1e-12)
    params = list(model.parameters())
    # W, b and the unconstrained noise parameter are all learnable, and all follow W's dtype
    assert len(params) >= 3 and all(p.requires_grad and p.dtype == F64 for p in params)
    assert any(p is model.W for p in params) and any(p is model.b for p in params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_gaussian_dtype_follows_W(dtype):
    W, b, s = random_params(2)
    model = LinearGaussian(torch.tensor(W, dtype=dtype), torch.tensor(b, dtype=dtype), 0.5)
    assert model.noise_std.dtype == dtype
    x, z = model.sample(4)
    assert x.dtype == dtype and z.dtype == dtype
    assert model.prior.sample((3,)).dtype == dtype
    assert model.log_marginal(x).dtype == dtype


def test_prior_is_standard_normal():
    model, _ = make_model(3)
    prior = model.prior
    assert prior.batch_shape == () and prior.event_shape == (d,)
    z = t64(np.random.default_rng(0).normal(size=(7, d)) * 1.5)
    np.testing.assert_allclose(np_(prior.log_prob(z)), stats.norm.logpdf(np_(z)).sum(-1), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# LinearGaussian: likelihood, marginal, posterior, expected log-likelihood
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_likelihood_shapes_and_values(shape):
    model, (W, b, s) = make_model(4)
    rng = np.random.default_rng(5)
    z = rng.normal(size=(*shape, d))
    x = rng.normal(size=(*shape, D))
    lik = model.likelihood(t64(z))
    assert lik.batch_shape == shape and lik.event_shape == (D,)
    log_px_z = lik.log_prob(t64(x))
    assert log_px_z.shape == shape
    np.testing.assert_allclose(np_(log_px_z), np_log_likelihood(x, z, W, b, s), rtol=1e-12, atol=1e-10)
    # the mean is W z + b (a sample with many draws is not needed: the mean is part of the distribution)
    np.testing.assert_allclose(np_(lik.mean), z @ W.T + b, rtol=1e-12, atol=1e-12)


def test_marginal_is_the_closed_form_gaussian():
    model, (W, b, s) = make_model(6)
    marginal = model.marginal()
    assert isinstance(marginal, MultivariateNormal)
    assert marginal.event_shape == (D,)
    np.testing.assert_allclose(np_(marginal.mean), b, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np_(marginal.covariance_matrix), marginal_cov(W, s), rtol=1e-12, atol=1e-12)
    x = np.random.default_rng(7).normal(size=(11, D)) * 2 + b
    np.testing.assert_allclose(np_(marginal.log_prob(t64(x))), np_log_marginal(x, W, b, s), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_log_marginal_matches_scipy_for_every_batch_shape(shape):
    model, (W, b, s) = make_model(8)
    x = np.random.default_rng(9).normal(size=(*shape, D)) * 2 + b
    log_px = model.log_marginal(t64(x))
    assert log_px.shape == shape
    np.testing.assert_allclose(np_(log_px), np_log_marginal(x, W, b, s), rtol=1e-12, atol=1e-10)


def test_log_marginal_matches_an_own_cholesky_formula():
    """A second independent route: -1/2 [D log 2 pi + 2 sum log diag L + |L^{-1} (x - b)|^2], C = L L^T."""
    model, (W, b, s) = make_model(10)
    x = np.random.default_rng(11).normal(size=(6, D)) * 3
    L = np.linalg.cholesky(marginal_cov(W, s))
    u = linalg.solve_triangular(L, (x - b).T, lower=True)  # [D, N]
    expected = -0.5 * (D * math.log(2 * math.pi) + 2 * np.log(np.diag(L)).sum() + (u**2).sum(0))
    np.testing.assert_allclose(np_(model.log_marginal(t64(x))), expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_posterior_is_joint_gaussian_conditioning(shape):
    model, (W, b, s) = make_model(12)
    x = np.random.default_rng(13).normal(size=(*shape, D)) * 2 + b
    post = model.posterior(t64(x))
    assert isinstance(post, MultivariateNormal)
    assert post.batch_shape == shape and post.event_shape == (d,)
    mean, cov = np_conditioning(x, W, b, s)
    np.testing.assert_allclose(np_(post.mean), mean, rtol=1e-10, atol=1e-12)
    expected_cov = np.broadcast_to(cov, (*shape, d, d))
    np.testing.assert_allclose(np_(post.covariance_matrix), expected_cov, rtol=1e-10, atol=1e-12)


def test_posterior_satisfies_bayes_rule_pointwise():
    """log p(z | x) = log p(x | z) + log p(z) - log p(x) at arbitrary z, all terms by scipy."""
    model, (W, b, s) = make_model(14)
    rng = np.random.default_rng(15)
    x = rng.normal(size=(4, D)) + b
    z = rng.normal(size=(9, 4, d)) * 2  # [S, B, d]
    log_post = np_(model.posterior(t64(x)).log_prob(t64(z)))
    expected = np_log_likelihood(x, z, W, b, s) + stats.norm.logpdf(z).sum(-1) - np_log_marginal(x, W, b, s)
    np.testing.assert_allclose(log_post, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("q_kind", ["diagonal", "full"])
def test_expected_log_likelihood_closed_form(q_kind):
    model, (W, b, s) = make_model(16)
    rng = np.random.default_rng(17)
    B = 4
    x = rng.normal(size=(B, D)) + b
    m = rng.normal(size=(B, d))
    if q_kind == "diagonal":
        sd = rng.uniform(0.2, 1.5, size=(B, d))
        q, S = diagonal_q(m, sd), np.einsum("bi,ij->bij", sd**2, np.eye(d))
    else:
        S = random_spd(rng, d, (B,))
        q = full_q(m, S)
    ell = model.expected_log_likelihood(t64(x), q)
    assert ell.shape == (B,)
    np.testing.assert_allclose(np_(ell), np_expected_log_likelihood(x, m, S, W, b, s), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize(
    "x_batch, q_batch, out_shape",
    [((), (3,), (3,)), ((3,), (), (3,)), ((2, 3), (3,), (2, 3)), ((2, 1), (3,), (2, 3))],
)
@pytest.mark.parametrize("q_kind", ["diagonal", "full"])
def test_expected_log_likelihood_broadcasts_batches(x_batch, q_batch, out_shape, q_kind):
    model, (W, b, s) = make_model(18)
    rng = np.random.default_rng(19)
    x = rng.normal(size=(*x_batch, D)) + b
    m = rng.normal(size=(*q_batch, d))
    if q_kind == "diagonal":
        sd = rng.uniform(0.2, 1.5, size=(*q_batch, d))
        q, S = diagonal_q(m, sd), sd[..., :, None] ** 2 * np.eye(d)
    else:
        S = random_spd(rng, d, q_batch)
        q = full_q(m, S)
    ell = model.expected_log_likelihood(t64(x), q)
    assert ell.shape == out_shape
    expected = np_expected_log_likelihood(x, m, S, W, b, s)
    np.testing.assert_allclose(np_(ell), np.broadcast_to(expected, out_shape), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("q_kind", ["diagonal", "full"])
def test_expected_log_likelihood_agrees_with_monte_carlo(q_kind):
    """10^5 draws z ~ q; the sample mean of log p(x|z) (scipy) is within 4 standard errors of the exact value."""
    model, (W, b, s) = make_model(20)
    rng = np.random.default_rng(21)
    B, S_mc = 3, 100_000
    x = rng.normal(size=(B, D)) + b
    m = rng.normal(size=(B, d))
    if q_kind == "diagonal":
        q = diagonal_q(m, rng.uniform(0.3, 1.2, size=(B, d)))
    else:
        q = full_q(m, random_spd(rng, d, (B,)))
    torch.manual_seed(22)
    z = np_(q.sample((S_mc,)))  # [S, B, d]
    values = np_log_likelihood(x, z, W, b, s)  # [S, B]
    se = values.std(0, ddof=1) / math.sqrt(S_mc)
    ell = np_(model.expected_log_likelihood(t64(x), q))
    assert np.all(np.abs(ell - values.mean(0)) < 4 * se), (ell, values.mean(0), se)


# --------------------------------------------------------------------------------------------------------------------
# LinearGaussian: sampling
# --------------------------------------------------------------------------------------------------------------------


def test_sample_shapes_and_moments_match_the_model():
    """x ~ N(b, C), z ~ N(0, I), Cov(x, z) = W and x - W z - b ~ N(0, Psi), each entry within 4 SE.

    For Gaussian data the sample covariance entry C^_ij has variance (C_ij^2 + C_ii C_jj) / n, the sample mean
    has variance C_ii / n; the same formula with the joint covariance of (x, z) gives the cross-covariance SE.
    """
    model, (W, b, s) = make_model(23)
    n = 200_000
    torch.manual_seed(24)
    x, z = model.sample(n)
    assert x.shape == (n, D) and z.shape == (n, d)
    assert x.dtype == F64 and z.dtype == F64
    x, z = np_(x), np_(z)
    C = marginal_cov(W, s)
    assert np.all(np.abs(x.mean(0) - b) < 4 * np.sqrt(np.diag(C) / n))
    assert np.all(np.abs(z.mean(0)) < 4 * np.sqrt(1 / n))
    C_hat = np.cov(x, rowvar=False)
    se_C = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / n)
    assert np.all(np.abs(C_hat - C) < 4 * se_C), np.abs(C_hat - C) / se_C
    Z_hat = np.cov(z, rowvar=False)
    assert np.all(np.abs(Z_hat - np.eye(d)) < 4 * np.sqrt((np.eye(d) + 1) / n))
    cross = (x - x.mean(0)).T @ (z - z.mean(0)) / (n - 1)  # [D, d], expected W
    se_cross = np.sqrt((W**2 + np.diag(C)[:, None] * 1.0) / n)
    assert np.all(np.abs(cross - W) < 4 * se_cross), np.abs(cross - W) / se_cross
    residual = x - z @ W.T - b  # ~ N(0, diag s^2): sample variance has SE s^2 sqrt(2 / n)
    assert np.all(np.abs(residual.var(0, ddof=1) - s**2) < 4 * s**2 * math.sqrt(2 / n))
    assert np.all(np.abs(residual.mean(0)) < 4 * s / math.sqrt(n))


def test_sample_agrees_with_the_marginal_density_goodness_of_fit():
    """The squared Mahalanobis distance of x ~ p(x) under the marginal is chi^2_D (Kolmogorov-Smirnov).

    The Kolmogorov statistic's asymptotic critical value at level 1e-3 is 1.95 / sqrt(n).
    """
    model, (W, b, s) = make_model(25)
    n = 50_000
    torch.manual_seed(26)
    x, _ = model.sample(n)
    r = np_(x) - b
    maha = np.einsum("ni,ij,nj->n", r, np.linalg.inv(marginal_cov(W, s)), r)
    ks = stats.kstest(maha, stats.chi2(D).cdf).statistic
    assert ks < 1.95 / math.sqrt(n)


# --------------------------------------------------------------------------------------------------------------------
# LinearGaussian: gradients
# --------------------------------------------------------------------------------------------------------------------


def test_gradients_reach_every_parameter_through_log_marginal():
    """Analytic gradients of sum_n log N(x_n; b, C): d/db = C^{-1} r, dl/dC = G = 1/2 (C^{-1} r r^T C^{-1} - C^{-1}),
    d/dW = 2 G W, d/ds_i = 2 G_ii s_i (chained to the unconstrained noise parameter by autograd of noise_std)."""
    model, (W, b, s) = make_model(27)
    x = np.random.default_rng(28).normal(size=(6, D)) * 1.5 + b
    model.log_marginal(t64(x)).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    C_inv = np.linalg.inv(marginal_cov(W, s))
    r = x - b
    u = r @ C_inv  # [N, D]
    G = 0.5 * (u.T @ u - len(x) * C_inv)
    np.testing.assert_allclose(np_(model.b.grad), u.sum(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np_(model.W.grad), 2 * G @ W, rtol=1e-10, atol=1e-10)
    noise_params = [p for p in model.parameters() if p is not model.W and p is not model.b]
    expected = torch.autograd.grad(model.noise_std, noise_params, grad_outputs=t64(2 * np.diag(G) * s))
    for param, grad in zip(noise_params, expected, strict=True):
        np.testing.assert_allclose(np_(param.grad), np_(grad), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------------------------------
# LinearGaussian.fit_ml: probabilistic PCA
# --------------------------------------------------------------------------------------------------------------------


def ppca_data(n: int, seed: int, sigma: float = 0.5):
    """Data from an isotropic-noise PPCA with well separated principal variances."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(D, d)))
    W = Q * np.array([3.0, 1.5])  # singular values 3, 1.5
    b = rng.normal(size=D)
    x = rng.normal(size=(n, d)) @ W.T + b + sigma * rng.normal(size=(n, D))
    return x, W, b, sigma


def ppca_closed_form(x, latent_dim):
    """(mean, sigma^2, eigenvalues descending, eigenvectors) of the 1/N sample covariance, and the maximised mean
    log-likelihood -1/2 [D log 2 pi + sum_{j<=d} log lambda_j + (D - d) log sigma^2 + D]."""
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    lam, U = np.linalg.eigh(cov)
    lam, U = lam[::-1], U[:, ::-1]
    sigma2 = lam[latent_dim:].mean()
    data_dim = x.shape[1]
    max_ll = -0.5 * (
        data_dim * math.log(2 * math.pi)
        + np.log(lam[:latent_dim]).sum()
        + (data_dim - latent_dim) * math.log(sigma2)
        + data_dim
    )
    return mean, sigma2, lam, U, max_ll


def mean_log_likelihood(x, W, b, s):
    return np_log_marginal(x, W, b, np.broadcast_to(s, (x.shape[1],))).mean()


def test_fit_ml_is_the_closed_form_maximum():
    x, *_ = ppca_data(2000, seed=30)
    model = LinearGaussian.fit_ml(t64(x), d)
    assert isinstance(model, LinearGaussian)
    assert model.latent_dim == d and model.data_dim == D and model.W.dtype == F64
    mean, sigma2, lam, U, max_ll = ppca_closed_form(x, d)
    W_fit, b_fit, s_fit = np_(model.W), np_(model.b), np_(model.noise_std)
    np.testing.assert_allclose(b_fit, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s_fit, np.full(D, math.sqrt(sigma2)), rtol=1e-10)  # isotropic noise
    # W is defined up to a rotation (and eigenvector signs): compare W W^T = U_d (Lambda_d - sigma^2 I) U_d^T
    expected_WWT = U[:, :d] @ np.diag(lam[:d] - sigma2) @ U[:, :d].T
    np.testing.assert_allclose(W_fit @ W_fit.T, expected_WWT, rtol=0, atol=1e-10)
    # the maximised average log-likelihood equals the known closed form, by scipy and by the model itself
    assert abs(mean_log_likelihood(x, W_fit, b_fit, s_fit) - max_ll) < 1e-8
    assert abs(model.log_marginal(t64(x)).mean().item() - max_ll) < 1e-8


def test_fit_ml_beats_perturbed_parameters():
    x, *_ = ppca_data(2000, seed=31)
    model = LinearGaussian.fit_ml(t64(x), d)
    W_fit, b_fit, s_fit = np_(model.W), np_(model.b), np_(model.noise_std)
    best = mean_log_likelihood(x, W_fit, b_fit, s_fit)
    rng = np.random.default_rng(32)
    perturbed = [(W_fit + 0.05 * rng.normal(size=W_fit.shape), b_fit, s_fit) for _ in range(5)]
    perturbed += [(W_fit * 1.05, b_fit, s_fit), (W_fit * 0.95, b_fit, s_fit)]
    perturbed += [(W_fit, b_fit, s_fit * 1.05), (W_fit, b_fit, s_fit * 0.95), (W_fit, b_fit + 0.05, s_fit)]
    for W_p, b_p, s_p in perturbed:
        # a perturbation of size 0.05 lowers a smooth maximum by O(0.05^2); 1e-6 is far above rounding (1e-13)
        assert mean_log_likelihood(x, W_p, b_p, s_p) < best - 1e-6


def test_fit_ml_recovers_the_generating_subspace():
    """Principal angles between span(W_fit) and span(W_true) are small for N = 20000.

    First-order perturbation of sample eigenvectors (Gaussian data): the component of u_j (j <= d) along a noise
    direction k > d is u_k^T (C^ - C) u_j / (lambda_j - sigma^2), with variance lambda_j sigma^2 / (N (lambda_j -
    sigma^2)^2). ||sin Theta||_F^2 is the sum of these d (D - d) squared components, so E ||sin Theta||_F^2 = se^2 with
    se^2 = sum_j (D - d) lambda_j sigma^2 / (N (lambda_j - sigma^2)^2); we allow 4 se. The noise variance estimate
    (mean of D - d eigenvalues) has SE ~ sigma^2 sqrt(2 / (N (D - d))).
    """
    n = 20_000
    x, W_true, _, sigma = ppca_data(n, seed=33)
    model = LinearGaussian.fit_ml(t64(x), d)
    lam_true = np.linalg.eigvalsh(W_true @ W_true.T)[::-1][:d] + sigma**2
    se = math.sqrt(sum((D - d) * lj * sigma**2 / (n * (lj - sigma**2) ** 2) for lj in lam_true))
    angles = linalg.subspace_angles(np_(model.W), W_true)
    assert np.linalg.norm(np.sin(angles)) < 4 * se, (np.sin(angles), se)
    sigma2_hat = np_(model.noise_std)[0] ** 2
    assert abs(sigma2_hat - sigma**2) < 4 * sigma**2 * math.sqrt(2 / (n * (D - d)))


# --------------------------------------------------------------------------------------------------------------------
# LinearGaussian: bad input
# --------------------------------------------------------------------------------------------------------------------

SHAPE_WORDS = r"(?i)shape|dim|size"


@pytest.mark.parametrize(
    "W, b",
    [
        (torch.zeros(D, dtype=F64), torch.zeros(D, dtype=F64)),  # W 1-D
        (torch.zeros(1, D, d, dtype=F64), torch.zeros(D, dtype=F64)),  # W 3-D
        (torch.zeros(D, d, dtype=F64), torch.zeros(D + 1, dtype=F64)),  # b of the wrong length
        (torch.zeros(D, d, dtype=F64), torch.zeros(D, 1, dtype=F64)),  # b 2-D
    ],
)
def test_bad_W_or_b_shape_raises(W, b):
    with pytest.raises(ValueError, match=SHAPE_WORDS):
        LinearGaussian(W, b, 0.5)


@pytest.mark.parametrize(
    "noise_std",
    [0.0, -0.3, torch.tensor(0.0, dtype=F64), torch.tensor([0.5, 0.5, 0.0, 0.5, 0.5], dtype=F64),
     torch.tensor([0.5, -0.5, 0.5, 0.5, 0.5], dtype=F64)],
)
def test_non_positive_noise_raises(noise_std):
    W, b, _ = random_params(34)
    with pytest.raises(ValueError, match=r"(?i)positive"):
        LinearGaussian(t64(W), t64(b), noise_std)


def test_noise_of_the_wrong_length_raises():
    W, b, _ = random_params(35)
    with pytest.raises(ValueError, match=SHAPE_WORDS):
        LinearGaussian(t64(W), t64(b), torch.full((D + 1,), 0.5, dtype=F64))


def test_x_or_z_with_the_wrong_last_dim_raises():
    model, _ = make_model(36)
    bad_x = torch.zeros(3, D + 1, dtype=F64)
    q = diagonal_q(np.zeros((3, d)), np.ones((3, d)))
    with pytest.raises(ValueError, match=SHAPE_WORDS):
        model.log_marginal(bad_x)
    with pytest.raises(ValueError, match=SHAPE_WORDS):
        model.posterior(bad_x)
    with pytest.raises(ValueError, match=SHAPE_WORDS):
        model.expected_log_likelihood(bad_x, q)
    with pytest.raises(ValueError, match=SHAPE_WORDS):
        model.likelihood(torch.zeros(3, d + 1, dtype=F64))


@pytest.mark.parametrize("latent_dim", [0, -1, D, D + 1])
def test_fit_ml_rejects_bad_latent_dim(latent_dim):
    x, *_ = ppca_data(100, seed=37)
    with pytest.raises(ValueError, match=r"(?i)latent"):
        LinearGaussian.fit_ml(t64(x), latent_dim)


# --------------------------------------------------------------------------------------------------------------------
# NonlinearToy
# --------------------------------------------------------------------------------------------------------------------


def np_decoder(z):
    z = np.asarray(z)
    if z.shape[-1] == 1:
        return np.stack([z[..., 0], 0.5 * z[..., 0] ** 2 - 1], -1)
    return np.stack([z[..., 0], z[..., 1] + 0.5 * z[..., 0] ** 2 - 1], -1)


def toy_density_quad(x, latent_dim, sigma):
    """p(x) by adaptive scipy quadrature over z1. For d = 2 the z2-integral is analytic:
    x2 = z2 + z1^2 / 2 - 1 + noise with z2 ~ N(0, 1) gives x2 | z1 ~ N(z1^2 / 2 - 1, 1 + sigma^2)."""
    x1, x2 = x
    var2 = sigma**2 if latent_dim == 1 else 1 + sigma**2

    def integrand(z1):
        return stats.norm.pdf(z1) * stats.norm.pdf(x1, z1, sigma) * stats.norm.pdf(x2, 0.5 * z1**2 - 1, math.sqrt(var2))

    points = [x1] + ([math.sqrt(2 * (x2 + 1)), -math.sqrt(2 * (x2 + 1))] if x2 > -1 else [])
    value, _ = integrate.quad(integrand, -12, 12, points=points, limit=500, epsabs=0, epsrel=1e-13)
    return value


TOY_POINTS = np.array([[0.3, -0.9], [1.5, 0.2], [-2.0, 1.1], [0.0, -0.5], [1.0, 0.3], [-0.7, -1.3]])


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_toy_contract(latent_dim):
    toy = NonlinearToy(latent_dim=latent_dim, noise_std=0.4)
    assert isinstance(toy, torch.nn.Module)
    assert toy.latent_dim == latent_dim and toy.data_dim == 2
    assert toy.prior.batch_shape == () and toy.prior.event_shape == (latent_dim,)
    rng = np.random.default_rng(40)
    for shape in BATCH_SHAPES:
        z = rng.normal(size=(*shape, latent_dim))
        x = rng.normal(size=(*shape, 2))
        f = toy.decoder(t64(z))
        assert f.shape == (*shape, 2)
        np.testing.assert_allclose(np_(f), np_decoder(z), rtol=1e-12, atol=1e-12)
        lik = toy.likelihood(t64(z))
        assert lik.batch_shape == shape and lik.event_shape == (2,)
        expected = stats.norm.logpdf(x, np_decoder(z), 0.4).sum(-1)
        np.testing.assert_allclose(np_(lik.log_prob(t64(x))), expected, rtol=1e-12, atol=1e-10)
        assert toy.log_marginal(t64(x)).shape == shape


def test_toy_defaults_are_one_latent_dim_and_noise_0_3():
    toy = NonlinearToy()
    assert toy.latent_dim == 1 and toy.data_dim == 2
    z, x = np.array([[0.4], [-1.2]]), np.array([[0.1, -0.5], [-1.0, 0.0]])
    expected = stats.norm.logpdf(x, np_decoder(z), 0.3).sum(-1)
    np.testing.assert_allclose(np_(toy.likelihood(t64(z)).log_prob(t64(x))), expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_toy_sample_is_prior_then_likelihood(latent_dim):
    """z ~ N(0, I) and x - f(z) ~ N(0, sigma^2 I): means within 4 SE (SE sigma / sqrt(n)), variances within 4 SE
    (SE of a Gaussian sample variance: v sqrt(2 / n))."""
    sigma, n = 0.3, 100_000
    toy = NonlinearToy(latent_dim=latent_dim, noise_std=sigma)
    torch.manual_seed(41)
    x, z = toy.sample(n)
    assert x.shape == (n, 2) and z.shape == (n, latent_dim)
    x, z = np_(x), np_(z)
    assert np.all(np.abs(z.mean(0)) < 4 / math.sqrt(n))
    assert np.all(np.abs(z.var(0, ddof=1) - 1) < 4 * math.sqrt(2 / n))
    residual = x - np_decoder(z)
    assert np.all(np.abs(residual.mean(0)) < 4 * sigma / math.sqrt(n))
    assert np.all(np.abs(residual.var(0, ddof=1) - sigma**2) < 4 * sigma**2 * math.sqrt(2 / n))
    assert abs(np.corrcoef(residual.T)[0, 1]) < 4 / math.sqrt(n)


@pytest.mark.parametrize("latent_dim, sigma", [(1, 0.3), (2, 0.3), (1, 0.5)])
def test_toy_log_marginal_matches_adaptive_quadrature(latent_dim, sigma):
    """The spec promises quadrature exact to ~1e-6 or better; scipy's adaptive quad is accurate to ~1e-12."""
    toy = NonlinearToy(latent_dim=latent_dim, noise_std=sigma)
    log_px = np_(toy.log_marginal(t64(TOY_POINTS)))
    expected = np.log([toy_density_quad(x, latent_dim, sigma) for x in TOY_POINTS])
    np.testing.assert_allclose(log_px, expected, rtol=0, atol=1e-6)


def np_toy_density_on_points(x, latent_dim, sigma):
    """p(x) for many points [N, 2] by a fine Riemann sum over z1 (step 0.01 on [-9, 9]; the integrand's width in z1
    is >= sigma / 2, so the sum is exact to far below 1e-10); for d = 2 the z2-integral is analytic (toy_density_quad).
    """

    def log_normal(value, mean, sd):
        return -0.5 * ((value - mean) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)

    z1 = np.linspace(-9, 9, 1801)
    sd2 = sigma if latent_dim == 1 else math.sqrt(1 + sigma**2)
    log_w = log_normal(z1, 0.0, 1.0) + math.log(z1[1] - z1[0])
    out = []
    for chunk in np.array_split(x, max(1, len(x) // 500)):
        terms = log_normal(chunk[:, :1], z1, sigma) + log_normal(chunk[:, 1:], 0.5 * z1**2 - 1, sd2)
        out.append(np.exp(special.logsumexp(terms + log_w, axis=-1)))
    return np.concatenate(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "latent_dim, x1_grid, x2_grid",
    [
        # d = 1: a ridge of width sigma = 0.3 along the parabola; step 0.25 in both directions
        (1, (-7.0, 7.0, 0.25), (-3.5, 13.5, 0.25)),
        # d = 2: x2 | z1 has sd sqrt(1 + sigma^2) ~ 1.04, x1 | z1 has sd 0.3 but the z1-dependence is smooth
        (2, (-5.4, 5.4, 0.6), (-6.0, 14.0, 1.0)),
    ],
)
def test_toy_marginal_normalises_on_a_grid(latent_dim, x1_grid, x2_grid):
    """Riemann sum of p(x) over a grid covering |z| < 5 (prior mass outside ~6e-7) plus several noise SDs.

    p(x) is a Gaussian smoothing of a smooth measure, so the Riemann sum's aliasing error decays like
    exp(-2 pi^2 sd^2 / h^2) (d = 1: sd = 0.3, h = 0.25 gives ~5e-13). The grid itself is checked first with an
    independent numpy density: it integrates to 1 within 1e-6 (truncation and step), so the 1e-4 demanded of the
    model's quadrature is all the model's.
    """
    toy = NonlinearToy(latent_dim=latent_dim, noise_std=0.3)
    (a1, b1, h1), (a2, b2, h2) = x1_grid, x2_grid
    x1 = np.arange(a1, b1 + h1 / 2, h1)
    x2 = np.arange(a2, b2 + h2 / 2, h2)
    grid = np.stack(np.meshgrid(x1, x2, indexing="ij"), -1)  # [n1, n2, 2]
    reference = np_toy_density_on_points(grid.reshape(-1, 2), latent_dim, 0.3).sum() * h1 * h2
    assert abs(reference - 1) < 1e-6, reference
    log_px = toy.log_marginal(t64(grid))
    assert log_px.shape == grid.shape[:-1]
    total = np.exp(np_(log_px)).sum() * h1 * h2
    assert abs(total - 1) < 1e-4, total


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_toy_log_marginal_agrees_with_naive_monte_carlo(latent_dim):
    """p^(x) = mean_k p(x | z_k), z_k ~ N(0, I) (numpy, 4e5 draws); |p(x) - p^(x)| < 4 SE of p^(x)."""
    sigma, M = 0.3, 400_000
    toy = NonlinearToy(latent_dim=latent_dim, noise_std=sigma)
    z = np.random.default_rng(42).normal(size=(M, 1, latent_dim))
    w = np.exp(stats.norm.logpdf(TOY_POINTS, np_decoder(z), sigma).sum(-1))  # [M, P]
    p_hat, se = w.mean(0), w.std(0, ddof=1) / math.sqrt(M)
    p = np.exp(np_(toy.log_marginal(t64(TOY_POINTS))))
    assert np.all(np.abs(p - p_hat) < 4 * se), (p, p_hat, se)


@pytest.mark.parametrize("kwargs", [{"latent_dim": 3}, {"latent_dim": 0}, {"noise_std": 0.0}, {"noise_std": -0.3}])
def test_toy_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        NonlinearToy(**kwargs)
