import ipywidgets
import pytest

from vaecourse import widgets


@pytest.fixture
def widgets_on(monkeypatch):
    monkeypatch.setenv(widgets.WIDGETS_ENV, "on")


def test_interact_builds_sliders_and_redraws_with_the_drawing_function(widgets_on):
    calls = []
    box = widgets.interact(
        lambda k, d, scale, label: calls.append((k, d, scale, label)),
        k=widgets.choice([1, 10, 100], value=10, description="K"),
        d=widgets.slider(1, 20, value=2),
        scale=widgets.slider(0.0, 1.0, step=0.05, value=0.5),
        label="fixed",
    )
    controls = {child.description: child for child in box.children if hasattr(child, "description")}
    assert isinstance(controls["K"], ipywidgets.SelectionSlider) and controls["K"].value == 10
    assert isinstance(controls["d"], ipywidgets.IntSlider)
    assert isinstance(controls["scale"], ipywidgets.FloatSlider)
    assert all(not control.continuous_update for control in controls.values())
    assert calls[-1] == (10, 2, 0.5, "fixed")  # drawn once when shown
    controls["d"].value = 7
    assert calls[-1] == (10, 7, 0.5, "fixed")  # and again when a slider moves


def test_interact_off_prints_a_pointer_and_creates_no_widget(monkeypatch, capsys):
    monkeypatch.setenv(widgets.WIDGETS_ENV, "off")
    created = []
    monkeypatch.setattr(ipywidgets.Widget, "open", lambda self: created.append(self))
    assert widgets.interact(lambda k: None, k=widgets.slider(1, 3)) is None
    assert capsys.readouterr().out.strip() == widgets.OFF_NOTE
    assert created == []


@pytest.mark.parametrize("value", ["on", "", "1"])
def test_enabled_unless_switched_off(monkeypatch, value):
    monkeypatch.setenv(widgets.WIDGETS_ENV, value)
    assert widgets.enabled()


def test_bad_controls_are_refused(widgets_on):
    with pytest.raises(ValueError, match="min < max"):
        widgets.slider(3, 1)
    with pytest.raises(ValueError, match="at least one option"):
        widgets.choice([])
    with pytest.raises(ValueError, match="outside"):
        widgets.interact(lambda a: None, a=widgets.slider(0, 1, value=2))
    with pytest.raises(ValueError, match="not one of"):
        widgets.interact(lambda a: None, a=widgets.choice([1, 2], value=3))
