"""Yadlowsky et al., finding 2: sweeping the sparsity between the two pretraining classes, the mixture model moves
between the specialists' behaviours rather than adapting as Lasso does."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.report import plot_sweep
from ..evaluation.sweeps import run_sweep
from .common import check, close_to, value
from .model_selection import oracle
from .sweep import sweep_recipe


def compute(models: dict[str, Path], setting: dict, progress: bool = False) -> list[dict]:
    runs = [models[m] for m in ("dense_sparse", "dense", "sparse")]
    # zero, and each point's own posterior mean where cheap (C(d, nnz) <= 256): the two ends of the ICL score
    baselines = ["least_squares", "lasso_cv", oracle(setting), "zero"]
    return run_sweep("sparsity", runs, baselines, progress, oracle=True)


def check_rows(rows: list[dict], setting: dict) -> list[dict]:
    d, nnz = setting["dims"], setting["nnz"]
    k = d - 1
    mix = [value(rows, "dense_sparse", f"nnz={s}", k) for s in range(1, d + 1)]
    sparse_level = value(rows, "sparse", f"nnz={nnz}", k)
    dense_level = value(rows, "dense", f"nnz={d}", k)
    lasso = [value(rows, "lasso_cv", f"nnz={s}", k) for s in range(1, d + 1)]
    return [
        check(
            f"at nnz = {nnz} the mixture model is at the sparse specialist's level (k = {k})",
            close_to(mix[nnz - 1], sparse_level),
            f"mixture {mix[nnz - 1]:.3f}, sparse specialist {sparse_level:.3f}",
        ),
        check(
            f"at nnz = d = {d} it is at the dense specialist's level",
            close_to(mix[-1], dense_level),
            f"mixture {mix[-1]:.3f}, dense specialist {dense_level:.3f}",
        ),
        check(
            "its error grows with nnz from the sparse to the dense level (nnz=1 <= nnz=2 <= ... <= nnz=d, "
            "allowing 0.02 of noise between neighbours, and a rise of at least 0.05 overall)",
            all(b >= a - 0.02 for a, b in zip(mix, mix[1:], strict=False)) and mix[-1] - mix[0] >= 0.05,
            "mixture " + ", ".join(f"{m:.3f}" for m in mix) + "; Lasso (tuned) " + ", ".join(f"{x:.3f}" for x in lasso),
        ),
    ]


def draw(rows: list[dict], out: Path, setting: dict) -> list[Path]:
    d = setting["dims"]
    title = "error against sparsity of the test task"
    marks = {setting["nnz"]: f"the sparse specialist's nnz = {setting['nnz']}", d: f"nnz = d = {d} (dense)"}
    return [plot_sweep(rows, d - 1, out / "sparsity.png", title, "nnz", marks=marks)]


RECIPE = sweep_recipe(
    name="sparsity",
    title="Sparsity sweep: nnz = 1 .. d between sparse and dense pretraining",
    claim=(
        "As the number of non-zero weights of the test task grows, the mixture model's error moves from the "
        "sparse specialist's level to the dense level: it interpolates between the behaviours it was pretrained "
        "on, where Lasso would adapt to each sparsity (Yadlowsky et al. 2023, finding 2)."
    ),
    differences=(
        "d = 5 (d = 4 in quick mode) instead of the paper's d = 20, so nnz runs 1 .. d; small CPU-trained models "
        "whose sparse class has nnz = 2 (full scale) or 1 (quick); errors are read at k = d - 1 examples, the "
        "most a prompt can hold while sparsity still decides how well any learner can do (least squares is exact "
        "from k = d)."
    ),
    models=("dense", "sparse", "dense_sparse"),
    compute=compute,
    check=check_rows,
    draw=draw,
)
