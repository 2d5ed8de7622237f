"""Yadlowsky et al., finding 4: sinusoids with frequencies outside the pretraining range defeat the model."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.report import plot_sweep, sweep_value
from ..evaluation.sweeps import run_sweep
from .common import check, ks
from .sweep import sweep_recipe

FAR = 2.0  # "far above": at least twice the mean error inside the range
# the sinusoid models' pretraining frequencies (their task in scales/models/*.yaml; a test checks they agree)
FREQ_MIN, FREQ_MAX = 0.5, 2.0


def compute(models: dict[str, Path], setting: dict, progress: bool = False) -> list[dict]:
    return run_sweep("frequency", [models["sine"], models["line_sine"]], ["knn"], progress)


def _mean(rows, series, freqs, k):
    vals = [r["mean"] for r in rows if r["k"] == k and r["run"] == series and sweep_value(r["sweep"]) in freqs]
    return sum(vals) / len(vals)


def check_rows(rows: list[dict], setting: dict | None = None) -> list[dict]:
    k = ks(rows)[-1]
    freqs = sorted({sweep_value(r["sweep"]) for r in rows})
    lo, hi = FREQ_MIN, FREQ_MAX
    inside = [f for f in freqs if lo <= f <= hi]
    below, above = [f for f in freqs if f < lo], [f for f in freqs if f > hi]
    out = []
    for series in ("sine", "line_sine"):
        e_in, e_out, e_below, e_above = (_mean(rows, series, fs, k) for fs in (inside, below + above, below, above))
        # the paper reports failure on both sides; say which side carries it here
        sides = [w for w, e in (("below", e_below), ("above", e_above)) if e >= FAR * e_in]
        carried = {
            2: "far above on both sides",
            1: f"far above only {''.join(sides)} the range",
            0: "on neither side alone",
        }[len(sides)]
        out.append(
            check(
                f"{series}: error at frequencies outside the range is far (>= {FAR:g}x) above the error inside it",
                e_out >= FAR * e_in,
                f"inside {e_in:.3f}, outside {e_out:.3f} (below {e_below:.3f}, above {e_above:.3f}; {carried}; "
                f"k = {k})",
            )
        )
    return out


def draw(rows: list[dict], out: Path, setting: dict | None = None) -> list[Path]:
    k = ks(rows)[-1]
    return [
        plot_sweep(
            rows,
            k,
            out / "frequency.png",
            "sinusoids of one frequency",
            "frequency",
            log_x=True,
            marks={FREQ_MIN: "pretraining range", FREQ_MAX: "pretraining range"},
        )
    ]


RECIPE = sweep_recipe(
    name="frequency",
    title="Frequency sweep: sinusoids inside, below and above the pretraining range",
    claim=(
        "Pretrained on sinusoids with frequencies in a range, the model fails on frequencies far below or far "
        "above it (Yadlowsky et al. 2023, finding 4)."
    ),
    differences=(
        "Scalar inputs x ~ N(0, 1), pretraining frequencies [0.5, 2], test frequencies 1/8 .. 8 times the "
        "range ends; small CPU-trained models; errors at the last position (k = 10). The paper sees failure "
        "on both sides; on scalar inputs a sinusoid far below the range is nearly constant over the data, "
        "so the check line says which side carries the failure here."
    ),
    models=("sine", "line_sine"),
    compute=compute,
    check=check_rows,
    draw=draw,
)
