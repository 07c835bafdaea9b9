"""Contract tests for vaecourse.vae: shapes, gradients, the ELBO's terms, the data layer, input checks."""

import math

import pytest
import torch
from data_helpers import binary
from torch.distributions import Bernoulli, Binomial, Independent

import vaecourse as vc
from vaecourse.sparse import SparseInputLinear
from vaecourse.vae import GreyLevels


def small_vae(**overrides):
    fields = dict(data_dim=12, latent_dim=3, hidden_dims=(16, 8), likelihood="bernoulli")
    fields.update(overrides)
    torch.manual_seed(0)
    return vc.VAE(vc.VAEConfig(**fields))


def small_conv_vae(**overrides):
    """The convolutional VAE (chapter 10) at its smallest: the contract tests below marked with ``architectures``
    hold for it too (tests/test_conv.py has the conv-only ones)."""
    return small_vae(data_dim=784, hidden_dims=(16,), channels=(4, 8), architecture="conv", **overrides)


# the model and the number of pixels of each architecture
architectures = pytest.mark.parametrize("make, pixels", [(small_vae, 12), (small_conv_vae, 784)], ids=["mlp", "conv"])


@pytest.mark.parametrize("batch_shape", [(), (1,), (5,), (2, 3)])
def test_shapes_across_batch_shapes(batch_shape):
    model = small_vae()
    x = binary(*batch_shape, 12)
    q = model.encode(x)
    assert q.batch_shape == batch_shape and q.event_shape == (3,)
    z = q.rsample((4,))
    assert z.shape == (4, *batch_shape, 3)
    p_x = model.likelihood(z)
    assert p_x.batch_shape == (4, *batch_shape) and p_x.event_shape == (12,)
    assert model.prior.event_shape == (3,) and model.prior.batch_shape == ()
    terms = model.elbo(x, num_samples=4)
    for name in ("elbo", "log_px_z", "kl"):
        assert getattr(terms, name).shape == batch_shape
    assert terms.z.shape == (4, *batch_shape, 3)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(7).shape == (7, 12)
    assert model.decode is not None and model.decode(z).event_shape == (12,)


@pytest.mark.parametrize("scale", ["softplus", "exp"])
@pytest.mark.parametrize("sparse", [False, True])
def test_gradients_reach_every_parameter_through_rsample(scale, sparse):
    model = small_vae(scale=scale, sparse_input=sparse)
    model.elbo(binary(6, 12), num_samples=2).elbo.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    # the encoder's σ receives a gradient only through the sample z = μ + σ·ε and the KL
    assert model.encode(binary(6, 12)).has_rsample


@architectures
def test_elbo_terms_add_up_and_beta_weighs_the_kl(make, pixels):
    model = make()
    x = binary(8, pixels)
    torch.manual_seed(1)
    terms = model.elbo(x, num_samples=3)
    assert torch.equal(terms.elbo, terms.log_px_z - terms.kl)
    torch.manual_seed(1)
    weighted = model.elbo(x, num_samples=3, beta=0.25)
    assert torch.equal(weighted.log_px_z, terms.log_px_z) and torch.equal(weighted.kl, terms.kl)
    assert torch.equal(weighted.elbo, terms.elbo)  # the ELBO is reported whatever β
    assert torch.allclose(weighted.objective, terms.log_px_z - 0.25 * terms.kl)  # what training climbs
    assert torch.equal(terms.objective, terms.elbo)
    assert (terms.kl >= 0).all()


def test_elbo_is_the_lecture_formula_written_out():
    """log p(x|z) summed over pixels, and the Gaussian KL of chapter 5, at the sampled z."""
    model = small_vae().double()
    x = binary(5, 12).double()
    torch.manual_seed(3)
    terms = model.elbo(x, num_samples=1)
    q = model.encode(x)
    logits = model.decoder.net(terms.z[0])
    by_hand = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    assert torch.allclose(terms.log_px_z, by_hand, atol=1e-12)
    kl = vc.gaussian.kl_to_standard_normal(q.mean, q.stddev)
    assert torch.allclose(terms.kl, kl, atol=1e-12)


