"""vaecourse.priors: each prior is a module returning a distribution whose sample and log_prob agree (chapters 6, 8)."""

import math

import pytest
import torch

import vaecourse as vc
from vaecourse.priors import FlowPrior, MixtureOfGaussians, StandardNormal, VampPrior, make_prior

GRID = torch.linspace(-9, 9, 721, dtype=torch.float64)  # spacing 0.025
STEP = (GRID[1] - GRID[0]).item()


def two_d_priors():
    """Each prior in 2-D, in float64, with parameters moved away from their initial values."""
    torch.manual_seed(0)
    mog = MixtureOfGaussians(2, num_components=4).double()
    with torch.no_grad():
        mog.logits.copy_(torch.tensor([0.5, -1.0, 0.0, 1.0]))
        mog.loc.mul_(1.5)
        mog.raw_scale.add_(torch.randn_like(mog.raw_scale) * 0.5)
    encoder = vc.VAE(vc.VAEConfig(data_dim=6, latent_dim=2, hidden_dims=(8,), likelihood="binomial")).double().encoder
    vamp = VampPrior(2, num_components=5, data_dim=6).double()
    with torch.no_grad():
        vamp.pseudo_logits.copy_(torch.randn(5, 6, dtype=torch.float64) * 3)
    flow = FlowPrior(2, transforms=2, hidden_dims=(16,)).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return {
        "standard": (StandardNormal(2).double(), ()),
        "mog": (mog, ()),
        "vamp": (vamp, (encoder,)),
        "flow": (flow, ()),
    }


PRIOR_NAMES = ["standard", "mog", "vamp", "flow"]


def density_on_grid(distribution):
    z1, z2 = torch.meshgrid(GRID, GRID, indexing="ij")
    points = torch.stack([z1, z2], dim=-1)  # [G, G, 2]
    with torch.no_grad():
        return distribution.log_prob(points).exp(), points


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_normalises_to_one_by_quadrature_in_2d(name):
    module, args = two_d_priors()[name]
    density, _ = density_on_grid(module(*args))
    total = density.sum().item() * STEP**2
    assert abs(total - 1) < 2e-3, total  # the grid covers ±9, far past every component


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_sample_and_log_prob_agree(name):
    """Moments and a tail probability of 40 000 samples against quadrature of exp(log_prob), within 4 SE."""
    module, args = two_d_priors()[name]
    distribution = module(*args)
    torch.manual_seed(1)
    with torch.no_grad():
        samples = distribution.sample((40_000,)).double()  # [N, 2]
    density, points = density_on_grid(distribution)
    weights = density * STEP**2
    tests = {
        "z1": lambda z: z[..., 0],
        "z2": lambda z: z[..., 1],
        "z1^2": lambda z: z[..., 0] ** 2,
        "z1 z2": lambda z: z[..., 0] * z[..., 1],
        "P(z1 + z2 > 0.5)": lambda z: (z[..., 0] + z[..., 1] > 0.5).double(),
    }
    for label, f in tests.items():
        values = f(samples)
        standard_error = values.std().item() / math.sqrt(len(values))
        quadrature = (f(points) * weights).sum().item()
        # 4 SE, plus the quadrature's own error (about 1e-3 for these smooth densities)
        assert abs(values.mean().item() - quadrature) < 4 * standard_error + 2e-3, (label, quadrature)


@pytest.mark.parametrize("name", ["mog", "vamp", "flow"])
def test_gradients_reach_every_parameter(name):
    module, args = two_d_priors()[name]
    distribution = module(*args)
    z = torch.randn(64, 2, dtype=torch.float64)
    distribution.log_prob(z).sum().backward()
    for parameter_name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name
    if distribution.has_rsample:  # the flow: reparameterized samples carry gradients too
        module.zero_grad()
        distribution = module(*args)
        distribution.rsample((8,)).sum().backward()
        assert all(p.grad is not None for p in module.parameters())


