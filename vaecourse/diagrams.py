"""The lecture's pictures, drawn with Matplotlib: the VAE, the reparameterization graph, gradient EM, the zoo.

The slides carried these as images; the book draws them from code, so they render the same in the HTML book,
in Jupyter and on Colab, and follow the notation of the chapters. Each function draws into the ``Axes`` it is
given (a new figure when none is) and returns the axes, as :mod:`vaecourse.plots` does.

- :func:`vae` — chapter 6: x → encoder → μ, σ → z = μ + σ ⊙ ε → decoder → p(x|z), and the two terms of the loss.
- :func:`reparameterization` — chapter 5: the computational graph before and after the trick; the random node
  moves off the path of ∇_φ.
- :func:`gradient_em` — chapter 4: the E-step and the M-step of EM by gradients, as a loop.
- :func:`model_zoo` — chapter 6: where VAEs sit among generative models (the lecture's "zoo" slide).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# Colours: deterministic computations, random nodes, the data, the loss, gradients that flow and that do not.
_THETA = r"\boldsymbol{\theta}"  # the decoder's parameters, bold as in the chapters
_DETERMINISTIC = "#dbe9f6"
_RANDOM = "#fde2c8"
_DATA = "#e6e6e6"
_LOSS = "#f6d5d5"
_GRADIENT = "#2e7d32"
_BLOCKED = "#c62828"


def _canvas(ax, width: float, height: float, figsize: tuple[float, float]):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


def _node(ax, x: float, y: float, text: str, colour: str, *, width: float = 1.6, height: float = 0.8,
          round_node: bool = False, fontsize: float = 10):  # fmt: skip
    """A box (a deterministic computation) or a rounded node (a random variable) centred at (x, y)."""
    style = "round,pad=0.05,rounding_size=0.38" if round_node else "square,pad=0.05"
    patch = FancyBboxPatch(
        (x - width / 2, y - height / 2), width, height, boxstyle=style, facecolor=colour, edgecolor="black",
        linewidth=1.0,
    )  # fmt: skip
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return patch


def _arrow(ax, start, end, *, colour: str = "black", style: str = "-|>", linestyle: str = "-", label: str = "",
           rad: float = 0.0, label_offset: tuple[float, float] = (0.0, 0.18), fontsize: float = 9):  # fmt: skip
    arrow = FancyArrowPatch(
        start, end, arrowstyle=style, mutation_scale=12, color=colour, linestyle=linestyle, linewidth=1.3,
        connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2,
    )  # fmt: skip
    ax.add_patch(arrow)
    if label:
        middle = ((start[0] + end[0]) / 2 + label_offset[0], (start[1] + end[1]) / 2 + label_offset[1])
        ax.text(*middle, label, ha="center", va="bottom", fontsize=fontsize, color=colour)
    return arrow


def vae(ax=None):
    """The variational autoencoder of chapter 6, as the lecture's training algorithm draws it.

    x → encoder q_φ(z|x) → (μ, σ) → z = μ + σ ⊙ ε with ε ~ N(0, I) → decoder p_θ(x|z); the loss is the
    reconstruction term −log p_θ(x|z) plus the regularization term KL(q_φ(z|x) ‖ p(z)).

    >>> ax = vae()
    >>> len(ax.patches) > 8
    True
    """
    ax = _canvas(ax, 13.0, 5.0, (11, 4.2))
    _node(ax, 0.9, 2.6, r"$\mathbf{x}$", _DATA, width=1.0)
    _node(ax, 3.0, 2.6, "encoder\n" + r"$q_\phi(\mathbf{z}|\mathbf{x})$", _DETERMINISTIC, width=1.9, height=1.2)
    _node(ax, 5.2, 3.3, r"$\boldsymbol{\mu}_\phi(\mathbf{x})$", _DETERMINISTIC, width=1.4, height=0.6)
    _node(ax, 5.2, 1.9, r"$\boldsymbol{\sigma}_\phi(\mathbf{x})$", _DETERMINISTIC, width=1.4, height=0.6)
    _node(ax, 7.5, 2.6, r"$\mathbf{z} = \boldsymbol{\mu} + \boldsymbol{\sigma} \odot \boldsymbol{\varepsilon}$",
          _DETERMINISTIC, width=2.1, height=0.8)  # fmt: skip
    _node(ax, 7.5, 0.7, r"$\boldsymbol{\varepsilon} \sim \mathcal{N}(\mathbf{0}, I)$", _RANDOM, width=2.1,
          height=0.7, round_node=True)  # fmt: skip
    decoder = "decoder\n" + r"$p_{" + _THETA + r"}(\mathbf{x}|\mathbf{z})$"
    _node(ax, 10.0, 2.6, decoder, _DETERMINISTIC, width=1.9, height=1.2)
    _node(ax, 12.2, 2.6, r"$\hat{\mathbf{x}}$", _DATA, width=1.0)
    _arrow(ax, (1.4, 2.6), (2.05, 2.6))
    _arrow(ax, (3.95, 2.9), (4.5, 3.3))
    _arrow(ax, (3.95, 2.3), (4.5, 1.9))
    _arrow(ax, (5.9, 3.3), (6.45, 2.8))
    _arrow(ax, (5.9, 1.9), (6.45, 2.4))
    _arrow(ax, (7.5, 1.05), (7.5, 2.2))
    _arrow(ax, (8.55, 2.6), (9.05, 2.6))
    _arrow(ax, (10.95, 2.6), (11.7, 2.6))
    ax.text(
        6.5, 4.6,
        r"loss $= -\log p_{" + _THETA + r"}(\mathbf{x}|\mathbf{z})$ (reconstruction)  "
        r"$+\ KL(q_\phi(\mathbf{z}|\mathbf{x})"
        r"\,\Vert\, p(\mathbf{z}))$ (regularization)",
        ha="center", va="center", fontsize=10, bbox={"facecolor": _LOSS, "edgecolor": "black", "pad": 4},
    )  # fmt: skip
    ax.text(7.5, -0.05, "generation: drop the encoder, draw z ~ p(z), decode", ha="center", va="top", fontsize=9,
            style="italic")  # fmt: skip
    ax.set_ylim(-0.5, 5.0)
    return ax


def reparameterization(axes=None):
    """The computational graph of the E-step gradient, before and after the reparameterization trick (chapter 5).

    Left: z is drawn from q_φ(z|x), a random node between φ and the loss, so ∇_φ cannot pass through it.
    Right: z = μ_φ(x) + σ_φ(x) ⊙ ε is a deterministic function of φ and of ε ~ N(0, I); the randomness sits
    in ε, off the path, and ∇_φ flows back to φ.

    >>> axes = reparameterization()
    >>> len(axes)
    2
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    left, right = axes
    titles = ("before: z sampled inside the graph", r"after: $\mathbf{z} = g_\phi(\mathbf{x}, \varepsilon)$")
    for ax, title in zip(axes, titles, strict=True):
        _canvas(ax, 7.0, 4.2, (5, 3.6))
        ax.set_title(title, fontsize=11)
    # before
    _node(left, 1.0, 2.4, r"$\phi$", _DETERMINISTIC, width=0.9)
    _node(left, 3.5, 2.4, r"$\mathbf{z} \sim q_\phi(\mathbf{z}|\mathbf{x})$", _RANDOM, width=2.1, round_node=True)
    _node(left, 6.0, 2.4, r"$\log p_{" + _THETA + r"}(\mathbf{x}|\mathbf{z})$", _LOSS, width=1.8)
    _arrow(left, (1.45, 2.4), (2.45, 2.4))
    _arrow(left, (4.55, 2.4), (5.1, 2.4))
    _arrow(left, (5.1, 1.75), (1.45, 1.75), colour=_BLOCKED, linestyle="--", rad=0.0,
           label=r"$\nabla_\phi$ stops at the random node", label_offset=(0.0, -0.62))  # fmt: skip
    left.text(3.5, 1.75, "✗", ha="center", va="center", fontsize=16, color=_BLOCKED)
    # after
    _node(right, 0.6, 3.0, r"$\phi$", _DETERMINISTIC, width=0.9)
    z_equation = r"$\mathbf{z} = \boldsymbol{\mu}_\phi + \boldsymbol{\sigma}_\phi \odot \boldsymbol{\varepsilon}$"
    _node(right, 3.05, 3.0, z_equation, _DETERMINISTIC, width=2.6)
    _node(right, 3.05, 0.9, r"$\boldsymbol{\varepsilon} \sim \mathcal{N}(\mathbf{0}, I)$", _RANDOM, width=2.1,
          round_node=True)  # fmt: skip
    _node(right, 5.85, 3.0, r"$\log p_{" + _THETA + r"}(\mathbf{x}|\mathbf{z})$", _LOSS, width=1.7)
    _arrow(right, (1.05, 3.0), (1.75, 3.0))
    _arrow(right, (3.05, 1.25), (3.05, 2.6))
    _arrow(right, (4.35, 3.0), (5.0, 3.0))
    _arrow(right, (5.35, 2.45), (1.05, 2.45), colour=_GRADIENT, rad=0.0, label=r"$\nabla_\phi$ flows back",
           label_offset=(0.9, -0.5))  # fmt: skip
    return axes


