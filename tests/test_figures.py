"""Every kind of figure iclab draws, rendered from small made-up results and checked against the rules a figure
in a paper keeps (iclab/plotting.py): every curve inside the axes, both axes labelled, reference lines labelled in
the legend, integer ticks on an integer axis, plain log tick labels, curves told apart, no silent constant panel."""

import math

import pytest

from iclab import plotting
from iclab.evaluation.report import plot_curves, plot_sweep, plot_training
from iclab.icl_vs_ft.metrics import MEASURES, VARIANT_MEASURES
from iclab.icl_vs_ft.results import draw_sweep
from iclab.plotting import fit_y, plt, series_style
from iclab.recipes import algorithm_selection, frequency, lsa_gd, model_selection, sparsity, task_diversity
from iclab.recipes.icl_vs_ft import figures as icl_vs_ft_figures
from iclab.recipes.model_selection import Class
from iclab.recipes.momentum import figures as momentum_figures


@pytest.fixture
def drawn(monkeypatch):
    """The figures that save_figure closes during a test, kept open to be inspected."""
    kept, close = [], plt.close
    monkeypatch.setattr(plotting.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def inside(values, limits) -> bool:
    lo, hi = sorted(limits)
    slack = 1e-9 * max(abs(lo), abs(hi), 1.0)
    return all(lo - slack <= v <= hi + slack for v in values if math.isfinite(v))


def problems(fig) -> list[str]:
    """What keeps `fig` out of a paper, panel by panel (axes turned off are skipped)."""
    fig.canvas.draw()
    out = []
    for n, ax in enumerate(a for a in fig.axes if a.axison):
        where = f"panel {n} ({ax.get_title() or 'untitled'})"
        legend = ax.get_legend()
        legend_labels = {t.get_text() for t in legend.get_texts()} if legend else set()
        curves = plotting.data_lines(ax)
        if not ax.get_xlabel() or not ax.get_ylabel():
            out.append(f"{where}: an axis has no label")
        for line in curves:
            xs, ys = [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()]
            if not inside(xs, ax.get_xlim()) or not inside(ys, ax.get_ylim()):
                out.append(f"{where}: curve '{line.get_label()}' leaves the axes {ax.get_xlim()} x {ax.get_ylim()}")
            if not line.get_label().startswith("_") and line.get_label() not in legend_labels:
                out.append(f"{where}: curve '{line.get_label()}' is not in the legend")
        for line in set(ax.get_lines()) - set(curves):  # axvline / axhline
            vertical = line.get_transform() is ax.get_xaxis_transform()
            at = float((line.get_xdata() if vertical else line.get_ydata())[0])
            if not inside([at], ax.get_xlim() if vertical else ax.get_ylim()):
                out.append(f"{where}: reference line at {at} is off the axes")
            if line.get_label().startswith("_") or line.get_label() not in legend_labels:
                out.append(f"{where}: reference line at {at} has no label in the legend")
        styles = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in curves]
        named = [s for s, line in zip(styles, curves, strict=True) if not line.get_label().startswith("_")]
        if len(set(named)) < len(named):
            out.append(f"{where}: two curves share colour, line style and marker")
        xs = [float(v) for line in curves for v in line.get_xdata()]
        if ax.get_xscale() == "linear" and xs and all(v.is_integer() for v in xs):
            ticks = [t for t in ax.get_xticks() if inside([t], ax.get_xlim())]
            if any(not float(t).is_integer() for t in ticks):
                out.append(f"{where}: integer data but x ticks {ticks}")
        ys = [float(v) for line in curves for v in line.get_ydata() if math.isfinite(float(v))]
        if ys and max(ys) == min(ys) and not ax.texts:
            out.append(f"{where}: every curve is constant at {ys[0]} and no note says why")
        labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if any("times" in t or "^" in t for t in labels):
            out.append(f"{where}: tick labels in scientific notation {labels}")
    return out


def k_rows(task: str, curves: dict[str, list[float]], run: str = "") -> list[dict]:
    return [
        {"task": task, "estimator": name, "k": k, "mean": m, "lo": 0.9 * m, "hi": 1.1 * m, "run": run, "sweep": ""}
        for name, means in curves.items()
        for k, m in enumerate(means)
    ]


