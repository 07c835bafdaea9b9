"""vaecourse.diagnostics.active_units: Burda et al.'s count of latent dimensions whose posterior mean moves with x."""

import pytest
import torch

import vaecourse as vc
from vaecourse.diagnostics import active_units


@pytest.fixture(scope="module")
def digits():
    return vc.data.load("digits", "valid").x


def test_a_dimension_the_encoder_ignores_is_inactive(digits):
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=64, latent_dim=4, hidden_dims=(32,), likelihood="binomial"))
    last = model.encoder.net[-1]  # the layer giving (μ, s); μ_u is row u of its weight
    with torch.no_grad():
        last.weight[2].zero_()  # μ_2 = bias: the same for every x
        last.weight[0].mul_(20)  # μ_0 spread widely
    result = active_units(model, digits)
    assert not result.active[2] and result.variance[2] < 1e-20
    assert result.active[0] and result.variance[0] > 0.01
    assert result.count == int(result.active.sum()) and result.latent_dim == 4
    assert "of 4 latent dimensions active" in str(result)
    means = model.encode(digits).mean.double()
    assert torch.allclose(result.variance, means.var(0))
    assert active_units(model, digits, batch_size=7).variance.allclose(result.variance)


def test_threshold_and_bad_input(digits):
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=64, latent_dim=3, hidden_dims=(16,), likelihood="binomial"))
    assert active_units(model, digits, threshold=0).count == 3
    assert active_units(model, digits, threshold=1e9).count == 0
    with pytest.raises(ValueError, match="at least 2"):
        active_units(model, digits[:1])
    with pytest.raises(ValueError, match="threshold"):
        active_units(model, digits, threshold=-1)
