"""Reading the momentum results: paired comparisons over seeds, and the claim's checks built on them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

from ...stats import paired_difference
from ..common import check


def by_eta(runs: list[dict], value: Callable[[dict], float]) -> dict[float, dict[int, float]]:
    """{eta: {seed: value(run)}}: the form every paired comparison takes."""
    out: dict[float, dict[int, float]] = {}
    for r in runs:
        out.setdefault(r["eta"], {})[r["seed"]] = value(r)
    return out


def paired(values: dict[float, dict[int, float]], eta: float, queries: int | None = None) -> tuple[float, float]:
    """Mean and standard error over seeds of (value at eta) - (value of standard attention), seed by seed.

    For accuracies on the same `queries` test queries in every run, the standard error is at least sqrt(|d| / n):
    a net change d of the accuracy means at least |d| n queries changed answer (McNemar), and the seeds' spread
    alone misses that sampling error (a seed-independent ZSL accuracy has none)."""
    d = paired_difference(values[eta], values[0.0])
    return d.mean, max(d.se, math.sqrt(abs(d.mean) / queries)) if queries else d.se


def lm_values(results: dict, length_index: int = -1) -> dict[float, dict[int, float]]:
    return by_eta(results["lm"]["runs"], lambda r: r["perplexity"][length_index])


def icl_values(results: dict) -> dict[float, dict[int, float]]:
    """Mean error over k = 1 .. points-1: the area under the error curve, one number per run."""
    return by_eta(results["icl"]["runs"], lambda r: statistics.fmean(r["error"][1:]))


def best_against_standard(
    values: dict[float, dict[int, float]],
    higher_is_better: bool = False,
    scale: float = 1.0,
    queries: int | None = None,
) -> tuple[bool, str]:
    """Does the best eta beat standard attention by more than 2 standard errors of the paired difference?
    `scale` only changes how the numbers read (100: accuracies in %); `queries`: see `paired`."""
    sign = -1 if higher_is_better else 1
    etas = [e for e in values if e != 0.0]
    diffs = {e: paired(values, e, queries) for e in etas}
    best = min(etas, key=lambda e: sign * diffs[e][0])
    parts = [
        f"eta={e:g}: {scale * statistics.fmean(values[e].values()):.4g} "
        f"({scale * diffs[e][0]:+.3g} ± {scale * diffs[e][1]:.2g})"
        for e in etas
    ]
    standard = scale * statistics.fmean(values[0.0].values())
    spread_of = f"s.e. over {len(values[0.0])} seeds" + (", at least the queries' sampling error" if queries else "")
    detail = f"standard {standard:.4g}; " + "; ".join(parts) + f" (difference ± {spread_of})"
    return sign * diffs[best][0] < -2 * diffs[best][1], detail


def pretrained_lm_part(results: dict) -> dict | None:
    """The pretrained-LM part of the results, or None when it was not run (quick mode, no model, older results)."""
    part = results.get("pretrained_lm")
    return part if part and "runs" in part else None


def lm_accuracy(run: dict, key: str) -> float | None:
    """One accuracy of a pretrained-LM run; "gain" is ICL's gain over ZSL (plain scoring)."""
    return run["icl"] - run["zsl"] if key == "gain" else run[key]


def lm_accuracy_values(part: dict, task: str, key: str = "icl") -> dict[float, dict[int, float]]:
    return by_eta([r for r in part["runs"] if r["task"] == task], lambda r: lm_accuracy(r, key))


def check_results(results: dict) -> list[dict]:
    lm, lengths = results["lm"], results["lm"]["lengths"]
    standard = by_eta(lm["runs"], lambda r: r["perplexity"][0])[0.0], lm_values(results)[0.0]
    short, long = (statistics.fmean(s.values()) for s in standard)
    lm_ok, lm_detail = best_against_standard(lm_values(results))
    icl_ok, icl_detail = best_against_standard(icl_values(results))
    return [
        check(
            f"the language models use their context: standard attention's perplexity falls from {lengths[0]} to "
            f"{lengths[-1]} tokens",
            long < short,
            f"{short:.4g} -> {long:.4g}",
        ),
        check(
            f"momentum lowers validation perplexity at {lengths[-1]} tokens: the grid's best eta beats standard "
            "attention by more than 2 s.e. of the paired difference",
            lm_ok,
            lm_detail,
        ),
        check(
            f"momentum lowers the in-context regression error (mean over k = 1..{results['icl']['points'] - 1}): "
            "the grid's best eta beats standard attention by more than 2 s.e.",
            icl_ok,
            icl_detail,
        ),
    ] + pretrained_lm_checks(results)


def pretrained_lm_checks(results: dict) -> list[dict]:
    part = pretrained_lm_part(results)
    if part is None:
        return []
    checks = []
    for task in part["tasks"]:
        values = lm_accuracy_values(part, task)
        ok, detail = best_against_standard(values, higher_is_better=True, scale=100, queries=part["test_queries"])
        checks.append(
            check(
                f"momentum patched into {Path(part['model']).name} at inference raises its ICL accuracy on {task}: "
                "the grid's best eta beats the unpatched model by more than 2 s.e. of the paired difference",
                ok,
                detail.replace("standard", "unpatched", 1) + ", accuracy in %",
            )
        )
    return checks


def direction(diff: float, se: float) -> str | None:
    """ "lower" or "higher" when a paired difference lies beyond 2 standard errors, else None."""
    if diff < -2 * se:
        return "lower"
    if diff > 2 * se:
        return "higher"
    return None