def test_a_curve_far_above_the_rest_stays_on_the_plot_with_the_axis_it_needs(tmp_path, drawn):
    # scaled_x:factor=2: the transformer at 3.6-4.5, least squares near k = d at 80: no curve may leave the plot
    d = 5
    rows = k_rows(
        "linear@scaled_x",
        {
            "transformer": [4.5, 4.3, 4.1, 3.9, 3.8, 3.7, 3.6, 3.6, 3.6, 3.6, 3.6],
            "least_squares": [4.0, 6.0, 12.0, 30.0, 80.0, 1e-12, 1e-13, 1e-13, 1e-13, 1e-13, 1e-13],
            "zero": [4.0] * 11,
        },
    )
    plot_curves(rows, "linear@scaled_x", tmp_path / "curves.png", dims=d)
    (fig,) = drawn
    assert problems(fig) == []
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog" and "log above" in ax.get_ylabel()  # the axis says how it is drawn
    assert "k = d = 5" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_curves_of_one_scale_get_a_linear_axis_fitted_to_them(tmp_path, drawn):
    rows = k_rows("linear", {"transformer": [1.0, 0.6, 0.3, 0.1, 0.05], "ridge": [1.0, 0.55, 0.3, 0.12, 0.06]})
    plot_curves(rows, "linear", tmp_path / "c.png", dims=3)
    ax = drawn[0].axes[0]
    assert problems(drawn[0]) == [] and ax.get_yscale() == "linear"
    assert ax.get_ylim()[0] == 0 and 1.1 <= ax.get_ylim()[1] <= 1.1 * 1.06  # the top band, and little more


def test_the_sparsity_sweep_has_integer_ticks_and_labelled_marks(tmp_path, drawn):
    d = 5
    rows = [
        {"sweep": f"nnz={s}", "task": "sparse", "estimator": est, "run": run, "k": d - 1, "mean": m, "lo": m, "hi": m}
        for s in range(1, d + 1)
        for est, run, m in [
            ("transformer", "dense_sparse", 0.1 * s),
            ("transformer", "dense", 0.5),
            ("lasso_cv", "", 0.08 * s),
            ("zero", "", 1.0),
        ]
    ]
    sparsity.draw(rows, tmp_path, {"dims": d, "nnz": 2})
    (fig,) = drawn
    assert problems(fig) == []
    assert {"the sparse specialist's nnz = 2", "nnz = d = 5 (dense)"} <= {
        t.get_text() for t in fig.axes[0].get_legend().get_texts()
    }


def sweep_rows(points: list[str], k: int = 4) -> list[dict]:
    return [
        {"sweep": p, "task": "t", "estimator": est, "run": run, "k": k, "mean": m, "lo": 0.9 * m, "hi": 1.1 * m}
        for i, p in enumerate(points)
        for est, run, m in [("transformer", "mix", 0.2 + 0.1 * i), ("knn", "", 0.5)]
    ]


def test_frequency_and_categorical_sweeps_keep_the_rules(tmp_path, drawn):
    # a log x axis with the pretraining range marked at both ends (one legend entry), and a sweep over named shifts
    frequency.draw(sweep_rows([f"freq={f}" for f in (0.25, 0.5, 1, 2, 4)]), tmp_path, None)
    plot_sweep(sweep_rows(["shift=none", "shift=skewed", "shift=scaled_x"]), 4, tmp_path / "s.png", "shifts", "shift")
    for fig in drawn:
        assert problems(fig) == []
    labels = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert labels.count("pretraining range") == 1


def test_the_lm_study_sweep_figure_keeps_the_rules(tmp_path, drawn):
    modes = ("plain", "calibrated", "pmi")
    rows = {
        k: {
            f"{c}.{m}": ({"mean": 0.5 + 0.01 * k} if c == "icl" or m == "plain" else None)
            for c in ("icl", "ft")
            for m in modes
        }
        for k in (0, 2, 4, 8)
    }
    draw_sweep(rows, tmp_path / "sweep.png")
    (fig,) = drawn
    assert problems(fig) == [] and len(fig.axes[0].get_legend().get_texts()) == 4