def test_mixture_log_prob_is_the_mixture_formula():
    """log Σ_k π_k Π_j N(z_j; μ_kj, σ_kj²): the logsumexp runs over components after summing over dimensions."""
    module, _ = two_d_priors()["mog"]
    z = torch.randn(10, 2, dtype=torch.float64)
    weights = torch.softmax(module.logits, 0)
    scale = torch.nn.functional.softplus(module.raw_scale) + module.min_scale
    by_hand = torch.zeros(10, dtype=torch.float64)
    for k in range(4):
        density = torch.exp(-0.5 * ((z - module.loc[k]) / scale[k]) ** 2) / (scale[k] * math.sqrt(2 * math.pi))
        by_hand += weights[k] * density.prod(-1)
    assert torch.allclose(module().log_prob(z), by_hand.log(), atol=1e-10)


@pytest.mark.parametrize(("prior", "options"), [("standard", {}), ("mog", {"num_components": 3}),
                                                ("vamp", {"num_components": 4}), ("flow", {"transforms": 2})])
def test_save_and_load_round_trip_with_each_prior(tmp_path, prior, options):
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=12, latent_dim=2, hidden_dims=(8,), prior=prior, prior_options=options))
    x = (torch.rand(20, 12) < 0.3).float()
    vc.fit(model, x, config=vc.TrainConfig(epochs=2, batch_size=5, progress=False))
    restored = vc.load(vc.save(model, tmp_path / "model.pt"))
    z = torch.randn(7, 2)
    assert torch.allclose(model.prior.log_prob(z), restored.prior.log_prob(z))
    assert restored.config.prior == prior and restored.config.prior_options == options


def test_vamp_prior_starts_from_training_images():
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=12, latent_dim=2, hidden_dims=(8,), prior="vamp",
                                prior_options={"num_components": 4}))
    x = (torch.rand(30, 12) < 0.3).float()
    vc.fit(model, x, config=vc.TrainConfig(epochs=1, batch_size=30, lr=1e-9, progress=False))
    pseudo = model.latent_prior.pseudo_inputs
    softened = 0.05 + 0.9 * x
    assert all(any(torch.allclose(p, row, atol=1e-5) for row in softened) for p in pseudo)
    assert bool(model.latent_prior.initialised)
    with pytest.raises(ValueError, match="need at least as many examples"):
        VampPrior(2, num_components=50, data_dim=12).initialise_from_data(x)


def test_standard_normal_is_n_0_i_and_follows_the_model():
    prior = StandardNormal(3)()
    assert prior.event_shape == (3,) and prior.batch_shape == ()
    assert math.isclose(prior.log_prob(torch.zeros(3)).item(), -1.5 * math.log(2 * math.pi), rel_tol=1e-6)
    assert prior.rsample((4, 2)).shape == (4, 2, 3)
    module = StandardNormal(2).double()
    assert module().mean.dtype == torch.float64
    assert set(module.state_dict()) == {"loc", "scale"} and not list(module.parameters())


def test_make_prior_rejects_unknown_names_options_and_sizes():
    assert isinstance(make_prior("standard", 4), StandardNormal)
    assert make_prior("mog", 4, num_components=7).num_components == 7
    with pytest.raises(ValueError, match="unknown prior"):
        make_prior("flowy", 4)
    with pytest.raises(ValueError, match="does not take"):
        make_prior("standard", 4, num_components=3)
    with pytest.raises(ValueError, match="needs data_dim"):
        make_prior("vamp", 4)
    with pytest.raises(ValueError, match="latent_dim"):
        StandardNormal(0)
    with pytest.raises(ValueError, match="does not take"):
        vc.VAEConfig(prior="mog", prior_options={"components": 3})


# --- The Prior contract: every entry of PRIORS and the AggregatePrior of chapter 7 ------------------------------


