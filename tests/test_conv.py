"""Contract tests for the convolutional VAE (vaecourse.conv, VAEConfig(architecture="conv")): the same interface as
the MLP VAE (shapes, gradients, every prior, checkpoints); the ELBO's terms and the input checks run on both
architectures in tests/test_vae.py."""

import math

import pytest
import torch
from data_helpers import binary

import vaecourse as vc
from vaecourse.conv import ConvDecoderNet, ConvEncoderNet

D = 784


def conv_vae(**overrides):
    fields = dict(latent_dim=3, hidden_dims=(16,), channels=(4, 8), architecture="conv")
    fields.update(overrides)
    torch.manual_seed(0)
    return vc.VAE(vc.VAEConfig(**fields))


def test_the_networks_are_convolutional():
    model = conv_vae()
    assert isinstance(model.encoder.net, ConvEncoderNet) and isinstance(model.decoder.net, ConvDecoderNet)
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"Conv2d", "ConvTranspose2d"} <= kinds
    assert not isinstance(vc.VAE(vc.VAEConfig(latent_dim=3, hidden_dims=(16,))).encoder.net, ConvEncoderNet)


@pytest.mark.parametrize("batch_shape", [(), (1,), (5,), (2, 3)])
def test_shapes_across_batch_shapes(batch_shape):
    model = conv_vae()
    x = binary(*batch_shape, D)
    q = model.encode(x)
    assert q.batch_shape == batch_shape and q.event_shape == (3,)
    z = q.rsample((4,))
    assert z.shape == (4, *batch_shape, 3)
    p_x = model.likelihood(z)
    assert p_x.batch_shape == (4, *batch_shape) and p_x.event_shape == (D,)
    assert model.prior.event_shape == (3,)
    terms = model.elbo(x, num_samples=4)
    for name in ("elbo", "log_px_z", "kl"):
        assert getattr(terms, name).shape == batch_shape
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(7).shape == (7, D)


def test_each_image_is_encoded_on_its_own():
    """Batching does not mix images: the encoding of a batch is the encodings of its rows."""
    model = conv_vae()
    x = binary(4, D)
    together = model.encode(x).mean
    alone = torch.cat([model.encode(row[None]).mean for row in x])
    assert torch.allclose(together, alone, atol=1e-6)


@pytest.mark.parametrize("scale", ["softplus", "exp"])
def test_gradients_reach_every_parameter_through_rsample(scale):
    model = conv_vae(scale=scale)
    model.elbo(binary(6, D), num_samples=2).elbo.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_elbo_is_the_lecture_formula_written_out():
    model = conv_vae().double()
    x = binary(5, D).double()
    torch.manual_seed(3)
    terms = model.elbo(x, num_samples=1)
    logits = model.decoder.net(terms.z[0])
    by_hand = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    assert torch.allclose(terms.log_px_z, by_hand, atol=1e-9)
    q = model.encode(x)
    assert torch.allclose(terms.kl, vc.gaussian.kl_to_standard_normal(q.mean, q.stddev), atol=1e-12)
    assert torch.equal(terms.elbo, terms.log_px_z - terms.kl)


def test_estimators_evaluate_the_conv_vae_unchanged():
    model = conv_vae().double()
    x = binary(3, D).double()
    torch.manual_seed(0)
    iwae = vc.estimators.log_marginal_is(model, x, model.encode(x), 200)
    elbo = model.elbo(x, num_samples=200).elbo
    assert iwae.shape == (3,) and torch.isfinite(iwae).all()
    # the IWAE bound is above the ELBO by the gap; 200 samples put its estimate's error far below the gap here
    assert (iwae > elbo).all()
    estimate = vc.log_likelihood(model, x, num_samples=20)
    assert math.isfinite(estimate.nll) and estimate.per_example.shape == (3,)


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp", "flow"])
def test_every_prior_drops_in(prior):
    options = {"mog": {"num_components": 3}, "vamp": {"num_components": 4}, "flow": {"hidden_dims": (8,)}}
    model = conv_vae(prior=prior, prior_options=options.get(prior, {}))
    x = binary(5, D)
    torch.manual_seed(1)
    terms = model.elbo(x, num_samples=2)
    assert terms.elbo.shape == (5,) and torch.isfinite(terms.elbo).all()
    terms.elbo.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
    assert model.sample(3).shape == (3, D)


def test_fit_trains_it_and_a_checkpoint_restores_it(tmp_path):
    model = conv_vae()
    x = binary(64, D)
    before = vc.train.mean_elbo(model, x)
    result = vc.fit(model, x, config=vc.TrainConfig(epochs=5, batch_size=16, lr=3e-3, progress=False))
    after = vc.train.mean_elbo(model, x)
    assert result.epochs == 5 and after > before + 10  # 5 epochs on 64 images: the ELBO rises by far more than 10
    path = vc.save(model, tmp_path / "conv.pt")
    restored = vc.load(path)
    assert restored.config.architecture == "conv" and restored.config.channels == (4, 8)
    assert torch.equal(restored.encode(x[:3]).mean, model.encode(x[:3]).mean)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"architecture": "conv", "data_dim": 64}, "28×28"),
        ({"architecture": "conv", "sparse_input": True}, "sparse_input"),
        ({"architecture": "transformer"}, "architecture"),
        ({"channels": (32,)}, "channels"),
        ({"channels": (32, 0)}, "channels"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        vc.VAEConfig(**fields)


def test_grey_levels_work_too():
    model = conv_vae(likelihood="binomial", levels=4)
    x = (torch.randint(0, 5, (2, D), generator=torch.Generator().manual_seed(0)) / 4).float()
    assert model.elbo(x).elbo.shape == (2,)
