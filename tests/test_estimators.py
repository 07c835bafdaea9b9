"""Tests of vaecourse.estimators: importance weights, naive and importance-sampled log p(x), ESS, KL and the ELBO.

The reference values come from independent formulas (scipy densities, joint-Gaussian conditioning, the Gaussian KL
and the closed-form expected log-likelihood written here). Exactness tests run in float64; statistical tests fix a
seed and write their tolerance as a multiple of a standard error computed in the test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import special, stats
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from vaecourse.estimators import (
    ElboTerms,
    effective_sample_size,
    elbo,
    exact_elbo,
    kl,
    log_importance_weights,
    log_marginal_is,
    log_marginal_naive,
)
from vaecourse.models import LinearGaussian

F64 = torch.float64
D, d = 4, 2
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------------------
# Independent reference formulas
# --------------------------------------------------------------------------------------------------------------------


def t64(array) -> torch.Tensor:
    return torch.as_tensor(np.array(array), dtype=F64)


def np_(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


class Setup:
    """A float64 LinearGaussian with known numpy parameters and a few data points."""

    def __init__(self, seed: int = 0, noise=(0.6, 1.0), data_dim: int = D, latent_dim: int = d, num_x: int = 3):
        rng = np.random.default_rng(seed)
        self.W = rng.normal(size=(data_dim, latent_dim))
        self.b = rng.normal(size=data_dim)
        self.s = rng.uniform(*noise, size=data_dim)
        self.model = LinearGaussian(t64(self.W), t64(self.b), t64(self.s))
        z = rng.normal(size=(num_x, latent_dim))
        self.x_np = z @ self.W.T + self.b + self.s * rng.normal(size=(num_x, data_dim))
        self.x = t64(self.x_np)
        self.C = self.W @ self.W.T + np.diag(self.s**2)

    @classmethod
    def from_arrays(cls, W, b, s, x):
        setup = cls.__new__(cls)
        setup.W, setup.b, setup.s, setup.x_np = W, b, s, x
        setup.model, setup.x = LinearGaussian(t64(W), t64(b), t64(s)), t64(x)
        setup.C = W @ W.T + np.diag(s**2)
        return setup

    def log_px(self, x=None):
        x = self.x_np if x is None else x
        return stats.multivariate_normal(self.b, self.C).logpdf(x)

    def log_lik(self, z, x=None):
        """log N(x; W z + b, diag s^2) for z [..., d]."""
        x = self.x_np if x is None else x
        return stats.norm.logpdf(x, z @ self.W.T + self.b, self.s).sum(-1)

    def posterior(self, x=None):
        """(mean [B, d], cov [d, d]) by conditioning the joint Gaussian of (z, x)."""
        x = self.x_np if x is None else x
        latent = self.W.shape[1]
        joint = np.block([[np.eye(latent), self.W.T], [self.W, self.C]])
        s_zx, s_xx = joint[:latent, latent:], joint[latent:, latent:]
        gain = np.linalg.solve(s_xx, s_zx.T).T
        return (x - self.b) @ gain.T, np.eye(latent) - gain @ s_zx.T

    def posterior_dist(self, x=None):
        mean, cov = self.posterior(x)
        return MultivariateNormal(t64(mean), covariance_matrix=t64(np.broadcast_to(cov, (len(mean), *cov.shape))))

    def expected_log_lik(self, m, S, x=None):
        """E_{N(m, S)} log N(x; W z + b, diag s^2)
        = sum_i -1/2 log(2 pi s_i^2) - ((x - W m - b)_i^2 + (W S W^T)_ii) / (2 s_i^2)."""
        x = self.x_np if x is None else x
        r = x - (m @ self.W.T + self.b)
        quad = np.einsum("ij,...jk,ik->...i", self.W, S, self.W)
        return (-0.5 * np.log(2 * np.pi * self.s**2) - (r**2 + quad) / (2 * self.s**2)).sum(-1)

    def naive_weight_moments(self, x=None):
        """p(x) and E_prior[p(x|z)^2] = (4 pi)^{-D/2} |Psi|^{-1/2} N(x; b, W W^T + Psi / 2), both exact."""
        x = self.x_np if x is None else x
        data_dim = len(self.b)
        p = np.exp(self.log_px(x))
        cov_half = self.W @ self.W.T + np.diag(self.s**2) / 2
        second = (4 * np.pi) ** (-data_dim / 2) / np.prod(self.s) * stats.multivariate_normal(self.b, cov_half).pdf(x)
        return p, second


def gaussian_kl(m0, S0, m1, S1):
    """KL(N(m0, S0) || N(m1, S1)) = 1/2 [tr(S1^-1 S0) + (m1 - m0)^T S1^-1 (m1 - m0) - k + log|S1| - log|S0|]."""
    k = m0.shape[-1]
    S1_inv = np.linalg.inv(S1)
    diff = m1 - m0
    return 0.5 * (
        np.einsum("...ij,...ji->...", S1_inv, S0)
        + np.einsum("...i,...ij,...j->...", diff, S1_inv, diff)
        - k
        + np.linalg.slogdet(S1)[1]
        - np.linalg.slogdet(S0)[1]
    )


def random_spd(rng, k, batch=()):
    A = rng.normal(size=(*batch, k, k))
    return A @ np.swapaxes(A, -1, -2) / k + 0.2 * np.eye(k)


def random_q(rng, kind: str, batch: int):
    """A random Gaussian q of the given kind, with its mean [B, d] and covariance [B, d, d] as numpy arrays."""
    m = rng.normal(size=(batch, d))
    if kind == "diagonal":
        sd = rng.uniform(0.2, 1.5, size=(batch, d))
        return Independent(Normal(t64(m), t64(sd)), 1), m, sd[..., :, None] ** 2 * np.eye(d)
    S = random_spd(rng, d, (batch,))
    return MultivariateNormal(t64(m), covariance_matrix=t64(S)), m, S


def log_normal(value, mean, sd):
    """log N(value; mean, sd^2), elementwise (a fast numpy version of scipy.stats.norm.logpdf)."""
    return -0.5 * ((value - mean) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def np_mixture_log_prob(z, logits, locs, scales):
    """log sum_c pi_c N(z; loc_c, diag scale_c^2): z [..., B, d], logits [B, C], locs/scales [B, C, d]."""
    log_pi = logits - special.logsumexp(logits, -1, keepdims=True)
    comp = log_normal(z[..., None, :], locs, scales).sum(-1)  # [..., B, C]
    return special.logsumexp(log_pi + comp, -1)


# --------------------------------------------------------------------------------------------------------------------
# log_importance_weights
# --------------------------------------------------------------------------------------------------------------------


def test_importance_weights_shapes_and_exact_posterior_weights():
    """With the exact posterior as proposal every weight p(x, z) / p(z | x) equals p(x)."""
    setup = Setup(1)
    lw = log_importance_weights(setup.model, setup.x, setup.posterior_dist(), 5)
    assert lw.shape == (5, 3) and lw.dtype == F64
    np.testing.assert_allclose(np_(lw), np.broadcast_to(setup.log_px(), (5, 3)), rtol=0, atol=1e-8)
    shared = log_importance_weights(setup.model, setup.x, setup.model.prior, 7)  # a shared proposal, batch []
    assert shared.shape == (7, 3)
    assert torch.isfinite(shared).all()


def test_importance_weights_moments_for_a_gaussian_proposal():
    """z ~ q with cov 1.5 x posterior cov (finite weight variance needs > 0.5 x) and a shifted mean:
    E_q[w] = p(x) and E_q[log w] = ELBO(q) = E_q log p(x|z) - KL(q || N(0, I)), each within 4 SE (sample SE)."""
    setup = Setup(2)
    mean, cov = setup.posterior()
    m_q, S_q = mean + 0.3 * np.sqrt(np.diag(cov)), 1.5 * cov
    q = MultivariateNormal(t64(m_q), covariance_matrix=t64(np.broadcast_to(S_q, (3, d, d))))
    K = 20_000
    torch.manual_seed(3)
    lw = np_(log_importance_weights(setup.model, setup.x, q, K))
    assert lw.shape == (K, 3)
    ratio = np.exp(lw - setup.log_px())  # w / p(x), mean 1
    assert np.all(np.abs(ratio.mean(0) - 1) < 4 * ratio.std(0, ddof=1) / math.sqrt(K)), ratio.mean(0)
    S_all = np.broadcast_to(S_q, (3, d, d))
    elbo_q = setup.expected_log_lik(m_q, S_all) - gaussian_kl(m_q, S_all, np.zeros(d), np.eye(d))
    assert np.all(np.abs(lw.mean(0) - elbo_q) < 4 * lw.std(0, ddof=1) / math.sqrt(K)), (lw.mean(0), elbo_q)


# --------------------------------------------------------------------------------------------------------------------
# log_marginal_is
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K, chunk_size", [(1, None), (10, None), (1000, None), (1000, 7), (10, 1000)])
def test_is_with_exact_posterior_is_exact_for_every_K(K, chunk_size):
    setup = Setup(4)
    torch.manual_seed(5)
    est = log_marginal_is(setup.model, setup.x, setup.posterior_dist(), K, chunk_size=chunk_size)
    assert est.shape == (3,) and est.dtype == F64
    np.testing.assert_allclose(np_(est), setup.log_px(), rtol=0, atol=1e-6)


def test_is_with_the_prior_as_shared_proposal_is_the_naive_estimator_in_distribution():
    """With q = p(z) (batch []) the IS estimate is the naive one; both within 4 SE of log p(x) for K = 20000,
    SE of log p^ = sqrt(Var w / K) / p(x) (delta method) with the exact Var w."""
    setup = Setup(6)
    K = 20_000
    torch.manual_seed(7)
    est = np_(log_marginal_is(setup.model, setup.x, setup.model.prior, K))
    p, second = setup.naive_weight_moments()
    se_log = np.sqrt((second - p**2) / K) / p
    assert np.all(np.abs(est - setup.log_px()) < 4 * se_log), (est, setup.log_px(), se_log)


def test_is_chunked_agrees_with_unchunked_within_se():
    """A non-exact Gaussian proposal; the relative SE of each estimate is taken from 10^5 weights drawn here."""
    setup = Setup(8)
    mean, cov = setup.posterior()
    m_q, S_q = mean - 0.4 * np.sqrt(np.diag(cov)), 2.0 * cov
    q = MultivariateNormal(t64(m_q), covariance_matrix=t64(np.broadcast_to(S_q, (3, d, d))))
    z = np.random.default_rng(9).multivariate_normal(np.zeros(d), S_q, size=(100_000, 3)) + m_q  # [M, B, d]
    log_w = setup.log_lik(z) + stats.norm.logpdf(z).sum(-1)
    log_w -= np.stack([stats.multivariate_normal(m_q[i], S_q).logpdf(z[:, i]) for i in range(3)], -1)
    ratio = np.exp(log_w - setup.log_px())
    rel_sd = ratio.std(0, ddof=1)  # sd of w / p(x)
    K = 2000
    torch.manual_seed(10)
    unchunked = np_(log_marginal_is(setup.model, setup.x, q, K))
    chunked = np_(log_marginal_is(setup.model, setup.x, q, K, chunk_size=7))
    se_log = rel_sd / math.sqrt(K)
    assert np.all(np.abs(chunked - unchunked) < 4 * math.sqrt(2) * se_log), (chunked, unchunked, se_log)
    assert np.all(np.abs(chunked - setup.log_px()) < 4 * se_log)


# --------------------------------------------------------------------------------------------------------------------
# log_marginal_naive
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_naive_estimator_is_unbiased_for_px(chunk_size):
    """R = 2000 independent estimates with K = 10 (each x repeated along the batch, z drawn independently per x);
    mean of p^ is within 4 SE of p(x), SE = sqrt(Var_prior[p(x|z)] / (K R)) with the exact variance."""
    setup = Setup(11)
    R, K = 2000, 10
    x_rep = setup.x.repeat(R, 1)  # [R * B, D]
    torch.manual_seed(12)
    est = log_marginal_naive(setup.model, x_rep, K, chunk_size=chunk_size)
    assert est.shape == (R * 3,) and est.dtype == F64
    p_hat = np.exp(np_(est)).reshape(R, 3)
    assert np.unique(p_hat[:, 0]).size == R  # independent draws for each copy of the same x
    p, second = setup.naive_weight_moments()
    se = np.sqrt((second - p**2) / (K * R))
    assert np.all(np.abs(p_hat.mean(0) - p) < 4 * se), (p_hat.mean(0), p, se)


def test_naive_estimator_is_biased_low_in_log_space_for_a_hard_case():
    """Low noise (0.05) makes p(x|z) sharply peaked, so most prior draws miss. For K = 1 the mean of log p^ is
    exactly E_prior[log p(x|z)] (closed form), far below log p(x) (Jensen); for K = 100 the mean of log p^ is
    still clearly below log p(x), and exp(mean log p^) is a small fraction of p(x)."""
    setup = Setup(13, noise=(0.05, 0.06))
    R = 2000
    x_rep = setup.x.repeat(R, 1)
    torch.manual_seed(14)
    log_one = np_(log_marginal_naive(setup.model, x_rep, 1)).reshape(R, 3)
    expected_k1 = setup.expected_log_lik(np.zeros(d), np.eye(d))  # E_{N(0, I)} log p(x | z)
    se_k1 = log_one.std(0, ddof=1) / math.sqrt(R)
    assert np.all(np.abs(log_one.mean(0) - expected_k1) < 4 * se_k1), (log_one.mean(0), expected_k1, se_k1)
    assert np.all(expected_k1 < setup.log_px() - 10)
    log_hundred = np_(log_marginal_naive(setup.model, setup.x.repeat(200, 1), 100)).reshape(200, 3)
    se_100 = log_hundred.std(0, ddof=1) / math.sqrt(200)
    assert np.all(log_hundred.mean(0) < setup.log_px() - 4 * se_100)
    assert np.all(np.exp(log_hundred.mean(0) - setup.log_px()) < 0.5)


def test_naive_chunked_agrees_with_unchunked_within_se():
    """Same K = 4000 with chunk_size 7 and None; each log p^ has SE sqrt(Var w / K) / p(x) (exact Var w).
    A chunked estimator that averaged per-chunk logs would be biased by ~ Var(w/p) / (2 * 7), far beyond this."""
    setup = Setup(15)
    p, second = setup.naive_weight_moments()
    rel_var = second / p**2 - 1
    assert np.all(rel_var > 0.5)  # the bias of a wrong chunk combination would be visible
    K = 4000
    torch.manual_seed(16)
    unchunked = np_(log_marginal_naive(setup.model, setup.x, K))
    chunked = np_(log_marginal_naive(setup.model, setup.x, K, chunk_size=7))
    se_log = np.sqrt(rel_var / K)
    assert np.all(np.abs(chunked - unchunked) < 4 * math.sqrt(2) * se_log), (chunked, unchunked, se_log)
    assert np.all(np.abs(chunked - setup.log_px()) < 4 * se_log)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, torch
    from vaecourse.estimators import log_marginal_is, log_marginal_naive
    from vaecourse.models import LinearGaussian
    torch.manual_seed(0)
    D = 10
    model = LinearGaussian(torch.randn(D, 2, dtype=torch.float64), torch.zeros(D, dtype=torch.float64), 1.0)
    x = model.sample(2)[0]
    log_marginal_naive(model, x, 20_000, chunk_size=10_000)  # warm-up: allocator and code paths
    log_marginal_is(model, x, model.prior, 20_000, chunk_size=10_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    naive = log_marginal_naive(model, x, 10**6, chunk_size=10_000)
    is_ = log_marginal_is(model, x, model.prior, 10**6, chunk_size=10_000)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grown_mb": (after - before) / 1024, "naive": naive.tolist(), "is": is_.tolist(),
                      "W": model.W.tolist(), "x": x.tolist()}))
    """
)


