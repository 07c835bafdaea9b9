"""Checkers for the exercises of the chapters.

Each chapter's exercises ask the learner to write a function; ``vc.exercises.check_<name>(function)`` runs it
against the package's reference on a few cases and says what is wrong: a shape, a sign, a missing constant,
an overflow that log space would avoid. The result prints as a short verdict. The checkers of chapter N live in
``exercises.chapterN``, so that no module here shares a name with the package's own (``vaecourse.vae`` …).
"""

from .chapter1 import check_log_joint, check_log_marginal_quadrature
from .chapter2 import check_effective_sample_size, check_log_marginal_naive, check_log_mean_exp
from .chapter3 import check_elbo_monte_carlo, check_gaussian_entropy, check_mean_field_scale
from .chapter4 import check_amortization_gap, check_encoder_output
from .chapter5 import check_gaussian_kl, check_rsample, check_score_function
from .chapter6 import check_fixed_loss, check_training_step, check_vae_loss
from .chapter7 import check_log_q_avg, check_mutual_information
from .chapter8 import check_flow_log_prob, check_mixture_log_prob
from .chapter9 import check_free_bits_kl, check_gaussian_log_likelihood
from .chapter10 import check_iwae_loss, check_signal_to_noise
from .checking import Result, check_function

__all__ = [
    "Result",
    "check_amortization_gap",
    "check_effective_sample_size",
    "check_elbo_monte_carlo",
    "check_encoder_output",
    "check_fixed_loss",
    "check_flow_log_prob",
    "check_free_bits_kl",
    "check_function",
    "check_gaussian_entropy",
    "check_gaussian_kl",
    "check_gaussian_log_likelihood",
    "check_iwae_loss",
    "check_log_joint",
    "check_log_marginal_naive",
    "check_log_marginal_quadrature",
    "check_log_mean_exp",
    "check_log_q_avg",
    "check_mean_field_scale",
    "check_mixture_log_prob",
    "check_mutual_information",
    "check_rsample",
    "check_score_function",
    "check_signal_to_noise",
    "check_training_step",
    "check_vae_loss",
]
