"""Every figure iclab writes goes through here: the non-interactive backend, atomic PNG writes, and the few rules
that make a figure one a reader could put in a paper.

- every curve stays inside the axes: `fit_y` fits the y axis to all the data, and where one curve dwarfs the
  others it switches to a stated axis (linear up to a bound, logarithmic above) instead of cutting it off;
- reference lines carry a label (`reference_line`), shown in the legend;
- an axis whose data are integers (k, nnz, steps) gets integer ticks, log axes get plain tick labels ("0.5",
  not "5×10⁻¹") (`finish`);
- a panel with nothing to show says why (`note`);
- curves that coincide stay visible: `series_style` gives each its own colour, line style and marker.

Draw with `plt` from this module (it sets the backend first), then `fit_y`, then `finish`, then `save_figure`.
tests/test_figures.py checks these rules on every figure iclab draws.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import Collection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

__all__ = ["fit_y", "finish", "note", "plt", "reference_line", "save_figure", "series_style"]

SPREAD = 10.0  # a curve whose top is SPREAD x the typical curve's top would flatten the rest: see fit_y
LINESTYLES = ["--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` to `path` atomically (a reader never sees half a PNG) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def series_style(index: int, bold: bool = False, points: int = 0, layer: int = 0) -> dict:
    """Line keywords for the `index`-th curve of an axes: its own colour, line style and marker, so that curves
    lying on top of each other stay distinguishable. `bold` (a transformer) is solid and wide, and drawn under the
    thin curves so that both show where they coincide; the `layer`-th bold curve of an axes is narrower and above
    the ones before it, so coinciding transformers all show. With `points` the markers are thinned to about a
    dozen per curve, staggered between curves."""
    style = {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)], "ms": 4}
    if points > 12:
        style["markevery"] = (index % 3, max(1, points // 12))
    if bold:
        return style | {"ls": "-", "lw": 3.0 - 0.7 * min(layer, 2), "zorder": 2 + 0.1 * layer}
    return style | {"ls": LINESTYLES[index % len(LINESTYLES)], "lw": 1.4, "zorder": 3}


REFERENCE_STYLES = [{"color": "grey", "ls": ":"}, {"color": "black", "ls": "--"}, {"color": "dimgrey", "ls": "-."}]


def reference_line(ax: Axes, *, x: float | None = None, y: float | None = None, label: str, **style) -> Line2D:
    """A labelled vertical (x) or horizontal (y) reference line; the label appears in the legend. Each new label
    of an axes gets its own style (a repeated label, such as the two ends of a range, the same one)."""
    if (x is None) == (y is None):
        raise ValueError("reference_line takes exactly one of x and y")
    references = [line for line in ax.get_lines() if line not in data_lines(ax)]
    same = [line for line in references if line.get_label() == label]
    if same:
        default = {"color": same[0].get_color(), "ls": same[0].get_linestyle()}
    else:
        default = REFERENCE_STYLES[len({line.get_label() for line in references}) % len(REFERENCE_STYLES)]
    style = default | {"lw": 1.2} | style
    return ax.axvline(x, label=label, **style) if x is not None else ax.axhline(y, label=label, **style)


def note(ax: Axes, text: str) -> None:
    """A sentence inside the panel, for what the data alone does not say (a constant curve, a clipped range)."""
    ax.text(0.02, 0.04, text, transform=ax.transAxes, fontsize=7, color="dimgrey", va="bottom", wrap=True)


def data_lines(ax: Axes) -> list[Line2D]:
    """The axes' curves: every line drawn in data coordinates (reference lines from axhline/axvline excluded)."""
    return [line for line in ax.get_lines() if line.get_transform() is ax.transData]


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _series_ys(ax: Axes) -> list[list[float]]:
    """The y values of each curve, horizontal reference line, band and error bar of the axes."""
    series = [_finite(line.get_ydata()) for line in data_lines(ax)]
    horizontal = [line for line in ax.get_lines() if line.get_transform() is ax.get_yaxis_transform()]
    series += [[float(line.get_ydata()[0])] for line in horizontal]
    for collection in ax.collections:
        if isinstance(collection, Collection) and collection.get_transform() is ax.transData:
            series += [_finite(path.vertices[:, 1]) for path in collection.get_paths()]
    return [s for s in series if s]


