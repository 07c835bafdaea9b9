import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vaecourse import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_image_grid_places_each_image_in_its_tile():
    images = torch.arange(5).float().view(5, 1, 1).expand(5, 2, 3) / 4  # image i is filled with i / 4
    canvas = plots.image_grid(images, ncols=2).images[0].get_array()
    assert canvas.shape == (3 * 3 + 1, 2 * 4 + 1)  # 3 rows, 2 columns, 1-pixel padding
    for index in range(5):
        row, col = divmod(index, 2)
        tile = canvas[1 + row * 3 : 1 + row * 3 + 2, 1 + col * 4 : 1 + col * 4 + 3]
        np.testing.assert_array_equal(tile, np.full((2, 3), index / 4))
    assert np.ma.is_masked(canvas[-3:-1, -4:-1]) or np.isnan(np.asarray(canvas[-3:-1, -4:-1])).all()


def test_image_grid_accepts_flat_square_images_and_titles():
    ax = plots.image_grid(np.ones((3, 16)), title="ones")
    assert ax.get_title() == "ones"
    assert ax.images[0].get_array().shape == (4 + 2, 3 * 5 + 1)


@pytest.mark.parametrize(
    "images, match",
    [(np.ones((3, 15)), "not a square"), (np.ones((0, 4, 4)), r"N > 0"), (np.ones(4), r"\[N, H, W\]")],
)
def test_image_grid_rejects_bad_shapes(images, match):
    with pytest.raises(ValueError, match=match):
        plots.image_grid(images)