@architectures
def test_analytic_and_monte_carlo_kl_agree_within_standard_error(make, pixels):
    model = make().double()
    x = binary(1, pixels).double()
    torch.manual_seed(4)
    num_samples = 20_000 if pixels == 12 else 2_000  # the conv decoder runs once per sample
    q = model.encode(x)
    z = q.rsample((num_samples,))  # [S, 1, d]
    log_ratio = (q.log_prob(z) - model.prior.log_prob(z))[:, 0]
    analytic = model.elbo(x, num_samples=1).kl[0]
    standard_error = log_ratio.std() / math.sqrt(num_samples)
    assert abs(log_ratio.mean() - analytic) < 4 * standard_error  # 4 SE: fails by chance with prob. 6e-5
    torch.manual_seed(5)
    exact = model.elbo(x, num_samples=num_samples, analytic_kl=True)
    torch.manual_seed(5)
    sampled = model.elbo(x, num_samples=num_samples, analytic_kl=False)
    # same z, so the difference is the Monte Carlo error of the KL alone
    assert abs((exact.elbo - sampled.elbo)[0]) < 4 * standard_error


def test_sparse_input_layer_equals_the_dense_one_in_value_and_gradient():
    torch.manual_seed(0)
    for x in (binary(9, 30), torch.rand(9, 30) * (torch.rand(9, 30) < 0.2), torch.zeros(4, 30)):
        dense = SparseInputLinear(30, 7, sparse=False)
        sparse = SparseInputLinear(30, 7, sparse=True)
        sparse.load_state_dict(dense.state_dict())
        out_dense, out_sparse = dense(x), sparse(x)
        assert torch.allclose(out_dense, out_sparse, atol=1e-6)
        grad = torch.randn_like(out_dense)
        out_dense.backward(grad)
        out_sparse.backward(grad)
        assert torch.allclose(dense.weight.grad, sparse.weight.grad, atol=1e-5)
        assert torch.allclose(dense.bias.grad, sparse.bias.grad, atol=1e-5)
    layer = SparseInputLinear(30, 7, sparse=True)
    assert layer(binary(2, 3, 30)).shape == (2, 3, 7)  # leading batch dimensions are kept


def test_sparse_layer_initialises_like_nn_linear():
    torch.manual_seed(0)
    ours = SparseInputLinear(50, 20)
    torch.manual_seed(0)
    reference = torch.nn.Linear(50, 20)
    assert torch.equal(ours.weight, reference.weight.t())
    assert torch.equal(ours.bias, reference.bias)


def test_grey_levels_is_a_normalised_binomial_over_k_over_n():
    logits = torch.tensor([-1.3, 0.0, 2.1], dtype=torch.float64)
    levels = GreyLevels(16, logits=logits)
    values = torch.arange(17, dtype=torch.float64)[:, None].expand(17, 3) / 16
    total = levels.log_prob(values).exp().sum(0)
    assert torch.allclose(total, torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(levels.log_prob(values), Binomial(16, logits=logits).log_prob(values * 16))
    assert torch.allclose(levels.mean, torch.sigmoid(logits))
    torch.manual_seed(0)
    draws = levels.sample((20_000,))
    assert ((draws * 16 - (draws * 16).round()).abs() < 1e-9).all() and draws.min() >= 0 and draws.max() <= 1
    # the sample mean is within 4 standard errors of p
    se = torch.sqrt(levels.variance / 20_000)
    assert ((draws.mean(0) - levels.mean).abs() < 4 * se).all()
    one_level = GreyLevels(1, logits=logits)
    x = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(one_level.log_prob(x), Bernoulli(logits=logits).log_prob(x))


@architectures
def test_likelihoods_are_per_image_distributions(make, pixels):
    likelihood = make().likelihood(torch.zeros(2, 3))
    assert isinstance(likelihood, Independent)
    assert likelihood.batch_shape == (2,) and likelihood.event_shape == (pixels,)
    grey = small_vae(likelihood="binomial", levels=4)
    x = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 0.0, 0.5]])
    assert grey.elbo(x).elbo.shape == (1,)