def gradient_em(ax=None):
    """EM by gradients (chapter 4): the E-step moves φ, the M-step moves θ, and around again.

    >>> ax = gradient_em()
    >>> len(ax.texts) >= 4
    True
    """
    ax = _canvas(ax, 10.0, 4.6, (9, 4.0))
    _node(ax, 2.4, 2.3,
          "E-step\n" + r"$\phi_k = \phi_{k-1} + \eta\,\nabla_\phi \mathcal{L}_{\phi," + _THETA + r"_{k-1}}(\mathbf{x})$"
          + "\nthe encoder: q moves towards\nthe posterior (KL shrinks)",
          _DETERMINISTIC, width=4.0, height=2.0)  # fmt: skip
    _node(ax, 7.6, 2.3,
          "M-step\n" + rf"${_THETA}_k = {_THETA}_{{k-1}} + \eta\,\nabla_{{{_THETA}}} "
          + rf"\mathcal{{L}}_{{\phi_k,{_THETA}}}(\mathbf{{x}})$"
          + "\nthe decoder: the model explains\nthe data better (bound rises)",
          _DETERMINISTIC, width=4.0, height=2.0)  # fmt: skip
    _arrow(ax, (4.5, 3.1), (5.5, 3.1), rad=-0.35, label=r"$\phi_k$", label_offset=(0.0, 0.3))
    _arrow(ax, (5.5, 1.5), (4.5, 1.5), rad=-0.35, label=rf"${_THETA}_k$, $k \to k + 1$", label_offset=(0.0, -0.65))
    ax.text(5.0, 0.05, "unlike classical EM, the E-step does not make the KL zero; in practice a VAE takes one "
            "joint gradient step on (φ, θ)", ha="center", va="bottom", fontsize=9, style="italic")  # fmt: skip
    return ax


