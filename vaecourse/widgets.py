"""Interactive figures for the chapters: sliders that redraw a figure (ipywidgets).

Every widget in the book redraws with the same function that draws the static figure beside it, so the HTML
book shows the result too. Where no one can move a slider — the book build, the regression tests, the
script that executes the committed notebooks — the environment variable ``VAECOURSE_WIDGETS=off`` makes
:func:`interact` print a one-line pointer instead of creating widgets: a headless kernel gains nothing from
them, and creating them there can stall the execution (jupyter/nbclient#312).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDGETS_ENV = "VAECOURSE_WIDGETS"
OFF_NOTE = "Interactive figure: run this chapter in Jupyter, Colab or Binder to move the sliders."


@dataclass(frozen=True)
class Slider:
    """A slider over numbers from ``min`` to ``max``: integers if all of min, max and step are ints."""

    min: float
    max: float
    step: float | None = None
    value: float | None = None
    description: str | None = None

    def build(self, name: str):
        import ipywidgets

        value = self.min if self.value is None else self.value
        if not self.min <= value <= self.max:
            raise ValueError(f"slider {name!r}: value {value} is outside [{self.min}, {self.max}]")
        integer = all(isinstance(v, int) for v in (self.min, self.max, self.step or 1, value))
        kind = ipywidgets.IntSlider if integer else ipywidgets.FloatSlider
        options = {"step": self.step} if self.step is not None else {}
        return kind(
            value=value,
            min=self.min,
            max=self.max,
            description=self.description or name,
            continuous_update=False,
            **options,
        )


@dataclass(frozen=True)
class Choice:
    """A slider over a list of values, e.g. sample counts 1, 10, 100."""

    options: Sequence
    value: object = None
    description: str | None = None

    def build(self, name: str):
        import ipywidgets

        value = self.options[0] if self.value is None else self.value
        if value not in self.options:
            raise ValueError(f"choice {name!r}: value {value!r} is not one of {list(self.options)}")
        return ipywidgets.SelectionSlider(
            options=list(self.options), value=value, description=self.description or name, continuous_update=False
        )


def slider(min, max, step=None, value=None, description=None) -> Slider:
    """A numeric slider for :func:`interact`."""
    if not min < max:
        raise ValueError(f"a slider needs min < max, got min={min}, max={max}")
    return Slider(min, max, step, value, description)


def choice(options: Sequence, value=None, description=None) -> Choice:
    """A slider over ``options`` for :func:`interact`."""
    if len(options) == 0:
        raise ValueError("a choice needs at least one option")
    return Choice(tuple(options), value, description)


def enabled() -> bool:
    """Whether :func:`interact` creates widgets (``VAECOURSE_WIDGETS`` is not ``off``)."""
    return os.environ.get(WIDGETS_ENV, "on").strip().lower() not in {"off", "0", "false", "no"}


def interact(draw: Callable, **controls):
    """Redraw ``draw(**values)`` whenever a slider moves; controls made by :func:`slider` or :func:`choice`
    become sliders, anything else is passed to ``draw`` unchanged.

    Returns the ``ipywidgets.interactive`` box (already displayed), or ``None`` with the widgets off.
    """
    import ipywidgets
    from IPython.display import display

    if not enabled():
        print(OFF_NOTE)
        return None
    arguments = {
        name: control.build(name) if isinstance(control, Slider | Choice) else ipywidgets.fixed(control)
        for name, control in controls.items()
    }
    @functools.wraps(draw)
    def redraw(**values):  # the figure is the output; a returned Axes would be printed under it
        draw(**values)

    box = ipywidgets.interactive(redraw, **arguments)
    display(box)
    return box