@pytest.mark.slow
def test_a_million_samples_in_small_chunks_keep_memory_bounded_and_are_accurate():
    """K = 10^6 on B = 2 with D = 10 in a fresh process (one thread): unchunked, one [K, B, D] float64 tensor is
    160 MB and the Gaussian log-density holds several at once (about 1 GB measured); chunked by 10^4 they are
    1.6 MB each, so the peak resident memory may grow by no more than 100 MB.

    Both estimates (naive, and IS with the prior as shared proposal) are within 4 SE of the exact log p(x), with
    SE of log p^ = sqrt(Var w / K) / p(x) from the exact second moment of the weights (relative variance ~14 here).
    """
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["grown_mb"] < 100, out["grown_mb"]
    W, x = np.array(out["W"]), np.array(out["x"])
    setup = Setup.from_arrays(W, np.zeros(len(W)), np.ones(len(W)), x)  # the subprocess's model: b = 0, sigma = 1
    p, second = setup.naive_weight_moments(x)
    se_log = np.sqrt((second - p**2) / 10**6) / p
    for key in ("naive", "is"):
        estimate = np.array(out[key])
        assert estimate.shape == (2,)
        assert np.all(np.abs(estimate - setup.log_px(x)) < 4 * se_log), (key, estimate, setup.log_px(x), se_log)


