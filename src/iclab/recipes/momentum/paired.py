"""Reading the momentum results: paired comparisons over seeds, and the claim's checks built on them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

from ...stats import paired_difference
from ..common import check
from .settings import EMA, EMA_PAST, STANDARD, eta_of, label

Key = str | float  # a variant of the trained-in parts ("softmax", "eta=0.5", "ema"), an eta of the pretrained LM's


def by_key(runs: list[dict], value: Callable[[dict], float], key: str = "variant") -> dict[Key, dict[int, float]]:
    """{variant (or eta): {seed: value(run)}}: the form every paired comparison takes."""
    out: dict[Key, dict[int, float]] = {}
    for r in runs:
        out.setdefault(r[key], {})[r["seed"]] = value(r)
    return out


def paired(
    values: dict[Key, dict[int, float]], key: Key, base: Key = STANDARD, queries: int | None = None
) -> tuple[float, float]:
    """Mean and standard error over seeds of (value of `key`) - (value of `base`), seed by seed.

    For accuracies on the same `queries` test queries in every run, the standard error is at least sqrt(|d| / n):
    a net change d of the accuracy means at least |d| n queries changed answer (McNemar), and the seeds' spread
    alone misses that sampling error (a seed-independent ZSL accuracy has none)."""
    d = paired_difference(values[key], values[base])
    return d.mean, max(d.se, math.sqrt(abs(d.mean) / queries)) if queries else d.se


def lm_values(results: dict, length_index: int = -1) -> dict[Key, dict[int, float]]:
    return by_key(results["lm"]["runs"], lambda r: r["perplexity"][length_index])


def icl_values(results: dict) -> dict[Key, dict[int, float]]:
    """Mean error over k = 1 .. points-1: the area under the error curve, one number per run."""
    return by_key(results["icl"]["runs"], lambda r: statistics.fmean(r["error"][1:]))


def fixed_variants(results: dict) -> list[str]:
    return [v for v in results["variants"] if eta_of(v) is not None]


def best_against(
    values: dict[Key, dict[int, float]],
    candidates: list[Key],
    base: Key = STANDARD,
    higher_is_better: bool = False,
    scale: float = 1.0,
    queries: int | None = None,
    name: Callable[[Key], str] = str,
) -> tuple[bool, str]:
    """Does the best of `candidates` beat `base` by more than 2 standard errors of the paired difference?
    `scale` only changes how the numbers read (100: accuracies in %); `queries`: see `paired`."""
    sign = -1 if higher_is_better else 1
    diffs = {c: paired(values, c, base, queries) for c in candidates}
    best = min(candidates, key=lambda c: sign * diffs[c][0])
    parts = [
        f"{name(c)}: {scale * statistics.fmean(values[c].values()):.4g} "
        f"({scale * diffs[c][0]:+.3g} ± {scale * diffs[c][1]:.2g})"
        for c in candidates
    ]
    standard = scale * statistics.fmean(values[base].values())
    spread_of = f"s.e. over {len(values[base])} seeds" + (", at least the queries' sampling error" if queries else "")
    detail = f"{name(base)} {standard:.4g}; " + "; ".join(parts) + f" (difference ± {spread_of})"
    return sign * diffs[best][0] < -2 * diffs[best][1], detail


def supported(results: dict) -> dict[str, tuple[bool, bool]]:
    """For the best fixed eta (of the grid, per measure) and each learned EMA: (does it lower perplexity at the
    longest context, does it lower the in-context regression error), each beyond 2 s.e. of the paired difference."""
    lm, icl = lm_values(results), icl_values(results)
    groups = {"fixed eta": fixed_variants(results)}
    groups |= {label(v): [v] for v in (EMA, EMA_PAST) if v in results["variants"]}
    return {
        group: (best_against(lm, candidates)[0], best_against(icl, candidates)[0])
        for group, candidates in groups.items()
        if candidates
    }


def pretrained_lm_part(results: dict) -> dict | None:
    """The pretrained-LM part of the results, or None when it was not run (quick mode, no model, older results)."""
    part = results.get("pretrained_lm")
    return part if part and "runs" in part else None


def lm_accuracy(run: dict, key: str) -> float | None:
    """One accuracy of a pretrained-LM run; "gain" is ICL's gain over ZSL (plain scoring)."""
    return run["icl"] - run["zsl"] if key == "gain" else run[key]


def lm_accuracy_values(part: dict, task: str, key: str = "icl") -> dict[Key, dict[int, float]]:
    return by_key([r for r in part["runs"] if r["task"] == task], lambda r: lm_accuracy(r, key), key="eta")


def check_results(results: dict) -> list[dict]:
    """Dai et al.'s two questions, for fixed eta and for the learned EMA, both trained in: does momentum lower
    perplexity, does it improve in-context learning? And first, that the language models use their context."""
    lm, lengths, last_k = results["lm"], results["lm"]["lengths"], results["icl"]["points"] - 1
    standard = by_key(lm["runs"], lambda r: r["perplexity"][0])[STANDARD], lm_values(results)[STANDARD]
    short, long = (statistics.fmean(s.values()) for s in standard)
    checks = [
        check(
            f"the language models use their context: standard attention's perplexity falls from {lengths[0]} to "
            f"{lengths[-1]} tokens",
            long < short,
            f"{short:.4g} -> {long:.4g}",
        )
    ]
    fixed = fixed_variants(results)
    for candidates, who, than in (
        (fixed, "fixed-eta momentum trained in", ": the grid's best eta beats standard attention"),
        (
            [EMA] if EMA in results["variants"] else [],
            "the learned EMA trained in (the authors' momentum attention)",
            " against standard attention",
        ),
    ):
        if not candidates:
            continue
        lm_ok, lm_detail = best_against(lm_values(results), candidates, name=label)
        icl_ok, icl_detail = best_against(icl_values(results), candidates, name=label)
        checks += [
            check(
                f"{who} lowers validation perplexity at {lengths[-1]} tokens{than}, by more than 2 s.e. of the "
                "paired difference",
                lm_ok,
                lm_detail,
            ),
            check(
                f"{who} lowers the in-context regression error (mean over k = 1..{last_k}){than}, by more than 2 s.e.",
                icl_ok,
                icl_detail,
            ),
        ]
    return checks + pretrained_lm_checks(results)


def pretrained_lm_checks(results: dict) -> list[dict]:
    part = pretrained_lm_part(results)
    if part is None:
        return []
    checks = []
    for task in part["tasks"]:
        values = lm_accuracy_values(part, task)
        etas = [e for e in values if e != 0.0]
        ok, detail = best_against(
            values, etas, 0.0, True, 100, part["test_queries"], lambda e: f"eta={e:g}" if e else "unpatched"
        )
        checks.append(
            check(
                f"fixed-eta momentum patched into {Path(part['model']).name} at inference raises its ICL accuracy "
                f"on {task}: the grid's best eta beats the unpatched model by more than 2 s.e. of the paired "
                "difference",
                ok,
                detail + ", accuracy in %",
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
