"""vaecourse.priors: the prior is a module returning a distribution (chapter 6's N(0, I))."""

import math

import pytest
import torch

from vaecourse.priors import StandardNormal, make_prior


def test_standard_normal_is_n_0_i_and_follows_the_model():
    prior = StandardNormal(3)()
    assert prior.event_shape == (3,) and prior.batch_shape == ()
    assert math.isclose(prior.log_prob(torch.zeros(3)).item(), -1.5 * math.log(2 * math.pi), rel_tol=1e-6)
    assert prior.rsample((4, 2)).shape == (4, 2, 3)
    module = StandardNormal(2).double()
    assert module().mean.dtype == torch.float64
    assert set(module.state_dict()) == {"loc", "scale"} and not list(module.parameters())


def test_make_prior_rejects_unknown_names_and_bad_sizes():
    assert isinstance(make_prior("standard", 4), StandardNormal)
    with pytest.raises(ValueError, match="unknown prior"):
        make_prior("flowy", 4)
    with pytest.raises(ValueError, match="latent_dim"):
        StandardNormal(0)