# --------------------------------------------------------------------------------------------------------------------
# effective_sample_size
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 800.0, -800.0])  # +-800: exp overflows / underflows in float64
def test_ess_of_equal_weights_is_K(level):
    lw = torch.full((50,), level, dtype=F64)
    assert abs(effective_sample_size(lw).item() - 50) < 1e-9


def test_ess_of_one_dominant_weight_is_one():
    K = 1000
    lw = torch.full((K,), -60.0, dtype=F64)
    lw[123] = 0.0
    ess = effective_sample_size(lw).item()
    exact = (1 + (K - 1) * math.exp(-60)) ** 2 / (1 + (K - 1) * math.exp(-120))
    assert abs(ess - exact) < 1e-12 and abs(ess - 1) < 1e-12


def test_ess_matches_the_formula_along_either_dim():
    rng = np.random.default_rng(19)
    lw = rng.normal(size=(40, 6)) * 3 + 500  # shifted: naive exp would overflow
    w = np.exp(lw - lw.max())
    ess_0 = w.sum(0) ** 2 / (w**2).sum(0)
    ess_1 = w.sum(1) ** 2 / (w**2).sum(1)
    out_0, out_1 = effective_sample_size(t64(lw)), effective_sample_size(t64(lw), dim=1)
    assert out_0.shape == (6,) and out_1.shape == (40,)
    np.testing.assert_allclose(np_(out_0), ess_0, rtol=1e-10)
    np.testing.assert_allclose(np_(out_1), ess_1, rtol=1e-10)
    assert np.all((np_(out_0) >= 1 - 1e-12) & (np_(out_0) <= 40 + 1e-9))