_ZOO = (
    ("family", "likelihood", "latent z", "sampling", "examples"),
    ("autoregressive models", "exact", "none", "slow: pixel by pixel", "PixelCNN"),
    ("normalizing flows", "exact (change of variables)", "same size as x", "one pass", "RealNVP, Glow"),
    ("variational autoencoders", "lower bound (ELBO)", "smaller than x", "one pass", "VAE, IWAE, VampPrior"),
    ("generative adversarial nets", "none", "smaller than x", "one pass", "GAN"),
    ("diffusion models", "lower bound (ELBO)", "same size as x, many", "many passes", "DDPM"),
)
def model_zoo(ax=None):
    """Where VAEs sit among generative models (chapter 6; the lecture's "zoo" slide, as a table).

    >>> ax = model_zoo()
    >>> len(ax.tables)
    1
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 2.4))
    ax.set_axis_off()
    table = ax.table(cellText=[list(row) for row in _ZOO[1:]], colLabels=list(_ZOO[0]), loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.auto_set_column_width(col=list(range(len(_ZOO[0]))))
    table.scale(1.0, 1.3)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_facecolor(_DATA)
            cell.get_text().set_fontweight("bold")
        elif _ZOO[row][0] == "variational autoencoders":
            cell.set_facecolor(_DETERMINISTIC)
    ax.set_title("A zoo of generative models", fontsize=11)
    return ax