def test_coinciding_curves_of_the_model_selection_figures_stay_apart(tmp_path, drawn):
    # the dense specialist and the mixture lie on top of each other: styles (and markers) must tell them apart
    classes = [
        Class("dense", {"name": "linear"}, 0.5, "dense"),
        Class("sparse", {"name": "sparse_linear", "nnz": 1}, 0.5, "sparse"),
    ]
    setting = {"dims": 3, "classes": classes, "mixture": "dense_sparse"}
    best = model_selection.oracle(setting)
    curve = [1.0, 0.6, 0.3, 0.1, 0.1, 0.1, 0.1]
    rows = []
    for c in classes:
        for run in ("dense", "sparse", "dense_sparse"):
            rows += k_rows("t", {"transformer": curve}, run)
        rows += k_rows("t", {best: [v * 0.9 for v in curve], "least_squares": curve})
        rows = [r | {"sweep": r["sweep"] or f"class={c.label}"} for r in rows]
    figures = model_selection.draw(rows, tmp_path, setting)
    assert [p.name for p in figures] == ["dense.png", "sparse.png", "oracle_gap.png"]
    for fig in drawn:
        assert problems(fig) == []


def test_the_training_figure_shows_the_training_loss_with_plain_log_ticks(tmp_path, drawn):
    metrics = [{"step": s, "loss": 1.6 - 0.04 * s, "seconds": 0.5 * s, "flops": 1e9 * s} for s in range(1, 11)]
    for m in metrics[4::5]:
        m["val_error"] = [1.0, 1.1, 1.3, 1.5 - 0.01 * m["step"], 1.2, 1.25, 1.3 - 0.01 * m["step"]]
    plot_training(metrics, tmp_path / "training.png", dims=3)
    (fig,) = drawn
    assert problems(fig) == []
    loss, seconds, flops = fig.axes
    assert [line.get_label() for line in loss.lines] == ["training loss"]
    assert [line.get_ydata()[-1] for line in loss.lines] == [pytest.approx(1.2)]
    assert [line.get_label() for line in flops.lines] == ["k = 3", "k = 6"]
    assert "MSE" in loss.get_ylabel() and "FLOPs" in flops.get_xlabel()


def test_the_study_figures_keep_the_rules(tmp_path, drawn):
    errors = {"transformer": [1.0, 0.5, 0.2], "dmmse": [1.0, 0.4, 0.1], "ridge": [1.0, 0.5, 0.25]}
    entry = {"to_dmmse": 0.01, "to_ridge": 0.2, "dmmse_to_ridge": 0.3, "errors": errors}
    models = [{"pool": m, "own": entry, "fresh": entry | {"to_dmmse": 0.5 / m}} for m in (2, 8, 32, 128)]
    task_diversity.draw({"models": models, "threshold": {"at": 32, "below": 8}, "distance": "raventos"}, tmp_path)
    levels = {
        "0": {"own": "least_squares", "errors": {"transformer": [1, 0.4, 0.01], "oracle": [1, 0.4, 0.01]}},
        "0.5": {"own": "ridge:alpha=5", "errors": {"transformer": [1, 0.6, 0.3], "oracle": [1, 0.6, 0.3]}},
    }
    for lv in levels.values():
        lv["errors"] |= {n: [1, 0.7, 0.4] for n in algorithm_selection.single_penalties([0, 0.5], 20)}
    levels["0"]["errors"] |= {"least_squares": [1, 0.4, 1e-14], "ridge:alpha=5": [1, 0.6, 0.1]}
    levels["0.5"]["errors"] |= {"least_squares": [1, 30.0, 2.0], "ridge:alpha=5": [1, 0.6, 0.3]}
    algorithm_selection.draw({"levels": levels, "dims": 20}, tmp_path)
    lsa_gd.draw(
        {"history": [(0, 3.0), (100, 0.8), (200, 0.5)], "loss_gd": 0.49, "eta": 0.9, "loss_zero": 3.2}, tmp_path
    )
    assert len(drawn) == 5
    for fig in drawn:
        assert problems(fig) == []
    below_floor = drawn[2].axes[0]  # sigma = 0: least squares is exact at k = 2, below the log axis' floor
    assert [t.get_text() for t in below_floor.texts] == ["values below 0.001 drawn at 0.001"]