def contract_priors():
    """Each prior in 3-D on 6-pixel grey images, with the VAE whose encoder it is called with."""
    torch.manual_seed(1)
    cases = {}
    for name in vc.priors.PRIORS:
        options = {"num_components": 4} if name in ("mog", "vamp") else {}
        config = vc.VAEConfig(data_dim=6, latent_dim=3, hidden_dims=(8,), likelihood="binomial", prior=name,
                              prior_options=options)
        cases[name] = vc.VAE(config)
    model = vc.VAE(vc.VAEConfig(data_dim=6, latent_dim=3, hidden_dims=(8,), likelihood="binomial"))
    x = torch.randint(0, 17, (10, 6)).float() / 16
    model.latent_prior = vc.surgery.AggregatePrior(vc.surgery.aggregate_posterior(model, x))
    cases["aggregate"] = model
    return cases


CONTRACT_NAMES = [*vc.priors.PRIORS, "aggregate"]


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_every_prior_is_a_prior_returning_a_distribution_of_the_latent_space(name):
    model = contract_priors()[name]
    prior = model.latent_prior
    assert isinstance(prior, vc.priors.Prior) and prior.latent_dim == 3
    p = prior(model.encoder)
    assert isinstance(p, torch.distributions.Distribution) and p.event_shape == (3,)
    assert model.prior.event_shape == (3,)
    for shape in [(), (5,), (2, 4)]:
        z = p.sample(shape)
        assert z.shape == (*shape, 3)
        log_p = p.log_prob(z)
        assert log_p.shape == shape and bool(torch.isfinite(log_p).all())
    prior.initialise_from_data((torch.rand(20, 6) * 16).round() / 16)  # a no-op or a start from the data


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_gradients_reach_the_parameters_of_every_prior_and_z(name):
    model = contract_priors()[name]
    z = torch.randn(7, 3, requires_grad=True)
    model.prior.log_prob(z).sum().backward()
    assert z.grad is not None and bool(torch.isfinite(z.grad).all()) and z.grad.abs().sum() > 0
    for parameter_name, parameter in model.latent_prior.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_every_prior_round_trips_through_a_checkpoint_or_is_refused_clearly(name, tmp_path):
    model = contract_priors()[name]
    path = tmp_path / "model.pt"
    if name == "aggregate":
        with pytest.raises(ValueError, match="AggregatePrior.*config names 'standard'"):
            vc.save(model, path)
        assert not path.exists()
        return
    restored = vc.load(vc.save(model, path))
    assert type(restored.latent_prior) is type(model.latent_prior)
    z = torch.randn(5, 3)
    assert torch.allclose(restored.prior.log_prob(z), model.eval().prior.log_prob(z))


def test_the_vamp_prior_needs_the_encoder_and_the_base_needs_a_forward():
    with pytest.raises(ValueError, match=r"prior\(encoder\)"):
        VampPrior(2, num_components=3, data_dim=6)()
    with pytest.raises(NotImplementedError, match="must return its distribution"):
        vc.priors.Prior(2)()


def test_models_follow_the_declared_protocols():
    from vaecourse.estimators import AmortizedModel, LatentVariableModel

    model = vc.VAE(vc.VAEConfig(data_dim=6, latent_dim=2, hidden_dims=(8,), likelihood="binomial"))
    assert isinstance(model, AmortizedModel) and isinstance(model, LatentVariableModel)
    linear = vc.models.LinearGaussian(torch.ones(3, 1), torch.zeros(3), noise_std=0.5)
    assert isinstance(linear, LatentVariableModel) and not isinstance(linear, AmortizedModel)


def test_the_flow_prior_leaves_torch_distributions_validation_on():
    # importing zuko switches argument validation off for the whole process; the package imports it so that it
    # stays as it was (a fresh interpreter, since zuko may already be imported here)
    import subprocess
    import sys

    code = (
        "import torch, vaecourse as vc\n"
        "vc.VAE(vc.VAEConfig(data_dim=4, latent_dim=2, hidden_dims=(8,), prior='flow'))\n"
        "vc.exercises.check_flow_log_prob(lambda z, transform: None)\n"
        "print(torch.distributions.Distribution._validate_args)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "True"
