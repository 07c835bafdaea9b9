"""The lecture's pictures (vaecourse.diagrams) draw into the axes they are given and say what the lecture says."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from vaecourse import diagrams  # noqa: E402


def _texts(axes) -> str:
    return " ".join(text.get_text() for ax in axes for text in [*ax.texts, ax.title])


@pytest.mark.parametrize(("draw", "panels"), [(diagrams.vae, 1), (diagrams.gradient_em, 1),
                                              (diagrams.reparameterization, 2), (diagrams.model_zoo, 1)])  # fmt: skip
def test_each_diagram_draws_into_the_axes_it_is_given(draw, panels):
    figure, axes = plt.subplots(1, panels, squeeze=False)
    given = list(axes[0])
    returned = draw(given[0] if panels == 1 else given)
    assert (returned is given[0]) if panels == 1 else (list(returned) == given)
    assert all(not ax.axison for ax in given)
    assert len(figure.axes) == panels  # nothing drawn into a figure of its own
    plt.close(figure)


def test_the_vae_diagram_has_the_lecture_s_training_path_and_both_loss_terms():
    ax = diagrams.vae()
    text = _texts([ax])
    for piece in ("encoder", "decoder", r"\varepsilon} \sim \mathcal{N}", "reconstruction", "regularization", "KL"):
        assert piece in text, piece
    plt.close(ax.figure)


def test_the_reparameterization_graph_moves_the_random_node_off_the_gradient_path():
    before, after = diagrams.reparameterization()
    assert "stops at the random node" in _texts([before])
    assert "flows back" in _texts([after]) and r"\varepsilon} \sim" in _texts([after])
    plt.close(before.figure)


def test_the_zoo_puts_the_vae_on_the_elbo_row():
    zoo = diagrams.model_zoo()
    rows = {}
    for (row, column), cell in zoo.tables[0].get_celld().items():
        rows.setdefault(row, {})[column] = cell.get_text().get_text()
    vae_row = next(row for row in rows.values() if row[0] == "variational autoencoders")
    assert vae_row[1] == "lower bound (ELBO)"
    assert any(row[0] == "normalizing flows" and row[1].startswith("exact") for row in rows.values())
    plt.close(zoo.figure)