def test_estimators_of_chapters_2_and_3_evaluate_the_vae_unchanged():
    model = small_vae().double()
    x = binary(4, 12).double()
    torch.manual_seed(0)
    iwae = vc.estimators.log_marginal_is(model, x, model.encode(x), 500)
    naive = vc.estimators.log_marginal_naive(model, x, 20_000)
    assert iwae.shape == naive.shape == (4,)
    # with 3 latent dimensions both estimators converge; they agree to well under a nat
    assert (iwae - naive).abs().max() < 0.2


@architectures
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda pixels: torch.zeros(3, pixels - 1), r"shape \[\.\.\., {pixels}\]"),
        (lambda pixels: torch.zeros(3, pixels, dtype=torch.long), "floating-point"),
        (lambda pixels: torch.full((3, pixels), 0.5), "binary"),
        (lambda pixels: torch.full((3, pixels), float("nan")), "binary"),
        (lambda pixels: "not a tensor", r"shape \[\.\.\., {pixels}\]"),
    ],
    ids=["width", "integers", "grey", "nan", "not-a-tensor"],
)
def test_bad_input_gets_a_clear_error(make, pixels, bad, message):
    model, x, message = make(), bad(pixels), message.format(pixels=pixels)
    with pytest.raises(ValueError, match=message):
        model.elbo(x)
    with pytest.raises(ValueError, match=message):
        model.encode(x)


def test_grey_level_checks_and_latent_shape_checks():
    grey = small_vae(likelihood="binomial", levels=16)
    with pytest.raises(ValueError, match="grey levels k/16"):
        grey.elbo(torch.full((2, 12), 0.3))
    with pytest.raises(ValueError, match="grey levels"):
        grey.elbo(torch.full((2, 12), 1.5))
    with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 3\]"):
        small_vae().likelihood(torch.zeros(2, 4))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden_dims": (400, -1)}, "hidden_dims"),
        ({"likelihood": "poisson"}, "likelihood"),  # "gaussian" is a decoder since chapter 9
        ({"scale": "square"}, "scale"),
        ({"min_scale": -1.0}, "min_scale"),
        ({"prior": "vamp-typo"}, "prior"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        vc.VAEConfig(**fields)


def test_scale_floor_and_sampling_modes():
    model = small_vae(min_scale=0.05)
    with torch.no_grad():
        model.encoder.net[-1].bias.fill_(-50.0)  # softplus(-50) ≈ 0: σ sits on its floor
    q = model.encode(binary(3, 12))
    assert torch.allclose(q.stddev, torch.full_like(q.stddev, 0.05), atol=1e-6)
    torch.manual_seed(0)
    draws = model.sample(5, mean=False)
    assert ((draws == 0) | (draws == 1)).all()
    means = model.sample(5)
    assert ((means > 0) & (means < 1)).all()


def test_sparse_input_layer_is_exact_for_grey_inputs_without_gradients():
    """A VampPrior sends grey pseudo-inputs through the data layer, with and without autograd: same numbers."""
    torch.manual_seed(0)
    layer = SparseInputLinear(30, 7, sparse=True)
    grey = torch.rand(5, 30)
    with torch.no_grad():
        assert torch.allclose(layer(grey), grey @ layer.weight + layer.bias, atol=1e-6)
    model = small_vae(sparse_input=True, prior="vamp", prior_options={"num_components": 4})
    z = torch.randn(6, 3)
    with_grad = model.prior.log_prob(z)
    with torch.no_grad():
        without_grad = model.prior.log_prob(z)
    assert torch.allclose(with_grad, without_grad, atol=1e-5)