# --------------------------------------------------------------------------------------------------------------------
# kl
# --------------------------------------------------------------------------------------------------------------------


def test_kl_analytic_on_registered_pairs_matches_kl_divergence_and_closed_form():
    rng = np.random.default_rng(20)
    B = 4
    m, sd = rng.normal(size=(B, d)), rng.uniform(0.3, 1.5, size=(B, d))
    q = Independent(Normal(t64(m), t64(sd)), 1)
    p = Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)
    out = kl(q, p)
    assert out.shape == (B,)
    np.testing.assert_allclose(np_(out), np_(kl_divergence(q, p)), rtol=1e-12, atol=1e-12)
    closed = 0.5 * (sd**2 + m**2 - 1 - np.log(sd**2)).sum(-1)
    np.testing.assert_allclose(np_(out), closed, rtol=1e-12, atol=1e-12)
    S0, S1, m1 = random_spd(rng, d, (B,)), random_spd(rng, d, (B,)), rng.normal(size=(B, d))
    q_full = MultivariateNormal(t64(m), covariance_matrix=t64(S0))
    p_full = MultivariateNormal(t64(m1), covariance_matrix=t64(S1))
    out = kl(q_full, p_full)
    np.testing.assert_allclose(np_(out), np_(kl_divergence(q_full, p_full)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_(out), gaussian_kl(m, S0, m1, S1), rtol=1e-10, atol=1e-12)


def test_kl_converts_mixed_gaussian_pairs_analytically():
    """Independent(Normal) vs MultivariateNormal is not registered in torch; kl() must still be analytic (no z)."""
    rng = np.random.default_rng(21)
    B = 3
    m0, sd0 = rng.normal(size=(B, d)), rng.uniform(0.3, 1.5, size=(B, d))
    m1, S1 = rng.normal(size=(B, d)), random_spd(rng, d, (B,))
    S0 = sd0[..., :, None] ** 2 * np.eye(d)
    diag = Independent(Normal(t64(m0), t64(sd0)), 1)
    full = MultivariateNormal(t64(m1), covariance_matrix=t64(S1))
    np.testing.assert_allclose(np_(kl(diag, full)), gaussian_kl(m0, S0, m1, S1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_(kl(full, diag)), gaussian_kl(m1, S1, m0, S0), rtol=1e-10, atol=1e-12)
    prior = LinearGaussian(torch.ones(D, d, dtype=F64), torch.zeros(D, dtype=F64), 1.0).prior
    np.testing.assert_allclose(
        np_(kl(full, prior)), gaussian_kl(m1, S1, np.zeros(d), np.eye(d)), rtol=1e-10, atol=1e-12
    )


def mixture_q(B: int = 2, C: int = 3, seed: int = 22):
    rng = np.random.default_rng(seed)
    logits, locs, scales = rng.normal(size=(B, C)), rng.normal(size=(B, C, d)) * 1.5, rng.uniform(0.3, 1.0, (B, C, d))
    q = MixtureSameFamily(Categorical(logits=t64(logits)), Independent(Normal(t64(locs), t64(scales)), 1))
    return q, (logits, locs, scales)


def test_kl_monte_carlo_fallback_is_the_sample_mean_given_z():
    q, params = mixture_q()
    p = Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)
    torch.manual_seed(23)
    z = q.sample((500,))  # [S, B, d]
    out = kl(q, p, z)
    assert out.shape == (2,)
    expected = (np_mixture_log_prob(np_(z), *params) - stats.norm.logpdf(np_(z)).sum(-1)).mean(0)
    np.testing.assert_allclose(np_(out), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_kl_monte_carlo_fallback_agrees_with_a_million_sample_reference():
    """kl(q, p, z) with 20000 samples vs a 10^6-sample numpy reference; tolerance 4 sqrt(se^2 + se_ref^2)."""
    q, params = mixture_q()
    p = Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)
    torch.manual_seed(24)
    z = q.sample((20_000,))
    out = np_(kl(q, p, z))
    per_sample = np_mixture_log_prob(np_(z), *params) - stats.norm.logpdf(np_(z)).sum(-1)
    se = per_sample.std(0, ddof=1) / math.sqrt(len(per_sample))
    # reference: ancestral sampling in numpy
    logits, locs, scales = params
    rng = np.random.default_rng(25)
    M = 10**6
    probs = special.softmax(logits, -1)
    z_ref = np.empty((M, 2, d))
    for i in range(2):
        comp = rng.choice(len(probs[i]), size=M, p=probs[i])
        z_ref[:, i] = locs[i, comp] + scales[i, comp] * rng.normal(size=(M, d))
    ref_values = np_mixture_log_prob(z_ref, *params) - log_normal(z_ref, 0.0, 1.0).sum(-1)
    ref, se_ref = ref_values.mean(0), ref_values.std(0, ddof=1) / math.sqrt(M)
    assert np.all(np.abs(out - ref) < 4 * np.sqrt(se**2 + se_ref**2)), (out, ref, se, se_ref)


# --------------------------------------------------------------------------------------------------------------------
# elbo
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_terms_contract_and_values_given_z(analytic_kl):
    """Given the returned z, every term is deterministic: log_px_z = mean_s log p(x|z_s) (scipy), kl = the analytic
    Gaussian KL or mean_s [log q(z_s) - log p(z_s)], elbo = log_px_z - kl."""
    setup = Setup(26)
    rng = np.random.default_rng(27)
    q, m, S = random_q(rng, "diagonal", 3)
    torch.manual_seed(28)
    terms = elbo(setup.model, setup.x, q, num_samples=6, analytic_kl=analytic_kl)
    assert isinstance(terms, ElboTerms)
    assert terms.elbo.shape == terms.log_px_z.shape == terms.kl.shape == (3,)
    assert terms.z.shape == (6, 3, d)
    z = np_(terms.z)
    np.testing.assert_allclose(np_(terms.log_px_z), setup.log_lik(z).mean(0), rtol=1e-12, atol=1e-10)
    if analytic_kl:
        expected_kl = gaussian_kl(m, S, np.zeros(d), np.eye(d))
    else:
        sd = np.sqrt(np.diagonal(S, axis1=-2, axis2=-1))
        expected_kl = (stats.norm.logpdf(z, m, sd).sum(-1) - stats.norm.logpdf(z).sum(-1)).mean(0)
    np.testing.assert_allclose(np_(terms.kl), expected_kl, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(np_(terms.elbo), np_(terms.log_px_z - terms.kl), rtol=0, atol=1e-12)
    # the default num_samples is 1
    assert elbo(setup.model, setup.x, q).z.shape == (1, 3, d)


@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_monte_carlo_elbo_within_se_of_exact_elbo(kind):
    """num_samples = 20000; SE from the per-sample values log p(x|z_s) (analytic KL is a constant)."""
    setup = Setup(29)
    q, m, S = random_q(np.random.default_rng(30), kind, 3)
    torch.manual_seed(31)
    terms = elbo(setup.model, setup.x, q, num_samples=20_000)
    per_sample = setup.log_lik(np_(terms.z))  # [S, B]
    se = per_sample.std(0, ddof=1) / math.sqrt(len(per_sample))
    exact = np_(exact_elbo(setup.model, setup.x, q).elbo)
    assert np.all(np.abs(np_(terms.elbo) - exact) < 4 * se), (np_(terms.elbo), exact, se)


def test_analytic_and_monte_carlo_kl_elbos_agree_within_se():
    setup = Setup(32)
    q, m, S = random_q(np.random.default_rng(33), "full", 3)
    num = 20_000
    torch.manual_seed(34)
    analytic = elbo(setup.model, setup.x, q, num_samples=num, analytic_kl=True)
    monte_carlo = elbo(setup.model, setup.x, q, num_samples=num, analytic_kl=False)
    se_a = setup.log_lik(np_(analytic.z)).std(0, ddof=1) / math.sqrt(num)
    z = np_(monte_carlo.z)
    log_q = np.stack([stats.multivariate_normal(m[i], S[i]).logpdf(z[:, i]) for i in range(3)], -1)
    per_sample = setup.log_lik(z) + stats.norm.logpdf(z).sum(-1) - log_q
    se_m = per_sample.std(0, ddof=1) / math.sqrt(num)
    np.testing.assert_allclose(np_(monte_carlo.elbo), per_sample.mean(0), rtol=1e-10, atol=1e-10)
    diff = np.abs(np_(analytic.elbo) - np_(monte_carlo.elbo))
    assert np.all(diff < 4 * np.sqrt(se_a**2 + se_m**2)), (diff, se_a, se_m)


def test_exact_posterior_as_q_makes_the_elbo_tight():
    """q = p(z|x): exact_elbo = log p(x); and with analytic_kl=False every per-sample term log p(x, z) - log q(z)
    equals log p(x), so the Monte Carlo ELBO is exact for any number of samples."""
    setup = Setup(35)
    post = setup.posterior_dist()
    exact = exact_elbo(setup.model, setup.x, post)
    assert exact.z is None
    np.testing.assert_allclose(np_(exact.elbo), setup.log_px(), rtol=0, atol=1e-8)
    torch.manual_seed(36)
    mc = elbo(setup.model, setup.x, post, num_samples=5, analytic_kl=False)
    np.testing.assert_allclose(np_(mc.elbo), setup.log_px(), rtol=0, atol=1e-8)


# --------------------------------------------------------------------------------------------------------------------
# exact_elbo
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_exact_elbo_terms_and_gap_identity(kind):
    """log p(x) - ELBO(q) = KL(q || p(z|x)), with KL(q || posterior) by the Gaussian formula (float64, 1e-6 rel)."""
    setup = Setup(37)
    rng = np.random.default_rng(38)
    for _ in range(5):
        q, m, S = random_q(rng, kind, 3)
        terms = exact_elbo(setup.model, setup.x, q)
        assert isinstance(terms, ElboTerms) and terms.z is None
        assert terms.elbo.shape == terms.log_px_z.shape == terms.kl.shape == (3,)
        np.testing.assert_allclose(np_(terms.log_px_z), setup.expected_log_lik(m, S), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(
            np_(terms.kl), gaussian_kl(m, S, np.zeros(d), np.eye(d)), rtol=1e-12, atol=1e-12
        )
        np.testing.assert_allclose(np_(terms.elbo), np_(terms.log_px_z - terms.kl), rtol=0, atol=1e-12)
        mean, cov = setup.posterior()
        kl_post = gaussian_kl(m, S, mean, np.broadcast_to(cov, S.shape))
        gap = setup.log_px() - np_(terms.elbo)
        np.testing.assert_allclose(gap, kl_post, rtol=1e-6, atol=1e-12)
        assert np.all(np_(terms.elbo) < setup.log_px())  # ELBO <= log p(x), strictly for q != posterior


# --------------------------------------------------------------------------------------------------------------------
# gradients through rsample
# --------------------------------------------------------------------------------------------------------------------


def test_gradient_through_rsample_reaches_q_parameters():
    """For q = N(loc, diag scale^2), z_s = loc + scale eps_s, the gradient of log_px_z (analytic KL excluded) is
    mean_s g_s for loc and mean_s g_s * eps_s for scale, g_s = W^T Psi^-1 (x - W z_s - b): exact given z. Its
    expectation, W^T Psi^-1 (x - W loc - b) and -(W^T Psi^-1 W)_ii scale_i, is met within 4 SE."""
    setup = Setup(39)
    rng = np.random.default_rng(40)
    m0, sd0 = rng.normal(size=(3, d)), rng.uniform(0.3, 1.0, size=(3, d))
    loc = t64(m0).requires_grad_(True)
    scale = t64(sd0).requires_grad_(True)
    q = Independent(Normal(loc, scale), 1)
    num = 20_000
    torch.manual_seed(41)
    terms = elbo(setup.model, setup.x, q, num_samples=num)
    terms.log_px_z.sum().backward()
    assert loc.grad is not None and scale.grad is not None
    z = np_(terms.z)
    psi_inv = 1 / setup.s**2
    g = (setup.x_np - z @ setup.W.T - setup.b) * psi_inv @ setup.W  # [S, B, d]
    eps = (z - m0) / sd0
    np.testing.assert_allclose(np_(loc.grad), g.mean(0), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np_(scale.grad), (g * eps).mean(0), rtol=1e-8, atol=1e-10)
    exact_loc = (setup.x_np - m0 @ setup.W.T - setup.b) * psi_inv @ setup.W
    exact_scale = -np.diag(setup.W.T @ np.diag(psi_inv) @ setup.W) * sd0
    se_loc = g.std(0, ddof=1) / math.sqrt(num)
    se_scale = (g * eps).std(0, ddof=1) / math.sqrt(num)
    assert np.all(np.abs(np_(loc.grad) - exact_loc) < 4 * se_loc)
    assert np.all(np.abs(np_(scale.grad) - exact_scale) < 4 * se_scale)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_gradient_reaches_q_and_model_parameters(analytic_kl):
    setup = Setup(42)
    loc = torch.zeros(3, d, dtype=F64, requires_grad=True)
    log_scale = torch.full((3, d), -0.5, dtype=F64, requires_grad=True)
    q = Independent(Normal(loc, log_scale.exp()), 1)
    torch.manual_seed(43)
    elbo(setup.model, setup.x, q, num_samples=4, analytic_kl=analytic_kl).elbo.sum().backward()
    for tensor in [loc, log_scale, *setup.model.parameters()]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------------------------
# duck typing and bad input
# --------------------------------------------------------------------------------------------------------------------


class ScalarModel:
    """Not a LinearGaussian: z ~ N(0, 1), x | z ~ N(z, 0.5^2), so p(x) = N(0, 1.25), p(z|x) = N(0.8 x, 0.2)."""

    prior = Independent(Normal(torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)), 1)

    def likelihood(self, z):
        return Independent(Normal(z, torch.full_like(z, 0.5)), 1)


def test_estimators_accept_any_model_with_prior_and_likelihood():
    x = t64([[0.3], [-1.7], [2.2]])
    exact = stats.norm.logpdf(np_(x[:, 0]), 0, math.sqrt(1.25))
    post = Independent(Normal(0.8 * x, torch.full_like(x, math.sqrt(0.2))), 1)
    torch.manual_seed(44)
    np.testing.assert_allclose(np_(log_marginal_is(ScalarModel(), x, post, 50)), exact, rtol=0, atol=1e-10)
    K = 20_000
    est = np_(log_marginal_naive(ScalarModel(), x, K))
    # exact naive-weight variance for the scalar model, via the D = 1 formula
    p = np.exp(exact)
    second = (4 * np.pi) ** -0.5 / 0.5 * stats.norm.pdf(np_(x[:, 0]), 0, math.sqrt(1 + 0.125))
    assert np.all(np.abs(est - exact) < 4 * np.sqrt((second - p**2) / K) / p)


BAD_NUM_SAMPLES = [0, -2, 2.5, 3.0]


@pytest.mark.parametrize("num_samples", BAD_NUM_SAMPLES)
def test_bad_num_samples_raise(num_samples):
    setup = Setup(45)
    q = setup.posterior_dist()
    calls = [
        lambda: log_importance_weights(setup.model, setup.x, q, num_samples),
        lambda: log_marginal_naive(setup.model, setup.x, num_samples),
        lambda: log_marginal_is(setup.model, setup.x, q, num_samples),
        lambda: elbo(setup.model, setup.x, q, num_samples=num_samples),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"(?i)num_samples|sample"):
            call()


def test_x_with_the_wrong_last_dim_raises_from_the_model():
    setup = Setup(46)
    bad_x = torch.zeros(3, D + 1, dtype=F64)
    q = Independent(Normal(torch.zeros(3, d, dtype=F64), torch.ones(3, d, dtype=F64)), 1)
    for call in [
        lambda: log_marginal_naive(setup.model, bad_x, 10),
        lambda: log_marginal_is(setup.model, bad_x, q, 10),
        lambda: log_importance_weights(setup.model, bad_x, q, 10),
        lambda: elbo(setup.model, bad_x, q, num_samples=2),
        lambda: exact_elbo(setup.model, bad_x, q),
    ]:
        with pytest.raises(ValueError):
            call()