def _nice_ceil(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above `value`."""
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * 10**exponent >= value * (1 - 1e-9):
            return step * 10**exponent
    return 10 ** (exponent + 1)


def fit_y(ax: Axes, zero: bool = True, floor: float | None = None) -> str:
    """Fit the y axis to every curve, band and error bar of `ax`, so none is cut off; returns the axis kind.

    A log axis ("log") spans the data; with `floor`, values below it are drawn at it, and a note says so.
    A linear axis starts at 0 when `zero` and the data are non-negative. Where one curve's top is more than
    SPREAD times the typical curve's top (least squares near k = d), the axis is linear up to a round bound
    above the typical top and logarithmic beyond ("symlog"; `finish` says so in the y label)."""
    series = _series_ys(ax)
    if not series:
        return ax.get_yscale()
    values = [v for s in series for v in s]
    lo, hi = min(values), max(values)
    if ax.get_yscale() == "log":
        positive = [v for v in values if v > 0]
        if not positive:
            return "log"
        bottom = max(min(positive), floor) if floor else min(positive)
        if floor and lo < floor:
            for line in data_lines(ax):
                line.set_ydata([max(float(v), floor) for v in line.get_ydata()])
            note(ax, f"values below {floor:g} drawn at {floor:g}")
        ax.set_ylim(bottom / 1.25, max(positive) * 1.25)
        return "log"
    typical = statistics.median(max(s) for s in series)
    if zero and lo >= 0 and typical > 0 and hi > SPREAD * typical:
        bound = _nice_ceil(typical * 1.05)
        decades = math.log10(hi * 1.3 / bound)
        ax.set_yscale("symlog", linthresh=bound, linscale=max(1.0, decades))
        ax.set_ylim(0, hi * 1.3)
        above = [10**e for e in range(math.ceil(math.log10(bound * 1.0001)), math.floor(math.log10(hi * 1.3)) + 1)]
        ax.yaxis.set_major_locator(FixedLocator([0, bound / 2, bound] + above))
        ax.yaxis.set_minor_locator(FixedLocator([]))
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        return "symlog"
    bottom = 0.0 if zero and lo >= 0 else lo
    pad = 0.05 * ((hi - bottom) or abs(hi) or 1.0)
    ax.set_ylim(bottom if bottom == 0.0 else bottom - pad, hi + pad)
    return "linear"


def _plain(value: float, _position=None) -> str:
    return f"{value:g}"


def _integer_data(values: list[float]) -> bool:
    return bool(values) and all(float(v).is_integer() for v in values)


def _plain_ticks(ax: Axes, axis: str) -> None:
    """Plain labels on a log axis ("0.5", "20"); an axis spanning under a decade gets evenly chosen ticks."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    if lo <= 0:
        return
    decades = math.log10(hi / lo)
    if not isinstance(target.get_major_locator(), FixedLocator):
        if decades < 1:
            target.set_major_locator(MaxNLocator(nbins=5))
        elif decades < 3 and getattr(target.get_transform(), "base", 10) == 10:
            target.set_major_locator(LogLocator(subs=(1, 2, 5)))
    target.set_major_formatter(FuncFormatter(_plain))
    target.set_minor_formatter(NullFormatter())


def finish(ax: Axes, xlabel: str, ylabel: str, title: str | None = None, legend: bool = True, **legend_kw) -> None:
    """Label the axes (a fit_y symlog axis says where it turns logarithmic), add a light grid and the legend of
    every labelled curve and reference line; integer ticks on a linear x axis whose data are integers; plain
    tick labels on log axes."""
    ax.set_xlabel(xlabel)
    if ax.get_yscale() == "symlog":
        ylabel += f"; linear to {ax.yaxis.get_transform().linthresh:g}, log above"
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    xs = [v for line in data_lines(ax) for v in _finite(line.get_xdata())]
    locator = ax.xaxis.get_major_locator()
    if ax.get_xscale() == "linear" and _integer_data(xs) and not isinstance(locator, FixedLocator):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in ("x", "y"):
        if (ax.get_xscale() if axis == "x" else ax.get_yscale()) == "log":
            _plain_ticks(ax, axis)
    entries = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))  # one entry per label
    if legend and entries:
        ax.legend(entries.values(), entries.keys(), **({"fontsize": 8} | legend_kw))
