"""Helpers the paper recipes share: reading values off sweep rows and phrasing checks."""

from __future__ import annotations

from ..report import series_name

REL_TOLERANCE, ABS_TOLERANCE = 0.15, 0.02  # "within 15 % (or 0.02 absolute)"


def value(rows: list[dict], series: str, sweep: str, k: int) -> float:
    """Mean error of a series (a run's transformer or a baseline) at one sweep point and k."""
    for r in rows:
        if r["sweep"] == sweep and r["k"] == k and series_name(r) == series:
            return r["mean"]
    raise KeyError(f"no row for {series} at {sweep}, k={k}")


def ks(rows: list[dict]) -> list[int]:
    return sorted({r["k"] for r in rows})


def close_to(candidate: float, reference: float) -> bool:
    """No worse than the reference by more than 15 % of it or 0.02 absolute, whichever is larger."""
    return candidate - reference <= max(REL_TOLERANCE * reference, ABS_TOLERANCE)


def check(claim: str, passed: bool, detail: str) -> dict:
    return {"claim": claim, "passed": bool(passed), "detail": detail}