def test_the_momentum_figures_keep_the_rules(tmp_path, drawn):
    variants, seeds, lengths = ["softmax", "eta=0.5", "ema"], [0, 1], [8, 16, 32]
    lm_runs = [
        {"variant": v, "seed": s, "perplexity": [30.0 - i - s - 2 * j for j in range(3)]}
        for i, v in enumerate(variants)
        for s in seeds
    ]
    decays = [{"seed": s, "layers": [{"histogram": [1, 4, 9, 4, 1]}]} for s in seeds]
    icl_runs = [
        {"variant": v, "seed": s, "error": [1.0, 0.6 + 0.01 * s, 0.3 + i / 10]}
        for i, v in enumerate(variants)
        for s in seeds
    ]
    results = {
        "variants": variants,
        "seeds": len(seeds),
        "lm": {"lengths": lengths, "runs": lm_runs, "decays": decays},
        "icl": {
            "points": 3,
            "dims": 2,
            "runs": icl_runs,
            "baselines": {"least_squares": [1.0, 0.8, 0.0]},
            "decays": decays,
        },
    }
    momentum_figures.draw(results, tmp_path)
    assert len(drawn) == 3
    for fig in drawn:
        assert problems(fig) == []


def test_the_icl_vs_ft_figures_drop_a_constant_measure_into_a_line_and_label_every_panel(tmp_path, drawn):
    keys = VARIANT_MEASURES["dai"]
    constant = keys[0]  # Rec2FTP: 1.0 at every checkpoint for a model that is nearly always right in context
    steps = [0, 250, 500, 1000, 2000]
    emergence = {
        str(step): {
            "accuracy": {"icl": {"mean": 0.5 + 0.1 * i}, "zsl": {"mean": 0.5}},
            "measures": {k: {"mean": 1.0 if k == constant else 0.1 * i + 0.01 * j} for j, k in enumerate(keys)},
        }
        for i, step in enumerate(steps)
    }
    summary = {
        "trained": {
            "accuracy": {c: {"mean": a} for c, a in (("zsl", 0.5), ("ft", 0.6), ("icl", 0.8))},
            "measures": {k: {"mean": 0.3} for k in keys},
            "random": {k: {"mean": 0.05} for k in keys},
        },
        "untrained": {"accuracy": {c: {"mean": 0.5} for c in ("zsl", "ft", "icl")}, "measures": {}, "random": {}},
        "emergence": emergence,
    }
    paths = icl_vs_ft_figures.draw(summary, tmp_path)
    assert [p.name for p in paths] == ["icl_vs_ft.png", "emergence.png"]
    for fig in drawn:
        assert problems(fig) == []
    panels = [ax for ax in drawn[1].axes if ax.axison]
    assert sorted(ax.get_ylabel() for ax in panels) == sorted(MEASURES[k] for k in keys if k != constant)
    assert f"{MEASURES[constant]} = 1" in " ".join(t.get_text() for t in drawn[1].texts)
    labels = [t.get_text() for ax in panels for t in ax.texts]
    assert labels.count("step 0") == len(panels) and labels.count("step 250") == 0  # first and last only


def test_a_constant_panel_is_caught_unless_a_note_explains_it():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1.0, 1.0, 1.0], label="Rec2FTP")
    fit_y(ax)
    plotting.finish(ax, "ICL gain", "measure")
    assert any("constant" in p for p in problems(fig))
    plotting.note(ax, "1.0 at every checkpoint: the model is always right in context")
    assert problems(fig) == []
    plt.close(fig)


def test_the_checks_catch_the_defects_the_rules_exist_for():
    # what the figures did before: a y axis capped below a curve, an unlabelled k = d line, half-integer ticks
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3.6, 4.0, 4.5], label="transformer")
    ax.axvline(2, ls=":")
    ax.set_ylim(0, 3)
    ax.set_xticks([1, 1.5, 2, 2.5, 3])
    ax.legend()
    found = problems(fig)
    assert any("leaves the axes" in p for p in found) and any("no label" in p for p in found)
    assert any("integer data" in p for p in found)
    plt.close(fig)


def test_series_styles_differ_and_coinciding_curves_all_show():
    styles = [series_style(i) for i in range(8)]
    assert len({(s["color"], s["ls"], s["marker"]) for s in styles}) == 8
    # bold curves lie under the thin ones, and each later bold curve is narrower and above the one before it
    bold = [series_style(i, bold=True, layer=i) for i in range(3)]
    assert [b["lw"] for b in bold] == sorted((b["lw"] for b in bold), reverse=True)
    assert [b["zorder"] for b in bold] == sorted(b["zorder"] for b in bold)
    assert max(b["zorder"] for b in bold) < min(s["zorder"] for s in styles)
